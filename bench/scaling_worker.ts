/**
 * Worker of the weak-scaling benchmark: trains a GPT over this rank's
 * tensor-parallel group on synthetic tokens and reports the mean step time
 * (and, when asked, the time spent in collectives).
 * @module
 */

import { attachTuner } from "../cli/autotune.ts";
import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { TokenIds } from "../core/token_ids.ts";
import { DataRng } from "../data/rng.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { type CommTimer, countsInNorm, hybridHooks, timedGroup } from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer } from "../models/trainer.ts";
import { printTaggedResult } from "../cli/pinned_procs.ts";

/** What one measurement runs. */
export interface ScalingRun {
  /** Model config. */
  config: GptConfig;
  /** Tensor-parallel size (= ranks). */
  tp: number;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence. */
  seq: number;
  /** Untimed steps first (pipeline compilation, pool warm-up). */
  warmup: number;
  /** Timed steps. */
  steps: number;
  /** Time collectives (adds a device sync before each). */
  measureComm: boolean;
  /** WebGPU backend. */
  backend: string;
  /**
   * `--overlap-tp-comm`: f's backward all-reduce overlapped with the weight
   * gradients. Its measured communication is then the exposed part: the
   * forward collectives (synchronised and timed as without overlap) plus the
   * time backward waited on in-flight gradients.
   */
  overlap?: boolean;
  /** Tune the matmul tilings after the first warm-up step (default true). */
  autotune?: boolean;
}

/** The tag of the result line a rank prints with `--print` (cli/pinned_procs.ts). */
export const SCALING_RESULT_TAG = "SCALING_RESULT";

/** What a rank reports. */
export interface ScalingResult {
  /** Mean milliseconds per timed step. */
  msPerStep: number;
  /** Mean milliseconds per step inside collectives (0 unless measured). */
  commMsPerStep: number;
  /** Each timed collective's milliseconds over the timed steps, in call order (when measured). */
  commCallMs?: number[];
  /** Final loss (sanity). */
  loss: number;
}

/** Runs the measurement on this rank. */
export default async function main(ctx: WorkerContext): Promise<ScalingResult> {
  const run = JSON.parse(ctx.args[0]) as ScalingRun;
  const groups = parallelGroups(ctx.group, run.tp);
  const device = await Device.create({ backend: parseBackend(run.backend) });
  ctx.deviceAcquired();
  try {
    const timer: CommTimer = { ms: 0, calls: [] };
    const tpGroup = run.measureComm ? timedGroup(groups.tpGroup, timer, device) : groups.tpGroup;
    const layers = new TensorParallelLayers(device, tpGroup, { overlapComm: run.overlap });
    const model = new Gpt(layers, run.config, {
      seed: 1,
      rng: new RngTracker(1, groups.position.tpRank, groups.position.dpRank),
    });
    const trainer = new Trainer(device, model, {
      schedule: { lr: 1e-3, decayIters: 1000, style: "constant" },
      clipGrad: 1,
      hooks: hybridHooks(
        device,
        { tpGroup, dpGroup: groups.dpGroup },
        run.measureComm ? timer : undefined,
      ),
      countsInNorm: countsInNorm(groups.position.tpRank),
      backwardWaits: run.measureComm ? timer : undefined,
    });
    const rng = new DataRng(7);
    const n = run.batch * run.seq;
    const step = () =>
      trainer.step(1, () => {
        const ids = Int32Array.from({ length: n }, () => rng.nextInt(run.config.vocabSize));
        const tg = Int32Array.from({ length: n }, () => rng.nextInt(run.config.vocabSize));
        return model.loss(
          TokenIds.fromHost(device, ids, [run.batch, run.seq]),
          TokenIds.fromHost(device, tg, [run.batch, run.seq]),
        );
      });
    // Tuned matmul tilings, as `deno task train` uses by default (cached on disk,
    // so later rounds and ranks reuse them): timed after the first warm-up step,
    // every shape (no time budget), so that each round measures tuned kernels.
    const tuner = attachTuner(device, { enabled: run.autotune ?? true, budgetMs: Infinity });
    for (let i = 0; i < run.warmup; i++) {
      await step();
      if (tuner?.pending) await tuner.tune();
    }
    timer.ms = 0;
    timer.calls!.length = 0;
    const t0 = performance.now();
    let loss = 0;
    for (let i = 0; i < run.steps; i++) loss = (await step()).loss;
    const ms = (performance.now() - t0) / run.steps;
    const result: ScalingResult = { msPerStep: ms, commMsPerStep: timer.ms / run.steps, loss };
    if (run.measureComm) result.commCallMs = timer.calls;
    // Run as one OS process per rank (bench/scaling.ts --procs): report on stdout.
    if (ctx.args.includes("--print")) printTaggedResult(SCALING_RESULT_TAG, result);
    return result;
  } finally {
    await device.close();
  }
}
