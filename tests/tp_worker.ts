/**
 * Worker module of the tensor-parallel tests: builds a model over this rank's
 * TP × DP groups, trains a few steps on deterministic data (every DP rank takes
 * its slice of the same global batch) and returns the losses and this rank's
 * parameter shards with their sharding declarations.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { BACKEND_ENV, defaultBackendFor, parseBackend } from "../core/gpu.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Bert } from "../models/bert.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { countsInNorm, hybridHooks } from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer } from "../models/trainer.ts";
import { prng } from "./helpers.ts";

/** What the test asks a run to do. */
export interface TpRunSpec {
  /** Which model (default gpt). */
  model?: "gpt" | "bert";
  /** BERT only: layer norm after the residual. */
  postLayerNorm?: boolean;
  /** Tensor-parallel size. */
  tp: number;
  /** Model config. */
  config: GptConfig;
  /** Global batch rows (split over DP ranks). */
  batch: number;
  /** Sequence length. */
  seq: number;
  /** Optimizer steps. */
  steps: number;
  /** Seed. */
  seed: number;
  /** Micro-batches per step (default 1; the rows of each rank split evenly). */
  microBatches?: number;
  /** `--overlap-tp-comm` (models/parallel/overlap.ts). */
  overlapTpComm?: boolean;
  /** `--overlap-grad-reduce`. */
  overlapGradReduce?: boolean;
  /** `--ddp-bucket-size`. */
  ddpBucketSize?: number;
  /** Mixed precision (16-bit weight copies, rounded gradients, 16-bit DP wire). */
  half?: "fp16" | "bf16";
}

/** One parameter shard as returned to the test. */
export interface ShardOut {
  /** Parameter name. */
  name: string;
  /** Split dimension or null. */
  partitionDim: number | null;
  /** Fused blocks. */
  blocks: number;
  /** Local shape. */
  shape: number[];
  /** Values. */
  data: Float32Array;
}

/** Deterministic token batch for step `s`. */
export function batchFor(spec: TpRunSpec, s: number): { ids: Int32Array; targets: Int32Array } {
  const r = prng(1000 + s);
  const n = spec.batch * spec.seq;
  const v = spec.config.vocabSize;
  return {
    ids: Int32Array.from({ length: n }, () => Math.floor(r() * v)),
    targets: Int32Array.from({ length: n }, () => Math.floor(r() * v)),
  };
}

/** Deterministic BERT batch for step `s` (rows [lo, hi) of the global batch). */
export function bertBatchFor(spec: TpRunSpec, s: number) {
  const r = prng(2000 + s);
  const B = spec.batch, T = spec.seq, v = spec.config.vocabSize;
  const ids = new Int32Array(B * T),
    types = new Int32Array(B * T),
    mlm = new Int32Array(B * T).fill(-1);
  const keep = new Float32Array(B * T), sop = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    const len = T - (b % 3); // some rows padded
    sop[b] = b % 2;
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      keep[i] = t < len ? 1 : 0;
      ids[i] = t < len ? Math.floor(r() * v) : 0;
      types[i] = t >= len / 2 && t < len ? 1 : 0;
      if (t < len && r() < 0.3) mlm[i] = Math.floor(r() * v);
    }
  }
  return { ids, types, keep, mlm, sop };
}

/** Runs the spec on this rank. */
export default async function main(ctx: WorkerContext) {
  const spec = JSON.parse(ctx.args[0]) as TpRunSpec;
  const { layout: grid, position, tpGroup, dpGroup } = parallelGroups(ctx.group, spec.tp);
  const layout = { ...position, dp: grid.dp };
  const device = await Device.create({
    backend: parseBackend(Deno.env.get(BACKEND_ENV), defaultBackendFor(ctx.world)),
  });
  ctx.deviceAcquired();
  try {
    const layers = new TensorParallelLayers(device, tpGroup, { overlapComm: spec.overlapTpComm });
    const rng = new RngTracker(spec.seed, layout.tpRank, layout.dpRank);
    const bert = spec.model === "bert";
    const model = bert
      ? new Bert(layers, { ...spec.config, postLayerNorm: spec.postLayerNorm }, {
        seed: spec.seed,
        rng,
      })
      : new Gpt(layers, spec.config, { seed: spec.seed, rng });
    const trainer = new Trainer(device, model, {
      schedule: { lr: 3e-3, warmupIters: 1, decayIters: spec.steps },
      clipGrad: 1,
      hooks: hybridHooks(device, { tpGroup, dpGroup }, undefined, spec.half, {
        overlap: spec.overlapGradReduce,
        bucketSize: spec.ddpBucketSize,
      }),
      countsInNorm: countsInNorm(layout.tpRank),
      precision: spec.half ? { half: spec.half } : undefined,
    });
    const micro = spec.microBatches ?? 1;
    const rows = spec.batch / layout.dp;
    const losses: number[] = [];
    const norms: number[] = [];
    for (let s = 0; s < spec.steps; s++) {
      const r = await trainer.step(micro, (m) => {
        const mRows = rows / micro;
        const lo = (layout.dpRank * rows + m * mRows) * spec.seq;
        const hi = lo + mRows * spec.seq;
        const shape = [mRows, spec.seq];
        if (model instanceof Bert) {
          const b = bertBatchFor(spec, s);
          return model.loss({
            ids: TokenIds.fromHost(device, b.ids.slice(lo, hi), shape),
            tokenTypes: TokenIds.fromHost(device, b.types.slice(lo, hi), shape),
            keep: Tensor.fromArray(device, b.keep.slice(lo, hi), shape),
            mlmTargets: TokenIds.fromHost(device, b.mlm.slice(lo, hi), shape),
            sopLabels: TokenIds.fromHost(
              device,
              b.sop.slice(layout.dpRank * rows + m * mRows, layout.dpRank * rows + (m + 1) * mRows),
              [mRows],
            ),
            mlmNormalizer: b.mlm.filter((t) => t >= 0).length / layout.dp,
          });
        }
        const { ids, targets } = batchFor(spec, s);
        return model.loss(
          TokenIds.fromHost(device, ids.slice(lo, hi), shape),
          TokenIds.fromHost(device, targets.slice(lo, hi), shape),
        );
      });
      losses.push(r.loss);
      norms.push(r.gradNorm);
    }
    const named = model.namedParams();
    const vals = layout.dpRank === 0
      ? await device.readMany(named.map(([, p]) => p.tensor.binding))
      : [];
    const shards: ShardOut[] = layout.dpRank === 0
      ? named.map(([name, p], i) => ({
        name,
        partitionDim: p.partitionDim,
        blocks: p.partitionBlocks,
        shape: [...p.tensor.shape],
        data: new Float32Array(vals[i]),
      }))
      : [];
    return { rank: ctx.rank, tpRank: layout.tpRank, dpRank: layout.dpRank, losses, norms, shards };
  } finally {
    await device.close();
  }
}
