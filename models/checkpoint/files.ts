/**
 * Reading files that someone else may have written: a file named inside a model
 * directory must resolve (symlinks included) inside that directory, must be a
 * regular file (not `/dev/zero`, a FIFO or a directory), and small files (JSON,
 * text) are read only up to a size cap. Every failure is a one-line
 * {@link CheckpointError} naming the file.
 * @module
 */

import { isAbsolute, join, resolve } from "node:path";
import { allowedRoots, isInside, oneLine, readCappedFile } from "../../core/files.ts";
import { CheckpointError } from "./safetensors.ts";

/** Largest JSON or text file read from a model directory (config, index, checkpoint.json). */
export const MAX_SMALL_FILE_BYTES = 100 * 1024 * 1024;

/**
 * Resolves `name` (as written in a file such as an index's `weight_map`) inside
 * `dir`: refuses empty, absolute and `..` names, names whose real path (symlinks
 * resolved) leaves the directory, and anything that is not a regular file. Returns
 * the path to show in messages (`dir/name`) and the real path to read.
 */
export async function resolveInDir(
  dir: string,
  name: string,
  referrer?: string,
): Promise<{ shown: string; real: string; size: number }> {
  const from = referrer ? ` (named in ${referrer})` : "";
  // A bad name is reported against the file that holds it (or the directory).
  const holder = referrer ?? dir;
  if (typeof name !== "string" || name.length === 0 || name.includes("\0")) {
    throw new CheckpointError(`${holder}: invalid file name ${JSON.stringify(name)}`);
  }
  if (isAbsolute(name) || /^[a-zA-Z]:/.test(name) || name.startsWith("\\")) {
    throw new CheckpointError(
      `${holder}: file ${JSON.stringify(name)} is an absolute path; refused (files must lie ` +
        `inside ${dir})`,
    );
  }
  if (name.split(/[/\\]/).includes("..")) {
    throw new CheckpointError(
      `${holder}: file ${
        JSON.stringify(name)
      } contains ".."; refused (files must lie inside ${dir})`,
    );
  }
  const shown = join(dir, name);
  let realDir: string, real: string;
  try {
    realDir = await Deno.realPath(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CheckpointError(`${dir}: no such directory`);
    throw new CheckpointError(`${dir}: ${oneLine((e as Error).message)}`);
  }
  try {
    real = await Deno.realPath(resolve(realDir, name));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`${shown}: no such file${from}`);
    }
    throw new CheckpointError(`${shown}: ${oneLine((e as Error).message)}${from}`);
  }
  const roots = await allowedRoots(realDir);
  if (!roots.some((r) => isInside(r, real))) {
    throw new CheckpointError(
      `${shown}: resolves to ${real}, outside ${realDir}${from}; refused`,
    );
  }
  const st = await Deno.stat(real);
  if (!st.isFile) throw new CheckpointError(`${shown}: not a regular file${from}`);
  return { shown, real, size: st.size };
}

/**
 * Reads a small file (JSON, text) as bytes: a regular file of at most `cap` bytes
 * (default {@link MAX_SMALL_FILE_BYTES}). `shown` names it in messages.
 */
export async function readSmallFile(
  path: string,
  shown = path,
  cap = MAX_SMALL_FILE_BYTES,
): Promise<Uint8Array> {
  return await readCappedFile(path, shown, cap, (m) => new CheckpointError(m));
}

/**
 * Reads and parses a JSON file (see {@link readSmallFile}); anything but a JSON
 * object (invalid UTF-8, a syntax error, an array) is a CheckpointError naming it.
 */
export async function readJsonObject(
  path: string,
  shown = path,
): Promise<Record<string, unknown>> {
  const bytes = await readSmallFile(path, shown);
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new CheckpointError(`${shown}: not valid JSON (${oneLine((e as Error).message)})`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new CheckpointError(`${shown}: not a JSON object`);
  }
  return v as Record<string, unknown>;
}
