/**
 * Whole-tensor reductions (sum, mean, sum of squares, max) in fixed order, so
 * results are deterministic run to run.
 * @module
 */

import {
  reduceDispatch,
  reduceKernel,
  reduceTextureKernel,
  type TensorReduceOp,
} from "../../kernels/reduce.ts";
import type { BufferBinding, Device } from "../device.ts";
import { record } from "../autograd.ts";
import { assertF32, Tensor } from "../tensor.ts";
import { streamTextures } from "./streams.ts";
import { subBinding } from "../windows.ts";
import { axpyInPlace, elementWindows, mapRaw, zeros } from "./raw.ts";

/**
 * Folds all of `x` with `op` and writes the result at `out[offset]` (no autograd);
 * `sumsq` squares each element times `mul` (default 1: a gradient norm passes
 * 1/loss scale, so that the squares of scaled gradients cannot overflow).
 * Large inputs take several passes through temporary partials; an input larger
 * than one storage binding is folded window by window into those partials.
 */
export function reduceInto(
  x: Tensor,
  op: TensorReduceOp,
  out: Tensor,
  offset = 0,
  mul = 1,
): void {
  assertF32(op, x, out);
  const wins = elementWindows(x.device, x.size);
  if (wins.length > 1) {
    const groups = wins.map(([, c]) => reduceDispatch(c).groups);
    const partials = Tensor.empty(x.device, [groups.reduce((a, b) => a + b, 0)]);
    let at = 0;
    wins.forEach(([s, c], w) => {
      firstPass(x.device, op, subBinding(x.binding, s, c), c, partials.binding, at, mul);
      at += groups[w];
    });
    reduceInto(partials, op === "sumsq" ? "sum" : op, out, offset);
    partials.dispose();
    return;
  }
  let src = x;
  for (;;) {
    const groups = reduceDispatch(src.size).groups;
    const last = groups === 1;
    const dst = last ? out : Tensor.empty(x.device, [groups]);
    const at = last ? offset : 0;
    if (src === x) firstPass(x.device, op, x.binding, x.size, dst.binding, at, mul);
    else {
      const d = reduceDispatch(src.size, at);
      x.device.dispatch(
        reduceKernel(op, false),
        [src.binding, dst.binding],
        d.params,
        d.workgroups,
      );
    }
    if (src !== x) src.dispose();
    if (last) return;
    src = dst;
  }
}

/**
 * The first pass of {@link reduceInto} over the `n` elements of `x` into
 * `out[at..]` (for sumsq, squaring each element times `mul`): on a CPU adapter
 * with x of whole vec4s, x read through a stream texture.
 */
function firstPass(
  device: Device,
  op: TensorReduceOp,
  x: BufferBinding,
  n: number,
  out: BufferBinding,
  at: number,
  mul: number,
): void {
  const d = reduceDispatch(n, at, mul);
  const square = op === "sumsq";
  const views = n % 4 === 0 ? streamTextures(device, [{ binding: x, vec4s: n / 4 }]) : null;
  if (views) {
    device.dispatch(reduceTextureKernel(op, square), [...views, out], d.params, d.workgroups);
  } else device.dispatch(reduceKernel(op, square), [x, out], d.params, d.workgroups);
}

/** Sum of all elements, as a one-element tensor. */
export function sum(x: Tensor): Tensor {
  assertF32("sum", x);
  const out = Tensor.empty(x.device, [1]);
  reduceInto(x, "sum", out);
  return record(out, "sum", [x], (g) => [axpyInPlace(zeros(x.device, x.shape), g, 1)]);
}

/** Mean of all elements (of at least one: the mean of none is refused). */
export function mean(x: Tensor): Tensor {
  if (x.size === 0) throw new Error("mean: the tensor has no elements");
  assertF32("mean", x);
  const total = Tensor.empty(x.device, [1]);
  reduceInto(x, "sum", total);
  const inv = 1 / x.size;
  const out = mapRaw("scale", total, undefined, inv, 0);
  total.dispose();
  return record(out, "mean", [x], (g) => [axpyInPlace(zeros(x.device, x.shape), g, inv)]);
}

/** Sum of squares of all elements (no autograd; for norms). */
export function sumSquares(x: Tensor): Tensor {
  assertF32("sumSquares", x);
  const out = Tensor.empty(x.device, [1]);
  reduceInto(x, "sumsq", out);
  return out;
}

/** Largest element (no autograd) of a tensor of at least one. */
export function max(x: Tensor): Tensor {
  if (x.size === 0) throw new Error("max: the tensor has no elements");
  assertF32("max", x);
  const out = Tensor.empty(x.device, [1]);
  reduceInto(x, "max", out);
  return out;
}
