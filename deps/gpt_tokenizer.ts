/**
 * GPT-2's byte-pair encoding's pin: npm `gpt-tokenizer`, loaded on demand by
 * data/gpt2_tokenizer.ts when GPT-2 text is tokenized: its table of tokens only. Apart from Dawn's pin (deps/dawn.ts),
 * so that a host-only program of `data/` never downloads Dawn.
 *
 * Every npm pin of the library is a versioned `npm:` specifier in `deps/`, not an import-map
 * name, so the library also works imported by URL (where this project's deno.json does not
 * apply). deno.json's `imports` lists the same pins so that `deno outdated` sees them;
 * `tests/deps_test.ts` fails when the two disagree (after `deno outdated --update`, copy the new
 * versions here).
 * @module
 */

// deno-lint-ignore-file no-import-prefix -- the library must import by URL: versioned npm specifiers

/**
 * GPT-2's tokens in id order, each as its text or, where it is not valid UTF-8
 * alone, its bytes (data/gpt2_bpe.ts merges by it).
 */
export function importGpt2Ranks(): Promise<
  typeof import("npm:gpt-tokenizer@4.0.0/bpeRanks/r50k_base")
> {
  return import("npm:gpt-tokenizer@4.0.0/bpeRanks/r50k_base");
}
