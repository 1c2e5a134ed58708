/**
 * The 16-bit formats of mixed precision (core/half.ts) as the collectives'
 * {@link HalfCodec}, for all-reduces that send 16-bit values.
 * @module
 */

import type { HalfCodec } from "../../collectives/half_sum.ts";
import { decodeHalfInto, encodeHalfInto, type HalfFormat } from "../../core/half.ts";

/** Format ids checked between ranks (any distinct numbers would do). */
const IDS: Record<HalfFormat, number> = { fp16: 1, bf16: 2 };

/** `format` as a codec: host decoding and round-to-nearest-even encoding. */
export function halfCodec(format: HalfFormat): HalfCodec {
  return {
    id: IDS[format],
    decode: (src, dst) => decodeHalfInto(src, dst, format),
    encode: (src, dst) => encodeHalfInto(src, dst, format),
    simd: format,
  };
}
