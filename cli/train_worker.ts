/**
 * The Worker module of a distributed `deno task train`: each rank parses the
 * same flags and runs {@link trainRank} with its context. Signals come from the
 * process's main thread (cli/signals.ts). Rank 0 prints a failure as one
 * `error: …` line (cli/errors.ts); every rank then fails, so the launcher
 * exits 1.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { defaultBackendFor } from "../core/gpu.ts";
import { reportRankError } from "./errors.ts";
import { parseFlags } from "./flags.ts";
import { WorkerStopRequest } from "./signals.ts";
import { trainArgsFromFlags } from "./train_args.ts";
import { TRAIN_FLAGS } from "./train_flags.ts";
import { trainRank, type TrainSummary } from "./train_run.ts";

/** Runs this rank's share of the training job. */
export default async function main(ctx: WorkerContext): Promise<TrainSummary> {
  const stop = new WorkerStopRequest(ctx.stopWord);
  try {
    const f = parseFlags(ctx.args, TRAIN_FLAGS);
    // Started by `deno task launch` with no --backend (train passes its choice on): the
    // default train takes for this many devices in one process.
    f.backend ??= defaultBackendFor(ctx.ranksInProcess);
    return await trainRank(trainArgsFromFlags(f), ctx, stop);
  } catch (e) {
    reportRankError(e, ctx.rank, ctx.args, ctx.localRank);
    throw e;
  } finally {
    stop.close();
  }
}
