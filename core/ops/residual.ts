/**
 * Fused residual ops with autograd: `x + dropout(a)` followed by layer norm
 * (one row kernel forward, one backward), the plain `x + dropout(a)`, and the
 * token-plus-position embedding with dropout. Each computes what the unfused
 * composition of `add`, `dropout`, `layerNorm` and `embedding` computes, to the
 * bit in the forward pass (same float operations, same dropout mask for the same
 * draw) and to float rounding in the backward pass.
 * @module
 */

import { COLUMN_BLOCK_ROWS, columnSumDispatch, columnSumKernel } from "../../kernels/reduce.ts";
import {
  embedPositionsDispatch,
  embedPositionsKernel,
  embedPositionsTextureKernel,
  residualDropoutDispatch,
  residualDropoutKernel,
  residualDropoutTextureKernel,
  residualNormBackwardKernel,
  residualNormBackwardTextureKernel,
  residualNormDispatch,
  residualNormForwardKernel,
  residualNormForwardTextureKernel,
} from "../../kernels/residual_norm.ts";
import { SOFTWARE_LOOP_LIMIT } from "../../kernels/rowreduce.ts";
import { record, recordMulti } from "../autograd.ts";
import type { BufferBinding, TextureBinding } from "../device.ts";
import { checkDraw, type RngDraw } from "../rng.ts";
import {
  type AddableGrad,
  assertF32,
  assertSameShape,
  disposeOnThrow,
  fmtShape,
  Tensor,
} from "../tensor.ts";
import { TokenIds } from "../token_ids.ts";
import { rowBlocks, subBinding } from "../windows.ts";
import { add } from "./basic.ts";
import {
  checkLookup,
  dropoutRaw,
  embeddingAddableGrad,
  embeddingGrad,
  layerNormParamGrads,
  normRows,
} from "./nn.ts";
import { streamTextures } from "./streams.ts";
import { columnSum, zeros } from "./raw.ts";
import { dispatchRowsFrom } from "./rows.ts";
import { DEFAULT_LAYER_NORM_EPS } from "./nn.ts";

/** A dropout to apply: probability `p` in [0, 1) and the random draw of its mask. */
export interface DropoutSpec {
  /** Drop probability. */
  p: number;
  /** The (seed, offset) the mask is drawn from, as `ops.dropout` takes it. */
  draw: RngDraw;
}

/** The two outputs of {@link residualLayerNorm}. */
export interface ResidualNorm {
  /** `x + dropout(a)`: the residual stream. */
  sum: Tensor;
  /** `layerNorm(sum)·gamma + beta`. */
  normed: Tensor;
}

function activeDrop(op: string, drop: DropoutSpec | null | undefined): DropoutSpec | null {
  if (!drop || drop.p === 0) return null;
  if (!(drop.p > 0 && drop.p < 1)) {
    throw new Error(`${op}: dropout probability must be in [0, 1), got ${drop.p}`);
  }
  checkDraw(op, drop.draw);
  return drop;
}

/**
 * `sum = x + dropout(a)` and `normed = layerNorm(sum, gamma, beta, eps)` in one
 * row kernel: what `layerNorm(add(x, dropout(a, p, draw)), gamma, beta, eps)`
 * computes, keeping `sum` too. `drop` null (or `p = 0`) means no dropout. The
 * backward pass takes both outputs' gradients at once and writes `dx`
 * (= d sum + layer-norm input gradient) and `da` (= `dx` through the mask) in one
 * kernel, plus the parameter gradients.
 */
export function residualLayerNorm(
  x: Tensor,
  a: Tensor,
  drop: DropoutSpec | null | undefined,
  gamma: Tensor,
  beta: Tensor,
  eps = DEFAULT_LAYER_NORM_EPS,
): ResidualNorm {
  return disposeOnThrow(x.device, () => {
    assertSameShape("residualLayerNorm", x, a);
    assertF32("residualLayerNorm", x, a);
    const d0 = activeDrop("residualLayerNorm", drop);
    const { rows, cols } = normRows("residualLayerNorm", x, gamma, beta, eps);
    const device = x.device;
    const sum = Tensor.empty(device, x.shape);
    const normed = Tensor.empty(device, x.shape);
    const mean = Tensor.empty(device, [rows]);
    const rstd = Tensor.empty(device, [rows]);
    const params = residualNormDispatch(rows, cols, eps, d0?.p, d0?.draw.seed, d0?.draw.offset)
      .params;
    dispatchRowsFrom(
      device,
      { plain: residualNormForwardKernel(!!d0), texture: residualNormForwardTextureKernel(!!d0) },
      [x, a, gamma, beta],
      [sum.binding, normed.binding, mean.binding, rstd.binding],
      params,
      rows,
      cols,
    );
    recordMulti([sum, normed], "residualLayerNorm", [x, a, gamma, beta], ([gSum, gNormed]) => {
      if (!gNormed) {
        // Only the residual stream was used: d x = g, d a = dropout(g).
        return [gSum!.view(), d0 ? dropoutRaw(gSum!, d0.p, d0.draw) : gSum!.view(), null, null];
      }
      const dx = Tensor.empty(device, x.shape);
      const da = d0 ? Tensor.empty(device, x.shape) : null;
      dispatchRowsFrom(
        device,
        {
          plain: residualNormBackwardKernel(!!gSum, !!d0),
          texture: residualNormBackwardTextureKernel(!!gSum, !!d0),
        },
        gSum ? [sum, gamma, gNormed, gSum] : [sum, gamma, gNormed],
        da
          ? [mean.binding, rstd.binding, dx.binding, da.binding]
          : [mean.binding, rstd.binding, dx.binding],
        params,
        rows,
        cols,
      );
      const [dg, db] = gamma.requiresGrad || beta.requiresGrad
        ? layerNormParamGrads(sum, gNormed, mean, rstd, gamma.shape)
        : [null, null];
      return [dx, da ?? dx.view(), dg, db];
    });
    if (!sum.node) {
      mean.dispose();
      rstd.dispose();
    }
    return { sum, normed };
  });
}

/**
 * `x + dropout(a)` in one elementwise kernel (what `add(x, dropout(a, p, draw))`
 * computes); `drop` null (or `p = 0`) is a plain `add`.
 */
export function residualDropout(
  x: Tensor,
  a: Tensor,
  drop: DropoutSpec | null | undefined,
): Tensor {
  return disposeOnThrow(x.device, () => {
    assertSameShape("residualDropout", x, a);
    assertF32("residualDropout", x, a);
    const d0 = activeDrop("residualDropout", drop);
    if (!d0) return add(x, a);
    const out = Tensor.empty(x.device, x.shape);
    const inputs = [x, a].map((t) => ({ binding: t.binding, vec4s: t.size / 4 }));
    const views = x.size % 4 === 0 ? streamTextures(x.device, inputs) : null;
    const d = residualDropoutDispatch(x.size, d0.p, d0.draw.seed, d0.draw.offset, views ? 4 : 1);
    x.device.dispatch(
      views ? residualDropoutTextureKernel() : residualDropoutKernel(true),
      [...(views ?? inputs.map((o) => o.binding)), out.binding],
      d.params,
      d.workgroups,
    );
    return record(out, "residualDropout", [x, a], (g) => [
      x.requiresGrad ? g.view() : null,
      a.requiresGrad ? dropoutRaw(g, d0.p, d0.draw) : null,
    ]);
  });
}

/** The token part of {@link embedPositions}: embeddings already looked up, or a lookup to fuse. */
export type TokenPart = Tensor | {
  /** The whole (unsharded) token table `[vocab, h]`. */
  table: Tensor;
  /** Token ids `[B, T]`. */
  ids: TokenIds;
};

/**
 * `dropout(tok + pos[start + t])` for every token at sequence position `t` of
 * `[B, T, h]` token embeddings, in one kernel: the unfused
 * `dropout(add(tok, embedding(pos, positionIds)))` with position ids
 * `start … start + T − 1` in every row. `tokens` is either the looked-up token
 * embeddings `[B, T, h]` or `{ table, ids }`, a lookup fused in too (the table
 * whole, not a vocabulary shard, and within one storage binding). The position
 * table's gradient is a column sum over the batch, in batch order.
 */
export function embedPositions(
  tokens: TokenPart,
  pos: Tensor,
  drop: DropoutSpec | null | undefined,
  start = 0,
): Tensor {
  return disposeOnThrow(pos.device, () => {
    const d0 = activeDrop("embedPositions", drop);
    assertF32("embedPositions", pos, tokens instanceof Tensor ? tokens : null);
    const lookup = tokens instanceof Tensor ? null : tokens;
    const shape = lookup ? [...lookup.ids.shape, lookup.table.shape[1]] : (tokens as Tensor).shape;
    if (lookup) checkLookup("embedPositions", lookup.table, lookup.ids, lookup.table.shape[0]);
    if (shape.length !== 3 || pos.rank !== 2 || pos.shape[1] !== shape[2]) {
      throw new Error(
        `embedPositions: tokens ${fmtShape(shape)} must be [B, T, h] and positions [P, h], got ${
          fmtShape(pos.shape)
        }`,
      );
    }
    const [B, T, h] = shape;
    if (start + T > pos.shape[0]) {
      throw new Error(
        `embedPositions: positions ${start}…${start + T - 1} exceed the table (${pos.shape[0]})`,
      );
    }
    const device = pos.device;
    const out = Tensor.empty(device, shape);
    const views = embedTextures(tokens, pos, B * T, h, start + T);
    const d = embedPositionsDispatch(
      B * T,
      h,
      T,
      start,
      d0?.p,
      d0?.draw.seed,
      d0?.draw.offset,
      !!views,
    );
    const src = lookup ? [lookup.table.binding, lookup.ids.tensor.binding] : [
      (tokens as Tensor).binding,
    ];
    device.dispatch(
      views
        ? embedPositionsTextureKernel(!!lookup, !!d0, views.tableTexture)
        : embedPositionsKernel(!!lookup, !!d0),
      [...(views ? views.bindings : [...src, pos.binding]), out.binding],
      d.params,
      d.workgroups,
    );
    const first = lookup ? lookup.table : tokens as Tensor;
    return record(out, "embedPositions", [first, pos], (g) => {
      const gTok = d0 ? dropoutRaw(g, d0.p, d0.draw) : g.view();
      const dPos = pos.requiresGrad ? positionGrad(gTok, pos, B, T * h, start) : null;
      let dFirst: Tensor | AddableGrad | null = null;
      if (first.requiresGrad) {
        dFirst = lookup ? embeddingAddableGrad(lookup.table, lookup.ids, gTok) : gTok.view();
      }
      gTok.dispose();
      return [dFirst, dPos];
    });
  });
}

/**
 * A lookup's table is copied into a stream texture while it holds at most this
 * many times the floats the lookup writes; a larger one (a vocabulary of tens of
 * thousands of rows for a batch of a few hundred tokens) is read from its
 * buffer as vec4s, where the copy would cost more than the texels save.
 */
const TABLE_TEXTURE_RATIO = 4;

/**
 * The bindings of {@link embedPositionsTextureKernel} on a CPU adapter (tokens or
 * table through stream textures, the positions `0 … posRows − 1` through
 * another), or null where the buffer form runs: a GPU, features not whole
 * vec4s, rows past the software loop cap, too little output, or a texture too
 * small.
 */
function embedTextures(
  tokens: TokenPart,
  pos: Tensor,
  rows: number,
  h: number,
  posRows: number,
): { bindings: (BufferBinding | TextureBinding)[]; tableTexture: boolean } | null {
  const device = pos.device;
  if (!device.isSoftware || h % 4 !== 0 || h / 4 > SOFTWARE_LOOP_LIMIT) return null;
  const work = (rows * h) / 4;
  const lookup = tokens instanceof Tensor ? null : tokens;
  const tableTexture = !lookup || lookup.table.size <= TABLE_TEXTURE_RATIO * rows * h;
  const first = lookup ? lookup.table : tokens as Tensor;
  const operands = [{ binding: pos.binding, vec4s: (posRows * h) / 4 }];
  if (tableTexture) operands.unshift({ binding: first.binding, vec4s: first.size / 4 });
  const views = streamTextures(device, operands, work);
  if (!views) return null;
  const posView = views[views.length - 1];
  const src = lookup
    ? [tableTexture ? views[0] : lookup.table.binding, lookup.ids.tensor.binding]
    : [views[0]];
  return { bindings: [...src, posView], tableTexture };
}

/**
 * The position table's gradient: the batch column sum of `g` (`[B, cols]`, cols
 * = T·h) into rows `0 … T−1` (zeros beyond). From position `start` > 0 (not a
 * binding-aligned offset in general), or when 64 rows of T·h do not fit one
 * storage binding (the column sum's blocks), the embedding scatter-add instead,
 * which windows the table.
 */
function positionGrad(g: Tensor, pos: Tensor, B: number, cols: number, start: number): Tensor {
  const device = g.device;
  if (
    start !== 0 || 64 * cols * 4 > device.maxBindingBytes || g.byteLength > device.maxBindingBytes
  ) {
    const h = pos.shape[1];
    const T = cols / h;
    const ids = new Int32Array(B * T);
    for (let i = 0; i < ids.length; i++) ids[i] = start + (i % T);
    const tokenIds = TokenIds.fromHost(device, ids, [B, T]);
    const dPos = embeddingGrad(pos, tokenIds, g);
    tokenIds.dispose();
    return dPos;
  }
  if (cols === pos.size) return columnSum(g, B, cols, pos.shape);
  const dPos = zeros(device, pos.shape);
  const dst = subBinding(dPos.binding, 0, cols);
  const s = rowBlocks(device, B, cols, COLUMN_BLOCK_ROWS).length === 1
    ? g
    : columnSum(g, B, cols, [cols]);
  const d = columnSumDispatch(s === g ? B : 1, cols);
  device.dispatch(columnSumKernel(), [s.binding, dst], d.params, d.workgroups);
  if (s !== g) s.dispose();
  return dPos;
}
