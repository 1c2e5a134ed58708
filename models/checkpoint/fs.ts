/**
 * Durable file-system steps for crash-safe checkpoints: write-and-fsync, fsync of
 * a directory (so a rename is on disk), atomic replace via a temporary name.
 * @module
 */

import { dirname } from "node:path";

/** Writes `bytes` to `path` and fsyncs the file before returning. */
export async function writeFileDurable(path: string, bytes: Uint8Array): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    let off = 0;
    while (off < bytes.length) off += await f.write(bytes.subarray(off));
    await f.sync();
  } finally {
    f.close();
  }
}

/** Fsyncs a directory so that entries created or renamed in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(dir, { read: true });
  } catch {
    return; // platforms that cannot open directories: nothing more to do
  }
  try {
    await f.sync();
  } catch {
    // some file systems reject fsync on directories; the rename is still atomic
  } finally {
    f.close();
  }
}

/**
 * Replaces `path` atomically with `bytes` (temporary file, fsync, rename, fsync
 * of the dir); a write that fails (a full disk) removes its temporary file.
 */
export async function replaceFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  try {
    await writeFileDurable(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await syncDir(dirname(path));
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
