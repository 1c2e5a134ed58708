/**
 * Reading the files of a model or tokenizer directory someone else wrote: the file
 * must resolve (symlinks included) inside the directory, or inside the Hugging Face
 * hub cache's `blobs` folder for a snapshot directory, must be a regular file, and is
 * read only up to a size cap. Failures are one-line {@link DataError}s naming the file.
 * @module
 */

import { dirname, isAbsolute, join, relative } from "node:path";
import { DataError } from "./errors.ts";

/** Largest vocabulary or tokenizer file read (tokenizer.json of big vocabularies is ~10 MB). */
export const MAX_TOKENIZER_FILE_BYTES = 100 * 1024 * 1024;

function oneLine(msg: string): string {
  return msg.replace(/\s*\n\s*/g, " ");
}

function inside(root: string, path: string): boolean {
  const r = relative(root, path);
  return r === "" || (!r.startsWith("..") && !isAbsolute(r));
}

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
  const roots = [realDir];
  if (dirname(realDir).endsWith("snapshots")) {
    try {
      roots.push(await Deno.realPath(join(dirname(dirname(realDir)), "blobs")));
    } catch {
      // not the hub cache
    }
  }
  if (!roots.some((r) => inside(r, real))) {
    throw new DataError(`${shown}: resolves to ${real}, outside ${realDir}; refused`);
  }
  let f: Deno.FsFile;
  try {
    f = await Deno.open(real, { read: true });
  } catch (e) {
    throw new DataError(`${shown}: cannot open (${oneLine((e as Error).message)})`);
  }
  try {
    const st = await f.stat();
    if (!st.isFile) throw new DataError(`${shown}: not a regular file`);
    if (st.size > cap) {
      throw new DataError(`${shown}: ${st.size} bytes, more than the ${cap} accepted`);
    }
    const bytes = new Uint8Array(st.size);
    let off = 0;
    while (off < bytes.length) {
      const n = await f.read(bytes.subarray(off));
      if (n === null) break;
      off += n;
    }
    return bytes.subarray(0, off);
  } finally {
    f.close();
  }
}
