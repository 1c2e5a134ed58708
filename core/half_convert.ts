/**
 * Records one of the 16-bit storage conversions (kernels/half.ts) over bound
 * ranges: packing f32 values into words, unpacking words into f32 values, or
 * rounding f32 values in place. On CPU adapters a range whose count and offset
 * allow it is read through a stream texture of its own
 * ({@link Device.conversionTexture}) and converted 8 values an
 * invocation (the `:tex` kernels: llvmpipe loads and stores a storage buffer one
 * invocation at a time); elsewhere one value (or word) an invocation. Both give
 * the same bits. One definition for core/ops/half.ts and core/tensor.ts.
 * @module
 */

import {
  HALF_TEXTURE_VALUES,
  halfDispatch,
  type HalfFormat,
  halfTextureDispatch,
  packHalfKernel,
  packHalfTextureKernel,
  roundHalfKernel,
  roundHalfTextureKernel,
  unpackHalfKernel,
  unpackHalfTextureKernel,
} from "../kernels/half.ts";
import type { KernelSource } from "../kernels/kernel.ts";
import { streamFits } from "../kernels/texture.ts";
import type { BufferBinding, Device } from "./device.ts";

/** Which conversion: f32 to words, words to f32, or f32 to f32 through 16 bits. */
export type HalfConversion = "pack" | "unpack" | "round";

/** Each conversion's kernels: one value (or word) an invocation, and 8 through a stream texture. */
const KERNELS: Record<
  HalfConversion,
  { scalar: (f: HalfFormat) => KernelSource; texture: (f: HalfFormat) => KernelSource }
> = {
  pack: { scalar: packHalfKernel, texture: packHalfTextureKernel },
  unpack: { scalar: unpackHalfKernel, texture: unpackHalfTextureKernel },
  round: { scalar: roundHalfKernel, texture: roundHalfTextureKernel },
};

/**
 * Whether a conversion of `n` values on `device` reads its source through a
 * stream texture of `vec4s` texels ({@link Device.conversionTexture}) from
 * byte `offset`: CPU adapters only, whole groups of 8, a 16-byte aligned start
 * (a texel copy's), a texture that fits.
 */
export function convertsThroughTexture(
  device: Device,
  n: number,
  vec4s: number,
  offset = 0,
): boolean {
  return device.isSoftware && n % HALF_TEXTURE_VALUES === 0 && offset % 16 === 0 &&
    streamFits(vec4s, device.maxTextureDimension);
}

/**
 * Records `conversion` of `n` values in `format`: `pack` reads `src` (f32) and
 * writes `dst` (words), `unpack` reads `src` (words) and writes `dst` (f32),
 * `round` rewrites `src` (f32) and takes no `dst`.
 */
export function recordHalfConversion(
  device: Device,
  conversion: HalfConversion,
  format: HalfFormat,
  n: number,
  src: BufferBinding,
  dst?: BufferBinding,
): void {
  const out = conversion === "round" ? src : dst;
  if (!out) throw new Error(`recordHalfConversion: ${conversion} needs a destination`);
  // vec4s of the source's stream texture: f32 values 4 a texel, words 8 values a texel
  const vec4s = conversion === "unpack" ? n / 8 : n / 4;
  const kernels = KERNELS[conversion];
  if (convertsThroughTexture(device, n, vec4s, src.offset)) {
    const view = device.conversionTexture(src, vec4s);
    const d = halfTextureDispatch(conversion === "round" ? n / 4 : n / HALF_TEXTURE_VALUES);
    device.dispatch(kernels.texture(format), [{ view }, out], d.params, d.workgroups);
    return;
  }
  const d = halfDispatch(n, conversion === "pack");
  const bindings = conversion === "round" ? [src] : [src, out];
  device.dispatch(kernels.scalar(format), bindings, d.params, d.workgroups);
}
