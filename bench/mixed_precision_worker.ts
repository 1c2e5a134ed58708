/**
 * One measurement of `bench/mixed_precision.ts`: a GPT's training step in fp32,
 * bf16 or fp16, with the buffer pool's peak and its split into what persists
 * (weights, 16-bit copies, AdamW moments), the gradients and the saved
 * activations, and, at TP > 1 (one Worker per rank, `default` below), the bytes
 * this rank sends through its tensor-parallel group per step.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { packSaved, type Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { LossScaler } from "../models/loss_scale.ts";
import {
  type CommBytes,
  countedGroup,
  countsInNorm,
  hybridHooks,
} from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer } from "../models/trainer.ts";

/** What one measurement runs. */
export interface MixedRun {
  /** The model. */
  config: GptConfig;
  /** Micro-batch rows. */
  batch: number;
  /** Sequence length. */
  seq: number;
  /** Timed steps (after one untimed step that compiles and allocates). */
  steps: number;
  /** Precision. */
  mode: "fp32" | "bf16" | "fp16";
  /** Tensor-parallel size (= ranks; 1 runs in-process). */
  tp: number;
  /** WebGPU backend. */
  backend?: string;
}

/** What one rank measured (bytes). */
export interface MixedResult {
  /** Mean ms per timed step. */
  msPerStep: number;
  /** Pool peak over the timed steps. */
  peak: number;
  /** Live between steps: weights, 16-bit copies, AdamW moments. */
  persistent: number;
  /** This rank's fp32 gradients. */
  grads: number;
  /** Live after the forward (and packSaved) beyond `persistent`. */
  saved: number;
  /** The forward's peak beyond `persistent`. */
  forwardPeak: number;
  /** Bytes sent through the TP group per timed step (zero at TP=1). */
  tpBytes: CommBytes;
}

/** Measures `run` on `device` with `tp` the rank's TP group (absent: one rank). */
export async function measure(
  device: Device,
  run: MixedRun,
  groups?: Parameters<typeof hybridHooks>[1] & { tpRank: number; dpRank: number },
): Promise<MixedResult> {
  const { config, batch, seq, steps, mode } = run;
  const half = mode === "fp32" ? undefined : mode;
  const count: CommBytes = { allReduce: 0, allGather: 0, calls: 0 };
  const tp = groups ? countedGroup(groups.tp as Parameters<typeof countedGroup>[0], count) : null;
  const m = tp
    ? new Gpt(new TensorParallelLayers(device, tp, { wire: half }), config, {
      seed: 1,
      rng: new RngTracker(1, groups!.tpRank, groups!.dpRank),
    })
    : Gpt.serial(device, config, 1);
  const trainer = new Trainer(device, m, {
    schedule: { lr: 1e-3, decayIters: 1000, style: "constant" },
    clipGrad: 1,
    hooks: tp ? hybridHooks(device, { tp, dp: groups!.dp }, undefined, half) : undefined,
    countsInNorm: tp ? countsInNorm(groups!.tpRank) : undefined,
    precision: half
      ? { half, scaler: half === "fp16" ? new LossScaler({ initial: 2 ** 12 }) : undefined }
      : undefined,
  });
  const V = config.vocabSize;
  const ids = Int32Array.from({ length: batch * seq }, (_, i) => (i * 7919) % V);
  const tg = Int32Array.from({ length: batch * seq }, (_, i) => (i * 104729 + 1) % V);
  const x = TokenIds.fromHost(device, ids, [batch, seq]).keep();
  const y = TokenIds.fromHost(device, tg, [batch, seq]).keep();
  await trainer.step(1, () => m.loss(x, y)); // compiles pipelines, creates moments and copies
  await tidy(device, () => Promise.resolve());
  const persistent = device.pool.liveBytes;
  const grads = m.namedParams().reduce((n, [, p]) => n + p.tensor.size * 4, 0);
  device.pool.resetPeak();
  let saved = 0, forwardPeak = 0, peak = 0;
  // the forward, then what the trainer does next (packSaved: a no-op for fp32)
  const lossOf = async (): Promise<Tensor> => {
    peak = Math.max(peak, device.pool.peakBytes);
    device.pool.resetPeak();
    const l = await m.loss(x, y);
    packSaved(device, [l]);
    saved = Math.max(saved, device.pool.liveBytes - persistent);
    forwardPeak = Math.max(forwardPeak, device.pool.peakBytes - persistent);
    return l;
  };
  Object.assign(count, { allReduce: 0, allGather: 0, calls: 0 });
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await trainer.step(1, lossOf);
  const ms = (performance.now() - t0) / steps;
  peak = Math.max(peak, device.pool.peakBytes);
  m.dispose();
  const perStep = (v: number) => v / steps;
  return {
    msPerStep: ms,
    peak,
    persistent,
    grads,
    saved,
    forwardPeak,
    tpBytes: {
      allReduce: perStep(count.allReduce),
      allGather: perStep(count.allGather),
      calls: perStep(count.calls),
    },
  };
}

/** One rank of a TP run: `ctx.args[0]` is the {@link MixedRun} as JSON. */
export default async function main(ctx: WorkerContext): Promise<MixedResult> {
  const run = JSON.parse(ctx.args[0]) as MixedRun;
  const g = parallelGroups(ctx.group, run.tp);
  const device = await Device.create({ backend: parseBackend(run.backend) });
  ctx.deviceAcquired();
  try {
    return await measure(device, run, {
      tp: g.tp,
      dp: g.dp,
      tpRank: g.position.tpRank,
      dpRank: g.position.dpRank,
    });
  } finally {
    await device.close();
  }
}
