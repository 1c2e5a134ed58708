/**
 * Training-step benchmark: ms per optimizer step and tokens/s of the project's
 * GPT; with `bench/tfjs/train.ts`, beside the same GPT in TensorFlow.js (WebGPU
 * backend, same `GPU` object and adapter), in one run. This file holds the rows
 * and runners; the entry points are:
 *
 *     deno bench -A bench/train_bench.ts        # project rows: deno bench report + table
 *     deno run -A bench/train_bench.ts          # project rows: only the table
 *     deno bench -A bench/tfjs/train.ts         # with TF.js (deno task bench:tfjs)
 *     deno run -A bench/tfjs/train.ts           # with TF.js: only the table
 *
 * Rows: the reference config (vocab 256, hidden 128, 4 heads, 2 layers, seq 64,
 * micro-batch 8, dropout off on both sides) on each backend, for the project
 * and for TF.js; the default `deno task train` config (read from
 * `TRAIN_FLAGS`, dropout as its defaults) with and without
 * `--recompute-activations`, and TF.js on it. Every step draws fresh random
 * tokens from a seeded generator, runs forward, backward, global-norm clipping
 * (1.0) and Adam(W) at lr 1e-3, and reads the loss back (one sync per step on
 * both sides). Each row first runs `TRAIN_BENCH_WARMUP` untimed steps (shader
 * compilation, pool warm-up); the table shows medians of the timed steps.
 *
 * Environment: `TRAIN_BENCH_STEPS` (timed steps per row, default 5),
 * `TRAIN_BENCH_WARMUP` (default 2), `TRAIN_BENCH_BACKENDS` (default
 * `deno,dawn`), `TRAIN_BENCH_TFJS=0` to leave TF.js out of the TF.js entry points.
 * @module
 */

import { attachTuner } from "../cli/autotune.ts";
import { MatmulTuner } from "../core/matmul_tuner.ts";
import { gptConfigFromFlags } from "../cli/train_config.ts";
import { TRAIN_FLAGS } from "../cli/train_flags.ts";
import { type FlagValues, UsageError } from "../cli/flags.ts";
import { handled, reportError } from "../cli/errors.ts";
import { Device } from "../core/device.ts";
import { type BackendName, parseBackend } from "../core/gpu.ts";
import { preferWideVectors } from "../core/simd.ts";
import { TokenIds } from "../core/token_ids.ts";
import { DataRng } from "../data/rng.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { Trainer } from "../models/trainer.ts";
import { median } from "./stats.ts";
import { DEFAULT_DROPOUT } from "../models/shape.ts";

/** A model config with the batch shape it is trained on. */
export interface BenchConfig {
  /** Short name shown in the table. */
  name: string;
  /** The project's model config (TF.js gets the same shape and dropout). */
  model: GptConfig;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence. */
  seq: number;
}

/** The 470K-parameter reference config, dropout off. */
export const REFERENCE: BenchConfig = {
  name: "reference",
  model: {
    vocabSize: 256,
    numLayers: 2,
    hiddenSize: 128,
    numHeads: 4,
    maxPositions: 64,
    hiddenDropout: 0,
    attentionDropout: 0,
  },
  batch: 8,
  seq: 64,
};

/** The config `deno task train` trains by default (byte vocabulary), optionally recomputing. */
export function defaultTrainConfig(recompute = false): BenchConfig {
  const flags: FlagValues = {};
  for (const [k, spec] of Object.entries(TRAIN_FLAGS)) {
    if (spec.default !== undefined) flags[k] = spec.default as FlagValues[string];
  }
  flags["recompute-activations"] = recompute;
  return {
    name: recompute ? "train default + recompute" : "train default",
    model: gptConfigFromFlags(flags, 256),
    batch: flags["micro-batch-size"] as number,
    seq: flags["seq-length"] as number,
  };
}

/** Which implementation a row runs. */
export type Impl = "project" | "tfjs";

/** One row of the table. */
export interface BenchRow {
  /** Project or TF.js. */
  impl: Impl;
  /** WebGPU backend (both implementations take the same `GPU` object). */
  backend: BackendName;
  /** Model and batch shape. */
  config: BenchConfig;
}

/** A row ready to step. */
export interface Runner {
  /** One timed training step; returns its loss. */
  step(): Promise<number>;
  /** Highest pool bytes in a step since warm-up (project only). */
  peakBytes?: number;
  /** Pool bytes held between steps: parameters, optimizer state, caches (project only). */
  baseBytes?: number;
  /** Trainable parameters. */
  params: number;
}

interface Samples {
  ms: number[];
  peak: number;
  base: number;
  params: number;
  loss: number;
  error?: string;
}

/** What the environment asks of this run (`TRAIN_BENCH_*`). */
interface TrainBenchSettings {
  /** Timed steps per row. */
  steps: number;
  /** Untimed steps before them. */
  warmup: number;
  /** Backends with a row each. */
  backends: BackendName[];
  /** TF.js rows, where `bench/tfjs/train.ts` adds them. */
  tfjs: boolean;
}

/** A whole number of at least `min` from `name`, else `fallback`; throws UsageError naming a bad value. */
function countFromEnv(name: string, fallback: number, min: number): number {
  const raw = Deno.env.get(name)?.trim() ?? "";
  if (raw === "") return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min) {
    throw new UsageError(`${name}=${raw}: expected a whole number of at least ${min}`);
  }
  return Number(raw);
}

/** `TRAIN_BENCH_WARMUP`: untimed steps before a row's timed ones (all a row's runner reads). */
const warmupSteps = () => countFromEnv("TRAIN_BENCH_WARMUP", 2, 0);

/** Reads {@link TrainBenchSettings} when a run needs them (not on import: other benches import rows). */
function settings(): TrainBenchSettings {
  const backends = (Deno.env.get("TRAIN_BENCH_BACKENDS") ?? "deno,dawn").split(",")
    .map((s) => s.trim()).filter((s) => s).map((s) => parseBackend(s));
  const tfjs = Deno.env.get("TRAIN_BENCH_TFJS")?.trim() ?? "";
  if (!["", "0", "1"].includes(tfjs)) {
    throw new UsageError(`TRAIN_BENCH_TFJS=${tfjs}: expected 0 (leave TF.js out) or 1`);
  }
  return {
    steps: countFromEnv("TRAIN_BENCH_STEPS", 5, 1),
    warmup: warmupSteps(),
    backends,
    tfjs: tfjs !== "0",
  };
}

let tfjsRunner: ((row: BenchRow) => Promise<Runner>) | null = null;
/** Adds the TF.js rows, stepped by `make`'s runners (`bench/tfjs/train.ts`). */
export function useTfjs(make: (row: BenchRow) => Promise<Runner>): void {
  tfjsRunner = make;
}

/** The rows in run order (TF.js rows of a backend together: one TF.js backend is live at a time). */
export function benchRows(): BenchRow[] {
  const rows: BenchRow[] = [];
  const { backends, tfjs } = settings();
  const withTfjs = tfjsRunner !== null && tfjs;
  for (const backend of backends) {
    rows.push({ impl: "project", backend, config: REFERENCE });
    if (withTfjs) rows.push({ impl: "tfjs", backend, config: REFERENCE });
  }
  const first = backends[0] ?? "deno";
  rows.push({ impl: "project", backend: first, config: defaultTrainConfig(false) });
  rows.push({ impl: "project", backend: first, config: defaultTrainConfig(true) });
  if (withTfjs) rows.push({ impl: "tfjs", backend: first, config: defaultTrainConfig(false) });
  return rows;
}

const devices = new Map<BackendName, Promise<Device>>();
const adapterNames = new Map<BackendName, string>();
/** The project's device on backend `b`, made on first use. */
export function deviceFor(b: BackendName): Promise<Device> {
  let d = devices.get(b);
  if (!d) {
    d = Device.create({ backend: b }).then((dev) => {
      // Tuned matmul tilings, as `deno task train` uses by default, kept in its
      // tuning cache (timed in warm-up, every shape: no time budget, so that the
      // bench measures tuned kernels; a later run reads them back instead of
      // timing them again).
      attachTuner(dev, { enabled: true, budgetMs: Infinity });
      return dev;
    });
    d.then((dev) => {
      const { name, softwareLanes } = dev.summary();
      // a CPU adapter's width: the reference rows gain from 256 bits on Intel CPUs
      adapterNames.set(
        b,
        name + (softwareLanes ? ` (software, ${32 * softwareLanes}-bit vectors)` : ""),
      );
    }, () => {});
    devices.set(b, d);
  }
  return d;
}

/** Seeded random tokens for `c`'s batch shape, fresh each call. */
export function tokenSource(c: BenchConfig): () => Int32Array {
  const rng = new DataRng(7);
  const n = c.batch * c.seq;
  return () => Int32Array.from({ length: n }, () => rng.nextInt(c.model.vocabSize));
}

async function projectRunner(row: BenchRow): Promise<Runner> {
  const device = await deviceFor(row.backend);
  const { model, batch: B, seq: T } = row.config;
  const before = device.pool.liveBytes; // other rows' models on this device
  const gpt = Gpt.serial(device, model, 1);
  const trainer = new Trainer(device, gpt, {
    schedule: { lr: 1e-3, decayIters: 1000, style: "constant" },
    clipGrad: 1,
  });
  const tokens = tokenSource(row.config);
  const runner: Runner = {
    params: gpt.numParams(),
    async step() {
      device.pool.resetPeak();
      runner.baseBytes = device.pool.liveBytes - before;
      const r = await trainer.step(1, () =>
        gpt.loss(
          TokenIds.fromHost(device, tokens(), [B, T]),
          TokenIds.fromHost(device, tokens(), [B, T]),
        ));
      runner.peakBytes = Math.max(runner.peakBytes ?? 0, device.pool.peakBytes - before);
      return r.loss;
    },
  };
  return runner;
}

/** Times the matmul shapes the device's tuner has seen but not tuned yet. */
async function tuneMatmuls(device: Device): Promise<void> {
  const tuner = device.matmulTuner;
  if (!(tuner instanceof MatmulTuner) || !tuner.pending) return;
  // On a fresh machine this is minutes of compiling with nothing else printed (18 seen).
  console.error(
    `bench: timing the matmul tilings of ${tuner.pending} shape${tuner.pending === 1 ? "" : "s"} ` +
      "first (compiling each candidate takes seconds to a minute on a CPU adapter; Mesa's shader " +
      "cache keeps them, and train's tuning cache the choices, for later runs)",
  );
  await tuner.tune();
}

const samples = new Map<string, Samples>();
const runners = new Map<string, Promise<Runner>>();
const keyOf = (r: BenchRow) => `${r.impl}|${r.backend}|${r.config.name}`;

/** Builds a row's runner and runs its warm-up steps (once). */
function runnerFor(row: BenchRow): Promise<Runner> {
  const key = keyOf(row);
  let r = runners.get(key);
  if (!r) {
    r = (async () => {
      if (row.impl === "tfjs" && !tfjsRunner) {
        throw new Error("TF.js rows need bench/tfjs/train.ts");
      }
      const runner = await (row.impl === "project" ? projectRunner(row) : tfjsRunner!(row));
      const warmup = warmupSteps();
      for (let i = 0; i < warmup; i++) {
        await runner.step();
        if (row.impl === "project") await tuneMatmuls(await deviceFor(row.backend));
      }
      runner.peakBytes = undefined;
      return runner;
    })();
    runners.set(key, r);
  }
  return r;
}

function record(row: BenchRow): Samples {
  const key = keyOf(row);
  let s = samples.get(key);
  if (!s) samples.set(key, s = { ms: [], peak: NaN, base: NaN, params: 0, loss: NaN });
  return s;
}

/** Runs one timed step of `row` and records it; returns its milliseconds. */
export async function timedStep(row: BenchRow): Promise<number> {
  const s = record(row);
  const runner = await runnerFor(row);
  const t0 = performance.now();
  s.loss = await runner.step();
  const ms = performance.now() - t0;
  s.ms.push(ms);
  s.peak = runner.peakBytes ?? NaN;
  s.base = runner.baseBytes ?? NaN;
  s.params = runner.params;
  return ms;
}

const rowLabel = (r: BenchRow) => `${r.impl === "tfjs" ? "TF.js" : "project"} ${r.config.name}`;

/** The Markdown table of medians so far. */
export function table(rows: BenchRow[] = benchRows()): string {
  const lines: string[] = [];
  const { steps, warmup, backends } = settings();
  for (const b of backends) lines.push(`- backend ${b}: ${adapterNames.get(b) ?? "(not started)"}`);
  const la = Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  lines.push(
    `- ${steps} timed steps per row after ${warmup} warm-up steps; medians; load average now ${la}`,
    "",
    "| run | backend | params | B×T | dropout | ms/step | tokens/s | peak pool MiB (over steady) | vs TF.js |",
    "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
  );
  const tps = (r: BenchRow) => {
    const s = samples.get(keyOf(r));
    return s?.ms.length ? (r.config.batch * r.config.seq * 1000) / median(s.ms) : NaN;
  };
  for (const r of rows) {
    const s = samples.get(keyOf(r));
    const c = r.config;
    const ms = s?.ms.length ? median(s.ms) : NaN;
    const tf = rows.find((t) =>
      t.impl === "tfjs" && t.backend === r.backend &&
      t.config.model.hiddenDropout === c.model.hiddenDropout &&
      t.config.batch === c.batch && t.config.seq === c.seq &&
      t.config.model.hiddenSize === c.model.hiddenSize &&
      t.config.model.numLayers === c.model.numLayers
    );
    const ratio = r.impl === "project" && tf ? tps(r) / tps(tf) : NaN;
    const fmt = (v: number, d: number) => (Number.isFinite(v) ? v.toFixed(d) : "–");
    const cells = s?.error ? [`failed: ${s.error}`, "–", "–", "–"] : [
      fmt(ms, 1),
      fmt(tps(r), 0),
      Number.isFinite(s?.peak ?? NaN)
        ? `${fmt(s!.peak / 2 ** 20, 2)} (${fmt((s!.peak - s!.base) / 2 ** 20, 2)})`
        : "–",
      Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : "–",
    ];
    lines.push(
      `| ${rowLabel(r)} | ${r.backend} | ${s?.params || "–"} | ${c.batch}×${c.seq} | ` +
        `${c.model.hiddenDropout ?? DEFAULT_DROPOUT} | ${cells.join(" | ")} |`,
    );
  }
  return lines.join("\n");
}

/** Registers the `deno bench` entries (one training step per measured iteration). */
export function registerBenches(rows: BenchRow[] = benchRows()): void {
  const { steps } = settings();
  for (const row of rows) {
    Deno.bench({
      name: `${rowLabel(row)} (${row.backend})`,
      group: `${row.config.name} ${row.backend}`,
      baseline: row.impl === "tfjs",
      n: steps,
      warmup: 0,
      async fn(b) {
        const s = record(row);
        if (s.error) return;
        try {
          await runnerFor(row); // setup and warm-up stay out of the measurement
        } catch (e) {
          s.error = (e as Error).message.split("\n")[0];
          console.error(`${rowLabel(row)} on ${row.backend}: ${(e as Error).message}`);
          return;
        }
        b.start();
        await timedStep(row);
        b.end();
      },
    });
  }
}

/** `deno run`: every row in turn, then the table; then frees the devices. */
export async function main(): Promise<void> {
  const rows = benchRows();
  const { steps } = settings();
  for (const row of rows) {
    const s = record(row);
    try {
      await runnerFor(row);
      for (let i = 0; i < steps; i++) await timedStep(row);
    } catch (e) {
      s.error = (e as Error).message.split("\n")[0];
    }
    console.error(
      `${rowLabel(row)} (${row.backend}): ${s.ms.map((m) => m.toFixed(0)).join(" ")} ms`,
    );
  }
  console.log(table(rows));
  for (const d of devices.values()) (await d.catch(() => null))?.destroy();
}

/**
 * The entry point of `bench/train_bench.ts` and `bench/tfjs/train.ts`: under
 * `deno run` (`isMain`) every row and the table, under `deno bench` the bench
 * entries; a bad `TRAIN_BENCH_*` value is reported as a usage error (one line,
 * exit 2) either way.
 */
export async function trainBenchEntry(isMain: boolean): Promise<void> {
  // llvmpipe's vector width as `train` picks it for the rows' models, before any adapter.
  await preferWideVectors({
    hiddenSize: Math.max(REFERENCE.model.hiddenSize, defaultTrainConfig().model.hiddenSize),
  });
  if (isMain) {
    Deno.exitCode = await handled([], async () => (await main(), 0));
    return;
  }
  try {
    registerBenchesWithTable();
  } catch (e) {
    Deno.exit(reportError(e, false));
  }
}

/** `deno bench`: the bench entries, and the table printed when the run ends. */
function registerBenchesWithTable(): void {
  registerBenches();
  globalThis.addEventListener("unload", () => {
    if (samples.size) console.log("\n" + table());
  });
}
