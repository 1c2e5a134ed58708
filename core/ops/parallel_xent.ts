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
  shardMaxTextureKernel,
  shardSumExpKernel,
  shardSumExpTextureKernel,
} from "../../kernels/crossentropy.ts";
import { gridFor } from "../../kernels/grid.ts";
import { fmtShape, Tensor } from "../tensor.ts";
import { TokenIds } from "../token_ids.ts";
import { axpyInPlace, mapRaw } from "./raw.ts";
import { countTargets, finishCrossEntropy } from "./nn.ts";
import { dispatchRowsFrom } from "./rows.ts";

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
 * Mean cross-entropy of sharded `logits` against global `targets` (`TokenIds`, negative
 * = ignored), identical on every rank. Two all-reduces of `rows` and `2·rows`
 * floats; the backward pass needs none.
 */
export async function vocabParallelCrossEntropy(
  logits: Tensor,
  targetIds: TokenIds,
  shard: VocabShard,
  allReduce: TensorAllReduce,
): Promise<Tensor> {
  const targets = TokenIds.check("vocabParallelCrossEntropy", targetIds, "targets").tensor;
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
  const count = countTargets(targetIds, shard.validVocab);
  const d = crossEntropyDispatch(rows, cols, valid, shard.start);
  const { rowLoss, lse } = await shardedRowStatistics(
    [{ logits, params: d.params }],
    targets,
    allReduce,
  );
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

/** One block of vocabulary columns: its logits and the cross-entropy uniforms for it. */
export interface LogitShard {
  /** `[rows, cols]` logits of global columns `[start, start + cols)`. */
  logits: Tensor;
  /** `crossEntropyDispatch(rows, cols, valid, start).params` for this block. */
  params: ArrayBuffer;
}

/**
 * Per-row log-sum-exp and loss over logits split into column blocks (vocabulary
 * chunks on this device and, with `allReduce`, shards on other ranks): the
 * row max over all blocks, then Σexp and the target logit, then
 * `lse = max + log Σexp` and `loss = lse − target logit` (0 for ignored rows).
 */
export async function shardedRowStatistics(
  shards: readonly LogitShard[],
  targets: Tensor,
  allReduce?: TensorAllReduce,
): Promise<{ rowLoss: Tensor; lse: Tensor }> {
  const device = targets.device;
  const rows = targets.size;
  const colsOf = (t: Tensor) => t.shape[t.rank - 1];
  let gmax: Tensor | null = null;
  for (const { logits, params } of shards) {
    const part = Tensor.empty(device, [rows]);
    dispatchRowsFrom(
      device,
      { plain: shardMaxKernel(), texture: shardMaxTextureKernel() },
      [logits],
      [part.binding],
      params,
      rows,
      colsOf(logits),
    );
    if (gmax) {
      const both: Tensor = mapRaw("max", gmax, part);
      gmax.dispose();
      part.dispose();
      gmax = both;
    } else gmax = part;
  }
  const rowMax = gmax!;
  await allReduce?.(rowMax, "max");
  let stats: Tensor | null = null;
  for (const { logits, params } of shards) {
    const part = Tensor.empty(device, [2 * rows]);
    dispatchRowsFrom(
      device,
      { plain: shardSumExpKernel(), texture: shardSumExpTextureKernel() },
      [logits],
      [targets.binding, rowMax.binding, part.binding],
      params,
      rows,
      colsOf(logits),
    );
    if (stats) {
      axpyInPlace(stats, part, 1);
      part.dispose();
    } else stats = part;
  }
  await allReduce?.(stats!, "sum");
  const rowLoss = Tensor.empty(device, [rows]);
  const lse = Tensor.empty(device, [rows]);
  device.dispatch(
    shardFinishKernel(),
    [targets.binding, rowMax.binding, stats!.binding, rowLoss.binding, lse.binding],
    shards[0].params,
    gridFor(rows, 64),
  );
  rowMax.dispose();
  stats!.dispose();
  return { rowLoss, lse };
}
