/**
 * Dispatch of row kernels (softmax, layer norm, cross-entropy): a workgroup per
 * row on GPUs; on CPU adapters, where workgroup barriers are costly, one
 * invocation per row (see `perRowVariant`) while the row is short enough for
 * the software loop cap, and a workgroup per row beyond.
 * @module
 */

import { ceilDiv } from "../../kernels/kernel.ts";
import { grid2d, gridFor } from "../../kernels/grid.ts";
import type { KernelSource } from "../../kernels/kernel.ts";
import { perRowVariant, ROW_PASSES, ROW_WG, SOFTWARE_LOOP_LIMIT } from "../../kernels/rowreduce.ts";
import type { Device } from "../device.ts";
import type { BufferBinding } from "../windows.ts";
import { streamFits } from "../../kernels/texture.ts";
import type { Tensor } from "../tensor.ts";

/** Longest row the one-invocation-per-row form walks within the software loop cap. */
export const PER_ROW_MAX_COLS = Math.floor(SOFTWARE_LOOP_LIMIT / ROW_PASSES);

/** Longest row any form handles on a software adapter (a workgroup of ROW_WG shares it). */
export const SOFTWARE_MAX_COLS = Math.floor((SOFTWARE_LOOP_LIMIT - 64) / ROW_PASSES) * ROW_WG;

/**
 * Dispatches row kernel `kernel` over `rows` rows of `cols` columns in the form
 * that suits `device`.
 */
export function dispatchRows(
  device: Device,
  kernel: KernelSource,
  buffers: BufferBinding[],
  params: ArrayBuffer,
  rows: number,
  cols: number,
): void {
  if (!device.isSoftware) {
    device.dispatch(kernel, buffers, params, grid2d(rows));
  } else if (cols <= PER_ROW_MAX_COLS) {
    device.dispatch(perRowVariant(kernel), buffers, params, gridFor(rows, ROW_WG));
  } else if (ceilDiv(cols, ROW_WG) * ROW_PASSES + 64 <= SOFTWARE_LOOP_LIMIT) {
    device.dispatch(kernel, buffers, params, grid2d(rows));
  } else {
    throw new Error(
      `kernel ${kernel.key}: rows of ${cols} columns exceed what a software adapter can walk ` +
        `(${SOFTWARE_MAX_COLS}; Mesa stops a shader after ${SOFTWARE_LOOP_LIMIT} loop iterations)`,
    );
  }
}

/**
 * Whether row (or column) kernels over `rows × cols` run their CPU-adapter
 * texture forms (kernels/layernorm.ts, residual_norm.ts, reduce.ts,
 * crossentropy.ts): a software adapter, rows of whole vec4s within the loop
 * cap, and textures that fit.
 */
export function rowTextures(device: Device, rows: number, cols: number): boolean {
  return device.isSoftware && cols % 4 === 0 && 3 * (cols / 4) <= SOFTWARE_LOOP_LIMIT &&
    streamFits((rows * cols) / 4, device.maxTextureDimension);
}

/**
 * Dispatches a row kernel whose first bindings, `inputs`, are read-only rows of
 * `cols` (or one row: gamma, beta): where {@link rowTextures} allows, its
 * `texture` form, one invocation per row, with each input copied into its own
 * stream texture; else its `plain` form through
 * {@link dispatchRows} with the inputs' buffers. `rest` follows the inputs.
 */
export function dispatchRowsFrom(
  device: Device,
  kernels: { plain: KernelSource; texture: KernelSource },
  inputs: Tensor[],
  rest: BufferBinding[],
  params: ArrayBuffer,
  rows: number,
  cols: number,
): void {
  if (!rowTextures(device, rows, cols)) {
    dispatchRows(
      device,
      kernels.plain,
      [...inputs.map((t) => t.binding), ...rest],
      params,
      rows,
      cols,
    );
    return;
  }
  const views = device.streamOperands(
    inputs.map((t) => ({ binding: t.binding, vec4s: t.size / 4 })),
  ).map((view) => ({ view }));
  device.dispatch(kernels.texture, [...views, ...rest], params, gridFor(rows, ROW_WG));
}
