/**
 * Cross-entropy over logits split by vocabulary across ranks. Each rank holds
 * `[rows, cols]` logits for global columns `[start, start + cols)`; only per-row
 * statistics cross ranks, never the logits: each rank's row max, its Σexp
 * relative to that max and its target logit, gathered in one all-reduce and
 * combined as an online softmax combines blocks. The communication is passed
 * in, so core stays free of collectives.
 * @module
 */

import {
  crossEntropyDispatch,
  shardFinishKernel,
  shardGatheredFinishKernel,
  shardMaxKernel,
  shardMaxTextureKernel,
  shardSumExpKernel,
  shardSumExpTextureKernel,
} from "../../kernels/crossentropy.ts";
import { gridFor } from "../../kernels/grid.ts";
import { assertF32, fmtShape, lastDim, Tensor } from "../tensor.ts";
import { TokenIds } from "../token_ids.ts";
import { axpyInPlace, mapRaw, zeros } from "./raw.ts";
import { countTargets, finishCrossEntropy, lossDivisor } from "./nn.ts";
import { dispatchRowsFrom } from "./rows.ts";

/**
 * The vocabulary-parallel group as the cross-entropy needs it: this rank's
 * position, the group's size, and an in-place sum of a GPU tensor over it.
 */
export interface VocabGroup {
  /** This rank's position in the group. */
  readonly rank: number;
  /** Ranks in the group. */
  readonly size: number;
  /** In-place all-reduce (sum) of `t` over the group. */
  allReduce(t: Tensor, op: "sum"): Promise<void>;
}

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
 * = ignored), identical on every rank. One all-reduce of `3·rows·ranks` floats
 * (see {@link shardedRowStatistics}); the backward pass needs none.
 */
export async function vocabParallelCrossEntropy(
  logits: Tensor,
  targetIds: TokenIds,
  shard: VocabShard,
  group: VocabGroup,
): Promise<Tensor> {
  const targets = TokenIds.check("vocabParallelCrossEntropy", targetIds, "targets", logits.device)
    .tensor;
  assertF32("vocabParallelCrossEntropy", logits);
  const cols = lastDim("vocabParallelCrossEntropy", logits);
  const rows = logits.size / cols;
  if (targets.dtype !== "i32" || targets.size !== rows) {
    throw new Error(
      `vocabParallelCrossEntropy: ${rows} rows of logits ${fmtShape(logits.shape)} vs targets ${
        fmtShape(targets.shape)
      } (${targets.dtype})`,
    );
  }
  const valid = Math.max(0, Math.min(cols, shard.validVocab - shard.start));
  const count = countTargets(targetIds, shard.validVocab, "vocabParallelCrossEntropy");
  const d = crossEntropyDispatch(rows, cols, valid, shard.start);
  const { rowLoss, lse } = await shardedRowStatistics(
    [{ logits, params: d.params }],
    targets,
    group,
  );
  return finishCrossEntropy(
    "vocabParallelCrossEntropy",
    logits,
    targets,
    rowLoss,
    lse,
    lossDivisor("vocabParallelCrossEntropy", shard.normalizer, count),
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
 * chunks on this device and, with `group`, shards on other ranks): the row max
 * `m` over this rank's blocks, then its `Σexp(x − m)` and target logit. With a
 * group, every rank writes its three values per row into its own slot of a
 * zeroed `[ranks, 3, rows]` tensor and one all-reduce sums the slots (adding
 * zeros is exact, so that sum is a gather); each rank then finds the global
 * max `M` and `Σ_r Σexp_r · exp(m_r − M)`, in rank order, so every rank gets
 * the same bits. Then `lse = M + log Σexp` and `loss = lse − target logit` (0
 * for ignored rows). One collective, where a global max first would take two.
 */
export async function shardedRowStatistics(
  shards: readonly LogitShard[],
  targets: Tensor,
  group?: VocabGroup,
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
  const rowLoss = Tensor.empty(device, [rows]);
  const lse = Tensor.empty(device, [rows]);
  if (group && group.size > 1) {
    const slots = zeros(device, [group.size, 3, rows]);
    const at = (t: Tensor) => t.binding.offset ?? 0;
    const slot = at(slots) + group.rank * 3 * rows * 4;
    device.copy(rowMax.buffer, at(rowMax), slots.buffer, slot, rows * 4);
    device.copy(stats!.buffer, at(stats!), slots.buffer, slot + rows * 4, 2 * rows * 4);
    await group.allReduce(slots, "sum");
    device.dispatch(
      shardGatheredFinishKernel(group.size),
      [targets.binding, slots.binding, rowLoss.binding, lse.binding],
      shards[0].params,
      gridFor(rows, 64),
    );
    slots.dispose();
  } else {
    device.dispatch(
      shardFinishKernel(),
      [targets.binding, rowMax.binding, stats!.binding, rowLoss.binding, lse.binding],
      shards[0].params,
      gridFor(rows, 64),
    );
  }
  rowMax.dispose();
  stats!.dispose();
  return { rowLoss, lse };
}
