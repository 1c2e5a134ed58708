/**
 * Operands of element-wise kernels read through stream textures on CPU adapters
 * (kernels/texture.ts): llvmpipe loads a storage-buffer element one invocation
 * at a time, in a branching loop, where a `textureLoad` is one gather. Measured
 * on this project's machine (Mesa 22.3): ~11 ns per float from a buffer against
 * ~1–2 from a texture; the copy into the texture is a memcpy.
 * @module
 */

import { streamFits } from "../../kernels/texture.ts";
import type { Device, StreamOperand } from "../device.ts";

/**
 * Below this many vec4s in its largest operand, a kernel reads its buffers:
 * each stream texture costs one or two copy commands with a fixed cost (~5–9
 * µs each on llvmpipe, more than the ~10 ns per float a texel saves over a
 * buffer load on 1024 floats), and the optimizer's 128-element biases and norm
 * parameters would each take four.
 */
export const STREAM_MIN_VEC4S = 256;

/**
 * The operands as stream textures in slots 0, 1, … (in order with the
 * dispatches around them), for a kernel's texture form; null on a GPU, when
 * every operand is under {@link STREAM_MIN_VEC4S}, or when an operand needs
 * more rows than a texture has: the caller then dispatches the buffer form.
 * `work`, when given, replaces the largest operand in the size test: the vec4s
 * a kernel reads or writes where that is not its operands' size (a lookup
 * reads a few rows of a large table, or many rows of a small one).
 */
export function streamTextures(
  device: Device,
  operands: readonly StreamOperand[],
  work?: number,
): { view: GPUTextureView }[] | null {
  if (!device.isSoftware) return null;
  if (
    work === undefined ? operands.every((o) => o.vec4s < STREAM_MIN_VEC4S) : work < STREAM_MIN_VEC4S
  ) return null;
  if (!operands.every((o) => streamFits(o.vec4s, device.maxTextureDimension))) return null;
  return device.streamOperands(operands).map((view) => ({ view }));
}
