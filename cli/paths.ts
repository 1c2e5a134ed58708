/**
 * Checks of the paths a command will write, made before any work starts: a
 * `--save` directory that is a file or read-only, a `--log-json` file in a
 * missing directory, an `--output` onto a file, are refused at once (as usage
 * errors naming the flag) instead of after hours of training. Each check makes
 * a real test write and leaves nothing behind but the directory it was asked to
 * provide.
 * @module
 */

import { basename, dirname, join } from "node:path";
import { oneLine } from "../core/files.ts";
import { UsageError } from "./flags.ts";

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new UsageError(`cannot inspect ${path}: ${reason(e)}`);
  }
}

/** The OS's reason, short ("Permission denied", "Read-only file system" …). */
function reason(e: unknown): string {
  const m = oneLine((e as Error)?.message ?? String(e));
  return m.replace(/\s*\(os error \d+\).*$/, "");
}

/**
 * Makes sure `dir`, named on the command line by `flag` (e.g. `--save`), is a
 * directory this process can write: creates it (and its parents) when missing,
 * then writes and removes a small test file. With `create: false` a missing
 * directory is not made: its nearest existing parent must be a writable
 * directory instead (so a failure later leaves nothing behind). Throws
 * {@link UsageError}.
 */
export async function ensureWritableDir(
  flag: string,
  dir: string,
  opts: { create?: boolean } = {},
): Promise<void> {
  const info = await statOrNull(dir);
  if (info && !info.isDirectory) {
    throw new UsageError(`${flag} ${dir} is a file, not a directory`);
  }
  let probeDir = dir;
  if (!info && opts.create === false) {
    let up = dir;
    let upInfo: Deno.FileInfo | null = null;
    while (!upInfo && dirname(up) !== up) {
      up = dirname(up);
      upInfo = await statOrNull(up);
    }
    if (upInfo && !upInfo.isDirectory) {
      throw new UsageError(`${flag} ${dir}: ${up} is a file, not a directory`);
    }
    probeDir = up;
  } else if (!info) {
    try {
      await Deno.mkdir(dir, { recursive: true });
    } catch (e) {
      throw new UsageError(`${flag} ${dir}: cannot create the directory (${reason(e)})`);
    }
  }
  const probe = `${probeDir}/.write-test-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeFile(probe, new Uint8Array(64), { createNew: true });
  } catch (e) {
    throw new UsageError(
      probeDir === dir
        ? `${flag} ${dir} is not writable (${reason(e)})`
        : `${flag} ${dir} cannot be created: ${probeDir} is not writable (${reason(e)})`,
    );
  } finally {
    await Deno.remove(probe).catch(() => {});
  }
}

/**
 * Makes sure the file `path`, named by `flag` (e.g. `--log-json`), can be
 * created or appended to: its directory exists and is writable, and it is not a
 * directory itself. Leaves the file as it was (a file it had to create for the
 * test is removed); an existing file that is no regular one (a named pipe) is
 * not opened. Throws {@link UsageError}.
 */
export async function checkWritableFile(flag: string, path: string): Promise<void> {
  const info = await statOrNull(path);
  if (info?.isDirectory) throw new UsageError(`${flag} ${path} is a directory, not a file`);
  // A named pipe (or a device) is written as it is: opening it to test would end its reader's
  // stream (closing a pipe's only writer is its end of file) and the run's open then block.
  if (info && !info.isFile) return;
  const dir = dirname(path);
  const dirInfo = await statOrNull(dir);
  if (!dirInfo) throw new UsageError(`${flag} ${path}: the directory ${dir} does not exist`);
  if (!dirInfo.isDirectory) throw new UsageError(`${flag} ${path}: ${dir} is not a directory`);
  try {
    const f = await Deno.open(path, { append: true, create: true });
    f.close();
  } catch (e) {
    throw new UsageError(`${flag} ${path} is not writable (${reason(e)})`);
  }
  if (!info) await Deno.remove(path).catch(() => {});
}

/** The real path of an existing `path` (symlinks resolved), or null. */
export async function realOrNull(path: string): Promise<string | null> {
  try {
    return await Deno.realPath(path);
  } catch {
    return null;
  }
}

/**
 * Where writing `path` lands: its real path when it exists, else its folder's
 * real path and its name (null when the folder does not resolve either).
 */
export async function writeTarget(path: string): Promise<string | null> {
  const real = await realOrNull(path);
  if (real !== null) return real;
  const dir = await realOrNull(dirname(path));
  return dir === null ? null : join(dir, basename(path));
}

/** Whether the paths `a` and `b` are one existing file (hard links included). */
export async function sameFile(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([a, b].map((p) => Deno.stat(p).catch(() => null)));
  if (!x || !y) return false;
  if (a === b) return true;
  return x.ino !== null && x.dev === y.dev && x.ino === y.ino;
}

/**
 * The outermost directory that creating `dir` (with its parents) would make,
 * or null when `dir` exists: what {@link removeEmptyDirs} takes away again.
 */
export async function firstMissingDir(dir: string): Promise<string | null> {
  let missing: string | null = null;
  for (let d = dir; !(await statOrNull(d)); d = dirname(d)) {
    missing = d;
    if (dirname(d) === d) break;
  }
  return missing;
}

/** Removes `dir` if it holds nothing but empty directories (a run's files are never removed). */
export async function removeEmptyDirs(dir: string): Promise<void> {
  const empty = async (d: string): Promise<boolean> => {
    for await (const e of Deno.readDir(d)) {
      if (!e.isDirectory || !(await empty(join(d, e.name)))) return false;
    }
    return true;
  };
  try {
    if (await empty(dir)) await Deno.remove(dir, { recursive: true });
  } catch {
    // Gone already, or not ours to read: leave it.
  }
}
