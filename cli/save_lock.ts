/**
 * One run at a time per checkpoint directory and per JSON log. Two runs saving
 * to the same `--save DIR` would overwrite each other's iterations and `latest`
 * without a word, and two writing one `--log-json FILE` would interleave and
 * tear its lines; so the process that hosts global rank 0 takes
 * `DIR/.save.lock`, and `FILE.lock` beside the log (its pid, host and start
 * time; created exclusively) for the run's life. Another run that finds the
 * file refuses to start, naming the holder, unless the holder is gone: a pid
 * on this host that no longer exists (a run killed with SIGKILL leaves its
 * file behind), or stops existing within {@link EXITING_HOLDER_WAIT_MS}, or is
 * this process's own pid or that of a process started after the lock was
 * written (a restarted container reuses pids) and the file's heartbeat has
 * stopped ({@link LOCK_STALE_MS}), whose file it takes over.
 * @module
 */

import { UsageError } from "./flags.ts";
import { hostName, processExists, processStartMs } from "./processes.ts";

/** The lock file's name inside the checkpoint directory. */
export const SAVE_LOCK_FILE = ".save.lock";

/** What a lock file holds. */
interface Holder {
  pid: number;
  host: string;
  started: string;
  /** The holder touches the file this often (ms); absent in locks of older versions. */
  heartbeatMs?: number;
}

/** How often a holder touches its lock file, so that a live one can be told from a dead one. */
export const LOCK_HEARTBEAT_MS = 5000;

/**
 * How long a lock file may go untouched before a holder that cannot be checked
 * by its pid counts as gone (its main thread can stall for a shader compile
 * of a minute on a slow CPU; see {@link holderGone}).
 */
export const LOCK_STALE_MS = 90_000;

/** The lock file of a `--log-json` log: beside it, its name and `.lock`. */
export function logLockPath(log: string): string {
  return `${log}.lock`;
}

/**
 * Takes `dir`'s save lock and returns its release (which removes the file if
 * it is still this process's; it also runs when the process exits). Throws
 * {@link UsageError} while another live run holds it.
 */
export function takeSaveLock(dir: string): Promise<() => void> {
  return takeRunLock(`${dir}/${SAVE_LOCK_FILE}`, `--save ${dir}`);
}

/**
 * Takes the lock of the `--log-json` log at `log` ({@link logLockPath}), as
 * {@link takeSaveLock} does; none for what is not a regular file (a named
 * pipe), which a run only writes to.
 */
export async function takeLogLock(log: string): Promise<() => void> {
  const info = await Deno.stat(log).catch(() => null);
  if (info && !info.isFile) return () => {};
  return takeRunLock(logLockPath(log), `--log-json ${log}`);
}

/** Takes the lock file at `path` for what `flag` (a flag and its value) names. */
async function takeRunLock(path: string, flag: string): Promise<() => void> {
  const me: Holder = {
    pid: Deno.pid,
    host: hostName() ?? "an unnamed host",
    started: new Date().toISOString(),
    heartbeatMs: LOCK_HEARTBEAT_MS,
  };
  const text = JSON.stringify(me) + "\n";
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await Deno.writeTextFile(path, text, { createNew: true });
      const beat = setInterval(() => {
        const now = new Date();
        try {
          Deno.utimeSync(path, now, now);
        } catch { /* gone or taken: release says which */ }
      }, LOCK_HEARTBEAT_MS);
      Deno.unrefTimer(beat);
      const done = () => {
        clearInterval(beat);
        release(path, text);
      };
      // The launcher ends the process with Deno.exit, past any finally: unload still runs.
      globalThis.addEventListener("unload", done);
      return done;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    // A file just created may not be written yet: read it again a moment later.
    const holder = await readHolder(path) ??
      await new Promise((r) => setTimeout(r, 200)).then(() => readHolder(path));
    if (holder && !await holderGone(holder, path)) {
      throw new UsageError(
        `${flag} is in use by another run (pid ${holder.pid} on ${holder.host}, since ` +
          `${holder.started}); wait for it or give another ${flag.split(" ")[0]} (if no such ` +
          `run exists, remove ${path})`,
      );
    }
    // Its holder is gone (or the file is unreadable): take it over, once.
    await Deno.remove(path).catch(() => {});
  }
  throw new UsageError(`${flag}: another run took ${path} at the same moment`);
}

async function readHolder(path: string): Promise<Holder | null> {
  try {
    const h = JSON.parse(await Deno.readTextFile(path));
    return typeof h?.pid === "number" && typeof h?.host === "string" ? h as Holder : null;
  } catch {
    return null;
  }
}

/**
 * How long a run waits for a live holder on this host to exit before refusing: a
 * launcher killed with SIGKILL leaves rank 0's process holding the lock until it
 * notices, within about a second (collectives/procs.ts `watchLauncher`), and a
 * restart at once should not be refused for it.
 */
export const EXITING_HOLDER_WAIT_MS = 2000;

/**
 * Whether holder `h` (of the lock at `path`) is gone: a process on this host
 * that no longer exists, or stops existing within {@link EXITING_HOLDER_WAIT_MS}.
 * Another host's holder, or one whose liveness cannot be checked (no host
 * name, no FFI), counts as alive. A pid that cannot be the holder's (this
 * process's own, or one whose process started after the lock was written) is
 * what a run restarted in a container sees: the same host name, its killed
 * predecessor's pid (often 1) again. It may also be a live run in another
 * container of that host name with the same pid, so then the lock's heartbeat
 * decides: gone once the file has gone {@link LOCK_STALE_MS} untouched, alive
 * as soon as it is touched again.
 */
async function holderGone(h: Holder, path: string): Promise<boolean> {
  const here = hostName();
  if (here === null || h.host !== here) return false;
  let notTheHolder = h.pid === Deno.pid;
  if (!notTheHolder) {
    const since = await processStartMs(h.pid);
    notTheHolder = since !== null && since > Date.parse(h.started) + PROCESS_START_SLACK_MS;
  }
  if (notTheHolder) return h.heartbeatMs === undefined || await heartbeatStopped(path);
  const until = performance.now() + EXITING_HOLDER_WAIT_MS;
  for (;;) {
    const exists = processExists(h.pid);
    if (exists === false) return true;
    if (exists === null || performance.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Waits until the lock file at `path` has gone {@link LOCK_STALE_MS} untouched
 * (true: its holder is gone) or is touched (false: a live holder beats), saying
 * once on stderr why it waits.
 */
async function heartbeatStopped(path: string): Promise<boolean> {
  const mtime = () => {
    try {
      return Deno.statSync(path).mtime?.getTime() ?? 0;
    } catch {
      return null; // removed meanwhile
    }
  };
  const last = mtime();
  if (last === null) return true;
  const left = () => LOCK_STALE_MS - (Date.now() - last);
  if (left() < 0) return true;
  console.error(
    `${path}: its pid is not a live run's here; waiting up to ${Math.ceil(left() / 1000)} s ` +
      "for its heartbeat to show whether another container of this host name still holds it",
  );
  while (left() >= 0) {
    await new Promise((r) => setTimeout(r, 500));
    const now = mtime();
    if (now === null) return true;
    if (now !== last) return false;
  }
  return true;
}

/** How much later than a lock's time its holder may seem to start (`ps` counts whole seconds). */
const PROCESS_START_SLACK_MS = 2000;

function release(path: string, text: string): void {
  try {
    if (Deno.readTextFileSync(path) === text) Deno.removeSync(path);
  } catch { /* already gone */ }
}
