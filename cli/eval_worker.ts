/**
 * Worker module of a tensor-parallel `deno task eval --tp N`: each rank loads
 * its shards of the model and takes part in every forward pass; rank 0 prints.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import type { BertEvalResult } from "./bert_model.ts";
import { reportRankError } from "./errors.ts";
import { EVAL_FLAGS, evalRank, type EvalResult } from "./eval.ts";
import { parseFlags } from "./flags.ts";

/** Evaluates this rank's share. */
export default async function main(ctx: WorkerContext): Promise<EvalResult | BertEvalResult> {
  let device: Device | undefined;
  try {
    const f = parseFlags(ctx.args, EVAL_FLAGS);
    device = await Device.create({ backend: parseBackend(f.backend as string) });
    ctx.deviceAcquired();
    return await evalRank(device, f, ctx.rank === 0, new TensorParallelLayers(device, ctx.group));
  } catch (e) {
    // Rank 0 prints the one error line; the launcher (log off) exits 1.
    reportRankError(e, ctx.rank, ctx.args, ctx.localRank);
    throw e;
  } finally {
    await device?.close();
  }
}
