/**
 * The `--launcher procs` mode: a node runs each of its local ranks as its own
 * OS process, as torchrun does, instead of as Workers of one process. The
 * program re-runs itself (`Deno.mainModule` with its arguments, minus the
 * distributed flags) once per local rank under torchrun's environment
 * variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
 * `MASTER_ADDR`, `MASTER_PORT`), so every child is a one-rank process that
 * meets the others through the rendezvous store and talks over TCP.
 *
 * Each child owns its device and its runtime: backends that serialise the
 * devices of one process (Dawn on GL) run one device per process, and Deno's
 * WebGPU poll loop no longer stalls its neighbours.
 * @module
 */

import { type DistConfig, HOST_SHM_VARIABLE, randomRunId, splitDistArgs } from "./env.ts";
import { SignalCopies } from "./signal_copies.ts";
import { freeLocalPort, removeMappingFilesOf } from "./tcp.ts";
import { waitForAllOrGrace } from "./wait.ts";

/** What {@link runRankProcesses} needs beyond the layout. */
export interface ProcsOptions {
  /** The program each child runs (default `Deno.mainModule`). */
  program?: string;
  /** Its arguments; distributed flags are dropped (default `Deno.args`). */
  args?: string[];
  /** Extra environment for the children. */
  env?: Record<string, string>;
}

/**
 * The variable that tells a rank process which launcher started it (its pid);
 * the rank exits when that launcher is gone (see {@link watchLauncher}).
 */
export const LAUNCHER_PID_ENV = "WEBGPU_MEGATRON_LAUNCHER_PID";

/**
 * How long the other ranks get, after one failed on its own, to fail with their
 * own messages before they are killed. Not after a signal the launcher passed
 * on: then they may be saving a checkpoint, and get the dist timeout.
 */
export const AFTER_FAILURE_GRACE_MS = 5000;

/** Signals the launcher passes on to its ranks (a second one kills them). */
export const FORWARDED_SIGNALS: readonly Deno.Signal[] = ["SIGTERM", "SIGINT", "SIGHUP"];

/**
 * `deno run` of `program` in a rank process: this process's permissions
 * ({@link grantedPermissionFlags}) and WebGPU, the program by URL.
 */
export function rankRunArgs(program: string | URL): string[] {
  const url = String(program);
  return ["run", ...grantedPermissionFlags(url), "--unstable-webgpu", url];
}

const PERMISSION_NAMES = ["read", "write", "net", "env", "run", "ffi", "sys", "import"] as const;

/** The `sys` kinds a rank process may be granted one by one (see {@link grantedPermissionFlags}). */
const SYS_KINDS = ["hostname", "systemMemoryInfo"] as const;

/**
 * The `--allow-*` flags of the permissions this process holds unscoped (what `-A` or a permission
 * set such as deno.json's `train` gives), so a rank process gets what its launcher has and no
 * more. A permission granted only for some paths or hosts is left out (the rank is then refused
 * it, its stdin a pipe: no prompt, and says which), but for two: the host's name and memory
 * (`--allow-sys=hostname,systemMemoryInfo`, as deno.json's `train` grants them), and a `program`
 * the child runs from an http(s) URL gets `--allow-import=HOST` for its own host where this
 * process may import from it (a library imported by URL under `--allow-import=HOST`).
 */
export function grantedPermissionFlags(program?: string | URL): string[] {
  const flags = PERMISSION_NAMES.filter((name) =>
    Deno.permissions.querySync({ name } as Deno.PermissionDescriptor).state === "granted"
  ).map((name) => `--allow-${name}`);
  // The system facts a permission set grants one by one (deno.json's train: the host's name and
  // memory, which a rank reads to name itself and to check its model against the memory).
  if (!flags.includes("--allow-sys")) {
    const kinds = SYS_KINDS.filter((kind) =>
      Deno.permissions.querySync({ name: "sys", kind }).state === "granted"
    );
    if (kinds.length) flags.push(`--allow-sys=${kinds.join(",")}`);
  }
  const url = program === undefined ? null : URL.parse(program);
  if (
    url && (url.protocol === "http:" || url.protocol === "https:") &&
    !flags.includes("--allow-import") &&
    Deno.permissions.querySync({ name: "import", host: url.host }).state === "granted"
  ) flags.push(`--allow-import=${url.host}`);
  return flags;
}

/**
 * Starts one process per local rank of `cfg` and waits for them. When one
 * fails, the others get {@link AFTER_FAILURE_GRACE_MS} to fail on their own
 * (they notice the missing peer), or the dist timeout plus 5 s after a signal
 * passed on to them, then are killed. A rank killed by a signal this launcher
 * did not send is named (`rank 3 (pid 4242) was killed by SIGKILL`) and counts
 * as exit code 1. Returns the first non-zero exit code, or 0.
 *
 * Lifetime: each rank runs in its own process group (its own session), so a
 * terminal's Ctrl-C reaches it once, through the launcher. SIGTERM, SIGINT and
 * SIGHUP sent to the launcher are passed on to every rank's group (a rank may
 * then finish its step and save); a second such signal kills them (SIGKILL),
 * but not a copy of the first (`deno task` passes a terminal's Ctrl-C on: see
 * collectives/signal_copies.ts).
 * If the launcher itself dies (even by SIGKILL), each rank notices (its stdin,
 * a pipe from the launcher, reaches end of file; its parent pid changes) and
 * exits: see {@link watchLauncher}.
 *
 * Identity: a one-node job without a run id gets a random one, passed to the
 * ranks as `TORCHELASTIC_RUN_ID`, so ranks of another job started on the same
 * port are refused at rendezvous; without a port asked for it also gets a free
 * one, so two such jobs run at once.
 */
export async function runRankProcesses(cfg: DistConfig, opts: ProcsOptions = {}): Promise<number> {
  const program = opts.program ?? Deno.mainModule;
  const { rest } = splitDistArgs(opts.args ?? Deno.args);
  const devices = cfg.devices ? ["--devices", cfg.devices] : [];
  const oneNode = cfg.world === cfg.localWorld;
  const runId = cfg.runId ?? (oneNode ? randomRunId() : undefined);
  // One node and no port asked for: a free one, as torchrun --standalone picks (two jobs at once).
  const port = oneNode && !cfg.portAsked ? freeLocalPort() : cfg.masterPort;
  const children = Array.from(
    { length: cfg.localWorld },
    (_, i) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          ...rankRunArgs(program),
          ...rest,
          ...devices,
        ],
        env: {
          ...opts.env,
          RANK: String(cfg.rankBase + i),
          WORLD_SIZE: String(cfg.world),
          LOCAL_RANK: String(cfg.localRankBase + i),
          LOCAL_WORLD_SIZE: String(cfg.localWorld),
          MASTER_ADDR: cfg.masterAddr,
          MASTER_PORT: String(port),
          DIST_TIMEOUT: `${cfg.distTimeoutMs}ms`,
          ...(cfg.hostShm === undefined ? {} : { [HOST_SHM_VARIABLE]: cfg.hostShm ? "on" : "off" }),
          TORCHELASTIC_RUN_ID: runId ?? "none",
          TORCHELASTIC_USE_AGENT_STORE: "False",
          [LAUNCHER_PID_ENV]: String(Deno.pid),
        },
        // The rank's end of a pipe that closes when this process dies, however it dies.
        stdin: "piped",
        // A process group (and session) of its own: signalled as one, by this launcher only.
        detached: true,
      }).spawn(),
  );
  const codes: (number | null)[] = children.map(() => null);
  /** Signals every rank still running, its whole process group. */
  const signalRanks = (sig: Deno.Signal) => {
    children.forEach((c, i) => {
      if (codes[i] !== null) return;
      try {
        Deno.kill(-c.pid, sig);
      } catch {
        try {
          c.kill(sig);
        } catch { /* already gone */ }
      }
    });
  };
  let signals = 0;
  const copies = new SignalCopies();
  const listeners = FORWARDED_SIGNALS.map((sig) => {
    const fn = () => {
      if (copies.isCopy()) return;
      signals++;
      const ranks = codes.flatMap((c, i) => c === null ? [cfg.rankBase + i] : []).join(", ");
      if (signals === 1) {
        console.error(
          `launcher: ${sig}: passed on to rank${ranks.includes(",") ? "s" : ""} ${ranks}; ` +
            `send it again to kill them`,
        );
        signalRanks(sig);
      } else {
        console.error(
          `launcher: ${sig} again: killing rank${ranks.includes(",") ? "s" : ""} ${ranks}`,
        );
        signalRanks("SIGKILL");
      }
    };
    Deno.addSignalListener(sig, fn);
    return { sig, fn };
  });
  let firstFailure = 0;
  let failedAt = 0;
  let killing = false;
  const exited = children.map((c, i) =>
    c.status.then((s) => {
      codes[i] = s.code;
      let code = s.code;
      if (s.signal && signals === 0 && !killing) {
        // Killed from outside (the OOM killer, kill -9): the rank itself could not say so.
        console.error(`rank ${cfg.rankBase + i} (pid ${c.pid}) was killed by ${s.signal}`);
        code = 1;
      }
      if (code !== 0 && !firstFailure) {
        firstFailure = code;
        failedAt = performance.now();
      }
    })
  );
  try {
    const timeoutGrace = cfg.distTimeoutMs + 5000;
    const grace = () => signals > 0 ? timeoutGrace : Math.min(AFTER_FAILURE_GRACE_MS, timeoutGrace);
    await waitForAllOrGrace(
      () => codes.every((c) => c !== null),
      () => Promise.race(exited.filter((_, i) => codes[i] === null)),
      () => failedAt,
      grace,
    );
    codes.forEach((c, i) => {
      if (c !== null) return;
      console.error(
        `rank ${cfg.rankBase + i}: still running ${grace()} ms after a failure; killed`,
      );
    });
    killing = true;
    signalRanks("SIGKILL");
    await Promise.all(exited);
  } finally {
    for (const { sig, fn } of listeners) Deno.removeSignalListener(sig, fn);
    for (const c of children) {
      try {
        await c.stdin.close();
      } catch { /* closed */ }
    }
    // A rank killed while a peer had not yet mapped its link's file left the file's name.
    if (codes.every((c) => c !== null)) await removeMappingFilesOf(children.map((c) => c.pid));
  }
  return firstFailure;
}

/**
 * In a rank process started by a launcher, watches that launcher and calls
 * `onGone` (once) when it is gone: for this module's launcher
 * ({@link LAUNCHER_PID_ENV} set), when stdin (a pipe from it) reaches end of
 * file or the parent pid changes; under torchrun's agent
 * (`TORCHELASTIC_RESTART_COUNT` set), when the parent pid changes. Does
 * nothing in other processes. Returns a function that stops watching.
 */
export function watchLauncher(
  onGone: (why: string) => void,
  env: Record<string, string | undefined> = Deno.env.toObject(),
  pollMs = 200,
): () => void {
  const ours = env[LAUNCHER_PID_ENV];
  const torchrun = env.TORCHELASTIC_RESTART_COUNT !== undefined;
  if (!ours && !torchrun) return () => {};
  const parent = ours ? Number(ours) : Deno.ppid;
  const who = ours ? `launcher (pid ${parent})` : `torchrun agent (pid ${parent})`;
  let done = false;
  const gone = (why: string) => {
    if (done) return;
    done = true;
    clearInterval(timer);
    onGone(`the ${who} is gone (${why})`);
  };
  const timer = setInterval(() => {
    if (Deno.ppid !== parent) gone(`this process's parent is now pid ${Deno.ppid}`);
  }, pollMs);
  Deno.unrefTimer(timer);
  if (ours) {
    (async () => {
      const buf = new Uint8Array(256);
      try {
        while (!done) {
          if (await Deno.stdin.read(buf) === null) break;
        }
      } catch { /* closed: same meaning */ }
      gone("its pipe closed");
    })();
  }
  return () => {
    done = true;
    clearInterval(timer);
  };
}
