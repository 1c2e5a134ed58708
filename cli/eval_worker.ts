/**
 * Worker module of a tensor-parallel `deno task eval --tp N`: each rank loads
 * its shards of the model and takes part in every forward pass; rank 0 prints.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import type { BertEvalResult } from "./bert_model.ts";
import { EVAL_FLAGS, evalRank, type EvalResult } from "./eval.ts";
import { runTensorParallelRank } from "./tp_command.ts";

/** Evaluates this rank's share. */
export default function main(ctx: WorkerContext): Promise<EvalResult | BertEvalResult> {
  return runTensorParallelRank(ctx, EVAL_FLAGS, evalRank);
}
