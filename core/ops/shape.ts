/**
 * Shape ops with autograd: reshape (a view), permute/transpose, slice, concat and
 * split along an axis. All data movement is the strided-copy kernel.
 * @module
 */

import { stridedCopyDispatch, stridedCopyKernel } from "../../kernels/copy.ts";
import { record } from "../autograd.ts";
import { assertSameDevice, disposeOnThrow, fmtShape, numel, Tensor } from "../tensor.ts";
import { zeros } from "./raw.ts";

/** Row-major strides of `shape`. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

function normAxis(axis: number, rank: number, op: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Records a strided copy from `src` into `dst` over the logical `shape`. */
export function stridedCopy(
  src: Tensor,
  dst: Tensor,
  shape: readonly number[],
  srcStrides: readonly number[],
  srcOffset: number,
  dstStrides: readonly number[],
  dstOffset: number,
): void {
  const d = stridedCopyDispatch(shape, srcStrides, srcOffset, dstStrides, dstOffset);
  if (d.n === 0) return;
  src.device.dispatch(stridedCopyKernel(), [src.binding, dst.binding], d.params, d.workgroups);
}

/** The same data with another shape of equal size (−1 infers one dimension). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const sh = [...shape];
  const neg = sh.indexOf(-1);
  if (neg >= 0) {
    const rest = numel(sh.filter((_, i) => i !== neg));
    if (rest === 0 || x.size % rest !== 0) {
      throw new Error(`reshape: cannot infer -1 in ${fmtShape(shape)} for ${x.size} elements`);
    }
    sh[neg] = x.size / rest;
  }
  const out = x.view(sh);
  return record(out, "reshape", [x], (g) => [g.view(x.shape)]);
}

/** Reorders dimensions: output dim `i` is input dim `perm[i]`. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  return disposeOnThrow(x.device, () => {
    if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
      throw new Error(`permute: ${JSON.stringify(perm)} is not a permutation of ${x.rank} dims`);
    }
    const out = permuteRaw(x, perm);
    const inv = new Array(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return record(out, "permute", [x], (g) => [permuteRaw(g, inv)]);
  });
}

function permuteRaw(x: Tensor, perm: readonly number[]): Tensor {
  const outShape = perm.map((p) => x.shape[p]);
  const xs = contiguousStrides(x.shape);
  const out = Tensor.empty(x.device, outShape, x.dtype);
  stridedCopy(x, out, outShape, perm.map((p) => xs[p]), 0, contiguousStrides(outShape), 0);
  return out;
}

/** Swaps two dimensions. */
export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const a = normAxis(dim0, x.rank, "transpose");
  const b = normAxis(dim1, x.rank, "transpose");
  const perm = [...Array(x.rank).keys()];
  [perm[a], perm[b]] = [perm[b], perm[a]];
  return permute(x, perm);
}

function sliceRaw(x: Tensor, axis: number, start: number, end: number): Tensor {
  const outShape = [...x.shape];
  outShape[axis] = end - start;
  const xs = contiguousStrides(x.shape);
  const out = Tensor.empty(x.device, outShape, x.dtype);
  stridedCopy(x, out, outShape, xs, start * xs[axis], contiguousStrides(outShape), 0);
  return out;
}

/** `x[…, start:end, …]` along `axis`. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  return disposeOnThrow(x.device, () => {
    const ax = normAxis(axis, x.rank, "slice");
    if (
      !(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end &&
        end <= x.shape[ax])
    ) {
      throw new Error(
        `slice: [${start}, ${end}) out of range for axis ${ax} of ${fmtShape(x.shape)}`,
      );
    }
    const out = sliceRaw(x, ax, start, end);
    return record(out, "slice", [x], (g) => {
      const gx = zeros(x.device, x.shape);
      const xs = contiguousStrides(x.shape);
      stridedCopy(g, gx, g.shape, contiguousStrides(g.shape), 0, xs, start * xs[ax]);
      return [gx];
    });
  });
}

/** Joins tensors along `axis`; all other dimensions must agree. */
export function concat(ts: readonly Tensor[], axis: number): Tensor {
  if (ts.length === 0) throw new Error("concat: no tensors");
  return disposeOnThrow(ts[0].device, () => {
    const ax = normAxis(axis, ts[0].rank, "concat");
    assertSameDevice("concat", ts[0], ...ts);
    for (const t of ts) {
      if (t.dtype !== ts[0].dtype) {
        throw new Error(`concat: mixed element types, ${ts[0].dtype} and ${t.dtype}`);
      }
      if (t.rank !== ts[0].rank || t.shape.some((d, i) => i !== ax && d !== ts[0].shape[i])) {
        throw new Error(
          `concat: shape mismatch ${fmtShape(ts[0].shape)} vs ${
            fmtShape(t.shape)
          } along axis ${ax}`,
        );
      }
    }
    const outShape = [...ts[0].shape];
    outShape[ax] = ts.reduce((s, t) => s + t.shape[ax], 0);
    const out = Tensor.empty(ts[0].device, outShape, ts[0].dtype);
    const os = contiguousStrides(outShape);
    const starts: number[] = [];
    let at = 0;
    for (const t of ts) {
      starts.push(at);
      stridedCopy(t, out, t.shape, contiguousStrides(t.shape), 0, os, at * os[ax]);
      at += t.shape[ax];
    }
    return record(
      out,
      "concat",
      ts,
      (g) =>
        ts.map((t, i) =>
          t.requiresGrad ? sliceRaw(g, ax, starts[i], starts[i] + t.shape[ax]) : null
        ),
    );
  });
}

/** Splits along `axis` into `parts` equal pieces, or pieces of the given sizes. */
export function split(x: Tensor, parts: number | readonly number[], axis: number): Tensor[] {
  return disposeOnThrow(x.device, () => {
    const ax = normAxis(axis, x.rank, "split");
    const n = x.shape[ax];
    let sizes: number[];
    if (typeof parts === "number") {
      if (!Number.isInteger(parts) || parts <= 0 || n % parts !== 0) {
        throw new Error(
          `split: dimension ${n} of ${fmtShape(x.shape)} does not divide into ${parts} parts`,
        );
      }
      sizes = new Array(parts).fill(n / parts);
    } else {
      sizes = [...parts];
      if (sizes.reduce((a, b) => a + b, 0) !== n) {
        throw new Error(`split: sizes ${JSON.stringify(sizes)} do not add up to ${n}`);
      }
    }
    const out: Tensor[] = [];
    let at = 0;
    for (const s of sizes) {
      out.push(slice(x, ax, at, at + s));
      at += s;
    }
    return out;
  });
}

/**
 * A contiguous copy of the elements of `x` at `offset + Σ idx_d·strides_d` over
 * `shape` (positions must not overlap). Permutes, slices and head splits of a
 * fused projection are all this one kernel; its gradient scatters back.
 */
export function asStrided(
  x: Tensor,
  shape: readonly number[],
  strides: readonly number[],
  offset = 0,
): Tensor {
  return disposeOnThrow(x.device, () => {
    if (shape.length !== strides.length) {
      throw new Error(
        `asStrided: shape ${fmtShape(shape)} and strides ${fmtShape(strides)} differ in rank`,
      );
    }
    let last = offset;
    for (let d = 0; d < shape.length; d++) last += (shape[d] - 1) * strides[d];
    if (numel(shape) > 0 && (offset < 0 || last >= x.size)) {
      throw new Error(
        `asStrided: view ${fmtShape(shape)} at offset ${offset} reaches past ${x.size} elements`,
      );
    }
    const out = Tensor.empty(x.device, shape, x.dtype);
    stridedCopy(x, out, shape, strides, offset, contiguousStrides(shape), 0);
    return record(out, "asStrided", [x], (g) => {
      const gx = zeros(x.device, x.shape);
      stridedCopy(g, gx, shape, contiguousStrides(shape), 0, strides, offset);
      return [gx];
    });
  });
}
