/**
 * Cross-entropy over logits split by vocabulary across ranks. Each rank holds
 * `[rows, cols]` logits for global columns `[start, start + cols)`; only per-row
 * statistics cross ranks (the max, then Σexp and the target logit), never the
 * logits. The communication is passed in, so core stays free of collectives.
 * @module
 */

import {
  crossEntropyBackwardKernel,
  crossEntropyDispatch,
  shardFinishKernel,
  shardMaxKernel,
  shardSumExpKernel,
} from "../../kernels/crossentropy.ts";
import { gridFor } from "../../kernels/grid.ts";
import { record } from "../autograd.ts";
import { fmtShape, Tensor } from "../tensor.ts";
import { mapRaw, zeros } from "./basic.ts";
import { reduceInto } from "./reduce.ts";

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
  let count = rows;
  if (targets.hostData) {
    count = 0;
    for (const t of targets.hostData) {
      if (t >= shard.validVocab) {
        throw new Error(`cross-entropy: target ${t} out of range for ${shard.validVocab} classes`);
      }
      if (t >= 0) count++;
    }
  }
  const device = logits.device;
  const d = crossEntropyDispatch(rows, cols, valid, shard.start);
  const gmax = Tensor.empty(device, [rows]);
  device.dispatch(shardMaxKernel(), [logits.binding, gmax.binding], d.params, d.workgroups);
  await allReduce(gmax, "max");
  const stats = Tensor.empty(device, [2 * rows]);
  device.dispatch(
    shardSumExpKernel(),
    [logits.binding, targets.binding, gmax.binding, stats.binding],
    d.params,
    d.workgroups,
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
  const total = Tensor.empty(device, [1]);
  reduceInto(rowLoss, "sum", total);
  rowLoss.dispose();
  const inv = 1 / Math.max(shard.normalizer ?? count, 1e-30);
  const out = mapRaw("scale", total, undefined, inv, 0);
  total.dispose();
  const res = record(out, "vocabParallelCrossEntropy", [logits], (g) => {
    const tmp = zeros(device, [rows]);
    const gRows = mapRaw("axpby", tmp, g, 0, inv);
    tmp.dispose();
    const dx = Tensor.empty(device, logits.shape);
    device.dispatch(
      crossEntropyBackwardKernel(),
      [logits.binding, targets.binding, lse.binding, gRows.binding, dx.binding],
      d.params,
      d.workgroups,
    );
    gRows.dispose();
    return [dx];
  });
  if (!res.node) lse.dispose();
  return res;
}
