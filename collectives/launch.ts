/**
 * The launcher: a process runs one Web Worker per local rank, each with its own
 * device selection and a {@link ProcessGroup} over the whole world. Node 0's
 * process hosts the rendezvous store when ranks span processes. If any rank
 * fails, the others are told (shared abort word, TCP abort frames, or closed
 * sockets when a process exits) and the process exits non-zero.
 *
 * A worker module exports `default` (or `main`): `async (ctx: WorkerContext) => unknown`.
 * It should destroy its GPU device before returning: terminating Workers that
 * hold devices and exiting at once can corrupt the heap, so {@link launch}
 * terminates them and waits a moment before exiting.
 * @module
 */

import { Arena } from "./arena.ts";
import { assignDevices, type DeviceAssignment, listHostGpus } from "./devices.ts";
import { type DistConfig, DistConfigError, nodeRankCount } from "./env.ts";
import type { Communicator, ProcessGroup, ShmAlgorithm } from "./group.ts";
import { StoreServer } from "./store.ts";
import { exitAtOnce } from "./exit.ts";
import { runRankProcesses, watchLauncher } from "./procs.ts";
import { waitForAllOrGrace } from "./wait.ts";

/** What each Worker gets. */
export interface WorkerContext {
  /** Global rank. */
  rank: number;
  /** Rank on this host (the GPU index it selects). */
  localRank: number;
  /** Ranks that run as Workers of this process, this one included. */
  ranksInProcess: number;
  /** Total ranks. */
  world: number;
  /** Nodes in the job, where the launch says (`DistConfig.nodes`). */
  nodes?: number;
  /** The group of all ranks. */
  group: ProcessGroup;
  /** The transport context (for {@link ProcessGroup.newGroup} and friends). */
  comm: Communicator;
  /** Which device this rank should open (already applied to DRI_PRIME when set). */
  device: DeviceAssignment;
  /** Program arguments (distributed flags removed). */
  args: string[];
  /**
   * The launcher's stop word ({@link RunOptions.stopWord}), where it gave one:
   * read with `Atomics.load`, it is read at once however busy this Worker's
   * event loop is, where a message waits for it.
   */
  stopWord?: Int32Array;
  /**
   * Tell the launcher this rank has opened its GPU adapter, so the next Worker
   * may start with its own device selection in the environment. Called
   * automatically when the worker function returns.
   */
  deviceAcquired(): void;
}

/** Initial message to a Worker (internal). */
export interface WorkerInit {
  /** Global rank. */
  rank: number;
  /** Local rank. */
  localRank: number;
  /** World size. */
  world: number;
  /** Nodes in the job, where known. */
  nodes?: number;
  /** Global ranks in this process. */
  localRanks: number[];
  /** Shared arena memory. */
  memory: WebAssembly.Memory;
  /** Store address when ranks span processes. */
  store?: { hostname: string; port: number };
  /** Timeout in ms. */
  timeoutMs: number;
  /** The job's run id (identity at rendezvous), if any. */
  runId?: string;
  /** Algorithm of all-shared-memory groups (default direct). */
  shmAlgorithm?: ShmAlgorithm;
  /** See `CommunicatorOptions.hostShm` (collectives/group.ts). */
  hostShm?: boolean;
  /** Device assignment. */
  device: DeviceAssignment;
  /** Worker module URL. */
  moduleUrl: string;
  /** Program args. */
  args: string[];
  /** See {@link RunOptions.stopWord}. */
  stopWord?: Int32Array;
}

/** How a launched rank ended. */
export interface RankOutcome {
  /** Global rank. */
  rank: number;
  /** True when the worker function returned. */
  ok: boolean;
  /** The function's return value (structured-cloned), when ok. */
  result?: unknown;
  /** The error message, when not ok. */
  error?: string;
  /** The error's class name (`Error.name`, e.g. "UsageError"), when not ok. */
  errorName?: string;
  /**
   * The rank failed before its worker function ran (loading the module,
   * rendezvous, connecting to its peers), so the function could not report it.
   */
  beforeRun?: boolean;
  /** The worker function printed the error itself ({@link markReported}). */
  reported?: boolean;
}

/** Result of {@link runWorkers}. */
export interface RunResult {
  /** True when every rank succeeded. */
  ok: boolean;
  /** Per local rank outcome, in rank order. */
  ranks: RankOutcome[];
  /** The rank that failed first, whose failure the others' follow from; none when ok. */
  firstFailed?: RankOutcome;
}

/**
 * How long to wait for finished Workers to release their devices and close
 * before terminating them (a loaded machine can take seconds to tear down).
 */
const CLOSE_WAIT_MS = 15000;

/** Options beyond the {@link DistConfig}. */
export interface RunOptions {
  /**
   * Log failures to stderr as they happen (default true). With false the
   * worker function reports its own; a failure before any ran (a rendezvous
   * that times out, a store out of reach), which none could report, is printed
   * as one `error: …` line, as the CLI's own errors are: by the process that
   * hosts the node's first local rank only (every rank of the node meets it
   * alike; its other rank processes print it under `--debug` in `args`).
   */
  log?: boolean;
  /**
   * Connect even the Workers of this process over TCP (loopback) instead of
   * shared memory: for testing and benchmarking the TCP transport.
   */
  forceTcp?: boolean;
  /** Host GPUs (default: listed from sysfs); tests pass their own. */
  gpus?: ReturnType<typeof listHostGpus>;
  /** Algorithm of all-shared-memory groups (default "direct"; "ring" for testing and comparison). */
  shmAlgorithm?: ShmAlgorithm;
  /**
   * Whether TCP links between ranks on this host carry large payloads through
   * shared memory (`CommunicatorOptions.hostShm` in collectives/group.ts).
   * Default: the config's `hostShm` (on unless `--host-shm off`), except with
   * `forceTcp`, which tests the socket path unless this is set.
   */
  hostShm?: boolean;
  /**
   * Whether this process was asked to stop (a signal its main thread passed on
   * to the ranks, which may now be saving a checkpoint). After a rank fails the
   * others get {@link WORKER_AFTER_FAILURE_GRACE_MS} (at most the dist timeout
   * plus 5 s) to fail on their own before they are terminated; once stopping,
   * the dist timeout plus 5 s, as under the procs launcher.
   */
  stopping?: () => boolean;
  /**
   * A word of shared memory the caller sets (a signal's number) when the ranks
   * should stop, handed to every Worker as {@link WorkerContext.stopWord}.
   */
  stopWord?: Int32Array;
}

/**
 * How long the other Workers get, after one failed on its own, to notice and
 * fail with their own messages before they are terminated. Longer than the
 * procs launcher's (`AFTER_FAILURE_GRACE_MS` in collectives/procs.ts): a rank notices a failure
 * at its next collective, which on a CPU adapter can be a whole step or a
 * kernel compile away (tens of seconds), and terminating a Worker inside a GPU
 * call can crash the process at exit, where a rank process is simply killed.
 */
export const WORKER_AFTER_FAILURE_GRACE_MS = 60_000;

type Msg =
  | { type: "closing" }
  | { type: "acquired" }
  | { type: "done"; result: unknown }
  | { type: "error"; message: string; name?: string; beforeRun: boolean; reported: boolean };

const REPORTED = Symbol.for("webgpu-megatron.rank-error-reported");

/**
 * Marks `e`, an error a worker function printed itself before throwing it, so
 * that the launcher's log (see {@link RunOptions.log}) does not print it again.
 */
export function markReported(e: unknown): void {
  if (e !== null && typeof e === "object") (e as Record<symbol, boolean>)[REPORTED] = true;
}

/** Whether {@link markReported} marked `e`. */
export function wasReported(e: unknown): boolean {
  return e !== null && typeof e === "object" && (e as Record<symbol, boolean>)[REPORTED] === true;
}

/** What an uncaught Worker error says: its message, else its error, else where it came from. */
function describeWorkerError(e: ErrorEvent): string {
  if (e.message) return e.message;
  const err = e.error as Error | undefined;
  if (err) return err.stack || err.name || String(err);
  return `uncaught error in the Worker without a message` +
    (e.filename ? ` (${e.filename}:${e.lineno}:${e.colno})` : "");
}

/**
 * Runs this process's ranks as Workers of `moduleUrl` and resolves when all have
 * finished (or, after a failure, when the rest have failed or a grace period of
 * the dist timeout has passed; stragglers are terminated). Does not exit.
 * `moduleUrl` is an absolute URL (a relative string is refused: a Worker would
 * resolve it against this module).
 */
export async function runWorkers(
  cfg: DistConfig,
  moduleUrl: string | URL,
  args: string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  if (typeof moduleUrl === "string" && !URL.canParse(moduleUrl)) {
    // A Worker would resolve it against this library's module, not the caller's.
    throw new TypeError(
      `runWorkers: the worker module must be an absolute URL, got ${JSON.stringify(moduleUrl)}: ` +
        `pass new URL(${JSON.stringify(moduleUrl)}, import.meta.url)`,
    );
  }
  const log = opts.log ?? true;
  const devices = assignDevices(
    cfg.localWorld,
    cfg.localRankBase,
    cfg.devices,
    opts.gpus ?? listHostGpus(),
    nodeRankCount(cfg),
  );
  const remote = cfg.world > cfg.localWorld || (opts.forceTcp === true && cfg.world > 1);
  let server: StoreServer | null = null;
  if (remote && cfg.rankBase === 0) {
    server = StoreServer.listen(cfg.storeHost, cfg.masterPort, cfg.runId, (why) => {
      if (log) console.error(`rendezvous store: ${why}`);
    }, cfg.world);
  }
  const arena = Arena.create();
  const localRanks = Array.from({ length: cfg.localWorld }, (_, i) => cfg.rankBase + i);
  const outcomes: (RankOutcome | undefined)[] = new Array(cfg.localWorld);
  const workers: Worker[] = [];
  const closing: Promise<void>[] = [];
  let failedAt = 0;
  let firstError = "";
  let firstFailed: RankOutcome | undefined;
  let wakeMain: () => void = () => {};
  const mainWait = () => new Promise<void>((r) => (wakeMain = r));
  const finish = (i: number, o: RankOutcome) => {
    if (outcomes[i]) return;
    outcomes[i] = o;
    if (!o.ok) {
      const error = o.error ?? "";
      // A later failure that repeats the first (the same bad flag, "not started: rank 0
      // failed: …") follows from it and is not printed again; nor is what the rank printed.
      const repeats = failedAt > 0 && firstError !== "" && error.includes(firstError);
      if (log) {
        if (!o.reported && !repeats) console.error(`rank ${o.rank} failed: ${error}`);
      } // The first failure of the run only: later ones follow from it (not started, aborted).
      else if (o.beforeRun && !failedAt && (cfg.localRankBase === 0 || args.includes("--debug"))) {
        console.error(`error: ${error}`);
      }
      if (!failedAt) {
        firstError = error;
        firstFailed = o;
      }
      arena.abort(o.rank, `rank ${o.rank} failed: ${o.error}`);
      if (!failedAt) failedAt = performance.now();
    }
    wakeMain();
  };
  // Read only where a device is chosen through it: a job without needs no --allow-env.
  const choosesPrime = devices.some((d) => d.driPrime);
  const savedPrime = choosesPrime ? Deno.env.get("DRI_PRIME") : undefined;
  try {
    for (let i = 0; i < cfg.localWorld; i++) {
      const rank = cfg.rankBase + i;
      const device = devices[i];
      if (device.driPrime) Deno.env.set("DRI_PRIME", device.driPrime);
      const w = new Worker(new URL("./worker_entry.ts", import.meta.url), { type: "module" });
      workers.push(w);
      let acquired!: () => void;
      const acq = new Promise<void>((r) => (acquired = r));
      let closed!: () => void;
      closing.push(new Promise<void>((r) => (closed = r)));
      w.onmessage = (e: MessageEvent<Msg>) => {
        const m = e.data;
        if (m.type === "closing") return closed();
        if (m.type === "acquired") acquired();
        else if (m.type === "done") finish(i, { rank, ok: true, result: m.result });
        else {
          finish(i, {
            rank,
            ok: false,
            error: m.message,
            errorName: m.name,
            beforeRun: m.beforeRun,
            reported: m.reported,
          });
        }
        if (m.type !== "acquired") acquired();
      };
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        finish(i, { rank, ok: false, error: describeWorkerError(e) });
        acquired();
        closed();
      };
      const init: WorkerInit = {
        rank,
        localRank: cfg.localRankBase + i,
        world: cfg.world,
        nodes: cfg.nodes,
        localRanks: opts.forceTcp ? [rank] : localRanks,
        memory: arena.memory,
        store: remote ? { hostname: cfg.storeHost, port: cfg.masterPort } : undefined,
        timeoutMs: cfg.distTimeoutMs,
        runId: cfg.runId,
        shmAlgorithm: opts.shmAlgorithm,
        hostShm: opts.hostShm ?? (opts.forceTcp ? false : cfg.hostShm),
        device,
        moduleUrl: String(moduleUrl),
        args,
        stopWord: opts.stopWord,
      };
      w.postMessage(init);
      // Selecting a device through the environment needs the Workers to open
      // their adapters one at a time.
      if (device.driPrime) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([acq, new Promise((r) => timer = setTimeout(r, cfg.distTimeoutMs))]);
        clearTimeout(timer);
      }
    }
  } finally {
    if (choosesPrime) {
      if (savedPrime === undefined) Deno.env.delete("DRI_PRIME");
      else Deno.env.set("DRI_PRIME", savedPrime);
    }
  }
  const timeoutGrace = cfg.distTimeoutMs + 5000;
  const grace = () =>
    opts.stopping?.() ? timeoutGrace : Math.min(WORKER_AFTER_FAILURE_GRACE_MS, timeoutGrace);
  await waitForAllOrGrace(
    () => outcomes.filter((o) => o).length >= cfg.localWorld,
    mainWait,
    () => failedAt,
    grace,
  );
  const reported = outcomes.map((o) => o !== undefined);
  for (let i = 0; i < cfg.localWorld; i++) {
    if (!outcomes[i]) {
      outcomes[i] = {
        rank: cfg.rankBase + i,
        ok: false,
        error: `still running ${grace()} ms after another rank failed; terminated`,
      };
    }
  }
  // Workers close themselves after reporting (and after releasing their GPU
  // device): wait for that, bounded, before terminating. Terminating a Worker
  // while its device is being torn down can corrupt the heap (PLATFORM.md).
  // A Worker that never reported (hung, or busy past the grace) will not close.
  let closeTimer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(closing.filter((_, i) => reported[i])),
    new Promise((r) => (closeTimer = setTimeout(r, CLOSE_WAIT_MS))),
  ]);
  clearTimeout(closeTimer);
  await new Promise((r) => setTimeout(r, 100));
  for (const w of workers) w.terminate();
  server?.close();
  const ranks = outcomes as RankOutcome[];
  return { ok: ranks.every((o) => o.ok), ranks, firstFailed };
}

/**
 * The exit code of a job whose first failed rank failed with an error named
 * `name`: 2 for the user's input (`UsageError`), 141 for a closed stdout
 * (`BrokenPipe`, as a process killed by SIGPIPE), else 1.
 */
function exitCodeOf(name: string | undefined): number {
  return name === "UsageError" ? 2 : name === "BrokenPipe" ? 141 : 1;
}

/**
 * Runs this process's ranks (see {@link runWorkers}) and returns the job's exit
 * code: Workers are terminated, `settleMs` (default 200) passes so devices are
 * released, and the code is 0 when every rank succeeded, 2 when the job's
 * layout is refused (a {@link DistConfigError}: `--devices`, say), else as
 * {@link exitCodeOf} the first failed rank's error. With
 * `cfg.launcher` "procs", the ranks are instead child processes re-running this
 * program (see {@link runRankProcesses}), and the exit code is theirs. The
 * caller exits with it (the CLIs' `main` returns it): a program that imports a
 * CLI's `main` goes on after the job.
 *
 * A rank process started by a launcher (`--launcher procs`, torchrun) watches
 * it and exits (code 1) as soon as it is gone: ranks never outlive their
 * launcher (see {@link watchLauncher}).
 */
export async function launch(
  cfg: DistConfig,
  moduleUrl: string | URL,
  args: string[],
  opts: RunOptions & { settleMs?: number } = {},
): Promise<number> {
  let code = 1;
  const stopWatching = watchLauncher((why) => {
    const last = cfg.rankBase + cfg.localWorld - 1;
    const ranks = cfg.localWorld > 1 ? `ranks ${cfg.rankBase}-${last}` : `rank ${cfg.rankBase}`;
    console.error(`${ranks}: ${why}; exiting`);
    exitAtOnce(1);
  });
  try {
    if (cfg.launcher === "procs" && cfg.localWorld > 1) {
      // One OS process per local rank: this program again, under torchrun's variables.
      code = await runRankProcesses(cfg);
    } else {
      const res = await runWorkers(cfg, moduleUrl, args, opts);
      // As the command's own errors exit: 2 for the user's input, 141 for a closed stdout.
      code = res.ok ? 0 : exitCodeOf((res.firstFailed ?? res.ranks.find((r) => !r.ok))?.errorName);
    }
  } catch (e) {
    // A bad flag or launcher variable (--devices, say) is the user's to fix: exit 2, as usage errors do.
    if (e instanceof DistConfigError) {
      console.error(`error: ${e.message}`);
      code = 2;
    } else console.error(`error: ${(e as Error).message}`);
  }
  stopWatching();
  await new Promise((r) => setTimeout(r, opts.settleMs ?? 200));
  return code;
}
