/**
 * The tokenizer interface shared by the GPT and BERT data pipelines, and a factory by name.
 * @module
 */

/** Turns text into token ids and back. */
export interface Tokenizer {
  /** Short name ("gpt2", "byte", "bert"). */
  readonly name: string;
  /** Number of ids; every id is in [0, vocabSize). */
  readonly vocabSize: number;
  /** End-of-text id, when the tokenizer has one. */
  readonly eosId?: number;
  /**
   * The id set between documents when there is no {@link Tokenizer.eosId}
   * (WordPiece: `[SEP]`); without either, documents are joined by a blank line.
   */
  readonly documentSeparatorId?: number;
  /** Encodes text into ids. */
  encode(text: string): number[] | Uint32Array;
  /**
   * Encodes raw bytes into ids, when the tokenizer works on bytes (the byte tokenizer):
   * corpus loading then reads files as bytes, so bytes that are not UTF-8 stay as they are.
   */
  encodeBytes?(bytes: Uint8Array): number[] | Uint32Array;
  /** Decodes ids back into text. */
  decode(ids: ArrayLike<number>): string;
}

/**
 * The id that ends a document in the training text: {@link Tokenizer.eosId},
 * else {@link Tokenizer.documentSeparatorId}; undefined when documents are
 * joined by a blank line. Where it is sampled, generated text ends.
 */
export function documentEndId(tokenizer: Tokenizer): number | undefined {
  return tokenizer.eosId ?? tokenizer.documentSeparatorId;
}

/** Names accepted by {@link createTokenizer}. */
export const TOKENIZER_NAMES = ["gpt2", "byte", "bert"] as const;

/** A tokenizer name accepted by {@link createTokenizer}. */
export type TokenizerName = typeof TOKENIZER_NAMES[number];

/**
 * Creates a tokenizer by name: "gpt2" (GPT-2 BPE, vocab 50257), "byte" (UTF-8 bytes, vocab 256)
 * or "bert" (uncased WordPiece, vocab 30522). Vocabularies load lazily, hence async.
 */
export async function createTokenizer(name: string): Promise<Tokenizer> {
  switch (name) {
    case "gpt2":
      return await createGpt2Tokenizer();
    case "byte": {
      const { ByteTokenizer } = await import("./byte_tokenizer.ts");
      return new ByteTokenizer();
    }
    case "bert": {
      const { createBertTokenizer } = await import("./wordpiece_tokenizer.ts");
      return await createBertTokenizer();
    }
    default:
      throw new RangeError(
        `unknown tokenizer ${JSON.stringify(name)}; expected one of: ${TOKENIZER_NAMES.join(", ")}`,
      );
  }
}

/**
 * GPT-2's byte-pair-encoding tokenizer (vocab 50257; the r50k_base encoding of
 * npm `gpt-tokenizer`, loaded at the first call, hence async). Text is encoded
 * literally: a `<|endoftext|>` written in the text is not the eos id.
 */
export async function createGpt2Tokenizer(): Promise<Tokenizer> {
  const { gpt2Tokenizer } = await import("./gpt2_tokenizer.ts");
  return gpt2Tokenizer();
}
