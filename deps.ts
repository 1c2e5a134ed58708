/**
 * The npm packages the library uses, each pinned here and nowhere else in the code that
 * `mod.ts` reaches. They are versioned `npm:` specifiers, not import-map names, so the library
 * also works imported by URL (where this project's deno.json does not apply). Both load on
 * demand: a program that never tokenizes GPT-2 text or uses Dawn never loads them.
 *
 * deno.json's `imports` lists the same pins so that `deno outdated` sees them;
 * `tests/deps_test.ts` fails when the two disagree (after `deno outdated --update`, copy the
 * new versions here).
 * @module
 */

// deno-lint-ignore-file no-import-prefix -- the library must import by URL: versioned npm specifiers

/** Dawn's Node bindings: npm `webgpu` (a native addon; needs `--allow-ffi`). */
export function importDawn(): Promise<typeof import("npm:webgpu@0.6.2")> {
  return import("npm:webgpu@0.6.2");
}

/** GPT-2's byte-pair encoding (r50k_base) from npm `gpt-tokenizer`. */
export function importGpt2Encoding(): Promise<
  typeof import("npm:gpt-tokenizer@4.0.0/encoding/r50k_base")
> {
  return import("npm:gpt-tokenizer@4.0.0/encoding/r50k_base");
}

/**
 * GPT-2's tokens in id order, each as its text or, where it is not valid UTF-8
 * alone, its bytes (the table {@link importGpt2Encoding} is built from).
 */
export function importGpt2Ranks(): Promise<
  typeof import("npm:gpt-tokenizer@4.0.0/bpeRanks/r50k_base")
> {
  return import("npm:gpt-tokenizer@4.0.0/bpeRanks/r50k_base");
}
