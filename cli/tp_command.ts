/**
 * Commands that split one model over tensor-parallel ranks without data
 * parallelism (`eval`, `generate`): at TP > 1 one Worker (and device) per
 * rank, on Dawn unless `--backend` names another, where every rank runs the
 * command's per-rank function and rank 0 prints (errors too); at TP = 1 the
 * same function on one device here.
 * @module
 */

import { DEFAULT_DIST_TIMEOUT_MS, localDistConfig } from "../collectives/env.ts";
import { launch, type WorkerContext } from "../collectives/launch.ts";
import { Device } from "../core/device.ts";
import { DEFAULT_BACKEND, parseBackend } from "../core/gpu.ts";
import type { ParallelLayers } from "../models/parallel/layers.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { reportRankError } from "./errors.ts";
import { type FlagSpec, type FlagValues, parseFlags, wasGiven } from "./flags.ts";

/** A command's work on one rank: `print` on rank 0 only; `layers` split the model (TP > 1). */
export type RankFn<T> = (
  device: Device,
  f: FlagValues,
  print: boolean,
  layers?: ParallelLayers,
) => Promise<T>;

/**
 * Runs `rank` as the command line `args` (parsed as `f`) asks: over
 * `--tensor-model-parallel-size` Workers of `worker` (a module whose default
 * export calls {@link runTensorParallelRank}), or on one device here. Returns
 * the exit code.
 */
export async function runTensorParallel<T>(
  f: FlagValues,
  args: string[],
  worker: URL,
  rank: RankFn<T>,
): Promise<number> {
  const tp = f["tensor-model-parallel-size"] as number;
  if (tp > 1) {
    const cfg = localDistConfig(tp, DEFAULT_DIST_TIMEOUT_MS);
    // Dawn, not defaultBackendFor(tp)'s Deno WebGPU for several ranks in one process:
    // these commands sync at every collective of every batch or token, and a Dawn sync
    // costs ~0.02 ms against Deno's ≥ 10 ms poll. On the 2-core build machine Dawn's
    // one-at-a-time devices still won: generate at TP=2 8 against 71 ms/token (hidden 32)
    // and 50 against 235 (hidden 512, 4 layers); eval 3.4 against 22 s and 83 against 100 s.
    const backendArgs = wasGiven(f, "backend") ? [] : ["--backend", DEFAULT_BACKEND];
    return await launch(cfg, worker, [...args, ...backendArgs], { log: false });
  }
  let device: Device | undefined;
  try {
    device = await Device.create({ backend: parseBackend(f.backend as string) });
    await rank(device, f, true);
    return 0;
  } finally {
    await device?.close();
  }
}

/**
 * One Worker's share of {@link runTensorParallel}: parses the command's
 * `flags` from the rank's arguments, opens its device and runs `rank` with
 * the model split over the job's group. Rank 0 prints the one error line.
 */
export async function runTensorParallelRank<T>(
  ctx: WorkerContext,
  flags: Record<string, FlagSpec>,
  rank: RankFn<T>,
): Promise<T> {
  let device: Device | undefined;
  try {
    const f = parseFlags(ctx.args, flags);
    device = await Device.create({ backend: parseBackend(f.backend as string) });
    ctx.deviceAcquired();
    return await rank(device, f, ctx.rank === 0, new TensorParallelLayers(device, ctx.group));
  } catch (e) {
    // Rank 0 prints the one error line; the launcher (log off) exits 1.
    reportRankError(e, ctx.rank, ctx.args, ctx.localRank);
    throw e;
  } finally {
    await device?.close();
  }
}
