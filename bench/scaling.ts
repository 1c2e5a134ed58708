/**
 * The weak-scaling experiment of the paper (its Table 1 / Figure 1) at the size
 * of this machine: the model grows with the number of ranks so that parameters
 * per rank stay about constant, heads divisible by TP, and per-rank work is
 * constant. Reports params, ranks, tokens/s, achieved GFLOP/s per rank, the
 * share of step time in communication, and the efficiency against 1 rank.
 *
 * `deno task bench:scaling [--max-ranks N] [--placement procs|workers]
 *   [--backend dawn|deno] [--ladder base|small] [--steps S] [--batch B] [--seq T]`
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

import { parseArgs } from "node:util";
import { localDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import { listHostGpus } from "../collectives/devices.ts";
import { DEFAULT_BACKEND, defaultBackendFor } from "../core/gpu.ts";
import { trainingFlops } from "../models/flops.ts";
import { type GptConfig, paddedVocabSize } from "../models/gpt.ts";
import type { ScalingResult, ScalingRun } from "./scaling_worker.ts";

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
  /** GFLOP/s per rank relative to the 1-rank run. */
  efficiency: number;
  /** Mean step time, ms. */
  msPerStep: number;
}

function gptConfig(c: ScalingConfig): GptConfig {
  return {
    vocabSize: 256,
    numLayers: c.layers,
    hiddenSize: c.hidden,
    numHeads: c.heads,
    maxPositions: 64,
    hiddenDropout: 0.1,
    attentionDropout: 0.1,
  };
}

function paramCount(c: ScalingConfig): number {
  const h = c.hidden, L = c.layers;
  return L * (12 * h * h + 13 * h) + paddedVocabSize(256, c.ranks) * h + 64 * h + 2 * h;
}

const WORKER = new URL("./scaling_worker.ts", import.meta.url);

/** How the ranks of one measurement run. */
export type Placement = "workers" | "procs";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function hasTaskset(): boolean {
  try {
    return new Deno.Command("taskset", { args: ["-p", "1"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/**
 * One OS process per rank, each pinned to its own core with `taskset` (the
 * 1-rank baseline too): a simulated GPU and its host thread share one core.
 * Ranks talk over TCP on loopback.
 */
async function runProcs(ranks: number, run: ScalingRun): Promise<ScalingResult[]> {
  const port = freePort();
  const cores = navigator.hardwareConcurrency;
  const pin = hasTaskset();
  const launcher = new URL("../cli/launch.ts", import.meta.url).pathname;
  // On a host with several GPUs, process i drives GPU i.
  const gpus = listHostGpus().length;
  const outs = await Promise.all(Array.from({ length: ranks }, (_, i) => {
    const deno = [
      Deno.execPath(),
      "run",
      "-A",
      launcher,
      ...(ranks > 1
        ? ["--nnodes", String(ranks), "--node-rank", String(i), "--nproc-per-node", "1"]
        : []),
      "--master-addr",
      "127.0.0.1",
      "--master-port",
      String(port),
      "--dist-timeout",
      "120s",
      ...(gpus >= ranks ? ["--devices", String(i)] : []),
      WORKER.pathname,
      JSON.stringify(run),
      "--print",
    ];
    const argv = pin ? ["taskset", "-c", String(i % cores), ...deno] : deno;
    return new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: new URL("../", import.meta.url).pathname,
      stdout: "piped",
      stderr: "inherit",
    }).output();
  }));
  return outs.map((o, i) => {
    const text = new TextDecoder().decode(o.stdout);
    const line = text.split("\n").find((l) => l.startsWith("SCALING_RESULT "));
    if (!o.success || !line) throw new Error(`rank ${i} failed:\n${text}`);
    return JSON.parse(line.slice("SCALING_RESULT ".length)) as ScalingResult;
  });
}

async function runWorkersOf(ranks: number, run: ScalingRun): Promise<ScalingResult[]> {
  const cfg = localDistConfig(ranks, 120000);
  const res = await runWorkers(cfg, WORKER, [JSON.stringify(run)], { gpus: [] });
  if (!res.ok) throw new Error(res.ranks.map((r) => r.error).filter(Boolean).join("; "));
  return res.ranks.map((r) => r.result as ScalingResult);
}

async function runOn(ranks: number, run: ScalingRun, placement: Placement): Promise<ScalingResult> {
  const rs = placement === "procs" ? await runProcs(ranks, run) : await runWorkersOf(ranks, run);
  return {
    msPerStep: Math.max(...rs.map((r) => r.msPerStep)),
    commMsPerStep: rs.reduce((s, r) => s + r.commMsPerStep, 0) / rs.length,
    loss: rs[0].loss,
  };
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
  /** A named ladder (default "base") or explicit configurations. */
  ladder?: keyof typeof LADDERS | readonly ScalingConfig[];
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
  for (const c of ladder.filter((l) => l.ranks <= opts.maxRanks)) {
    const base: ScalingRun = {
      config: gptConfig(c),
      tp: c.ranks,
      batch,
      seq,
      warmup: opts.warmup,
      steps: opts.steps,
      measureComm: false,
      backend,
    };
    const plain = await runOn(c.ranks, base, placement);
    const timed = c.ranks > 1
      ? await runOn(c.ranks, { ...base, measureComm: true }, placement)
      : null;
    const flops = trainingFlops(
      {
        numLayers: c.layers,
        hiddenSize: c.hidden,
        ffnHiddenSize: 4 * c.hidden,
        vocab: paddedVocabSize(256, c.ranks),
        seqLength: seq,
      },
      batch * seq,
    );
    const gflopsPerRank = flops / (plain.msPerStep / 1000) / 1e9 / c.ranks;
    rows.push({
      config: c,
      params: paramCount(c),
      tokensPerS: (batch * seq) / (plain.msPerStep / 1000),
      gflopsPerRank,
      commShare: timed ? timed.commMsPerStep / timed.msPerStep : 0,
      efficiency: rows.length ? gflopsPerRank / rows[0].gflopsPerRank : 1,
      msPerStep: plain.msPerStep,
    });
  }
  return rows;
}

/** The table as Markdown. */
export function formatScaling(rows: ScalingRow[]): string {
  const lines = [
    "| ranks (TP) | hidden | layers | heads | params | ms/step | tokens/s | GFLOP/s per rank | comm share | weak-scaling efficiency |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.config.ranks} | ${r.config.hidden} | ${r.config.layers} | ${r.config.heads} | ` +
        `${(r.params / 1e6).toFixed(2)}M | ${r.msPerStep.toFixed(0)} | ${
          r.tokensPerS.toFixed(0)
        } | ` +
        `${r.gflopsPerRank.toFixed(2)} | ${(100 * r.commShare).toFixed(1)}% | ${
          (100 * r.efficiency).toFixed(1)
        }% |`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "max-ranks": { type: "string", default: "2" },
      backend: { type: "string" },
      placement: { type: "string", default: "procs" },
      steps: { type: "string", default: "10" },
      warmup: { type: "string", default: "3" },
      batch: { type: "string", default: "16" },
      seq: { type: "string", default: "64" },
      ladder: { type: "string", default: "base" },
    },
  });
  const rows = await runScaling({
    maxRanks: Number(values["max-ranks"]),
    backend: values.backend,
    steps: Number(values.steps),
    warmup: Number(values.warmup),
    batch: Number(values.batch),
    seq: Number(values.seq),
    ladder: values.ladder as keyof typeof LADDERS,
    placement: values.placement as Placement,
  });
  console.log(formatScaling(rows));
  console.log(
    "paper (Megatron-LM, V100 GPUs): 77% weak-scaling efficiency at 8-way TP; 74% at 512 GPUs (8-way TP × 64-way DP); 95% at 2 GPUs",
  );
  await new Promise((r) => setTimeout(r, 200));
  Deno.exit(0);
}
