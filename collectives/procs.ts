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

import { type DistConfig, splitDistArgs } from "./env.ts";
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

/** A fresh random run id (16 hex digits) for a job that has none. */
export function randomRunId(): string {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * Starts one process per local rank of `cfg` and waits for them. When one
 * fails, the others get the dist timeout plus 5 s to fail on their own (they
 * notice the missing peer), then are killed. Returns the first non-zero exit
 * code, or 0.
 *
 * Identity: a one-node job without a run id gets a random one, passed to the
 * ranks as `TORCHELASTIC_RUN_ID`, so ranks of another job started on the same
 * port are refused at rendezvous.
 */
export async function runRankProcesses(cfg: DistConfig, opts: ProcsOptions = {}): Promise<number> {
  const program = opts.program ?? Deno.mainModule;
  const { rest } = splitDistArgs(opts.args ?? Deno.args);
  const devices = cfg.devices ? ["--devices", cfg.devices] : [];
  const runId = cfg.runId ?? (cfg.world === cfg.localWorld ? randomRunId() : undefined);
  const children = Array.from(
    { length: cfg.localWorld },
    (_, i) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-webgpu", program, ...rest, ...devices],
        env: {
          ...opts.env,
          RANK: String(cfg.rankBase + i),
          WORLD_SIZE: String(cfg.world),
          LOCAL_RANK: String(cfg.localRankBase + i),
          LOCAL_WORLD_SIZE: String(cfg.localWorld),
          MASTER_ADDR: cfg.masterAddr,
          MASTER_PORT: String(cfg.masterPort),
          DIST_TIMEOUT: `${cfg.distTimeoutMs}ms`,
          TORCHELASTIC_RUN_ID: runId ?? "none",
          TORCHELASTIC_USE_AGENT_STORE: "False",
        },
        stdin: "null",
      }).spawn(),
  );
  const codes: (number | null)[] = children.map(() => null);
  let firstFailure = 0;
  let failedAt = 0;
  const exited = children.map((c, i) =>
    c.status.then((s) => {
      codes[i] = s.code;
      if (s.code !== 0 && !firstFailure) {
        firstFailure = s.code;
        failedAt = performance.now();
      }
    })
  );
  const grace = cfg.distTimeoutMs + 5000;
  await waitForAllOrGrace(
    () => codes.every((c) => c !== null),
    () => Promise.race(exited.filter((_, i) => codes[i] === null)),
    () => failedAt,
    grace,
  );
  children.forEach((c, i) => {
    if (codes[i] !== null) return;
    console.error(`rank ${cfg.rankBase + i}: still running ${grace} ms after a failure; killed`);
    try {
      c.kill("SIGKILL");
    } catch { /* already gone */ }
  });
  await Promise.all(exited);
  return firstFailure;
}
