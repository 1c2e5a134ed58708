/**
 * The sizes of GPT-2's vocabulary, apart from the tokenizer that loads it, so
 * that naming them loads no npm package.
 * @module
 */

/** GPT-2's vocabulary size (50,000 merges + 256 bytes + `<|endoftext|>`). */
export const GPT2_VOCAB_SIZE = 50257;
/** Id of `<|endoftext|>` in GPT-2's vocabulary. */
export const GPT2_EOS_ID = 50256;
