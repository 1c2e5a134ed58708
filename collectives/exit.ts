/**
 * Ending a process from the middle of a run without running the native
 * libraries' exit handlers while a GPU device is still at work.
 * @module
 */

/**
 * Exits with `code` from the middle of a run (a signal, a launcher gone): the `unload`
 * listeners run (the save lock's release), then glibc's `_exit`, which skips
 * the native libraries' exit handlers. `Deno.exit` runs them while the GPU
 * device is still at work on other threads, and Dawn's over Mesa's llvmpipe
 * then corrupted the heap (`malloc_consolidate(): unaligned fastbin chunk
 * detected`, exit 134 instead of 143) in 3 of 10 SIGTERMs to a
 * `--launcher procs` run. Falls back on `Deno.exit` without FFI.
 */
export function exitAtOnce(code: number): never {
  globalThis.dispatchEvent(new Event("unload"));
  try {
    const libc = Deno.dlopen("libc.so.6", { _exit: { parameters: ["i32"], result: "void" } });
    libc.symbols._exit(code);
  } catch {
    // no FFI permission, or no glibc
  }
  Deno.exit(code);
}
