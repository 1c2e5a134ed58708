/**
 * The raw GPU primitives that carry no autograd: elementwise dispatch, fills,
 * copies, in-place `axpy` and column sums. Autograd and the optimizers build on
 * these; the differentiable ops (`basic.ts` and the others) import autograd and
 * these, and this file imports neither, so the module graph has no cycle.
 * @module
 */

import {
  axpyKernel,
  axpyParams,
  axpyTextureKernel,
  fillKernel,
  mapArity,
  mapDispatch,
  mapKernel,
  type MapOp,
} from "../../kernels/elementwise.ts";
import { gridFor } from "../../kernels/grid.ts";
import { Params } from "../../kernels/kernel.ts";
import {
  COLUMN_BLOCK_ROWS,
  columnSumDispatch,
  columnSumKernel,
  columnSumTextureKernel,
} from "../../kernels/reduce.ts";
import { rowTextures } from "./rows.ts";
import { streamTextures } from "./streams.ts";
import type { Device } from "../device.ts";
import { assertF32, assertSameDevice, type DType, fmtShape, Tensor } from "../tensor.ts";
import { rowBlocks, subBinding, type Window, windowElements, windows } from "../windows.ts";

/**
 * The windows an elementwise op over `n` elements is dispatched in: one when it
 * fits in a storage binding, else binding-sized pieces that start at multiples
 * of `unit` (the length of an operand that repeats, so its indexing lines up).
 */
export function elementWindows(device: Device, n: number, unit = 1): Window[] {
  return windows(n, windowElements(device, unit));
}

/** The elementwise operations {@link mapRaw} runs (kernels/elementwise.ts). */
export type { MapOp };

/** Dispatches `op` elementwise and returns a fresh tensor of `x`'s shape (no autograd). */
export function mapRaw(op: MapOp, x: Tensor, y?: Tensor, alpha = 1, beta = 0): Tensor {
  assertF32(op, x, y);
  const out = Tensor.empty(x.device, x.shape);
  const arity = mapArity(op);
  const broadcast = arity === 2 && y!.size !== x.size;
  const ny = y?.size ?? 1;
  for (const [s, c] of elementWindows(x.device, x.size, broadcast ? ny : 1)) {
    // four elements per invocation where the window (and a broadcast y) divides by 4
    const width = c % 4 === 0 && (!broadcast || ny % 4 === 0) ? 4 : 1;
    const d = mapDispatch(c, ny, alpha, beta, width);
    const yb = broadcast ? y!.binding : y && subBinding(y.binding, s, c);
    const inputs = [{ binding: subBinding(x.binding, s, c), vec4s: c / 4 }];
    if (arity === 2) inputs.push({ binding: yb!, vec4s: (broadcast ? ny : c) / 4 });
    const views = width === 4 ? streamTextures(x.device, inputs) : null;
    const bufs = [...(views ?? inputs.map((o) => o.binding)), subBinding(out.binding, s, c)];
    x.device.dispatch(
      mapKernel(op, broadcast, width, views !== null),
      bufs,
      d.params,
      d.workgroups,
    );
  }
  return out;
}

/** Fills `t` with `value` in place (f32, or the integer for i32 tensors). */
export function fillInPlace(t: Tensor, value: number): Tensor {
  const bits = new DataView(new ArrayBuffer(4));
  if (t.dtype === "i32") bits.setInt32(0, value, true);
  else bits.setFloat32(0, value, true);
  const word = bits.getUint32(0, true);
  if (word === 0 && !t.device.clearsWithKernel) {
    t.device.clear(t.buffer, 0, t.byteLength);
    return t;
  }
  for (const [s, c] of elementWindows(t.device, t.size)) {
    const width = c % 4 === 0 ? 4 : 1;
    const params = new Params(4).u32(c / width).u32(word).u32(0).u32(0).buffer;
    t.device.dispatch(
      fillKernel(width),
      [subBinding(t.binding, s, c)],
      params,
      gridFor(c / width, 256),
    );
  }
  return t;
}

/** A new tensor of `shape` filled with `value`. */
export function full(
  device: Device,
  shape: readonly number[],
  value: number,
  dtype: DType = "f32",
): Tensor {
  return fillInPlace(Tensor.empty(device, shape, dtype), value);
}

/** A new tensor of zeros. */
export function zeros(device: Device, shape: readonly number[]): Tensor {
  return full(device, shape, 0);
}

/** A new tensor of ones. */
export function ones(device: Device, shape: readonly number[]): Tensor {
  return full(device, shape, 1);
}

/** A copy of `t` with its own storage (optionally viewed as `shape`). No autograd. */
export function clone(t: Tensor, shape: readonly number[] = t.shape): Tensor {
  const out = Tensor.empty(t.device, shape, t.dtype);
  if (out.size !== t.size) throw new Error(`clone: ${fmtShape(t.shape)} as ${fmtShape(shape)}`);
  t.device.copy(t.buffer, 0, out.buffer, 0, t.byteLength);
  return out;
}

/** In place `y = beta·y + alpha·x` (x may repeat over y's leading dims). No autograd. */
export function axpyInPlace(y: Tensor, x: Tensor, alpha: number, beta = 1): Tensor {
  assertSameDevice("axpy", x, y);
  assertF32("axpy", x, y);
  if (y.size % Math.max(x.size, 1) !== 0) {
    throw new Error(`axpy: ${fmtShape(x.shape)} does not tile ${fmtShape(y.shape)}`);
  }
  const nx = Math.max(x.size, 1);
  const tiled = nx !== y.size;
  for (const [s, c] of elementWindows(y.device, y.size, tiled ? nx : 1)) {
    const xb = tiled ? x.binding : subBinding(x.binding, s, c);
    const yb = subBinding(y.binding, s, c);
    const views = c % 4 === 0 && nx % 4 === 0
      ? streamTextures(y.device, [{ binding: xb, vec4s: (tiled ? nx : c) / 4 }, {
        binding: yb,
        vec4s: c / 4,
      }])
      : null;
    const d = axpyParams(c, tiled ? nx : c, alpha, beta, views ? 4 : 1);
    if (views) y.device.dispatch(axpyTextureKernel(), [...views, yb], d.params, d.workgroups);
    else y.device.dispatch(axpyKernel(), [xb, yb], d.params, d.workgroups);
  }
  return y;
}

/** Sums `g` over the leading dimensions down to `size` elements (the bias-gradient reduction). */
export function sumToSize(g: Tensor, shape: readonly number[]): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  if (g.size === size) return g.view(shape);
  return columnSum(g, g.size / size, size, shape);
}

/**
 * Column sums of `g` as `[rows, cols]`, shaped `shape`: block by block of rows
 * (see `COLUMN_BLOCK_ROWS`), then the blocks' sums in order.
 */
export function columnSum(g: Tensor, rows: number, cols: number, shape: readonly number[]): Tensor {
  const blocks = rowBlocks(g.device, rows, cols, COLUMN_BLOCK_ROWS);
  const out = Tensor.empty(g.device, blocks.length === 1 ? shape : [blocks.length, cols]);
  blocks.forEach(([r0, n], b) => {
    const d = columnSumDispatch(n, cols, b);
    const src = subBinding(g.binding, r0 * cols, n * cols);
    const device = g.device;
    if (rowTextures(device, n, cols)) {
      // CPU adapters: vec4 columns read through a texture (kernels/texture.ts)
      const view = device.streamAsTexture(src, (n * cols) / 4);
      device.dispatch(
        columnSumTextureKernel(),
        [{ view }, out.binding],
        d.params,
        gridFor(cols / 4, 64),
      );
    } else {
      device.dispatch(columnSumKernel(), [src, out.binding], d.params, d.workgroups);
    }
  });
  if (blocks.length === 1) return out;
  const total = columnSum(out, blocks.length, cols, shape);
  out.dispose();
  return total;
}
