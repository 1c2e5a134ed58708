/**
 * Which tokenizer drives a GPT, and whether it can. A model's vocabulary is its
 * tokenizer's, or that padded with a few unused rows: nanoGPT's GPT-2 has
 * 50,304 (50,257 rounded up to a multiple of 64), Megatron rounds up to a
 * multiple of 128 × TP. Ids past the tokenizer's are never sampled.
 * @module
 */

import { checkHfTokenizerFiles } from "./hf_tokenizer.ts";
import { tokenizerFlagFor } from "../data/token_bin.ts";
import { createTokenizer, type Tokenizer } from "../data/tokenizer.ts";
import { UsageError } from "./flags.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";

/** Rows past its tokenizer's a model's vocabulary may have and still be padding. */
export const MAX_PADDING_ROWS = 1024;

/** The tokenizers a GPT can name, in the order advice tries them. */
const NAMES = ["byte", "gpt2", "bert"] as const;

/** Why a tokenizer of `tokenizerVocab` ids cannot drive a model of `modelVocab` rows, or null. */
export function vocabularyMisfit(
  name: string,
  tokenizerVocab: number,
  modelVocab: number,
): string | null {
  if (tokenizerVocab > modelVocab) {
    return `the ${name} tokenizer has ${tokenizerVocab} ids but the model only ${modelVocab}`;
  }
  if (modelVocab - tokenizerVocab >= MAX_PADDING_ROWS) {
    return `the model has ${modelVocab} ids, the ${name} tokenizer only ${tokenizerVocab}`;
  }
  return null;
}

/** The tokenizer whose vocabulary (padded or not) a model of `modelVocab` rows has, or undefined. */
export async function tokenizerNameFor(modelVocab: number): Promise<string | undefined> {
  for (const name of NAMES) {
    const v = (await createTokenizer(name)).vocabSize;
    if (vocabularyMisfit(name, v, modelVocab) === null) return name;
  }
  return undefined;
}

/**
 * What to pass for a model of `modelVocab` rows: `use FLAG` (then `suffix`) for
 * the tokenizer that fits it, else that none here does, with their sizes.
 */
export async function tokenizerAdvice(modelVocab: number, suffix = ""): Promise<string> {
  const fits = await tokenizerNameFor(modelVocab);
  if (fits !== undefined) return `use ${tokenizerFlagFor(fits)}${suffix}`;
  const sizes: string[] = [];
  for (const name of NAMES) sizes.push(`${name} ${(await createTokenizer(name)).vocabSize}`);
  return `no tokenizer here has that vocabulary (${sizes.join(", ")})`;
}

/**
 * The tokenizer of a GPT of `modelVocab` rows: `given` (the `--tokenizer` flag),
 * else `saved` (its checkpoint's), else the one whose vocabulary it has. A
 * misfit is refused ({@link CheckpointError}, exit 1 as `train`'s) with the
 * tokenizer that would fit; `given` against `saved` ({@link UsageError}). A
 * Hugging Face directory `hfDir` holding its own tokenizer files must hold
 * GPT-2's, read with GPT-2's tokenizer ({@link checkHfTokenizerFiles}).
 */
export async function modelTokenizer(
  modelVocab: number,
  given: string | undefined,
  saved?: string,
  hfDir?: string,
): Promise<Tokenizer> {
  if (given !== undefined && saved !== undefined && given !== saved) {
    throw new UsageError(
      `--tokenizer ${given}: the model was trained with the ${saved} tokenizer, whose ids ` +
        `mean its tokens; drop --tokenizer`,
    );
  }
  const name = given ?? saved ?? await tokenizerNameFor(modelVocab);
  if (name === undefined) {
    // Nothing was asked for and nothing fits: say that, not one tokenizer's misfit.
    throw new CheckpointError(
      `the model has a vocabulary of ${modelVocab} ids: ${await tokenizerAdvice(modelVocab)}`,
    );
  }
  const tok = await createTokenizer(name);
  const misfit = vocabularyMisfit(name, tok.vocabSize, modelVocab);
  if (misfit === null) {
    if (hfDir !== undefined) await checkHfTokenizerFiles(hfDir, tok.name);
    return tok;
  }
  // The model's vocabulary against a tokenizer's, as `train` refuses it: exit 1, the checkpoint's
  // (eval and generate exited 2 for it, flag or no flag).
  throw new CheckpointError(`${misfit}; ${await tokenizerAdvice(modelVocab)}`);
}
