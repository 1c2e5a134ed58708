/**
 * The Worker module of a distributed `deno task train`: each rank parses the
 * same flags and runs {@link trainRank} with its context. Signals come from the
 * process's main thread (cli/signals.ts). Rank 0 prints a failure as one
 * `error: …` line (cli/errors.ts); every rank then fails, so the launcher
 * exits 1.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { reportRankError } from "./errors.ts";
import { parseFlags } from "./flags.ts";
import { WorkerStopRequest } from "./signals.ts";
import { trainArgsFromFlags } from "./train_args.ts";
import { TRAIN_FLAGS } from "./train_config.ts";
import { trainRank, type TrainSummary } from "./train_run.ts";

/** Runs this rank's share of the training job. */
export default async function main(ctx: WorkerContext): Promise<TrainSummary> {
  const stop = new WorkerStopRequest();
  try {
    return await trainRank(trainArgsFromFlags(parseFlags(ctx.args, TRAIN_FLAGS)), ctx, stop);
  } catch (e) {
    reportRankError(e, ctx.rank, ctx.args, ctx.localRank);
    throw e;
  } finally {
    stop.close();
  }
}
