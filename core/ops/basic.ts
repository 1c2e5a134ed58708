/**
 * Elementwise ops with autograd: add/sub/mul (the second operand may broadcast
 * over leading dimensions), scale, GeLU (tanh and erf), and the in-place helpers
 * that autograd and optimizers use.
 * @module
 */

import {
  axpyKernel,
  fillKernel,
  mapArity,
  mapDispatch,
  mapKernel,
  type MapOp,
} from "../../kernels/elementwise.ts";
import { gridFor } from "../../kernels/grid.ts";
import { Params } from "../../kernels/kernel.ts";
import { columnSumDispatch, columnSumKernel } from "../../kernels/reduce.ts";
import type { Device } from "../device.ts";
import { record } from "../autograd.ts";
import { assertSameDevice, type DType, fmtShape, Tensor } from "../tensor.ts";

/** Dispatches `op` elementwise and returns a fresh tensor of `x`'s shape (no autograd). */
export function mapRaw(op: MapOp, x: Tensor, y?: Tensor, alpha = 1, beta = 0): Tensor {
  const out = Tensor.empty(x.device, x.shape);
  const arity = mapArity(op);
  const broadcast = arity === 2 && y!.size !== x.size;
  const d = mapDispatch(x.size, y?.size ?? 1, alpha, beta);
  const bufs = arity === 2 ? [x.binding, y!.binding, out.binding] : [x.binding, out.binding];
  x.device.dispatch(mapKernel(op, broadcast), bufs, d.params, d.workgroups);
  return out;
}

/** Fills `t` with `value` in place (f32, or the integer for i32 tensors). */
export function fillInPlace(t: Tensor, value: number): Tensor {
  const bits = new DataView(new ArrayBuffer(4));
  if (t.dtype === "i32") bits.setInt32(0, value, true);
  else bits.setFloat32(0, value, true);
  const params = new Params(4).u32(t.size).u32(bits.getUint32(0, true)).u32(0).u32(0).buffer;
  t.device.dispatch(fillKernel(), [t.binding], params, gridFor(t.size, 256));
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
  out.hostData = t.hostData;
  return out;
}

/** In place `y = beta·y + alpha·x` (x may repeat over y's leading dims). No autograd. */
export function axpyInPlace(y: Tensor, x: Tensor, alpha: number, beta = 1): Tensor {
  assertSameDevice("axpy", x, y);
  if (y.size % Math.max(x.size, 1) !== 0) {
    throw new Error(`axpy: ${fmtShape(x.shape)} does not tile ${fmtShape(y.shape)}`);
  }
  const params = new Params(4).u32(y.size).u32(Math.max(x.size, 1)).f32(alpha).f32(beta).buffer;
  y.device.dispatch(axpyKernel(), [x.binding, y.binding], params, gridFor(y.size, 256));
  return y;
}

/** Sums `g` over the leading dimensions down to `size` elements (the bias-gradient reduction). */
export function sumToSize(g: Tensor, shape: readonly number[]): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  if (g.size === size) return g.view(shape);
  const out = Tensor.empty(g.device, shape);
  const d = columnSumDispatch(g.size / size, size);
  g.device.dispatch(columnSumKernel(), [g.binding, out.binding], d.params, d.workgroups);
  return out;
}

function checkBroadcast(op: string, a: Tensor, b: Tensor): void {
  assertSameDevice(op, a, b);
  const n = b.shape.length;
  const suffix = a.shape.slice(a.shape.length - n);
  const ok = n <= a.shape.length && suffix.every((d, i) => d === b.shape[i]);
  if (!ok) {
    throw new Error(
      `${op}: shape mismatch ${fmtShape(a.shape)} vs ${
        fmtShape(b.shape)
      } (the second must equal the first or a trailing part of it)`,
    );
  }
}

/** `a + b`; `b` may be a trailing-shape broadcast (e.g. a bias). */
export function add(a: Tensor, b: Tensor): Tensor {
  checkBroadcast("add", a, b);
  const out = mapRaw("add", a, b);
  return record(out, "add", [a, b], (g) => [
    a.requiresGrad ? g.view() : null,
    b.requiresGrad ? sumToSize(g, b.shape) : null,
  ]);
}

/** `a − b`; `b` may be a trailing-shape broadcast. */
export function sub(a: Tensor, b: Tensor): Tensor {
  checkBroadcast("sub", a, b);
  const out = mapRaw("sub", a, b);
  return record(out, "sub", [a, b], (g) => {
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      const s = sumToSize(g, b.shape);
      gb = mapRaw("scale", s, undefined, -1, 0);
      s.dispose();
    }
    return [a.requiresGrad ? g.view() : null, gb];
  });
}

/** `a · b` elementwise; `b` may be a trailing-shape broadcast. */
export function mul(a: Tensor, b: Tensor): Tensor {
  checkBroadcast("mul", a, b);
  const out = mapRaw("mul", a, b);
  return record(out, "mul", [a, b], (g) => {
    const ga = a.requiresGrad ? mapRaw("mul", g, b) : null;
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      const full = mapRaw("mul", g, a);
      gb = sumToSize(full, b.shape);
      if (gb !== full) full.dispose();
    }
    return [ga, gb];
  });
}

/** `alpha·x + beta`. */
export function scale(x: Tensor, alpha: number, beta = 0): Tensor {
  const out = mapRaw("scale", x, undefined, alpha, beta);
  return record(out, "scale", [x], (g) => [mapRaw("scale", g, undefined, alpha, 0)]);
}

/** Which GeLU: GPT-2's tanh approximation or the exact erf form. */
export type GeluKind = "tanh" | "erf";

/** GeLU activation. */
export function gelu(x: Tensor, kind: GeluKind = "tanh"): Tensor {
  const out = mapRaw(kind === "tanh" ? "geluTanh" : "geluErf", x);
  return record(out, `gelu-${kind}`, [x], (g) => [
    mapRaw(kind === "tanh" ? "geluTanhGrad" : "geluErfGrad", x, g),
  ]);
}

/** Hyperbolic tangent. */
export function tanh(x: Tensor): Tensor {
  const out = mapRaw("tanh", x);
  return record(out, "tanh", [x], (g) => [mapRaw("tanhGrad", x, g)]);
}
