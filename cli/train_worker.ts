/**
 * The Worker module of a distributed `deno task train`: each rank parses the
 * same flags and runs {@link trainRank} with its context.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parseFlags } from "./flags.ts";
import { TRAIN_FLAGS } from "./train_config.ts";
import { trainRank, type TrainSummary } from "./train_run.ts";

/** Runs this rank's share of the training job. */
export default async function main(ctx: WorkerContext): Promise<TrainSummary> {
  return await trainRank(parseFlags(ctx.args, TRAIN_FLAGS), ctx);
}
