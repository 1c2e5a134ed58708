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
import { streamFits } from "../kernels/texture.ts";
import type { BufferBinding, Device } from "./device.ts";

/** Which conversion: f32 to words, words to f32, or f32 to f32 through 16 bits. */
export type HalfConversion = "pack" | "unpack" | "round";

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
  const textured = device.isSoftware && n % HALF_TEXTURE_VALUES === 0 &&
    (src.offset ?? 0) % 16 === 0 && streamFits(vec4s, device.maxTextureDimension);
  if (textured) {
    const view = device.conversionTexture(src, vec4s);
    const kernel = conversion === "pack"
      ? packHalfTextureKernel(format)
      : conversion === "unpack"
      ? unpackHalfTextureKernel(format)
      : roundHalfTextureKernel(format);
    const d = halfTextureDispatch(conversion === "round" ? n / 4 : n / HALF_TEXTURE_VALUES);
    device.dispatch(kernel, [{ view }, out], d.params, d.workgroups);
    return;
  }
  const d = halfDispatch(n, conversion === "pack");
  const kernel = conversion === "pack"
    ? packHalfKernel(format)
    : conversion === "unpack"
    ? unpackHalfKernel(format)
    : roundHalfKernel(format);
  device.dispatch(kernel, conversion === "round" ? [src] : [src, out], d.params, d.workgroups);
}
