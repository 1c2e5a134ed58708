/**
 * The weak-scaling experiment of the paper (its Table 1 / Figure 1) at the size
 * of this machine: the model grows with the number of ranks so that parameters
 * per rank stay about constant, heads divisible by TP, and per-rank work is
 * constant. Reports params, ranks, tokens/s, achieved GFLOP/s per rank, the
 * share of step time in communication, and the efficiency against 1 rank.
 *
 * `deno task bench:scaling --help` gives the usage and flags.
 *
 * `--overlap on` trains the multi-rank rows with `--overlap-tp-comm` (f's backward
 * all-reduce overlapped with the weight gradients); `both` runs each multi-rank
 * configuration with and without it, taking turns in every round. The comm share
 * of an overlapped row is the exposed communication (see `ScalingRun.overlap`).
 *
 * `--host-shm off` keeps the procs placement's payloads in the TCP sockets
 * (`deno task launch --host-shm off`) instead of the shared mappings that
 * processes on one host use by default (collectives/mapping.ts); `both` runs
 * each multi-rank configuration both ways, taking turns.
 *
 * In the procs placement the 1-rank baseline also runs on each other core
 * the ranks use ("vs slowest core"), and on all of them at once ("vs busy
 * cores": each core runs its own 1-rank job, so the baseline shares the
 * host's memory bandwidth and caches as the ranks do; a diagnostic, the
 * efficiency column stays the measure).
 *
 * The configurations take turns for R rounds (default 3) and each reports the
 * median step time; a last run per multi-rank configuration measures the
 * communication share, and how much of it the ranks spent waiting for a slower
 * rank to arrive at a collective rather than exchanging (per call, the least
 * time any rank took is the exchange itself).
 *
 * Placement `procs` (the default) runs one OS process per rank, each pinned to
 * its own core with `taskset` (the 1-rank baseline too), talking over TCP: on a
 * CPU-only machine a simulated GPU (one lavapipe or llvmpipe thread,
 * `LP_NUM_THREADS=1`) and its host thread then share one core, so 1 → 2 ranks
 * on 2 cores is an honest test, and each process can use any backend (the
 * default, Dawn, serialises devices that share a process). Placement `workers`
 * runs the ranks as Workers of one process over shared memory (Deno's WebGPU);
 * its threads cannot be pinned, so its 1-rank baseline borrows the second core.
 * @module
 */

import { localDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import { BACKENDS, DEFAULT_BACKEND, defaultBackendFor } from "../core/gpu.ts";
import { LLVMPIPE_WIDTH_ENV, llvmpipeWidthLabel, preferWideVectors } from "../core/simd.ts";
import { trainingFlops } from "../models/flops.ts";
import { type GptConfig, paddedVocabSize } from "../models/gpt.ts";
import { splitCommWaits } from "../models/parallel/hooks.ts";
import { SCALING_RESULT_TAG, type ScalingResult, type ScalingRun } from "./scaling_worker.ts";
import { allowedCores, hasTaskset, runPinnedProcs } from "../cli/pinned_procs.ts";
import { DEBUG_FLAG, handled } from "../cli/errors.ts";
import { type FlagSpec, parseCommandLine } from "../cli/flags.ts";
import { median } from "./stats.ts";

/** One configuration of the ladder. */
export interface ScalingConfig {
  /** Ranks (= tensor-parallel size). */
  ranks: number;
  /** Hidden size. */
  hidden: number;
  /** Attention heads. */
  heads: number;
  /** Layers. */
  layers: number;
}

/**
 * The ladders: parameters ≈ linear in ranks (12·L·h² grows 1.9×, 4×, 7.6×),
 * head sizes multiples of 4 so every rank runs the vectorised kernels.
 * `base` (the default) starts at hidden 256; `small` at 128, where per-rank
 * work is so small that fixed per-collective costs dominate.
 */
export const LADDERS: Readonly<Record<"base" | "small", readonly ScalingConfig[]>> = {
  base: [
    { ranks: 1, hidden: 256, heads: 8, layers: 4 },
    { ranks: 2, hidden: 352, heads: 8, layers: 4 },
    { ranks: 4, hidden: 512, heads: 8, layers: 4 },
    { ranks: 8, hidden: 704, heads: 8, layers: 4 },
  ],
  small: [
    { ranks: 1, hidden: 128, heads: 4, layers: 4 },
    { ranks: 2, hidden: 176, heads: 4, layers: 4 },
    { ranks: 4, hidden: 256, heads: 8, layers: 4 },
    { ranks: 8, hidden: 352, heads: 8, layers: 4 },
  ],
};

/** One row of the result table. */
export interface ScalingRow {
  /** The configuration. */
  config: ScalingConfig;
  /** Parameters of the full model. */
  params: number;
  /** Training tokens per second (all ranks together). */
  tokensPerS: number;
  /** Achieved GFLOP/s per rank. */
  gflopsPerRank: number;
  /** Share of step time inside collectives. */
  commShare: number;
  /**
   * Of `commShare`, the share of step time spent waiting for a slower rank to
   * arrive at a collective (`splitCommWaits`: per call, the least time any rank
   * took is the exchange itself); the rest is the exchanges.
   */
  commWaitShare: number;
  /** GFLOP/s per rank relative to the 1-rank run. */
  efficiency: number;
  /** Efficiency from the fastest round of each configuration (noise only adds time). */
  efficiencyBestRounds: number;
  /**
   * Efficiency against the 1-rank run on the slowest core the multi-rank run
   * uses (procs placement; equals `efficiency` when the cores are equally fast).
   */
  efficiencyVsSlowestCore?: number;
  /**
   * Efficiency against the 1-rank run while every core the multi-rank run
   * uses runs its own 1-rank job (procs placement): the baseline then shares
   * memory bandwidth and caches as the ranks do, which GPUs would not, so the
   * gap to it is the parallelisation's own (communication, narrower shards).
   * A diagnostic beside `efficiency`, which stays the measure.
   */
  efficiencyVsBusyCores?: number;
  /** Step time, ms: the median over the rounds. */
  msPerStep: number;
  /** Whether f's backward all-reduce was overlapped (`--overlap-tp-comm`). */
  overlap: boolean;
  /** Whether links between the rank processes carried payloads through shared memory (`--host-shm`). */
  hostShm: boolean;
  /** Mean step time of each round, ms. */
  runs: number[];
}

/** The model of configuration `c` at sequence length `seq` (its position table). */
function gptConfig(c: ScalingConfig, seq: number): GptConfig {
  return {
    vocabSize: 256,
    numLayers: c.layers,
    hiddenSize: c.hidden,
    numHeads: c.heads,
    maxPositions: seq,
    hiddenDropout: 0.1,
    attentionDropout: 0.1,
  };
}

function paramCount(c: ScalingConfig, seq: number): number {
  const h = c.hidden, L = c.layers;
  return L * (12 * h * h + 13 * h) + paddedVocabSize(256, c.ranks) * h + seq * h + 2 * h;
}

const WORKER = new URL("./scaling_worker.ts", import.meta.url);

/** How the ranks of one measurement run. */
export type Placement = "workers" | "procs";

/**
 * One OS process per rank, each pinned to its own core with `taskset` (the
 * 1-rank baseline too): a simulated GPU and its host thread share one core.
 * Ranks talk over TCP on loopback (see cli/pinned_procs.ts).
 */
function runProcs(
  ranks: number,
  run: ScalingRun,
  firstCore: number,
  hostShm: boolean,
): Promise<ScalingResult[]> {
  return runPinnedProcs<ScalingResult>({
    ranks,
    worker: WORKER,
    args: [JSON.stringify(run), "--print"],
    tag: SCALING_RESULT_TAG,
    firstCore,
    launchFlags: ["--host-shm", hostShm ? "on" : "off"],
  });
}

/** What the host gives: each core's speed alone, and while all are busy. */
export interface CoreCheck {
  /** The cores checked: the first n this process may use ({@link allowedCores}). */
  cores: number[];
  /** Milliseconds for a fixed integer loop on each core alone. */
  aloneMs: number[];
  /** Milliseconds for the same loop on those cores all at once. */
  concurrentMs: number[];
}

const SPIN = "let x = 0; const t = performance.now(); " +
  "for (let i = 0; i < 2e9; i++) x = (x + i) | 0; console.log(performance.now() - t, x);";

/**
 * Runs a fixed loop on each of `n` cores alone, then on all at once (pinned
 * with taskset): on a shared virtual machine the cores need not all be there,
 * and a rank on a slow core slows every step of its group.
 */
export async function checkCores(n: number): Promise<CoreCheck | null> {
  if (!hasTaskset()) return null;
  const spin = async (cores: number[]) =>
    await Promise.all(cores.map(async (c) => {
      const o = await new Deno.Command("taskset", {
        args: ["-c", String(c), Deno.execPath(), "eval", SPIN],
        stdout: "piped",
      }).output();
      return Number(new TextDecoder().decode(o.stdout).split(" ")[0]);
    }));
  const cores = allowedCores().slice(0, n);
  const aloneMs: number[] = [];
  for (const c of cores) aloneMs.push(...await spin([c]));
  return { cores, aloneMs, concurrentMs: await spin(cores) };
}

/** One line describing a {@link CoreCheck}. */
export function formatCoreCheck(c: CoreCheck): string {
  const fastest = Math.min(...c.aloneMs);
  const slow = Math.max(...c.aloneMs, ...c.concurrentMs) / fastest;
  const list = (xs: number[]) => xs.map((t) => t.toFixed(0)).join(" / ");
  return `cores check (fixed loop, ms): cores ${c.cores.join("/")} alone ` +
    `${list(c.aloneMs)}, all at once ${list(c.concurrentMs)}` +
    (slow > 1.15
      ? ` — a core runs at ${(100 / slow).toFixed(0)}% of the fastest: the host is not ` +
        `giving ${c.aloneMs.length} full cores, and multi-rank rows are understated`
      : "");
}

async function runWorkersOf(ranks: number, run: ScalingRun): Promise<ScalingResult[]> {
  const cfg = localDistConfig(ranks, 120000);
  const res = await runWorkers(cfg, WORKER, [JSON.stringify(run)], { gpus: [] });
  if (!res.ok) throw new Error(res.ranks.map((r) => r.error).filter(Boolean).join("; "));
  return res.ranks.map((r) => r.result as ScalingResult);
}

async function runOn(
  ranks: number,
  run: ScalingRun,
  placement: Placement,
  firstCore = 0,
  hostShm = true,
): Promise<ScalingResult & { commWaitMsPerStep: number }> {
  const rs = placement === "procs"
    ? await runProcs(ranks, run, firstCore, hostShm)
    : await runWorkersOf(ranks, run);
  return {
    msPerStep: Math.max(...rs.map((r) => r.msPerStep)),
    commMsPerStep: rs.reduce((s, r) => s + r.commMsPerStep, 0) / rs.length,
    commWaitMsPerStep: meanWaitMs(rs, run.steps),
    loss: rs[0].loss,
  };
}

/**
 * Mean milliseconds per step the ranks waited for a slower one at collectives
 * (0 where `splitCommWaits` cannot tell: no per-call times, or counts that differ).
 */
function meanWaitMs(rs: ScalingResult[], steps: number): number {
  const split = splitCommWaits(rs.map((r) => r.commCallMs ?? []));
  if (!split) return 0;
  return split.reduce((s, x) => s + x.waitMs, 0) / split.length / steps;
}

/** Runs the ladder up to `maxRanks` and returns the table rows. */
export async function runScaling(opts: {
  maxRanks: number;
  backend?: string;
  steps: number;
  warmup: number;
  batch?: number;
  seq?: number;
  placement?: Placement;
  /** Rounds over the configurations; each row reports its median (default 3). */
  repeats?: number;
  /** A named ladder (default "base") or explicit configurations. */
  ladder?: keyof typeof LADDERS | readonly ScalingConfig[];
  /**
   * Tensor-parallel comm/compute overlap of the multi-rank configurations:
   * off (default), on, or both (each multi-rank configuration twice, the
   * variants taking turns in every round).
   */
  overlap?: "off" | "on" | "both";
  /**
   * Payloads between the procs placement's rank processes through shared
   * memory: on (default, as `deno task launch`), off (sockets only), or both.
   */
  hostShm?: "off" | "on" | "both";
  /** Tune the matmul tilings in the warm-up (default true). */
  autotune?: boolean;
}): Promise<ScalingRow[]> {
  const placement = opts.placement ?? "procs";
  if (placement !== "procs" && placement !== "workers") {
    throw new Error(`unknown placement "${placement}": expected procs or workers`);
  }
  // One core per simulated GPU on lavapipe (ignored by real GPUs).
  if (!Deno.env.get("LP_NUM_THREADS")) Deno.env.set("LP_NUM_THREADS", "1");
  const batch = opts.batch ?? 16, seq = opts.seq ?? 64;
  const rows: ScalingRow[] = [];
  // Several ranks sharing a process need Deno's WebGPU (Dawn on GL serialises them).
  const backend = opts.backend ??
    (placement === "workers" ? defaultBackendFor(opts.maxRanks) : DEFAULT_BACKEND);
  const ladder = typeof opts.ladder === "object" ? opts.ladder : LADDERS[opts.ladder ?? "base"];
  if (!ladder) throw new Error(`unknown ladder "${opts.ladder}": expected base or small`);
  const overlapMode = opts.overlap ?? "off";
  if (!["off", "on", "both"].includes(overlapMode)) {
    throw new Error(`unknown overlap "${overlapMode}": expected off, on or both`);
  }
  const modes = overlapMode === "both" ? [false, true] : [overlapMode === "on"];
  const shmMode = opts.hostShm ?? "on";
  if (!["off", "on", "both"].includes(shmMode)) {
    throw new Error(`unknown host-shm "${shmMode}": expected on, off or both`);
  }
  const shms = shmMode === "both" ? [true, false] : [shmMode === "on"];
  type Variant = ScalingConfig & { overlap: boolean; hostShm: boolean };
  const configs: Variant[] = ladder
    .filter((l) => l.ranks <= opts.maxRanks)
    .flatMap((l) =>
      l.ranks === 1
        ? [{ ...l, overlap: false, hostShm: shms[0] }]
        : modes.flatMap((o) => shms.map((h) => ({ ...l, overlap: o, hostShm: h })))
    );
  // llvmpipe's vector width as `train` picks it for the largest model run, one
  // width for every row (rank processes and Workers inherit it).
  await preferWideVectors({ hiddenSize: Math.max(...configs.map((c) => c.hidden)) });
  const runOf = (c: Variant, measureComm: boolean): ScalingRun => ({
    config: gptConfig(c, seq),
    tp: c.ranks,
    batch,
    seq,
    warmup: opts.warmup,
    steps: opts.steps,
    measureComm,
    backend,
    overlap: c.overlap,
    autotune: opts.autotune,
  });
  // The configurations take turns, `repeats` rounds, and each reports its
  // median: a shared machine drifts between runs, and interleaving spreads the
  // drift over all of them instead of biasing the ratio.
  const times: number[][] = configs.map(() => []);
  // In procs placement the 1-rank baseline also runs on every other core the
  // multi-rank runs use: on a shared virtual machine cores can differ in speed,
  // and a tensor-parallel group runs at the pace of its slowest rank.
  const used = Math.min(Math.max(...configs.map((c) => c.ranks)), navigator.hardwareConcurrency);
  const slowestBaseline: number[] = [];
  // ... and once more on all those cores at the same time (the slowest counts).
  const busyBaseline: number[] = [];
  const cores = Array.from({ length: used }, (_, core) => core);
  for (let round = 0; round < (opts.repeats ?? 3); round++) {
    for (const [i, c] of configs.entries()) {
      times[i].push((await runOn(c.ranks, runOf(c, false), placement, 0, c.hostShm)).msPerStep);
      if (c.ranks === 1 && placement === "procs" && used > 1) {
        let slowest = times[i][times[i].length - 1];
        for (let core = 1; core < used; core++) {
          const t = (await runOn(1, runOf(c, false), placement, core)).msPerStep;
          slowest = Math.max(slowest, t);
        }
        slowestBaseline.push(slowest);
        const busy = await Promise.all(
          cores.map((core) => runOn(1, runOf(c, false), placement, core)),
        );
        busyBaseline.push(Math.max(...busy.map((r) => r.msPerStep)));
      }
    }
  }
  // Training FLOPs per rank per step: efficiency compares FLOP/s per rank.
  const work = configs.map((c) =>
    trainingFlops(
      {
        numLayers: c.layers,
        hiddenSize: c.hidden,
        ffnHiddenSize: 4 * c.hidden,
        paddedVocab: paddedVocabSize(256, c.ranks),
        seqLength: seq,
      },
      batch * seq,
    ) / c.ranks
  );
  /** Per-rank FLOP/s of configuration `i` at step time `t`, relative to the 1-rank run's at `t0`. */
  const relative = (i: number, t: number, t0: number) => (work[i] / t) / (work[0] / t0);
  for (const [i, c] of configs.entries()) {
    const msPerStep = median(times[i]);
    const timed = c.ranks > 1
      ? await runOn(c.ranks, runOf(c, true), placement, 0, c.hostShm)
      : null;
    rows.push({
      config: { ranks: c.ranks, hidden: c.hidden, heads: c.heads, layers: c.layers },
      overlap: c.overlap,
      hostShm: c.hostShm,
      params: paramCount(c, seq),
      tokensPerS: (batch * seq) / (msPerStep / 1000),
      gflopsPerRank: work[i] / (msPerStep / 1000) / 1e9,
      commShare: timed ? timed.commMsPerStep / timed.msPerStep : 0,
      commWaitShare: timed ? timed.commWaitMsPerStep / timed.msPerStep : 0,
      efficiency: relative(i, msPerStep, median(times[0])),
      efficiencyBestRounds: relative(i, Math.min(...times[i]), Math.min(...times[0])),
      efficiencyVsSlowestCore: i > 0 && slowestBaseline.length
        ? relative(i, msPerStep, median(slowestBaseline))
        : undefined,
      efficiencyVsBusyCores: i > 0 && busyBaseline.length
        ? relative(i, msPerStep, median(busyBaseline))
        : undefined,
      msPerStep,
      runs: times[i],
    });
  }
  return rows;
}

/** The table as Markdown. */
export function formatScaling(rows: ScalingRow[]): string {
  const lines = [
    "| ranks (TP) | hidden | layers | heads | params | ms/step (rounds) | tokens/s | GFLOP/s per rank | comm share | weak-scaling efficiency | best rounds | vs slowest core | vs busy cores |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  // An overlap column only when some row overlapped (`--overlap on|both`), a
  // host-shm column only when some multi-rank row ran without (`--host-shm off|both`).
  const withOverlap = rows.some((r) => r.overlap);
  const withShm = rows.some((r) => r.config.ranks > 1 && !r.hostShm);
  for (const [on, name] of [[withShm, "host shm"], [withOverlap, "overlap"]] as const) {
    if (!on) continue;
    lines[0] = lines[0].replace("| ranks (TP) |", `| ranks (TP) | ${name} |`);
    lines[1] += "---|";
  }
  const pct = (x: number | undefined) => x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
  const onOff = (r: ScalingRow, v: boolean) =>
    `${r.config.ranks > 1 ? (v ? "on" : "off") : "–"} | `;
  for (const r of rows) {
    lines.push(
      `| ${r.config.ranks} | ${withOverlap ? onOff(r, r.overlap) : ""}${
        withShm ? onOff(r, r.hostShm) : ""
      }${r.config.hidden} | ${r.config.layers} | ${r.config.heads} | ` +
        `${(r.params / 1e6).toFixed(2)}M | ${r.msPerStep.toFixed(0)} (${
          r.runs.map((t) => t.toFixed(0)).join(", ")
        }) | ${r.tokensPerS.toFixed(0)} | ` +
        `${r.gflopsPerRank.toFixed(2)} | ${(100 * r.commShare).toFixed(1)}%${
          r.commWaitShare > 0 ? ` (${(100 * r.commWaitShare).toFixed(1)}% waiting)` : ""
        } | ${(100 * r.efficiency).toFixed(1)}% | ${(100 * r.efficiencyBestRounds).toFixed(1)}% | ${
          pct(r.efficiencyVsSlowestCore)
        } | ${pct(r.efficiencyVsBusyCores)} |`,
    );
  }
  return lines.join("\n");
}

/** Every flag of `deno task bench:scaling`. */
export const SCALING_FLAGS: Record<string, FlagSpec> = {
  "max-ranks": {
    type: "int",
    min: 1,
    default: 2,
    help: "the ladder's configurations up to this many ranks (TP size)",
  },
  "placement": {
    type: "string",
    choices: ["procs", "workers"],
    default: "procs",
    help: "one pinned process per rank over TCP, or Workers of one process",
  },
  "backend": {
    type: "string",
    choices: BACKENDS,
    help: `WebGPU implementation (default ${DEFAULT_BACKEND}; ${
      defaultBackendFor(2)
    } for --placement workers at --max-ranks 2 or more)`,
  },
  "ladder": {
    type: "string",
    choices: Object.keys(LADDERS),
    default: "base",
    help: "model sizes: base starts at hidden 256, small at 128",
  },
  "steps": { type: "int", min: 1, default: 8, help: "timed steps per run" },
  "warmup": { type: "int", min: 0, default: 3, help: "untimed steps before them" },
  "batch": { type: "int", min: 1, default: 16, help: "sequences per step" },
  "seq": { type: "int", min: 1, default: 64, help: "tokens per sequence" },
  "repeats": {
    type: "int",
    min: 1,
    default: 3,
    help: "rounds the configurations take turns in (rows give medians)",
  },
  "overlap": {
    type: "string",
    choices: ["off", "on", "both"],
    default: "off",
    help: "multi-rank rows with --overlap-tp-comm, without, or both in turn",
  },
  "host-shm": {
    type: "string",
    choices: ["on", "off", "both"],
    default: "on",
    help: "procs placement: payloads through shared memory, the sockets, or both in turn",
  },
  ...DEBUG_FLAG,
};

const USAGE = `Usage: deno task bench:scaling [--max-ranks N] [--placement procs|workers]
  [--backend dawn|deno] [--ladder base|small] [--steps S] [--warmup W] [--batch B] [--seq T]
  [--repeats R] [--overlap off|on|both] [--host-shm on|off|both]`;

/** Runs `deno task bench:scaling` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, SCALING_FLAGS, USAGE);
  if (typeof f === "number") return f;
  const maxRanks = f["max-ranks"] as number;
  const coreCount = Math.min(maxRanks, navigator.hardwareConcurrency);
  const before = await checkCores(coreCount);
  const rows = await runScaling({
    maxRanks,
    backend: f.backend as string | undefined,
    steps: f.steps as number,
    warmup: f.warmup as number,
    batch: f.batch as number,
    seq: f.seq as number,
    ladder: f.ladder as keyof typeof LADDERS,
    repeats: f.repeats as number,
    placement: f.placement as Placement,
    overlap: f.overlap as "off" | "on" | "both",
    hostShm: f["host-shm"] as "off" | "on" | "both",
  });
  console.log(formatScaling(rows));
  console.log(
    `llvmpipe's vector width (${LLVMPIPE_WIDTH_ENV}, as \`train\` picks it for the largest ` +
      `model here): ${llvmpipeWidthLabel()} bits for every row`,
  );
  // Bracket the measurement with a check of the cores the host gives.
  const after = await checkCores(coreCount);
  if (before) console.log(`before: ${formatCoreCheck(before)}`);
  if (after) console.log(`after: ${formatCoreCheck(after)}`);
  console.log(
    "paper (Megatron-LM, V100 GPUs): 77% weak-scaling efficiency at 8-way TP; 74% at 512 GPUs (8-way TP × 64-way DP); 95% at 2 GPUs",
  );
  await new Promise((r) => setTimeout(r, 200));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
