/**
 * Pinned-process placement (bench/scaling.ts, bench/gpt2_scale.ts, `deno task profile --launcher procs`):
 * one OS process per rank, each started through cli/launch.ts
 * (`--nnodes N --node-rank i --nproc-per-node 1`, rendezvous on a free loopback
 * port, collectives over TCP) and pinned to its own core with `taskset -c`
 * when `taskset` works here. On a CPU-only machine a simulated GPU (lavapipe or
 * llvmpipe, given one thread: `LP_NUM_THREADS=1` unless set) and its host
 * thread then share one core, as a GPU and its host thread would be one rank's
 * alone, and each process may use any backend (Dawn serialises the devices of
 * one process).
 *
 * The worker module prints its result on stdout as one tagged line,
 * `TAG {json}` ({@link printTaggedResult}); the host reads that line from each
 * rank ({@link runPinnedProcs}). Each rank's stderr is passed through as it
 * comes and its tail kept for the error when the rank fails.
 * @module
 */

import { listHostGpus } from "../collectives/devices.ts";
import { parseDuration, randomRunId } from "../collectives/env.ts";
import { rankRunArgs } from "../collectives/procs.ts";
import { freeLocalPort } from "../collectives/tcp.ts";
import { waitForAllOrGrace } from "../collectives/wait.ts";

/** Whether `taskset` can pin processes here (looked up once, with {@link allowedCores}' list). */
export function hasTaskset(): boolean {
  return tasksetAffinity() !== null;
}

/**
 * Parses a CPU list as taskset and /proc status files write it ("0-3,8,10-11")
 * into its cores, ascending; null when it is not one.
 */
export function parseCpuList(text: string): number[] | null {
  const cores = new Set<number>();
  for (const part of text.trim().split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) return null;
    const lo = Number(m[1]), hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) return null;
    for (let c = lo; c <= hi; c++) cores.add(c);
  }
  return cores.size ? [...cores].sort((a, b) => a - b) : null;
}

let affinity: number[] | null | undefined;

/** This process's affinity list from `taskset -cp` (looked up once), or null where taskset does not work. */
function tasksetAffinity(): number[] | null {
  if (affinity === undefined) {
    affinity = null;
    try {
      const o = new Deno.Command("taskset", { args: ["-cp", String(Deno.pid)], stderr: "null" })
        .outputSync();
      const list = new TextDecoder().decode(o.stdout).split(":").pop() ?? "";
      if (o.success) affinity = parseCpuList(list);
    } catch { /* no taskset here */ }
  }
  return affinity;
}

/**
 * The cores this process may run on (its affinity list, `taskset -cp`), so
 * that ranks are pinned inside it: under `taskset -c 4-7`, a Slurm or cgroup
 * cpuset, rank i takes the i-th allowed core, not core i. Falls back to
 * cores 0..n−1 (n = `navigator.hardwareConcurrency`) where taskset cannot say.
 */
export function allowedCores(): number[] {
  return tasksetAffinity() ?? Array.from({ length: navigator.hardwareConcurrency }, (_, i) => i);
}

/**
 * A warning when `ranks` pinned processes (from the `first`-th allowed core)
 * would share cores, else null: each simulated GPU would get less than a core
 * and the timings would not mean what they say.
 */
export function sharedCoresWarning(ranks: number, cores: number[], first = 0): string | null {
  if (first + ranks <= cores.length) return null;
  return `warning: ${ranks} rank${ranks > 1 ? "s" : ""}${
    first ? ` from allowed core #${first + 1}` : ""
  } but this process may use ${cores.length} core${cores.length > 1 ? "s" : ""} ` +
    `(${cores.join(",")}): ranks share cores, so each simulated GPU gets less than one`;
}

/** How `ranks` pinned processes run, for a table: "2 pinned processes, TCP". */
export function describePinnedProcs(ranks: number): string {
  const what = ranks === 1 ? "1 process" : `${ranks} processes`;
  if (!hasTaskset()) return `${what}${ranks > 1 ? ", TCP" : ""}, not pinned (no taskset)`;
  return ranks === 1 ? "1 pinned process" : `${ranks} pinned processes, TCP`;
}

/** Prints `value` on stdout as the tagged line {@link runPinnedProcs} reads. */
export function printTaggedResult(tag: string, value: unknown): void {
  console.log(`${tag} ${JSON.stringify(value)}`);
}

/** What {@link runPinnedProcs} runs. */
export interface PinnedProcsOptions {
  /** Ranks (processes). */
  ranks: number;
  /** The worker module (exports `default(ctx: WorkerContext)`), run by cli/launch.ts. */
  worker: URL;
  /** The worker's arguments (it should print its result line when asked to). */
  args: string[];
  /** The result line's tag: the worker prints `TAG {json}` on stdout. */
  tag: string;
  /**
   * Rank i runs on allowed core `(firstCore + i) % cores` ({@link allowedCores};
   * default 0).
   */
  firstCore?: number;
  /** `--dist-timeout` of the ranks (default "120s"). */
  distTimeout?: string;
  /** More `deno task launch` flags for every rank (e.g. `["--host-shm", "off"]`). */
  launchFlags?: string[];
}

/** Last `n` lines of `text`. */
function tail(text: string, n: number): string {
  const lines = text.trimEnd().split("\n");
  return (lines.length > n ? ["…", ...lines.slice(-n)] : lines).join("\n");
}

/** Copies `stream` to this process's stderr as it comes and resolves to the text. */
async function teeToStderr(stream: ReadableStream<Uint8Array>): Promise<string> {
  const dec = new TextDecoder();
  let text = "";
  for await (const chunk of stream) {
    await Deno.stderr.write(chunk);
    text += dec.decode(chunk, { stream: true });
    // Keep only the tail: the error needs the last lines.
    if (text.length > 1 << 20) text = text.slice(-(1 << 19));
  }
  return text + dec.decode();
}

/**
 * Runs the ranks of `opts.worker` as one pinned process each (see the module
 * doc) and returns each rank's parsed result line, in rank order. When a rank
 * fails, the others get the dist timeout plus 5 s to fail on their own (they
 * notice the missing peer), then are killed; the error names the rank that
 * failed first, its exit code and its output.
 */
export async function runPinnedProcs<T>(opts: PinnedProcsOptions): Promise<T[]> {
  const { ranks, tag } = opts;
  const port = freeLocalPort();
  const firstCore = opts.firstCore ?? 0;
  const pin = hasTaskset();
  const cores = allowedCores();
  if (pin) {
    const warning = sharedCoresWarning(ranks, cores, firstCore);
    if (warning) console.error(warning);
  }
  const distTimeout = opts.distTimeout ?? "120s";
  // URLs, not paths: the library may be imported over http, or from a folder whose name has to
  // be percent-encoded in a URL.
  const launcher = new URL("./launch.ts", import.meta.url).href;
  // On a host with several GPUs, process i drives GPU i.
  const gpus = listHostGpus().length;
  // Other runs may have taken the port between freeLocalPort and rendezvous: a run id keeps them apart.
  const runId = randomRunId();
  const coreOf = (i: number) => cores[(firstCore + i) % cores.length];
  const children = Array.from({ length: ranks }, (_, i) => {
    const deno = [
      Deno.execPath(),
      ...rankRunArgs(launcher),
      ...(ranks > 1
        ? ["--nnodes", String(ranks), "--node-rank", String(i), "--nproc-per-node", "1"]
        : []),
      "--master-addr",
      "127.0.0.1",
      "--master-port",
      String(port),
      "--rdzv-id",
      runId,
      "--dist-timeout",
      distTimeout,
      ...(gpus >= ranks ? ["--devices", String(i)] : []),
      ...(opts.launchFlags ?? []),
      opts.worker.href,
      ...opts.args,
    ];
    const argv = pin ? ["taskset", "-c", String(coreOf(i)), ...deno] : deno;
    // One core per simulated GPU on lavapipe/llvmpipe (ignored by real GPUs).
    const env: Record<string, string> = pin && !Deno.env.get("LP_NUM_THREADS")
      ? { LP_NUM_THREADS: "1" }
      : {};
    return new Deno.Command(argv[0], {
      args: argv.slice(1),
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  });
  const codes: (number | null)[] = children.map(() => null);
  const failures: number[] = [];
  let failedAt = 0;
  const outputs = children.map((c) =>
    Promise.all([new Response(c.stdout).text(), teeToStderr(c.stderr)])
  );
  const exited = children.map((c, i) =>
    c.status.then((s) => {
      codes[i] = s.code;
      if (s.code !== 0) {
        failures.push(i);
        failedAt ||= performance.now();
      }
    })
  );
  const grace = parseDuration(distTimeout) + 5000;
  await waitForAllOrGrace(
    () => codes.every((c) => c !== null),
    () => Promise.race(exited.filter((_, i) => codes[i] === null)),
    () => failedAt,
    grace,
  );
  const killed = codes.flatMap((c, i) => c === null ? [i] : []);
  const failed = [...failures];
  for (const i of killed) {
    try {
      children[i].kill("SIGKILL");
    } catch { /* already gone */ }
  }
  await Promise.all(exited);
  const texts = await Promise.all(outputs);
  const results = texts.map(([stdout]) => {
    const line = stdout.split("\n").find((l) => l.startsWith(`${tag} `));
    return line === undefined ? undefined : JSON.parse(line.slice(tag.length + 1)) as T;
  });
  // The rank that failed first, else one that exited 0 without its result line.
  const bad = failed[0] ?? results.findIndex((r) => r === undefined);
  if (bad >= 0) {
    const [stdout, stderr] = texts[bad];
    const how = codes[bad] !== 0
      ? `exited with code ${codes[bad]}`
      : `exited 0 without a "${tag}" line`;
    const others = [
      ...failed.slice(1).map((i) => `rank ${i} failed too (code ${codes[i]})`),
      ...killed.map((i) => `rank ${i} killed ${grace} ms after the failure`),
    ];
    throw new Error(
      `rank ${bad} of ${ranks} (${pin ? `core ${coreOf(bad)}` : "not pinned"}) ${how}` +
        (others.length ? `; ${others.join("; ")}` : "") +
        `\n--- rank ${bad} stdout ---\n${tail(stdout, 40) || "(empty)"}` +
        `\n--- rank ${bad} stderr ---\n${tail(stderr, 40) || "(empty)"}`,
    );
  }
  return results as T[];
}
