/**
 * Whole-tensor reductions (sum, mean, sum of squares, max) in fixed order, so
 * results are deterministic run to run.
 * @module
 */

import { reduceDispatch, reduceKernel, type ReduceOp } from "../../kernels/reduce.ts";
import { record } from "../autograd.ts";
import { Tensor } from "../tensor.ts";
import { subBinding } from "../windows.ts";
import { axpyInPlace, elementWindows, mapRaw, zeros } from "./raw.ts";

/**
 * Folds all of `x` with `op` and writes the result at `out[offset]` (no autograd).
 * Large inputs take several passes through temporary partials; an input larger
 * than one storage binding is folded window by window into those partials.
 */
export function reduceInto(x: Tensor, op: ReduceOp, out: Tensor, offset = 0): void {
  const wins = elementWindows(x.device, x.size);
  if (wins.length > 1) {
    const groups = wins.map(([, c]) => reduceDispatch(c).groups);
    const partials = Tensor.empty(x.device, [groups.reduce((a, b) => a + b, 0)]);
    let at = 0;
    wins.forEach(([s, c], w) => {
      const d = reduceDispatch(c, at);
      const bufs = [subBinding(x.binding, s, c), partials.binding];
      x.device.dispatch(reduceKernel(op, op === "sumsq"), bufs, d.params, d.workgroups);
      at += groups[w];
    });
    reduceInto(partials, op === "sumsq" ? "sum" : op, out, offset);
    partials.dispose();
    return;
  }
  let src = x;
  let square = op === "sumsq";
  for (;;) {
    const d = reduceDispatch(src.size);
    const last = d.groups === 1;
    const dst = last ? out : Tensor.empty(x.device, [d.groups]);
    const dd = last ? reduceDispatch(src.size, offset) : d;
    x.device.dispatch(
      reduceKernel(op, square),
      [src.binding, dst.binding],
      dd.params,
      dd.workgroups,
    );
    if (src !== x) src.dispose();
    if (last) return;
    src = dst;
    square = false;
  }
}

/** Sum of all elements, as a one-element tensor. */
export function sum(x: Tensor): Tensor {
  const out = Tensor.empty(x.device, [1]);
  reduceInto(x, "sum", out);
  return record(out, "sum", [x], (g) => [axpyInPlace(zeros(x.device, x.shape), g, 1)]);
}

/** Mean of all elements. */
export function mean(x: Tensor): Tensor {
  const total = Tensor.empty(x.device, [1]);
  reduceInto(x, "sum", total);
  const inv = 1 / Math.max(x.size, 1);
  const out = mapRaw("scale", total, undefined, inv, 0);
  total.dispose();
  return record(out, "mean", [x], (g) => [axpyInPlace(zeros(x.device, x.shape), g, inv)]);
}

/** Sum of squares of all elements (no autograd; for norms). */
export function sumSquares(x: Tensor): Tensor {
  const out = Tensor.empty(x.device, [1]);
  reduceInto(x, "sumsq", out);
  return out;
}

/** Largest element (no autograd). */
export function max(x: Tensor): Tensor {
  const out = Tensor.empty(x.device, [1]);
  reduceInto(x, "max", out);
  return out;
}
