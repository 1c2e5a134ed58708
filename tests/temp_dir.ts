/**
 * A temporary folder a test removes however it ends.
 * @module
 */

/** A temporary folder, removed with everything in it when its `await using` scope exits. */
export interface TempDir extends AsyncDisposable {
  /** The folder's path. */
  readonly path: string;
}

/**
 * Makes a temporary folder for `await using`: it is removed when the scope
 * exits, a failed assertion or a throw included.
 */
export async function tempDir(options?: Deno.MakeTempOptions): Promise<TempDir> {
  const path = await Deno.makeTempDir(options);
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
    },
  };
}
