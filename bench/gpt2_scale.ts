/**
 * GPT-2 at its real sizes (`deno task bench:gpt2`): writes a randomly
 * initialised GPT-2 small (124M), medium (355M) or large (774M) in Hugging
 * Face layout, then loads it at TP=1 and TP=2 (one Worker and device per
 * rank), evaluates one batch and takes training steps, and reports ms per
 * step and each rank's pool memory. The vocabulary is GPT-2's own (50,257,
 * padded to 50,304): the f32 table is larger than one 128 MiB storage binding
 * at TP=1 for every size, so this is the end-to-end check that such tensors
 * work in every op (embedding, tied head, cross-entropy, AdamW, clipping,
 * import). `deno task bench:gpt2 --help` gives the usage and flags.
 *
 * Placement `workers` (the default) runs the ranks as Workers of this process
 * over shared memory (Deno's WebGPU: Dawn serialises the devices of one
 * process); `procs` runs one OS process per rank through cli/launch.ts, each
 * pinned to its own core with `taskset` (TP=1 too: one simulated GPU, one
 * core), talking over TCP (cli/pinned_procs.ts). The "what ran" cell says
 * which, in parentheses.
 * @module
 */

import { localDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import { Device } from "../core/device.ts";
import { type BackendName, BACKENDS, parseBackend } from "../core/gpu.ts";
import type { GptConfig } from "../models/gpt.ts";
import { Gpt } from "../models/gpt.ts";
import { writeHfGpt2 } from "../models/hf/gpt2.ts";
import {
  GPT2_SCALE_RESULT_TAG,
  type Gpt2ScaleResult,
  type Gpt2ScaleRun,
} from "./gpt2_scale_worker.ts";
import { describePinnedProcs, runPinnedProcs } from "../cli/pinned_procs.ts";
import { DEBUG_FLAG, handled, splitMisfit } from "../cli/errors.ts";
import {
  commaCounts,
  commaList,
  type FlagSpec,
  type FlagValues,
  parseCommandLine,
  UsageError,
} from "../cli/flags.ts";

/** GPT-2's position table, at every size. */
const GPT2_POSITIONS = 1024;

/** GPT-2's published shapes. */
export const GPT2_SIZES: Record<string, { layers: number; hidden: number; heads: number }> = {
  small: { layers: 12, hidden: 768, heads: 12 },
  medium: { layers: 24, hidden: 1024, heads: 16 },
  large: { layers: 36, hidden: 1280, heads: 20 },
};

function configOf(size: string): GptConfig {
  const s = GPT2_SIZES[size];
  if (!s) throw new Error(`unknown size ${size} (small, medium, large)`);
  return {
    vocabSize: 50257,
    numLayers: s.layers,
    hiddenSize: s.hidden,
    numHeads: s.heads,
    maxPositions: GPT2_POSITIONS,
    hiddenDropout: 0,
    attentionDropout: 0,
  };
}

/** Writes a randomly initialised GPT-2 of `size` in HF layout (the model's own init, read back). */
async function writeRandomGpt2(dir: string, size: string, backend: string): Promise<void> {
  try {
    await Deno.stat(`${dir}/model.safetensors`);
    return;
  } catch { /* write it */ }
  const config = configOf(size);
  const device = await Device.create({ backend: parseBackend(backend) });
  try {
    const gpt = Gpt.serial(device, config, 5);
    const named = gpt.namedParams();
    const full = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, p] of named) {
      full.set(name, { shape: [...p.tensor.shape], data: await p.tensor.read() });
    }
    gpt.dispose();
    await Deno.mkdir(dir, { recursive: true });
    await writeHfGpt2(dir, config, (n) => full.get(n));
  } finally {
    await device.close();
  }
}

const WORKER = new URL("./gpt2_scale_worker.ts", import.meta.url);

/** How the ranks of one run are placed. */
export type Gpt2Placement = "workers" | "procs";

/**
 * How TP=1 runs when the ranks are pinned processes: as one pinned process
 * (`core`: one simulated GPU on one core), as one unpinned Worker whose
 * device's threads use every core (`cpu`), or both.
 */
export type Tp1Placement = "core" | "cpu" | "both";

/** One GPT-2 run of a benchmark round: a TP size and how its ranks are placed. */
export interface Gpt2Run {
  /** Tensor-parallel size. */
  tp: number;
  /** Where its ranks run. */
  placement: Gpt2Placement;
}

/**
 * The runs of a round for the TP sizes `tps` under `placement`; TP=1 under
 * pinned processes as `tp1` says (the unpinned run is a Worker).
 */
export function gpt2Runs(tps: number[], placement: Gpt2Placement, tp1: Tp1Placement): Gpt2Run[] {
  return tps.flatMap((tp): Gpt2Run[] => {
    if (tp !== 1 || placement === "workers") return [{ tp, placement }];
    const core: Gpt2Run = { tp, placement: "procs" };
    const cpu: Gpt2Run = { tp, placement: "workers" };
    return tp1 === "core" ? [core] : tp1 === "cpu" ? [cpu] : [core, cpu];
  });
}

/** How `tp` ranks ran under `placement`, for the table: "2 pinned processes, TCP". */
export function describeGpt2Placement(placement: Gpt2Placement, tp: number): string {
  return placement === "procs"
    ? describePinnedProcs(tp)
    : tp === 1
    ? `1 Worker, unpinned${unpinnedThreads()}`
    : `${tp} Workers in one process, shared memory`;
}

/** How many threads an unpinned llvmpipe or lavapipe device runs: ", LP_NUM_THREADS=n" when set. */
function unpinnedThreads(): string {
  const n = Deno.env.get("LP_NUM_THREADS");
  return n ? `, LP_NUM_THREADS=${n}` : "";
}

/**
 * Runs `run` on its ranks as `placement` says; each rank's result, or the
 * failure as one line per failing rank.
 */
export async function runGpt2(
  run: Gpt2ScaleRun,
  placement: Gpt2Placement,
): Promise<Gpt2ScaleResult[] | string> {
  // Loading and tuning GPT-2 shapes takes minutes on a CPU adapter, and ranks
  // wait for each other at the first collective after it.
  const timeoutMs = 30 * 60_000;
  if (placement === "procs") {
    try {
      const rs = await runPinnedProcs<Gpt2ScaleResult>({
        ranks: run.tp,
        worker: WORKER,
        args: [JSON.stringify(run), "--print"],
        tag: GPT2_SCALE_RESULT_TAG,
        distTimeout: `${timeoutMs}ms`,
      });
      // JSON has no NaN: a run without steps reports null.
      return rs.map((r) => ({ ...r, msPerStep: r.msPerStep ?? NaN }));
    } catch (e) {
      return (e as Error).message;
    }
  }
  const res = await runWorkers(localDistConfig(run.tp, timeoutMs), WORKER, [JSON.stringify(run)], {
    log: false,
    gpus: [],
  });
  if (!res.ok) {
    return res.ranks.filter((r) => !r.ok).map((r) => `rank ${r.rank}: ${r.error}`).join("; ");
  }
  return res.ranks.map((r) => r.result as Gpt2ScaleResult);
}

/**
 * Every flag of `deno task bench:gpt2` (bench/torch_compare.ts runs this script
 * with `--sizes small --tp N --seq --batch --steps --eval-only none --placement
 * --backend`).
 */
export const GPT2_SCALE_FLAGS: Record<string, FlagSpec> = {
  "sizes": {
    type: "string",
    default: "small,medium,large",
    valueName: "SIZE,…",
    help: "GPT-2 sizes, comma-separated: small, medium, large",
  },
  "tp": {
    type: "string",
    default: "1,2",
    valueName: "N,N…",
    help: "tensor-parallel sizes, comma-separated, each run at every size",
  },
  "seq": { type: "int", min: 1, default: 128, help: "tokens per sequence" },
  "batch": { type: "int", min: 1, default: 1, help: "sequences per step" },
  "steps": { type: "int", min: 0, default: 2, help: "training steps after the eval (0: none)" },
  "eval-only": {
    type: "string",
    default: "large",
    valueName: "SIZE,…",
    help: "sizes that only load and evaluate, comma-separated (none: no size)",
  },
  "dir": {
    type: "string",
    valueName: "DIR",
    help: "where the random models are written, DIR/SIZE, and found by later runs " +
      "(default $TMPDIR/gpt2-random, else /tmp/gpt2-random)",
  },
  "backend": { type: "string", choices: BACKENDS, default: "deno", help: "WebGPU implementation" },
  "placement": {
    type: "string",
    choices: ["workers", "procs"],
    default: "workers",
    help: "ranks as Workers of this process, or as pinned processes over TCP",
  },
  ...DEBUG_FLAG,
};

const USAGE =
  `Usage: deno task bench:gpt2 [--sizes small,medium,large] [--tp 1,2] [--seq 128] [--batch 1] [--steps 2]
  [--eval-only large] [--dir DIR] [--backend deno|dawn] [--placement workers|procs]`;

/** What a `bench:gpt2` command line asks for. */
export interface Gpt2ScaleOptions {
  /** GPT-2 sizes, in order. */
  sizes: string[];
  /** Tensor-parallel sizes, in order. */
  tps: number[];
  /** Tokens per sequence. */
  seq: number;
  /** Sequences per step. */
  batch: number;
  /** Training steps at the sizes not in `evalOnly`. */
  steps: number;
  /** Sizes that only load and evaluate. */
  evalOnly: Set<string>;
  /** Where the random models are written. */
  dir: string;
  /** WebGPU implementation of every rank. */
  backend: BackendName;
  /** How the ranks are placed. */
  placement: Gpt2Placement;
}

/** The options of flags parsed with {@link GPT2_SCALE_FLAGS}; throws UsageError. */
export function gpt2ScaleOptions(f: FlagValues): Gpt2ScaleOptions {
  const isSize = (s: string) => Object.hasOwn(GPT2_SIZES, s);
  const sizeNames = Object.keys(GPT2_SIZES).join(", ");
  const sizes = commaList(
    "sizes",
    f.sizes as string,
    isSize,
    `comma-separated sizes among ${sizeNames}`,
  );
  const tps = commaCounts(
    "tp",
    f.tp as string,
    "comma-separated tensor-parallel sizes ≥ 1 (e.g. 1,2)",
  );
  const evalOnly = f["eval-only"] === "none" ? [] : commaList(
    "eval-only",
    f["eval-only"] as string,
    isSize,
    `comma-separated sizes among ${sizeNames}, or none`,
  );
  // Known before any model is written: a sequence past GPT-2's positions, a size whose heads or
  // MLP a TP size does not split.
  if ((f.seq as number) > GPT2_POSITIONS) {
    throw new UsageError(`--seq ${f.seq} exceeds GPT-2's position table (${GPT2_POSITIONS})`);
  }
  for (const size of new Set([...sizes, ...evalOnly])) {
    for (const tp of tps) {
      const misfit = splitMisfit(configOf(size), tp);
      if (misfit) throw new UsageError(`--sizes ${size} --tp ${tp}: GPT-2 ${size}: ${misfit}`);
    }
  }
  return {
    sizes,
    tps,
    seq: f.seq as number,
    batch: f.batch as number,
    steps: f.steps as number,
    evalOnly: new Set(evalOnly),
    dir: (f.dir as string | undefined) ?? `${Deno.env.get("TMPDIR") ?? "/tmp"}/gpt2-random`,
    backend: parseBackend(f.backend as string),
    placement: f.placement as Gpt2Placement,
  };
}

const MiB = 2 ** 20;
const fmt = (v: number, d = 0) => Number.isFinite(v) ? v.toFixed(d) : "–";

/** Runs `deno task bench:gpt2` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, GPT2_SCALE_FLAGS, USAGE, (f) => void gpt2ScaleOptions(f));
  if (typeof f === "number") return f;
  const { sizes, tps, evalOnly, placement, backend, ...o } = gpt2ScaleOptions(f);
  console.log(
    "| size | params | TP | what ran | load s | eval loss | eval s | ms/step | " +
      "weights MiB/rank | weights+Adam MiB/rank | peak MiB/rank |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const size of sizes) {
    const dir = `${o.dir}/${size}`;
    await writeRandomGpt2(dir, size, backend);
    for (const tp of tps) {
      const run: Gpt2ScaleRun = {
        dir,
        tp,
        seq: o.seq,
        batch: o.batch,
        steps: evalOnly.has(size) ? 0 : o.steps,
        backend,
      };
      const rs = await runGpt2(run, placement);
      if (typeof rs === "string") {
        // One line: the table row holds the reason's first line, stderr the whole of it.
        console.error(rs);
        console.log(`| ${size} | | ${tp} | failed: ${rs.split("\n")[0]} | | | | | | | |`);
        continue;
      }
      const r0 = rs[0];
      const max = (f: (r: Gpt2ScaleResult) => number) => Math.max(...rs.map(f)) / MiB;
      const what = (run.steps > 0 ? `load, eval, ${run.steps} steps` : "load, eval") +
        ` (${describeGpt2Placement(placement, tp)})`;
      console.log(
        `| ${size} | ${(r0.params / 1e6).toFixed(1)}M | ${tp} | ${what} | ${
          fmt(r0.loadMs / 1000, 1)
        } | ${r0.evalLoss.toFixed(4)} | ${fmt(r0.evalMs / 1000, 1)} | ${
          fmt(Math.max(...rs.map((r) => r.msPerStep)))
        } | ${fmt(max((r) => r.weightBytes))} | ${
          // Eval only: no optimizer, so no weights-and-Adam state to show.
          run.steps > 0 ? fmt(max((r) => r.stateBytes)) : "–"} | ${fmt(max((r) => r.peakBytes))} |`,
      );
      if (r0.losses.length) console.log(`<!-- ${size} TP=${tp} losses ${r0.losses.join(", ")} -->`);
    }
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
