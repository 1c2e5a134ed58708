/**
 * Elementwise ops with autograd: add/sub/mul (the second operand may broadcast
 * over leading dimensions), scale, GeLU (tanh and erf) and tanh. The no-autograd
 * primitives they dispatch through live in `raw.ts`.
 * @module
 */

import type { GeluKind } from "../../kernels/elementwise.ts";
import { record } from "../autograd.ts";
import { assertSameDevice, fmtShape, type Tensor } from "../tensor.ts";
import { mapRaw, sumToSize } from "./raw.ts";

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

export type { GeluKind };

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
