/**
 * Reading files someone else wrote (a model or tokenizer directory, a
 * checkpoint's small files): where such a file may really live, and reading
 * one whole up to a size cap. Each caller names its own error class, so every
 * failure is a one-line error of the caller's kind that names the file.
 * @module
 */

import { dirname, isAbsolute, join, relative } from "node:path";

/** `msg` on one line, trimmed (messages of JSON.parse and the OS may hold newlines). */
export function oneLine(msg: string): string {
  return msg.replace(/\s*\n\s*/g, " ").trim();
}

/** Reads into `buf` at the file's position until it is full or the file ends; returns the bytes read. */
export async function readUpTo(file: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let at = 0;
  while (at < buf.length) {
    const n = await file.read(buf.subarray(at));
    if (n === null) break;
    at += n;
  }
  return at;
}

/** Reads exactly `buf.length` bytes at the file's position; false when the file ends first. */
export async function readFully(file: Deno.FsFile, buf: Uint8Array): Promise<boolean> {
  return (await readUpTo(file, buf)) === buf.length;
}

/** Whether the real path `path` lies inside the real folder `root` (or is it). */
export function isInside(root: string, path: string): boolean {
  const r = relative(root, path);
  return r === "" || (!r.startsWith("..") && !isAbsolute(r));
}

/**
 * Where a file of a directory may really live: the directory itself (after
 * symlinks), plus, for a snapshot of the Hugging Face hub cache
 * (`…/models--org--name/snapshots/REV`, whose files are symlinks to
 * `…/models--org--name/blobs/HASH`), that repository's `blobs` folder.
 */
export async function allowedRoots(realDir: string): Promise<string[]> {
  const roots = [realDir];
  const snap = dirname(realDir);
  if (snap.endsWith("/snapshots") || snap.endsWith("\\snapshots")) {
    const blobs = join(dirname(snap), "blobs");
    try {
      if ((await Deno.stat(blobs)).isDirectory) roots.push(await Deno.realPath(blobs));
    } catch {
      // no blobs folder: not the hub cache
    }
  }
  return roots;
}

/**
 * The bytes of the file at `path`, which must be a regular file (not
 * `/dev/zero`, a FIFO or a directory) of at most `cap` bytes. Failures (no such
 * file, cannot open, not a regular file, too large) are `fail(message)`, each
 * message naming the file as `shown`.
 */
export async function readCappedFile(
  path: string,
  shown: string,
  cap: number,
  fail: (message: string) => Error,
): Promise<Uint8Array> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw fail(`${shown}: no such file`);
    throw fail(`${shown}: cannot open (${oneLine((e as Error).message)})`);
  }
  try {
    const st = await f.stat();
    if (!st.isFile) throw fail(`${shown}: not a regular file`);
    if (st.size > cap) throw fail(`${shown}: ${st.size} bytes, more than the ${cap} accepted`);
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
