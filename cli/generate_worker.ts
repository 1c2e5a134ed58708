/**
 * Worker module of a tensor-parallel `deno task generate --tp N`: each rank
 * loads its shards of the model and takes part in every forward pass; all
 * ranks sample the same tokens (the logits are gathered, the seed is shared);
 * rank 0 streams the text.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { GENERATE_FLAGS, generateRank } from "./generate.ts";
import { runTensorParallelRank } from "./tp_command.ts";

/** Generates on this rank. */
export default function main(ctx: WorkerContext): Promise<void> {
  return runTensorParallelRank(ctx, GENERATE_FLAGS, generateRank);
}
