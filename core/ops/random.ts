/**
 * Random tensors drawn on the GPU from the counter-based generator.
 * @module
 */

import { randomDispatch, randomKernel } from "../../kernels/rng.ts";
import type { Device } from "../device.ts";
import { checkDraw, type RngDraw } from "../rng.ts";
import { disposeOnThrow, Tensor } from "../tensor.ts";
import { subBinding } from "../windows.ts";
import { elementWindows } from "./raw.ts";

/**
 * Normal(mean, std) values; element `i` is the draw for global index `start + i`,
 * so a contiguous shard of a weight can draw exactly its slice of the full one.
 */
export function randn(
  device: Device,
  shape: readonly number[],
  draw: RngDraw,
  std = 1,
  mean = 0,
  start = 0,
): Tensor {
  return disposeOnThrow(device, () => {
    return drawInto(Tensor.empty(device, shape), "normal", draw, mean, std, start);
  });
}

/** Uniform values in [lo, hi); indexing as in {@link randn}. */
export function rand(
  device: Device,
  shape: readonly number[],
  draw: RngDraw,
  lo = 0,
  hi = 1,
  start = 0,
): Tensor {
  return disposeOnThrow(device, () => {
    return drawInto(Tensor.empty(device, shape), "uniform", draw, lo, hi, start);
  });
}

/** Fills `t` with draws `start + i`, window by window (the values do not depend on the windows). */
function drawInto(
  t: Tensor,
  dist: "normal" | "uniform",
  draw: RngDraw,
  a: number,
  b: number,
  start: number,
): Tensor {
  checkDraw(dist === "normal" ? "randn" : "rand", draw);
  for (const [s, c] of elementWindows(t.device, t.size)) {
    const d = randomDispatch(c, draw.seed, draw.offset, a, b, start + s);
    t.device.dispatch(randomKernel(dist), [subBinding(t.binding, s, c)], d.params, d.workgroups);
  }
  return t;
}
