/**
 * 16-bit floating-point formats on the host: IEEE binary16 (`fp16`) and bfloat16
 * (`bf16`, the top 16 bits of an f32), with round-to-nearest-even from f32,
 * subnormals, overflow to infinity and NaN kept NaN. The GPU kernels
 * (kernels/half.ts) round the same way; tests compare the two.
 * @module
 */

import type { HalfFormat } from "../kernels/half.ts";
export type { HalfFormat };

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bits of `x` as an f32. */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

/** The f32 whose bits are `b`. */
export function f32FromBits(b: number): number {
  u32[0] = b >>> 0;
  return f32[0];
}

/** `x` (first rounded to f32) as fp16 bits, rounding to nearest even. */
export function f32ToF16Bits(x: number): number {
  return f16BitsOfF32Bits(f32Bits(x));
}

/** The f32 with bits `b`, as fp16 bits, rounding to nearest even. */
function f16BitsOfF32Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // the fp16 biased exponent (127 − 15)
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal in fp16 (or zero): value = mant24 · 2^(e−14) units of 2^−24.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h; // a carry into the exponent gives the smallest normal, as it should
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry to 0x7c00: infinity
  return sign | h;
}

/** The value of fp16 bits `h`. */
export function f16BitsToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** `x` (first rounded to f32) as bf16 bits, rounding to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16Bits(x: number): number {
  return bf16BitsOfF32Bits(f32Bits(x));
}

/** The f32 with bits `b`, as bf16 bits (see {@link f32ToBf16Bits}). */
function bf16BitsOfF32Bits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff)) return (b >>> 16) | 0x40;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The value of bf16 bits `h`. */
export function bf16BitsToF32(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

/** Each value of `x` in `dtype`'s bits. */
export function toHalfBits(x: ArrayLike<number>, dtype: HalfFormat): Uint16Array {
  const out = new Uint16Array(x.length);
  if (x instanceof Float32Array) {
    encodeHalfInto(x, out, dtype);
    return out;
  }
  const conv = dtype === "fp16" ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < x.length; i++) out[i] = conv(x[i]);
  return out;
}

/** Every fp16 bit pattern's f32 value (built on first use: 256 KiB). */
let f16Table: Float32Array | null = null;

/**
 * `dst[i]` = the bits of `src[i]` in `dtype` (same lengths), reading `src`'s
 * bits directly: no allocation, about twice as fast per value as a loop of
 * {@link f32ToF16Bits} (measured; the data-parallel 16-bit wire encodes every
 * gradient each step).
 */
export function encodeHalfInto(src: Float32Array, dst: Uint16Array, dtype: HalfFormat): void {
  const n = src.length;
  if (dst.length !== n) throw new Error(`encodeHalfInto: ${n} values into ${dst.length}`);
  const b = new Uint32Array(src.buffer, src.byteOffset, n);
  if (dtype === "bf16") { for (let i = 0; i < n; i++) dst[i] = bf16BitsOfF32Bits(b[i]); }
  else for (let i = 0; i < n; i++) dst[i] = f16BitsOfF32Bits(b[i]);
}

/** `dst[i]` = the value of `dtype` bits `src[i]` (same lengths), without allocating. */
export function decodeHalfInto(src: Uint16Array, dst: Float32Array, dtype: HalfFormat): void {
  const n = src.length;
  if (dst.length !== n) throw new Error(`decodeHalfInto: ${n} values into ${dst.length}`);
  if (dtype === "bf16") {
    const u = new Uint32Array(dst.buffer, dst.byteOffset, n);
    for (let i = 0; i < n; i++) u[i] = src[i] << 16;
    return;
  }
  // a table lookup: f16BitsToF32 per element costs ~0.5 µs
  const t = f16Table ??= Float32Array.from({ length: 65536 }, (_, b) => f16BitsToF32(b));
  for (let i = 0; i < n; i++) dst[i] = t[src[i]];
}

/** The f32 values of `dtype` bits `h`. */
export function fromHalfBits(h: Uint16Array, dtype: HalfFormat): Float32Array {
  const out = new Float32Array(h.length);
  decodeHalfInto(h, out, dtype);
  return out;
}

/** `x` rounded to `dtype` and back to f32 (what 16-bit storage keeps of it). */
export function roundToHalf(x: ArrayLike<number>, dtype: HalfFormat): Float32Array {
  return fromHalfBits(toHalfBits(x, dtype), dtype);
}
