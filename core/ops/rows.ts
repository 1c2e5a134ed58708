/**
 * Dispatch of row kernels (softmax, layer norm, cross-entropy): a workgroup per
 * row on GPUs; one invocation per row on CPU adapters, where workgroup barriers
 * are costly (see `perRowVariant`).
 * @module
 */

import { grid2d, gridFor } from "../../kernels/grid.ts";
import type { KernelSource } from "../../kernels/kernel.ts";
import { perRowVariant, ROW_WG } from "../../kernels/rowreduce.ts";
import type { Device } from "../device.ts";

/** Dispatches row kernel `kernel` over `rows` rows in the form that suits `device`. */
export function dispatchRows(
  device: Device,
  kernel: KernelSource,
  buffers: { buffer: GPUBuffer; size: number }[],
  params: ArrayBuffer,
  rows: number,
): void {
  if (device.isSoftware) {
    device.dispatch(perRowVariant(kernel), buffers, params, gridFor(rows, ROW_WG));
  } else {
    device.dispatch(kernel, buffers, params, grid2d(rows));
  }
}
