/**
 * Reading the files of a model or tokenizer directory someone else wrote: the file
 * must resolve (symlinks included) inside the directory, or inside the Hugging Face
 * hub cache's `blobs` folder for a snapshot directory, must be a regular file, and is
 * read only up to a size cap. Failures are one-line {@link DataError}s naming the file.
 * @module
 */

import { join } from "node:path";
import { allowedRoots, isInside, oneLine, readCappedFile } from "../core/files.ts";
import { DataError } from "./errors.ts";

/** Largest vocabulary or tokenizer file read (tokenizer.json of big vocabularies is ~10 MB). */
export const MAX_TOKENIZER_FILE_BYTES = 100 * 1024 * 1024;

/**
 * The bytes of `dir/name` (a plain file name, no folders), or null when it does not
 * exist. Refuses a file that resolves outside `dir` (except into the hub cache's
 * `blobs` folder of a `…/snapshots/REV` directory), that is not a regular file, or
 * that is larger than `cap`.
 */
export async function readDirFile(
  dir: string,
  name: string,
  cap = MAX_TOKENIZER_FILE_BYTES,
): Promise<Uint8Array | null> {
  const shown = join(dir, name);
  let realDir: string, real: string;
  try {
    realDir = await Deno.realPath(dir);
    real = await Deno.realPath(join(realDir, name));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new DataError(`${shown}: ${oneLine((e as Error).message)}`);
  }
  const roots = await allowedRoots(realDir);
  if (!roots.some((r) => isInside(r, real))) {
    throw new DataError(`${shown}: resolves to ${real}, outside ${realDir}; refused`);
  }
  return await readCappedFile(real, shown, cap, (m) => new DataError(m));
}
