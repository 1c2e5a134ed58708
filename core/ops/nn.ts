/**
 * Neural-network ops with autograd: layer norm, masked scaled softmax, dropout,
 * embedding lookup, and cross-entropy fused with log-softmax.
 * @module
 */

import {
  crossEntropyBackwardKernel,
  crossEntropyDispatch,
  crossEntropyForwardKernel,
} from "../../kernels/crossentropy.ts";
import {
  embeddingBackwardDispatch,
  embeddingBackwardKernel,
  embeddingBackwardTextureDispatch,
  embeddingBackwardTextureKernel,
  embeddingForwardDispatch,
  embeddingForwardKernel,
} from "../../kernels/embedding.ts";
import {
  layerNormBackwardKernel,
  layerNormBackwardTextureKernel,
  layerNormDispatch,
  layerNormForwardKernel,
  layerNormForwardTextureKernel,
  layerNormParamGradDispatch,
  layerNormParamGradKernel,
  layerNormParamGradTextureKernel,
} from "../../kernels/layernorm.ts";
import { dropoutDispatch, dropoutKernel, dropoutTextureKernel } from "../../kernels/rng.ts";
import {
  type MaskKind,
  softmaxBackwardKernel,
  softmaxDispatch,
  softmaxForwardKernel,
} from "../../kernels/softmax.ts";
import { record } from "../autograd.ts";
import { checkDraw, type RngDraw } from "../rng.ts";
import {
  type AddableGrad,
  assertF32,
  assertSameDevice,
  disposeOnThrow,
  fmtShape,
  lastDim,
  Tensor,
} from "../tensor.ts";
import { TokenIds } from "../token_ids.ts";
import { columnSum, mapRaw, zeros } from "./raw.ts";
import { reduceInto } from "./reduce.ts";
import { dispatchRows, dispatchRowsFrom, rowTextures } from "./rows.ts";
import { streamTextures } from "./streams.ts";
import { COLUMN_BLOCK_ROWS } from "../../kernels/reduce.ts";
import { gridFor } from "../../kernels/grid.ts";
import { rowBlocks, subBinding } from "../windows.ts";

/**
 * Checks that `gamma` and `beta` each hold one value per feature of `x` (its
 * last dimension), on its device, and that `eps` is a finite number ≥ 0, and
 * returns `x` as `rows × cols`; `op` names the caller.
 */
export function normRows(
  op: string,
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  eps: number,
): { rows: number; cols: number } {
  if (!(eps >= 0 && Number.isFinite(eps))) {
    throw new RangeError(`${op}: eps must be a finite number ≥ 0, got ${eps}`);
  }
  assertF32(op, x, gamma, beta);
  assertSameDevice(op, x, gamma, beta);
  const cols = lastDim(op, x);
  if (gamma.size !== cols || beta.size !== cols) {
    throw new Error(
      `${op}: shape mismatch, input ${fmtShape(x.shape)} vs gamma ${fmtShape(gamma.shape)}, beta ${
        fmtShape(beta.shape)
      }`,
    );
  }
  return { rows: x.size / cols, cols };
}

/** Layer norm's epsilon where none is given (GPT-2's and Megatron's; BERT's is 1e-12). */
export const DEFAULT_LAYER_NORM_EPS = 1e-5;

/** Layer norm over the last dimension with affine `gamma`, `beta`. */
export function layerNorm(
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  eps = DEFAULT_LAYER_NORM_EPS,
): Tensor {
  return disposeOnThrow(x.device, () => {
    const { rows, cols } = normRows("layerNorm", x, gamma, beta, eps);
    const device = x.device;
    const y = Tensor.empty(device, x.shape);
    const mean = Tensor.empty(device, [rows]);
    const rstd = Tensor.empty(device, [rows]);
    const d = layerNormDispatch(rows, cols, eps);
    dispatchRowsFrom(
      device,
      { plain: layerNormForwardKernel(), texture: layerNormForwardTextureKernel() },
      [x, gamma, beta],
      [y.binding, mean.binding, rstd.binding],
      d.params,
      rows,
      cols,
    );
    const out = record(y, "layerNorm", [x, gamma, beta], (g) => {
      let dx: Tensor | null = null;
      if (x.requiresGrad) {
        dx = Tensor.empty(device, x.shape);
        dispatchRowsFrom(
          device,
          { plain: layerNormBackwardKernel(), texture: layerNormBackwardTextureKernel() },
          [x, gamma, g],
          [mean.binding, rstd.binding, dx.binding],
          d.params,
          rows,
          cols,
        );
      }
      const [dg, db] = gamma.requiresGrad || beta.requiresGrad
        ? layerNormParamGrads(x, g, mean, rstd, gamma.shape)
        : [null, null];
      return [dx, dg, db];
    });
    if (!out.node) {
      mean.dispose();
      rstd.dispose();
    }
    return out;
  });
}

/**
 * Layer-norm parameter gradients `[dgamma, dbeta]` (each of `shape`, the
 * parameters' shape) from the norm's input `x` (`[rows, cols]` flattened), the
 * output gradient `g` and the saved per-row `mean` and `rstd`: summed over rows
 * in order, in row blocks within the software loop cap.
 */
export function layerNormParamGrads(
  x: Tensor,
  g: Tensor,
  mean: Tensor,
  rstd: Tensor,
  shape: readonly number[],
): [Tensor, Tensor] {
  const device = x.device;
  const cols = x.shape[x.rank - 1];
  const rows = x.size / cols;
  const blocks = rowBlocks(device, rows, cols, COLUMN_BLOCK_ROWS);
  const partShape = blocks.length === 1 ? shape : [blocks.length, cols];
  const dg = Tensor.empty(device, partShape);
  const db = Tensor.empty(device, partShape);
  blocks.forEach(([r0, n], b) => {
    const pd = layerNormParamGradDispatch(n, cols, b);
    const rowsOf = (t: Tensor) => subBinding(t.binding, r0 * cols, n * cols);
    const perRow = (t: Tensor) => subBinding(t.binding, r0, n);
    if (rowTextures(device, n, cols)) {
      const [xv, gv] = device.streamOperands(
        [x, g].map((t) => ({ binding: rowsOf(t), vec4s: (n * cols) / 4 })),
      );
      device.dispatch(
        layerNormParamGradTextureKernel(),
        [{ view: xv }, { view: gv }, perRow(mean), perRow(rstd), dg.binding, db.binding],
        pd.params,
        gridFor(cols / 4, 64),
      );
      return;
    }
    device.dispatch(
      layerNormParamGradKernel(),
      [rowsOf(x), rowsOf(g), perRow(mean), perRow(rstd), dg.binding, db.binding],
      pd.params,
      pd.workgroups,
    );
  });
  if (blocks.length === 1) return [dg, db];
  const out: [Tensor, Tensor] = [
    columnSum(dg, blocks.length, cols, shape),
    columnSum(db, blocks.length, cols, shape),
  ];
  dg.dispose();
  db.dispose();
  return out;
}

/** Mask options of {@link softmax}. */
export interface SoftmaxOpts {
  /** Multiplies the input before the softmax (attention's 1/sqrt(d)). */
  scale?: number;
  /** "causal": key j > query i is masked (queries are the second-to-last dim). */
  mask?: MaskKind;
  /** For "padding": `[batch, keys]` with 1 for real tokens and 0 for padding. */
  keep?: Tensor;
}

/** Softmax over the last dimension, fused with scale and mask. */
export function softmax(x: Tensor, opts: SoftmaxOpts = {}): Tensor {
  return disposeOnThrow(x.device, () => {
    assertF32("softmax", x, opts.keep);
    assertSameDevice("softmax", x, opts.keep);
    const cols = lastDim("softmax", x);
    if (x.size === 0) throw new Error(`softmax: ${fmtShape(x.shape)} has no elements`);
    const scale = opts.scale ?? 1;
    const mask = opts.mask ?? "none";
    const rows = x.size / cols;
    const qLen = x.rank >= 2 ? x.shape[x.rank - 2] : 1;
    let rowsPerBatch = 1;
    const bufs = [x.binding];
    if (mask === "padding") {
      const keep = opts.keep;
      if (!keep) throw new Error("softmax: padding mask needs a `keep` tensor");
      const batch = keep.size / cols;
      if (!Number.isInteger(batch) || rows % batch !== 0 || keep.shape[keep.rank - 1] !== cols) {
        throw new Error(
          `softmax: padding mask ${fmtShape(keep.shape)} does not fit scores ${fmtShape(x.shape)}`,
        );
      }
      rowsPerBatch = rows / batch;
      bufs.push(keep.binding);
    }
    const y = Tensor.empty(x.device, x.shape);
    bufs.push(y.binding);
    const d = softmaxDispatch(rows, cols, scale, qLen, rowsPerBatch);
    dispatchRows(x.device, softmaxForwardKernel(mask), bufs, d.params, rows, cols);
    return record(y, "softmax", [x], (g) => {
      const dx = Tensor.empty(x.device, x.shape);
      dispatchRows(
        x.device,
        softmaxBackwardKernel(),
        [y.binding, g.binding, dx.binding],
        d.params,
        rows,
        cols,
      );
      return [dx];
    });
  });
}

/**
 * `dropout(x)` with probability `p` and the mask of `draw`, no autograd (the
 * forward pass and, with the same draw, the backward one): on CPU adapters four
 * elements per invocation with x read from a stream texture, the same mask.
 */
export function dropoutRaw(x: Tensor, p: number, draw: RngDraw): Tensor {
  return disposeOnThrow(x.device, () => {
    assertF32("dropout", x);
    checkDraw("dropout", draw);
    const out = Tensor.empty(x.device, x.shape);
    const views = x.size % 4 === 0
      ? streamTextures(x.device, [{ binding: x.binding, vec4s: x.size / 4 }])
      : null;
    const d = dropoutDispatch(x.size, p, draw.seed, draw.offset, views ? 4 : 1);
    if (views) {
      x.device.dispatch(dropoutTextureKernel(), [...views, out.binding], d.params, d.workgroups);
    } else x.device.dispatch(dropoutKernel(), [x.binding, out.binding], d.params, d.workgroups);
    return out;
  });
}

/**
 * Inverted dropout with probability `p`; the mask is a pure function of the draw
 * and the element index, regenerated in the backward pass. `p = 0` is identity.
 */
export function dropout(x: Tensor, p: number, draw: RngDraw): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: probability must be in [0, 1), got ${p}`);
  if (p === 0) return record(x.view(), "identity", [x], (g) => [g.view()]);
  const out = dropoutRaw(x, p, draw);
  return record(out, "dropout", [x], (g) => [dropoutRaw(g, p, draw)]);
}

/**
 * Looks up rows of `weight` (`[rows, dim]`) for `ids` (any shape). With
 * `start`, the table is a shard holding global rows `[start, start + rows)` of a
 * `vocab`-row table and other ids give zeros (the vocabulary-parallel
 * convention). Ids outside `[0, vocab)` are an error. The ids are
 * {@link TokenIds} because the backward pass indexes by their host copy; a
 * tensor computed on the GPU is refused here, not in the backward pass.
 */
export function embedding(
  weight: Tensor,
  tokenIds: TokenIds,
  start = 0,
  vocab?: number,
): Tensor {
  return disposeOnThrow(weight.device, () => {
    checkLookup("embedding", weight, tokenIds, vocab ?? start + weight.shape[0]);
    const ids = tokenIds.tensor;
    const [rows, dim] = weight.shape;
    const device = weight.device;
    const out = Tensor.empty(device, [...ids.shape, dim]);
    // A table or an output larger than one binding is bound in windows: blocks of
    // tokens × windows of table rows (each window writes only its own rows).
    const tokenBlocks = rowBlocks(device, ids.size, dim, Infinity);
    const tableWindows = rowBlocks(device, rows, dim, Infinity);
    for (const [t0, tn] of tokenBlocks) {
      tableWindows.forEach(([w0, wn], w) => {
        const d = embeddingForwardDispatch(tn, dim, start + w0, wn, w === 0);
        device.dispatch(
          embeddingForwardKernel(),
          [
            subBinding(weight.binding, w0 * dim, wn * dim),
            subBinding(ids.binding, t0, tn),
            subBinding(out.binding, t0 * dim, tn * dim),
          ],
          d.params,
          d.workgroups,
        );
      });
    }
    return record(
      out,
      "embedding",
      [weight],
      (g) => [embeddingAddableGrad(weight, tokenIds, g, start)],
    );
  });
}

/**
 * Checks an embedding lookup: `weight` is 2-D and every id of `tokenIds` (host
 * data, see {@link TokenIds}) is in `[0, total)`; `op` names the caller in errors.
 */
export function checkLookup(op: string, weight: Tensor, tokenIds: TokenIds, total: number): void {
  const host = TokenIds.check(op, tokenIds, "ids", weight.device).host;
  assertF32(op, weight);
  if (weight.rank !== 2) {
    throw new Error(`${op}: weight must be 2-D, got ${fmtShape(weight.shape)}`);
  }
  for (const id of host) {
    if (id < 0 || id >= total) {
      throw new Error(`${op}: id ${id} out of range for a table of ${total} rows`);
    }
  }
}

/**
 * The gradient of an embedding table `weight` (`[rows, dim]`, global rows
 * `[start, start + rows)`) for lookups of `tokenIds` whose output gradient is
 * `g` (`[ids, dim]`): a deterministic, ordered scatter-add of `g`'s rows.
 */
export function embeddingGrad(
  weight: Tensor,
  tokenIds: TokenIds,
  g: Tensor,
  start = 0,
): Tensor {
  const dw = zeros(weight.device, weight.shape);
  scatterAddRows(dw, weight.shape, tokenIds, g, start, false);
  return dw;
}

/**
 * {@link embeddingGrad} as an {@link AddableGrad}: added into another gradient
 * of the table (the tied LM head's, or one accumulated over micro-batches) it
 * is a scatter-add of `g`'s rows into it, in place; alone, the zeroed table
 * and the scatter. Holds a view of `g` until it is used.
 */
export function embeddingAddableGrad(
  weight: Tensor,
  tokenIds: TokenIds,
  g: Tensor,
  start = 0,
): AddableGrad {
  let held: Tensor | null = g.view();
  const take = (): Tensor => {
    if (!held) throw new Error("embedding gradient: used twice");
    const t = held;
    held = null;
    return t;
  };
  return {
    size: weight.size,
    addInto(dst: Tensor): void {
      if (dst.size !== weight.size || dst.dtype !== "f32") {
        throw new Error(
          `embedding gradient: added into ${dst.dtype} ${fmtShape(dst.shape)}, the table is f32 ${
            fmtShape(weight.shape)
          }`,
        );
      }
      const gv = take();
      scatterAddRows(dst, weight.shape, tokenIds, gv, start, true);
      gv.dispose();
    },
    dense(): Tensor {
      const gv = take();
      const dw = embeddingGrad(weight, tokenIds, gv, start);
      gv.dispose();
      return dw;
    },
    dispose(): void {
      held?.dispose();
      held = null;
    },
  };
}

/**
 * Adds the rows of `g` (`[ids, dim]`) into rows `tokenIds − start` of `dw`, a
 * table of shape `table` (`[rows, dim]`): each row's positions are summed in
 * order first, then added to what `dw` holds. Unless `accumulate`, the first
 * token block stores its sums instead (`dw` must be zero in its rows): reading
 * `dw` back is a slow storage load on CPU adapters.
 */
function scatterAddRows(
  dw: Tensor,
  table: readonly number[],
  tokenIds: TokenIds,
  g: Tensor,
  start: number,
  accumulate: boolean,
): void {
  const host = tokenIds.host;
  const ids = tokenIds.tensor;
  const [rows, dim] = table;
  const device = dw.device;
  const tableWindows = rowBlocks(device, rows, dim, Infinity);
  // CPU adapters: the vec4 texture form, as wide as dim allows.
  const width = !device.isSoftware || dim % 4 !== 0
    ? 0
    : (dim / 4) % 4 === 0
    ? 4
    : (dim / 4) % 2 === 0
    ? 2
    : 1;
  // Token blocks of at most COLUMN_BLOCK_ROWS keep every row's loop over its
  // positions within the software loop cap; each block adds into dw in order.
  for (const [t0, tn] of rowBlocks(device, ids.size, dim, COLUMN_BLOCK_ROWS)) {
    for (const [w0, wn] of tableWindows) {
      const index = buildScatterIndex(host.subarray(t0, t0 + tn), start + w0, wn);
      if (index.unique === 0) continue;
      if (width && wn <= F32_EXACT_INTS) {
        const packed = Tensor.fromArray(device, packScatterIndex(index));
        const gBlock = subBinding(g.binding, t0 * dim, tn * dim);
        const views = streamTextures(device, [
          { binding: gBlock, vec4s: (tn * dim) / 4 },
          { binding: packed.binding, vec4s: packed.size / 4 },
        ]);
        if (views) {
          const td = embeddingBackwardTextureDispatch(
            index.unique,
            dim,
            width,
            accumulate || t0 > 0,
          );
          device.dispatch(
            embeddingBackwardTextureKernel(width),
            [...views, subBinding(dw.binding, w0 * dim, wn * dim)],
            td.params,
            td.workgroups,
          );
          packed.dispose();
          continue;
        }
        packed.dispose();
      }
      const rowIds = Tensor.fromArray(device, index.rowIds);
      const offsets = Tensor.fromArray(device, index.offsets);
      const positions = Tensor.fromArray(device, index.positions);
      const bd = embeddingBackwardDispatch(index.unique, dim);
      device.dispatch(
        embeddingBackwardKernel(),
        [
          subBinding(g.binding, t0 * dim, tn * dim),
          rowIds.binding,
          offsets.binding,
          positions.binding,
          subBinding(dw.binding, w0 * dim, wn * dim),
        ],
        bd.params,
        bd.workgroups,
      );
      rowIds.dispose();
      offsets.dispose();
      positions.dispose();
    }
  }
}

/** Integers below this are exact in an f32 (2^24). */
const F32_EXACT_INTS = 2 ** 24;

/**
 * A {@link buildScatterIndex} index as one `f32` array for the embedding
 * backward's texture form (`embeddingBackwardTextureKernel`): vec4 `u` is
 * (rowIds[u], offsets[u], offsets[u + 1], 0) for each distinct row, then the
 * positions, four to a vec4 (zero-padded). Every value is an integer below
 * 2^24 (the caller checks the rows; positions are within a token block), so
 * exact.
 */
export function packScatterIndex(
  index: { unique: number; rowIds: Int32Array; offsets: Int32Array; positions: Int32Array },
): Float32Array {
  const { unique, rowIds, offsets, positions } = index;
  const packed = new Float32Array(4 * unique + 4 * Math.ceil(positions.length / 4));
  for (let u = 0; u < unique; u++) {
    packed[4 * u] = rowIds[u];
    packed[4 * u + 1] = offsets[u];
    packed[4 * u + 2] = offsets[u + 1];
  }
  packed.set(positions, 4 * unique);
  return packed;
}

/** CSR index of token positions per distinct local row, for the embedding backward. */
export function buildScatterIndex(
  ids: Int32Array,
  start: number,
  rows: number,
): { unique: number; rowIds: Int32Array; offsets: Int32Array; positions: Int32Array } {
  const counts = new Map<number, number>();
  for (const id of ids) {
    const r = id - start;
    if (r >= 0 && r < rows) counts.set(r, (counts.get(r) ?? 0) + 1);
  }
  const rowIds = Int32Array.from([...counts.keys()].sort((a, b) => a - b));
  const offsets = new Int32Array(rowIds.length + 1);
  const slot = new Map<number, number>();
  rowIds.forEach((r, u) => {
    offsets[u + 1] = offsets[u] + counts.get(r)!;
    slot.set(r, offsets[u]);
  });
  const positions = new Int32Array(offsets[rowIds.length]);
  ids.forEach((id, pos) => {
    const r = id - start;
    if (r >= 0 && r < rows) {
      const s = slot.get(r)!;
      positions[s] = pos;
      slot.set(r, s + 1);
    }
  });
  return { unique: rowIds.length, rowIds, offsets, positions };
}

/**
 * Mean cross-entropy of `logits` (`[..., cols]`) against `targets` (one per
 * row; negative = ignored; {@link TokenIds}, whose host copy gives the count). Only the first `valid` columns count (vocabulary
 * padding never wins). The sum is divided by the number of counted targets, or
 * by `normalizer` when given (data parallelism normalises by the global count).
 * Returns a one-element tensor.
 */
export function crossEntropy(
  logits: Tensor,
  targetIds: TokenIds,
  valid?: number,
  normalizer?: number,
): Tensor {
  return disposeOnThrow(logits.device, () => {
    const targets = TokenIds.check("crossEntropy", targetIds, "targets", logits.device).tensor;
    assertF32("crossEntropy", logits);
    const cols = lastDim("crossEntropy", logits);
    const rows = logits.size / cols;
    const v = valid ?? cols;
    if (targets.size !== rows) {
      throw new Error(
        `crossEntropy: shape mismatch, ${rows} rows of logits ${
          fmtShape(logits.shape)
        } vs ${targets.size} targets ${fmtShape(targets.shape)}`,
      );
    }
    if (!Number.isInteger(v) || v < 1 || v > cols) {
      throw new Error(`crossEntropy: valid columns ${v} not an integer in [1, ${cols}]`);
    }
    const count = countTargets(targetIds, v);
    const device = logits.device;
    const rowLoss = Tensor.empty(device, [rows]);
    const lse = Tensor.empty(device, [rows]);
    const d = crossEntropyDispatch(rows, cols, v);
    dispatchRows(
      device,
      crossEntropyForwardKernel(),
      [logits.binding, targets.binding, rowLoss.binding, lse.binding],
      d.params,
      rows,
      cols,
    );
    const divisor = lossDivisor("crossEntropy", normalizer, count);
    return finishCrossEntropy("crossEntropy", logits, targets, rowLoss, lse, divisor, d);
  });
}

/**
 * What a summed loss is divided by: `normalizer` when given (a positive finite
 * number, else the call is refused naming `op`), or `count`, the targets that
 * take part (an all-ignored batch divides its zero sum by a tiny number: loss 0).
 */
export function lossDivisor(op: string, normalizer: number | undefined, count: number): number {
  if (normalizer === undefined) return Math.max(count, 1e-30);
  if (!(normalizer > 0 && Number.isFinite(normalizer))) {
    throw new RangeError(`${op}: normalizer must be a positive number, got ${normalizer}`);
  }
  return normalizer;
}

/** Counts the targets that take part (≥ 0), checking each is below `valid` (`op` names the caller). */
export function countTargets(targets: TokenIds, valid: number, op = "crossEntropy"): number {
  let count = 0;
  for (const t of targets.host) {
    if (t >= valid) throw new Error(`${op}: target ${t} out of range for ${valid} classes`);
    if (t >= 0) count++;
  }
  return count;
}

/**
 * The shared end of the cross-entropy ops: the mean of the per-row losses
 * (summed in order, divided by `divisor`) with a backward pass that writes
 * `(softmax − onehot)·g/divisor` from the saved log-sum-exp. `rowLoss` is
 * consumed; `lse` is kept for the backward pass.
 */
export function finishCrossEntropy(
  name: string,
  logits: Tensor,
  targets: Tensor,
  rowLoss: Tensor,
  lse: Tensor,
  divisor: number,
  d: { params: ArrayBuffer; workgroups: [number, number, number] },
): Tensor {
  const device = logits.device;
  const rows = rowLoss.size;
  const total = Tensor.empty(device, [1]);
  reduceInto(rowLoss, "sum", total);
  rowLoss.dispose();
  const inv = 1 / divisor;
  const out = mapRaw("scale", total, undefined, inv, 0);
  total.dispose();
  logits.keepF32(); // cross-entropy's backward reads the logits beside f32 statistics
  const res = record(out, name, [logits], (g) => {
    // per-row upstream gradient inv·g[0] (0·zeros + inv·g broadcast from the scalar)
    const tmp = zeros(device, [rows]);
    const gRows = mapRaw("axpby", tmp, g, 0, inv);
    tmp.dispose();
    const dx = Tensor.empty(device, logits.shape);
    dispatchRows(
      device,
      crossEntropyBackwardKernel(),
      [logits.binding, targets.binding, lse.binding, gRows.binding, dx.binding],
      d.params,
      rows,
      logits.shape[logits.rank - 1],
    );
    gRows.dispose();
    return [dx];
  });
  if (!res.node) lse.dispose();
  return res;
}
