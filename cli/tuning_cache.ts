/**
 * The on-disk {@link TuningStore} of the CLI: one JSON file of tuned matmul
 * tilings per user, keyed by adapter (default
 * `$XDG_CACHE_HOME/webgpu-megatron/matmul-tuning.json`, else under
 * `~/.cache`). A write takes an exclusive lock on `FILE.lock`, merges with what
 * the file holds and replaces it atomically, so ranks and runs that tune at once
 * lose nothing (without the lock, two read-merge-writes at once dropped one's
 * entries); the new file is flushed to disk before it replaces the old. A
 * file named with `--matmul-tuning-cache` that is not such a cache (another
 * file named by mistake) is refused, never replaced; the default cache, the
 * program's own, when damaged (cut short by a crash, edited by hand) is moved
 * aside with a warning and started anew, so that it cannot stop every run.
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

function emptyCache(): CacheFile {
  return { version: 1, adapters: {} };
}

/** Larger than any tuning cache (a few kB per adapter): such a file is not read. */
const MAX_CACHE_BYTES = 64 * 2 ** 20;

/** How a {@link FileTuningStore} treats a file that is not a tuning cache. */
export interface TuningStoreOptions {
  /**
   * The file is the program's own (the default cache): a damaged one is moved
   * aside to `FILE.damaged` and the cache starts empty, with a line to `warn`.
   * Otherwise (a file the user named) it is refused and left as it is.
   */
  own?: boolean;
  /** Receives the line about a damaged cache moved aside. */
  warn?: (line: string) => void;
}

/**
 * A tuning store in the JSON file at `path`: a missing file counts as empty; a
 * file that is not a tuning cache is refused ({@link UsageError}) on load and
 * on save, so it is never overwritten, unless it is the program's own
 * ({@link TuningStoreOptions.own}).
 */
export class FileTuningStore implements TuningStore {
  /** A store backed by `path` (created with its directory on first save). */
  constructor(readonly path: string, readonly opts: TuningStoreOptions = {}) {}

  #read(): CacheFile {
    let text: string;
    try {
      if (Deno.statSync(this.path).size > MAX_CACHE_BYTES) {
        return this.#damaged(`larger than ${MAX_CACHE_BYTES} bytes`);
      }
      text = Deno.readTextFileSync(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return emptyCache();
      throw new UsageError(`matmul tuning cache ${this.path}: ${(e as Error).message}`);
    }
    let f: Partial<CacheFile> | null = null;
    try {
      f = JSON.parse(text);
    } catch { /* not JSON: damaged */ }
    if (f?.version === 1 && typeof f.adapters === "object" && f.adapters) return f as CacheFile;
    return this.#damaged(text.length === 0 ? "empty" : "not a tuning cache");
  }

  /**
   * A file that is not a tuning cache: refused, or, for the program's own,
   * moved aside and read as an empty cache.
   */
  #damaged(why: string): CacheFile {
    if (!this.opts.own) {
      throw new UsageError(
        `${this.path} is not a matmul tuning cache (${why}; this project writes JSON with ` +
          `"version": 1 and "adapters"), so it is left as it is: name another file with ` +
          `--matmul-tuning-cache, or none for no cache, or remove it`,
      );
    }
    const aside = `${this.path}.damaged`;
    try {
      Deno.renameSync(this.path, aside);
    } catch (e) {
      // Another rank or run moved it first; anything else leaves it where it is.
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new UsageError(
          `matmul tuning cache ${this.path}: ${why}, and ${(e as Error).message}`,
        );
      }
      return emptyCache();
    }
    this.opts.warn?.(
      `the matmul tuning cache ${this.path} was damaged (${why}): moved aside to ${aside}; ` +
        "tuned choices are saved to a new one",
    );
    return emptyCache();
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
      // Readers never take the lock: they see the old file or the new one, whole; the new
      // one is on disk before it replaces the old (a crash leaves one or the other).
      const tmp = `${this.path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
      try {
        using file = Deno.openSync(tmp, { write: true, createNew: true });
        const bytes = new TextEncoder().encode(JSON.stringify(f, null, 1) + "\n");
        for (let at = 0; at < bytes.length;) at += file.writeSync(bytes.subarray(at));
        file.syncDataSync();
        Deno.renameSync(tmp, this.path);
      } catch (e) {
        try {
          Deno.removeSync(tmp);
        } catch { /* not made, or renamed */ }
        throw e;
      }
    } finally {
      lock.close();
    }
  }
}
