import { importGpt2Encoding } from "../deps.ts";
import type { Tokenizer } from "./tokenizer.ts";

const { decode, encode } = await importGpt2Encoding();

/** GPT-2's vocabulary size (50,000 merges + 256 bytes + `<|endoftext|>`). */
export const GPT2_VOCAB_SIZE = 50257;
/** Id of `<|endoftext|>` in GPT-2's vocabulary. */
export const GPT2_EOS_ID = 50256;

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
    decode: (ids: ArrayLike<number>): string => decode(Array.from(ids)),
  };
}
