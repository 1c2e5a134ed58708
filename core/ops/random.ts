/**
 * Random tensors drawn on the GPU from the counter-based generator.
 * @module
 */

import { randomDispatch, randomKernel } from "../../kernels/rng.ts";
import type { Device } from "../device.ts";
import type { RngDraw } from "../rng.ts";
import { Tensor } from "../tensor.ts";

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
  const t = Tensor.empty(device, shape);
  const d = randomDispatch(t.size, draw.seed, draw.offset, mean, std, start);
  device.dispatch(randomKernel("normal"), [t.binding], d.params, d.workgroups);
  return t;
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
  const t = Tensor.empty(device, shape);
  const d = randomDispatch(t.size, draw.seed, draw.offset, lo, hi, start);
  device.dispatch(randomKernel("uniform"), [t.binding], d.params, d.workgroups);
  return t;
}
