import type { Tokenizer } from "./tokenizer.ts";

/** The byte tokenizer's vocabulary: the 256 byte values. */
export const BYTE_VOCAB_SIZE = 256;

/**
 * Byte-level tokenizer: each byte is one token (vocab 256, no end-of-text id). Text (a JS
 * string, such as a prompt) is UTF-8-encoded first; files are read as raw bytes
 * ({@link ByteTokenizer.encodeBytes}), so a Latin-1 `é` is one token, not U+FFFD's three.
 */
export class ByteTokenizer implements Tokenizer {
  /** Tokenizer name. */
  readonly name = "byte";
  /** 256 byte values. */
  readonly vocabSize: number = BYTE_VOCAB_SIZE;
  #encoder = new TextEncoder();
  #decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

  /** UTF-8 bytes of `text`, as ids. */
  encode(text: string): Uint32Array {
    return Uint32Array.from(this.#encoder.encode(text));
  }

  /** The bytes themselves, as ids: one token per byte, whatever the encoding. */
  encodeBytes(bytes: Uint8Array): Uint32Array {
    return Uint32Array.from(bytes);
  }

  /** Decodes ids as UTF-8; invalid sequences become U+FFFD. Throws on ids outside [0, 256). */
  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(id >= 0 && id < BYTE_VOCAB_SIZE) || !Number.isInteger(id)) {
        throw new RangeError(`byte tokenizer: id ${id} at position ${i} is not in [0, 256)`);
      }
      bytes[i] = id;
    }
    return this.#decoder.decode(bytes);
  }
}
