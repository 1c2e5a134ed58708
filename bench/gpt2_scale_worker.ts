/**
 * One rank of the GPT-2-size check (`bench/gpt2_scale.ts`): loads a GPT-2 in
 * Hugging Face layout as this rank's tensor-parallel shard, evaluates one
 * batch, optionally takes training steps, and reports times and pool memory.
 * Runs as a Worker of the host (`runWorkers`) or, with `--print` after the
 * run's JSON, under cli/launch.ts as one pinned process per rank
 * (cli/pinned_procs.ts), printing its result as a tagged line.
 * @module
 */

import { attachTuner, describeTuning } from "../cli/autotune.ts";
import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { DataRng } from "../data/rng.ts";
import { Gpt } from "../models/gpt.ts";
import { assignGpt2, readHfGpt2 } from "../models/hf/gpt2.ts";
import { median } from "./stats.ts";
import { countsInNorm, hybridHooks } from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer } from "../models/trainer.ts";
import { printTaggedResult } from "../cli/pinned_procs.ts";

/** What the host asks one run to do. */
export interface Gpt2ScaleRun {
  /** HF directory (config.json + model.safetensors). */
  dir: string;
  /** Tensor-parallel size (= ranks). */
  tp: number;
  /** Sequence length. */
  seq: number;
  /** Micro-batch rows. */
  batch: number;
  /** Training steps to time (0: load and evaluate only). */
  steps: number;
  /** WebGPU backend. */
  backend: string;
}

/** The tag of the result line a rank prints with `--print` (cli/pinned_procs.ts). */
export const GPT2_SCALE_RESULT_TAG = "GPT2_SCALE_RESULT";

/** What one rank reports. */
export interface Gpt2ScaleResult {
  /** Parameters of the full model. */
  params: number;
  /** Loading the HF files and writing this rank's shard (ms). */
  loadMs: number;
  /** Mean next-token loss of the evaluation batch. */
  evalLoss: number;
  /** Forward pass of the evaluation batch (ms). */
  evalMs: number;
  /** Median ms per training step (NaN without steps). */
  msPerStep: number;
  /** Training losses. */
  losses: number[];
  /** This rank's parameter bytes. */
  weightBytes: number;
  /** Live pool bytes after the steps: weights, AdamW moments (gradients are dropped). */
  stateBytes: number;
  /** Peak pool bytes over evaluation and training. */
  peakBytes: number;
}

/** Runs the check on this rank. */
export default async function main(ctx: WorkerContext): Promise<Gpt2ScaleResult> {
  const run = JSON.parse(ctx.args[0]) as Gpt2ScaleRun;
  const groups = parallelGroups(ctx.group, run.tp);
  const device = await Device.create({ backend: parseBackend(run.backend) });
  ctx.deviceAcquired();
  try {
    const t0 = performance.now();
    const { config, tensors, source } = await readHfGpt2(run.dir);
    const cfg = { ...config, hiddenDropout: 0, attentionDropout: 0 };
    const { tpRank, dpRank } = groups.position;
    const model = new Gpt(new TensorParallelLayers(device, groups.tpGroup), cfg, {
      seed: 1,
      rng: new RngTracker(1, tpRank, dpRank),
    });
    assignGpt2(model.namedParams(), tensors, config, { tp: run.tp, tpRank }, source);
    const params = [...tensors.keys()]
      .reduce((s, n) => s + tensors.shapeOf(n)!.reduce((a, b) => a * b, 1), 0);
    await device.sync();
    const loadMs = performance.now() - t0;
    const weightBytes = model.namedParams().reduce((s, [, p]) => s + p.tensor.byteLength, 0);

    const rng = new DataRng(11);
    const n = run.batch * run.seq;
    const batch = () => {
      const ids = Int32Array.from({ length: n }, () => rng.nextInt(config.vocabSize));
      const tg = Int32Array.from({ length: n }, () => rng.nextInt(config.vocabSize));
      return [
        TokenIds.fromHost(device, ids, [run.batch, run.seq]),
        TokenIds.fromHost(device, tg, [run.batch, run.seq]),
      ] as const;
    };
    device.pool.resetPeak();
    model.train(false);
    const e0 = performance.now();
    const evalLoss = await device.noGrad(() =>
      tidy(device, async () => {
        const [ids, tg] = batch();
        return await (await model.loss(ids, tg)).item();
      })
    );
    const evalMs = performance.now() - e0;

    const losses: number[] = [];
    const times: number[] = [];
    if (run.steps > 0) {
      model.train(true);
      const trainer = new Trainer(device, model, {
        schedule: { lr: 1e-4, decayIters: 1000, style: "constant" },
        clipGrad: 1,
        hooks: hybridHooks(device, { tpGroup: groups.tpGroup, dpGroup: groups.dpGroup }),
        countsInNorm: countsInNorm(tpRank),
      });
      // Tuned matmul tilings, as `deno task train` uses by default: one untimed step
      // shows the tuner every shape, then it times the tilings of those not in the
      // cache file (~/.cache/webgpu-megatron/matmul-tuning.json, per adapter and
      // shape). Ranks tuning at once (Workers or processes) each merge their choices
      // into the file and replace it atomically (cli/tuning_cache.ts). No time
      // budget: the bench measures the tuned kernels.
      const tuner = attachTuner(device, { enabled: true, budgetMs: Infinity })!;
      await trainer.step(1, () => {
        const [ids, tg] = batch();
        return model.loss(ids, tg);
      });
      const u0 = performance.now();
      const found = await tuner.tune();
      if (found.length) {
        const what = describeTuning(
          found,
          (performance.now() - u0) / 1000,
          tuner.saveError,
          tuner.deferred,
        );
        console.error(`rank ${ctx.rank}: ${what}`);
      }
      for (let s = 0; s < run.steps; s++) {
        const s0 = performance.now();
        const r = await trainer.step(1, () => {
          const [ids, tg] = batch();
          return model.loss(ids, tg);
        });
        times.push(performance.now() - s0);
        losses.push(r.loss);
      }
    }
    await device.sync();
    const result: Gpt2ScaleResult = {
      params,
      loadMs,
      evalLoss,
      evalMs,
      // The median, as PyTorch's side takes it (of an even count, the two middle steps' mean).
      msPerStep: times.length ? median(times) : NaN,
      losses,
      weightBytes,
      stateBytes: device.pool.liveBytes,
      peakBytes: device.pool.peakBytes,
    };
    if (ctx.args.includes("--print")) printTaggedResult(GPT2_SCALE_RESULT_TAG, result);
    return result;
  } finally {
    await device.close();
  }
}
