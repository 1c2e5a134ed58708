/**
 * 16-bit storage ops (no autograd): f32 tensors packed to fp16 or bf16, two
 * values per 32-bit word, unpacked back, or rounded in place to what 16-bit
 * storage keeps (kernels/half.ts; the host twin is core/half.ts).
 * @module
 */

import {
  HALF_TEXTURE_VALUES,
  type HalfFormat,
  sumPackedDispatch,
  sumPackedKernel,
  sumPackedTextureDispatch,
  sumPackedTextureKernel,
} from "../../kernels/half.ts";
import { convertsThroughTexture, recordHalfConversion } from "../half_convert.ts";
import { disposeOnThrow, Tensor } from "../tensor.ts";
import { subBinding } from "../windows.ts";
import { elementWindows } from "./raw.ts";

export type { HalfFormat } from "../../kernels/half.ts";

/** Windows over `n` values whose starts are even and whose word offsets stay aligned. */
function pairWindows(x: Tensor, n: number) {
  const align = x.device.limits.minStorageBufferOffsetAlignment ?? 256;
  return elementWindows(x.device, n, 2 * Math.max(1, align / 4));
}

/**
 * `x` (f32) packed as `format`, two values per word: an i32-typed tensor of
 * `ceil(size/2)` words holding the bits (half the bytes of `x`).
 */
export function packHalf(x: Tensor, format: HalfFormat): Tensor {
  return disposeOnThrow(x.device, () => {
    const words = Tensor.empty(x.device, [Math.max(1, Math.ceil(x.size / 2))], "i32");
    return packHalfInto(words, x, format);
  });
}

/** Packs `x` (f32) as `format` into `words` (from {@link packHalf}); returns `words`. */
export function packHalfInto(words: Tensor, x: Tensor, format: HalfFormat): Tensor {
  if (x.dtype !== "f32") throw new Error(`packHalf of a ${x.dtype} tensor`);
  if (words.size !== Math.max(1, Math.ceil(x.size / 2))) {
    throw new Error(`packHalf: ${words.size} words do not hold ${x.size} values`);
  }
  for (const [s, c] of pairWindows(x, x.size)) {
    recordHalfConversion(
      x.device,
      "pack",
      format,
      c,
      subBinding(x.binding, s, c),
      subBinding(words.binding, s / 2, Math.ceil(c / 2)),
    );
  }
  return words;
}

/** The f32 tensor of `shape` whose values `words` (from {@link packHalf}) hold. */
export function unpackHalf(words: Tensor, shape: readonly number[], format: HalfFormat): Tensor {
  return disposeOnThrow(words.device, () => {
    const out = Tensor.empty(words.device, shape);
    for (const [s, c] of pairWindows(out, out.size)) {
      recordHalfConversion(
        words.device,
        "unpack",
        format,
        c,
        subBinding(words.binding, s / 2, Math.ceil(c / 2)),
        subBinding(out.binding, s, c),
      );
    }
    return out;
  });
}

/** Rounds every value of `x` (f32) in place to `format` and back (overflow → ±∞). */
export function roundHalfInPlace(x: Tensor, format: HalfFormat): void {
  if (x.dtype !== "f32") throw new Error(`roundHalfInPlace of a ${x.dtype} tensor`);
  for (const [s, c] of elementWindows(x.device, x.size)) {
    recordHalfConversion(x.device, "round", format, c, subBinding(x.binding, s, c));
  }
}

/**
 * Writes into `out` (f32, n values) the fp32 sum of `ranks` packed vectors laid
 * end to end in `parts` (each `ceil(n/2)` words: an all-gather of
 * {@link packHalf} results), added in rank order.
 */
export function sumPackedInto(
  out: Tensor,
  parts: Tensor,
  ranks: number,
  format: HalfFormat,
): Tensor {
  const words = Math.max(1, Math.ceil(out.size / 2));
  if (parts.size !== words * ranks) {
    throw new Error(`sumPacked: ${parts.size} words are not ${ranks} × ${words}`);
  }
  const device = out.device;
  // CPU adapters: the parts through a stream texture, 8 values an invocation (the same bits)
  const texels = (ranks * out.size) / HALF_TEXTURE_VALUES;
  if (convertsThroughTexture(device, out.size, texels, parts.binding.offset)) {
    const view = device.conversionTexture(parts.binding, texels);
    const d = sumPackedTextureDispatch(out.size, ranks);
    device.dispatch(
      sumPackedTextureKernel(format),
      [{ view }, out.binding],
      d.params,
      d.workgroups,
    );
    return out;
  }
  const d = sumPackedDispatch(out.size, ranks);
  device.dispatch(sumPackedKernel(format), [parts.binding, out.binding], d.params, d.workgroups);
  return out;
}
