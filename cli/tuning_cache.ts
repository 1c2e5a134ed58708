/**
 * The on-disk {@link TuningStore} of the CLI: one JSON file of tuned matmul
 * tilings per user, keyed by adapter (default
 * `$XDG_CACHE_HOME/webgpu-megatron/matmul-tuning.json`, else under
 * `~/.cache`). A write takes an exclusive lock on `FILE.lock`, merges with what
 * the file holds and replaces it atomically, so ranks and runs that tune at once
 * lose nothing (without the lock, two read-merge-writes at once dropped one's
 * entries). A file there that is not such a cache (another file named by
 * mistake, or one edited by hand into something else) is refused, never
 * replaced.
 * @module
 */

import type { TuningStore, TuningTable } from "../core/matmul_tuner.ts";
import { UsageError } from "./flags.ts";

/** The default cache file, or null when neither XDG_CACHE_HOME nor HOME is set. */
export function defaultTuningCachePath(): string | null {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const home = Deno.env.get("HOME");
  const dir = xdg || (home ? `${home}/.cache` : null);
  return dir ? `${dir}/webgpu-megatron/matmul-tuning.json` : null;
}

type CacheFile = { version: 1; adapters: Record<string, TuningTable> };

/**
 * A tuning store in the JSON file at `path`: a missing file counts as empty; a
 * file that is not a tuning cache is refused ({@link UsageError}) on load and
 * on save, so it is never overwritten.
 */
export class FileTuningStore implements TuningStore {
  /** A store backed by `path` (created with its directory on first save). */
  constructor(readonly path: string) {}

  #read(): CacheFile {
    let text: string;
    try {
      text = Deno.readTextFileSync(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { version: 1, adapters: {} };
      throw new UsageError(`matmul tuning cache ${this.path}: ${(e as Error).message}`);
    }
    let f: Partial<CacheFile> | null = null;
    try {
      f = JSON.parse(text);
    } catch { /* not JSON: refused below */ }
    if (f?.version === 1 && typeof f.adapters === "object" && f.adapters) return f as CacheFile;
    throw new UsageError(
      `${this.path} is not a matmul tuning cache (this project writes JSON with "version": 1 ` +
        `and "adapters"), so it is left as it is: name another file with ` +
        `--matmul-tuning-cache, or none for no cache, or remove it`,
    );
  }

  /** What the file holds for `adapter`. */
  load(adapter: string): TuningTable {
    const t = this.#read().adapters[adapter];
    const out: TuningTable = {};
    for (const [k, v] of Object.entries(t ?? {})) if (typeof v === "string") out[k] = v;
    return out;
  }

  /** Merges `table` into the file's entry for `adapter`, under the file's lock. */
  save(adapter: string, table: TuningTable): void {
    const dir = this.path.slice(0, this.path.lastIndexOf("/"));
    if (dir) Deno.mkdirSync(dir, { recursive: true });
    // flock(2): exclusive between processes, and between Workers of one process
    // (each opens the lock file itself). Closing the file releases it.
    const lock = Deno.openSync(`${this.path}.lock`, { create: true, write: true });
    try {
      lock.lockSync(true);
      const f = this.#read();
      f.adapters[adapter] = { ...f.adapters[adapter], ...table };
      // Readers never take the lock: they see the old file or the new one, whole.
      const tmp = `${this.path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
      Deno.writeTextFileSync(tmp, JSON.stringify(f, null, 1) + "\n");
      Deno.renameSync(tmp, this.path);
    } finally {
      lock.close();
    }
  }
}
