/**
 * One measurement of `bench/mixed_precision.ts`: a GPT's training step in fp32,
 * bf16 or fp16, with the buffer pool's peak and its split into what persists
 * (weights, 16-bit copies, AdamW moments), the gradients and the saved
 * activations, and, at TP or DP > 1 (one Worker per rank, `default` below), the
 * bytes this rank sends through its tensor-parallel and data-parallel groups per
 * step, the loss of every step and (on request) the final weights, to compare the
 * 16-bit data-parallel gradient wire with the fp32 one.
 * @module
 */

import type { ProcessGroup } from "../collectives/group.ts";
import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { enableF16Arithmetic } from "../core/ops/f16_arithmetic.ts";
import { parseBackend } from "../core/gpu.ts";
import { packSaved, type Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { LossScaler } from "../models/loss_scale.ts";
import {
  bytesSent,
  type CommBytes,
  countedGroup,
  countsInNorm,
  hybridHooks,
  noCommBytes,
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
  /** Precision (`fp16-f16`: fp16 with native f16 arithmetic, `--f16-arithmetic`). */
  mode: "fp32" | "bf16" | "fp16" | "fp16-f16";
  /** Tensor-parallel size (ranks = tp · dp; 1 rank runs in-process). */
  tp: number;
  /** Data-parallel size (default 1); each DP replica trains on different tokens. */
  dp?: number;
  /**
   * How bf16/fp16 gradients are averaged over the DP group: `half` (the default, as
   * `deno task train`) sends their 16-bit values, `fp32` the fp32 all-reduce of
   * `--accumulate-allreduce-grads-in-fp32`. fp32 runs always use fp32.
   */
  dpWire?: "half" | "fp32";
  /** Return this rank's parameters after the last step ({@link MixedResult.weights}). */
  keepWeights?: boolean;
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
  /** Bytes sent through the DP group per timed step (zero at DP=1). */
  dpBytes: CommBytes;
  /** Of {@link dpBytes}, those of the gradient average (the rest: the logged loss's average). */
  dpGradBytes: number;
  /**
   * Mean ms per timed step of the gradient average, from after the backward's GPU
   * work (a sync first) to the averaged gradients written back: readback, 16-bit
   * packing, the exchange (waiting for the other ranks included), fp32 sum, upload.
   */
  dpGradMs: number;
  /** The loss of every step, the untimed first one included (averaged over DP). */
  losses: number[];
  /** Steps the fp16 loss scaler skipped, of all steps. */
  skipped: number;
  /** This rank's parameters after the last step, concatenated in `namedParams` order. */
  weights?: Float32Array;
}

/** Measures `run` on `device` with `groups` the rank's TP and DP groups (absent: one rank). */
export async function measure(
  device: Device,
  run: MixedRun,
  groups?: Parameters<typeof hybridHooks>[1] & { tpRank: number; dpRank: number },
): Promise<MixedResult> {
  const { config, batch, seq, steps, mode } = run;
  const half = mode === "fp32" ? undefined : mode === "bf16" ? "bf16" : "fp16";
  if (mode === "fp16-f16") await enableF16Arithmetic(device);
  const count = noCommBytes(), dpCount = noCommBytes();
  const tpGroup = groups
    ? countedGroup(groups.tpGroup as Parameters<typeof countedGroup>[0], count)
    : null;
  const dpGroup = groups ? countedGroup(groups.dpGroup as ProcessGroup, dpCount) : null;
  const m = tpGroup
    ? new Gpt(new TensorParallelLayers(device, tpGroup, { wire: half }), config, {
      seed: 1,
      rng: new RngTracker(1, groups!.tpRank, groups!.dpRank),
    })
    : Gpt.serial(device, config, 1);
  const dpWire = run.dpWire === "fp32" ? undefined : half;
  const hooks = tpGroup
    ? hybridHooks(device, { tpGroup, dpGroup: dpGroup! }, undefined, dpWire)
    : undefined;
  // the gradient average's bytes: what the DP group sends while it runs
  let dpGradBytes = 0, dpGradMs = 0;
  const allReduceGradients = hooks?.allReduceGradients;
  if (hooks && allReduceGradients && groups!.dpGroup.size > 1) {
    hooks.allReduceGradients = async (params) => {
      const before = bytesSent(dpCount);
      await device.sync();
      const t0 = performance.now();
      await allReduceGradients.call(hooks, params);
      await device.sync();
      dpGradMs += performance.now() - t0;
      dpGradBytes += bytesSent(dpCount) - before;
    };
  }
  const trainer = new Trainer(device, m, {
    schedule: { lr: 1e-3, decayIters: 1000, style: "constant" },
    clipGrad: 1,
    hooks,
    countsInNorm: tpGroup ? countsInNorm(groups!.tpRank) : undefined,
    precision: half
      ? { half, scaler: half === "fp16" ? new LossScaler({ initial: 2 ** 12 }) : undefined }
      : undefined,
  });
  const V = config.vocabSize;
  // each data-parallel replica its own tokens (the TP ranks of a replica the same)
  const at = (groups?.dpRank ?? 0) * batch * seq;
  const ids = Int32Array.from({ length: batch * seq }, (_, i) => ((at + i) * 7919) % V);
  const tg = Int32Array.from({ length: batch * seq }, (_, i) => ((at + i) * 104729 + 1) % V);
  const x = TokenIds.fromHost(device, ids, [batch, seq]).keep();
  const y = TokenIds.fromHost(device, tg, [batch, seq]).keep();
  const losses: number[] = [];
  let skipped = 0;
  const record = (r: { loss: number; skipped: boolean }) => {
    losses.push(r.loss);
    if (r.skipped) skipped++;
  };
  // compiles pipelines, creates moments and copies
  record(await trainer.step(1, () => m.loss(x, y)));
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
  for (const c of [count, dpCount]) Object.assign(c, noCommBytes());
  dpGradBytes = dpGradMs = 0;
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) record(await trainer.step(1, lossOf));
  const ms = (performance.now() - t0) / steps;
  peak = Math.max(peak, device.pool.peakBytes);
  let weights: Float32Array | undefined;
  if (run.keepWeights) {
    const ps = m.namedParams().map(([, p]) => p.tensor);
    weights = new Float32Array(ps.reduce((n, p) => n + p.size, 0));
    let o = 0;
    for (const p of ps) {
      weights.set(await p.read(), o);
      o += p.size;
    }
  }
  m.dispose();
  const perStep = (v: number) => v / steps;
  const per = (c: CommBytes): CommBytes => ({
    allReduce: perStep(c.allReduce),
    allGather: perStep(c.allGather),
    half: perStep(c.half),
    calls: perStep(c.calls),
  });
  return {
    msPerStep: ms,
    peak,
    persistent,
    grads,
    saved,
    forwardPeak,
    tpBytes: per(count),
    dpBytes: per(dpCount),
    dpGradBytes: perStep(dpGradBytes),
    dpGradMs: perStep(dpGradMs),
    losses,
    skipped,
    weights,
  };
}

/** One rank of a TP × DP run: `ctx.args[0]` is the {@link MixedRun} as JSON. */
export default async function main(ctx: WorkerContext): Promise<MixedResult> {
  const run = JSON.parse(ctx.args[0]) as MixedRun;
  const g = parallelGroups(ctx.group, run.tp);
  const device = await Device.create({ backend: parseBackend(run.backend) });
  ctx.deviceAcquired();
  try {
    return await measure(device, run, {
      tpGroup: g.tpGroup,
      dpGroup: g.dpGroup,
      tpRank: g.position.tpRank,
      dpRank: g.position.dpRank,
    });
  } finally {
    await device.close();
  }
}
