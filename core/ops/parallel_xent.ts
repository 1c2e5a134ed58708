/**
 * Cross-entropy over logits split by vocabulary across ranks. Each rank holds
 * `[rows, cols]` logits for global columns `[start, start + cols)`; only per-row
 * statistics cross ranks (the max, then Σexp and the target logit), never the
 * logits. The communication is passed in, so core stays free of collectives.
 * @module
 */

import {
  crossEntropyDispatch,
  shardFinishKernel,
  shardMaxKernel,
  shardSumExpKernel,
} from "../../kernels/crossentropy.ts";
import { gridFor } from "../../kernels/grid.ts";
import { fmtShape, Tensor } from "../tensor.ts";
import { countTargets, finishCrossEntropy } from "./nn.ts";
import { dispatchRows } from "./rows.ts";

/** In-place all-reduce of a GPU tensor over the vocabulary-parallel group. */
export type TensorAllReduce = (t: Tensor, op: "sum" | "max") => Promise<void>;

/** Where this rank's shard sits in the vocabulary. */
export interface VocabShard {
  /** First global column of the shard. */
  start: number;
  /** Global vocabulary entries that count (the rest is padding). */
  validVocab: number;
  /** Divides the summed loss instead of the local count of targets (see `crossEntropy`). */
  normalizer?: number;
}

/**
 * Mean cross-entropy of sharded `logits` against global `targets` (i32, negative
 * = ignored), identical on every rank. Two all-reduces of `rows` and `2·rows`
 * floats; the backward pass needs none.
 */
export async function vocabParallelCrossEntropy(
  logits: Tensor,
  targets: Tensor,
  shard: VocabShard,
  allReduce: TensorAllReduce,
): Promise<Tensor> {
  const cols = logits.shape[logits.rank - 1];
  const rows = logits.size / cols;
  if (targets.dtype !== "i32" || targets.size !== rows) {
    throw new Error(
      `vocabParallelCrossEntropy: ${rows} rows of logits ${fmtShape(logits.shape)} vs targets ${
        fmtShape(targets.shape)
      } (${targets.dtype})`,
    );
  }
  const valid = Math.max(0, Math.min(cols, shard.validVocab - shard.start));
  const count = countTargets(targets, shard.validVocab);
  const device = logits.device;
  const d = crossEntropyDispatch(rows, cols, valid, shard.start);
  const gmax = Tensor.empty(device, [rows]);
  dispatchRows(device, shardMaxKernel(), [logits.binding, gmax.binding], d.params, rows, cols);
  await allReduce(gmax, "max");
  const stats = Tensor.empty(device, [2 * rows]);
  dispatchRows(
    device,
    shardSumExpKernel(),
    [logits.binding, targets.binding, gmax.binding, stats.binding],
    d.params,
    rows,
    cols,
  );
  await allReduce(stats, "sum");
  const rowLoss = Tensor.empty(device, [rows]);
  const lse = Tensor.empty(device, [rows]);
  device.dispatch(
    shardFinishKernel(),
    [targets.binding, gmax.binding, stats.binding, rowLoss.binding, lse.binding],
    d.params,
    gridFor(rows, 64),
  );
  gmax.dispose();
  stats.dispose();
  return finishCrossEntropy(
    "vocabParallelCrossEntropy",
    logits,
    targets,
    rowLoss,
    lse,
    shard.normalizer ?? count,
    d,
  );
}
