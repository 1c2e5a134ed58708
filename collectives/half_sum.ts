/**
 * Sums of 16-bit floating-point values on the host, for all-reduces that send
 * 16 bits per value (mixed precision). The caller passes a {@link HalfCodec}
 * (models build one from core/half.ts); beyond it the collectives know only the
 * bit layouts their WebAssembly SIMD kernels implement, used when the codec
 * names one ({@link HalfCodec.simd}; other codecs are summed in JavaScript).
 * Every sum runs in f32; only what crosses a link or is returned is 16-bit.
 * @module
 */

import type { HalfSimd, Reducer } from "./wasm_reduce.ts";

/** A 16-bit number format: decoding to f32 and rounding back. */
export interface HalfCodec {
  /**
   * A number naming the format, the same on every rank (checked between ranks
   * with the call, so a bf16 rank never adds an fp16 rank's bits).
   */
  readonly id: number;
  /** `dst[i]` = the value of bits `src[i]` (same lengths). */
  decode(src: Uint16Array, dst: Float32Array): void;
  /** `dst[i]` = the bits of `src[i]` rounded to the format (same lengths). */
  encode(src: Float32Array, dst: Uint16Array): void;
  /**
   * Set when the format is exactly one the arena's WebAssembly SIMD kernels
   * know (`bf16`: an f32's top 16 bits; `fp16`: IEEE binary16; both rounded to
   * nearest even, NaN kept NaN): sums then run in those kernels
   * ({@link Reducer.bf16Add} and its siblings), which give `encode`'s bits (a
   * NaN's payload aside).
   */
  readonly simd?: HalfSimd;
}

/** What a {@link HalfSummer} needs of the collectives' arena. */
export type HalfMemory =
  & { readonly buffer: ArrayBufferLike }
  & Partial<
    { readonly reducer: Reducer; alloc(bytes: number): number }
  >;

/**
 * Adds 16-bit vectors that live in `memory` (byte offsets; an arena), in f32,
 * and rounds the result back: the reduction step of a 16-bit ring or direct
 * all-reduce.
 */
export class HalfSummer {
  #acc = new Float32Array(0);
  #tmp = new Float32Array(0);
  /** The SIMD path's f32 accumulator in `memory` (sums of more than two vectors). */
  #simdAcc = { off: 0, values: 0 };

  /**
   * Uses `codec` on vectors in `memory` (its buffer is read at each use: it may
   * grow); in SIMD when the codec allows and `memory` has `reducer` and `alloc`.
   */
  constructor(readonly memory: HalfMemory, readonly codec: HalfCodec) {}

  #scratch(len: number): [Float32Array, Float32Array] {
    if (this.#acc.length < len) {
      this.#acc = new Float32Array(len);
      this.#tmp = new Float32Array(len);
    }
    return [this.#acc.subarray(0, len), this.#tmp.subarray(0, len)];
  }

  #u16(off: number, len: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, off, len);
  }

  /**
   * Sums `len` values at each of `srcs` in the order given (starting from the
   * first, so one source is returned unchanged), scales, rounds once, and
   * writes the result to every offset of `dsts`: a ring hop (this rank's values
   * and what the neighbour sent) or a direct all-reduce (every member's chunk).
   */
  sumInto(dsts: readonly number[], srcs: readonly number[], len: number, scale: number): void {
    if (len <= 0) return;
    const r = this.memory.reducer, f = this.codec.simd;
    if (f && r && this.memory.alloc) {
      // 8 values per SIMD iteration; the last len & 7 below, in JavaScript
      const v = len & ~7;
      if (srcs.length === 2) r[`${f}Add`](dsts[0], dsts[1] ?? dsts[0], srcs[0], srcs[1], v, scale);
      else {
        const acc = this.#accumulator(v);
        r[`${f}Widen`](acc, srcs[0], v);
        for (let q = 1; q < srcs.length; q++) r[`${f}WidenAdd`](acc, srcs[q], v);
        r[`${f}Narrow`](dsts[0], acc, v, scale);
        if (dsts.length > 1) this.#u16(dsts[1], v).set(this.#u16(dsts[0], v));
      }
      for (let q = 2; q < dsts.length; q++) this.#u16(dsts[q], v).set(this.#u16(dsts[0], v));
      if (v === len) return;
      const at = (o: number) => o + 2 * v;
      return this.#sumJs(dsts.map(at), srcs.map(at), len - v, scale);
    }
    this.#sumJs(dsts, srcs, len, scale);
  }

  /** Arena offset of an f32 accumulator for `values` values (grown, never freed). */
  #accumulator(values: number): number {
    if (this.#simdAcc.values < values) {
      const n = Math.max(values, 2 * this.#simdAcc.values);
      this.#simdAcc = { off: this.memory.alloc!(4 * n), values: n };
    }
    return this.#simdAcc.off;
  }

  #sumJs(dsts: readonly number[], srcs: readonly number[], len: number, scale: number): void {
    const [acc, tmp] = this.#scratch(len);
    this.codec.decode(this.#u16(srcs[0], len), acc);
    for (let q = 1; q < srcs.length; q++) {
      this.codec.decode(this.#u16(srcs[q], len), tmp);
      for (let i = 0; i < len; i++) acc[i] += tmp[i];
    }
    if (scale !== 1) { for (let i = 0; i < len; i++) acc[i] *= scale; }
    const out = this.#u16(dsts[0], len);
    this.codec.encode(acc, out);
    for (let q = 1; q < dsts.length; q++) this.#u16(dsts[q], len).set(out);
  }
}

/** What {@link allReduceHalfAvg} needs of a process group. */
export interface HalfAvgGroup {
  /** Ranks in the group. */
  readonly size: number;
  /** Every rank's `x`, concatenated in rank order. */
  allGather(x: Int32Array): Promise<Int32Array>;
  /** The 16-bit all-reduce (a ring of 16-bit values), where the group has one. */
  allReduceHalf?(x: Uint16Array, codec: HalfCodec, op?: "sum" | "avg"): Promise<void>;
}

/**
 * The average over `group` of every rank's `flat`, sent as 16-bit values of
 * `codec`; in place. At two ranks (or where the group has no `allReduceHalf`)
 * the 16-bit vectors are all-gathered and added in f32 in rank order, and the
 * average stays f32; beyond two a 16-bit all-reduce (2(p−1)/p of the 16-bit
 * bytes per rank where an all-gather sends p−1 times them) returns the average
 * rounded to the format. Every rank gets the same bits.
 */
export async function allReduceHalfAvg(
  group: HalfAvgGroup,
  flat: Float32Array,
  codec: HalfCodec,
): Promise<void> {
  const bits = new Uint16Array(flat.length);
  codec.encode(flat, bits);
  if (group.size > 2 && group.allReduceHalf) {
    await group.allReduceHalf(bits, codec, "avg");
    codec.decode(bits, flat);
    return;
  }
  const padded = new Uint16Array(bits.length + (bits.length % 2));
  padded.set(bits);
  const all = await group.allGather(new Int32Array(padded.buffer));
  const halves = new Uint16Array(all.buffer, all.byteOffset, all.length * 2);
  const sum = new Float32Array(flat.length), v = new Float32Array(flat.length);
  for (let r = 0; r < group.size; r++) {
    codec.decode(halves.subarray(r * padded.length, r * padded.length + flat.length), v);
    for (let i = 0; i < flat.length; i++) sum[i] += v[i];
  }
  for (let i = 0; i < flat.length; i++) flat[i] = sum[i] / group.size;
}
