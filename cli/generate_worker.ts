/**
 * Worker module of a tensor-parallel `deno task generate --tp N`: each rank
 * loads its shards of the model and takes part in every forward pass; all
 * ranks sample the same tokens (the logits are gathered, the seed is shared);
 * rank 0 streams the text.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { reportRankError } from "./errors.ts";
import { parseFlags } from "./flags.ts";
import { GENERATE_FLAGS, generateRank } from "./generate.ts";

/** Generates on this rank. */
export default async function main(ctx: WorkerContext): Promise<void> {
  let device: Device | undefined;
  try {
    const f = parseFlags(ctx.args, GENERATE_FLAGS);
    device = await Device.create({ backend: parseBackend(f.backend as string) });
    ctx.deviceAcquired();
    await generateRank(device, f, ctx.rank === 0, new TensorParallelLayers(device, ctx.group));
  } catch (e) {
    // Rank 0 prints the one error line; the launcher (log off) exits 1.
    reportRankError(e, ctx.rank, ctx.args, ctx.localRank);
    throw e;
  } finally {
    await device?.close();
  }
}
