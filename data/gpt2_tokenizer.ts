import { importGpt2Encoding, importGpt2Ranks } from "../deps.ts";
import type { Tokenizer } from "./tokenizer.ts";

const [{ encode }, { default: ranks }] = await Promise.all([
  importGpt2Encoding(),
  importGpt2Ranks(),
]);

/** GPT-2's vocabulary size (50,000 merges + 256 bytes + `<|endoftext|>`). */
export const GPT2_VOCAB_SIZE = 50257;
/** Id of `<|endoftext|>` in GPT-2's vocabulary. */
export const GPT2_EOS_ID = 50256;

/** Each id's bytes, built at the first decode. */
let tokenBytes: Uint8Array[] | null = null;

function bytesOf(): Uint8Array[] {
  if (tokenBytes) return tokenBytes;
  const utf8 = new TextEncoder();
  tokenBytes = ranks.map((t) => typeof t === "string" ? utf8.encode(t) : new Uint8Array(t));
  tokenBytes[GPT2_EOS_ID] = utf8.encode("<|endoftext|>");
  return tokenBytes;
}

/**
 * The text of GPT-2 ids: their bytes joined, then decoded as UTF-8 in one go,
 * each call on its own (an incomplete character at the end is U+FFFD, as the
 * byte tokenizer's). gpt-tokenizer's own `decode` shares one streaming decoder
 * between calls, so a character split over tokens could move or leak into the
 * next call's text.
 */
function decodeGpt2(ids: ArrayLike<number>): string {
  const table = bytesOf();
  const parts: Uint8Array[] = [];
  let length = 0;
  for (let i = 0; i < ids.length; i++) {
    const part = table[ids[i]];
    if (part === undefined) {
      throw new RangeError(
        `GPT-2 has no token ${ids[i]} (its ids are 0 to ${GPT2_VOCAB_SIZE - 1})`,
      );
    }
    parts.push(part);
    length += part.length;
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
}

/**
 * GPT-2 byte-pair-encoding tokenizer (the r50k_base encoding shipped by npm `gpt-tokenizer`).
 * Text is encoded literally: a `<|endoftext|>` written in the text is not turned into the eos id.
 */
export function createGpt2Tokenizer(): Tokenizer {
  const literal = { disallowedSpecial: new Set<string>() };
  return {
    name: "gpt2",
    vocabSize: GPT2_VOCAB_SIZE,
    eosId: GPT2_EOS_ID,
    encode: (text: string): number[] => encode(text, literal),
    decode: decodeGpt2,
  };
}
