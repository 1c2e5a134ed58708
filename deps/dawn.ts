/**
 * Dawn's pin: npm `webgpu`, loaded on demand by core/gpu.ts when a device asks for the "dawn"
 * backend. A module of its own, apart from the tokenizer's pin (deps/gpt_tokenizer.ts): Deno
 * fetches the targets of a module's literal dynamic imports with the module, so a program that
 * reaches only `data/` never downloads Dawn's 131 MB.
 *
 * Every npm pin of the library is a versioned `npm:` specifier in `deps/`, not an import-map
 * name, so the library also works imported by URL (where this project's deno.json does not
 * apply). deno.json's `imports` lists the same pins so that `deno outdated` sees them;
 * `tests/deps_test.ts` fails when the two disagree (after `deno outdated --update`, copy the new
 * versions here).
 * @module
 */

// deno-lint-ignore-file no-import-prefix -- the library must import by URL: versioned npm specifiers

/** Dawn's Node bindings: npm `webgpu` (a native addon; needs `--allow-ffi`). */
export function importDawn(): Promise<typeof import("npm:webgpu@0.6.2")> {
  return import("npm:webgpu@0.6.2");
}
