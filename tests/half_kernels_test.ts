/**
 * The 16-bit WGSL kernels (kernels/half.ts through core/ops/half.ts) against
 * the host reference (core/half.ts), bit for bit: fp16 subnormals, ties,
 * overflow to infinity and NaN; bf16 round to nearest even; packing two values
 * per word (odd lengths included) and unpacking back.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { f32FromBits, type Half, roundToHalf, toHalfBits } from "../core/half.ts";
import { packHalf, roundHalfInPlace, unpackHalf } from "../core/ops/mod.ts";
import { Tensor } from "../core/tensor.ts";
import { gpuTest, prng, testDevice } from "./helpers.ts";

const dev = await testDevice();

/** Edge values and random ones (random bit patterns and fp16-range values). */
function values(seed: number): Float32Array {
  const edges = [
    0,
    -0,
    1,
    -1,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -25,
    -(2 ** -25 + 2 ** -40),
    2 ** -14,
    2 ** -14 - 2 ** -25,
    65504,
    65519,
    65520,
    -65520,
    1e6,
    3.4e38,
    Infinity,
    -Infinity,
    NaN,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    1 + 2 ** -8,
    1 + 3 * 2 ** -8,
  ];
  const r = prng(seed);
  const out = [...edges];
  for (let i = 0; i < 2000; i++) out.push(f32FromBits(Math.floor(r() * 2 ** 32)));
  for (let i = 0; i < 2000; i++) out.push((r() - 0.5) * 2 ** (Math.floor(r() * 44) - 28));
  out.push(0.5); // an odd count: the last word's high half is padding
  return Float32Array.from(out);
}

/** NaN-aware bitwise comparison (any NaN matches any NaN). */
function sameValues(got: Float32Array, want: Float32Array, what: string): void {
  strictEqual(got.length, want.length);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < got.length; i++) {
    if (Number.isNaN(want[i])) ok(Number.isNaN(got[i]), `${what} [${i}]: ${got[i]} for NaN`);
    else strictEqual(g[i], w[i], `${what} [${i}]: ${got[i]} vs ${want[i]}`);
  }
}

for (const format of ["fp16", "bf16"] as Half[]) {
  Deno.test(
    `${format}: pack, unpack and round in place match the host rounding`,
    gpuTest,
    async () => {
      const x = values(format === "fp16" ? 1 : 2);
      const t = Tensor.fromArray(dev, x);
      const words = packHalf(t, format);
      strictEqual(words.size, Math.ceil(x.length / 2));
      const bits = new Uint16Array(await dev.read(words.buffer, words.byteLength));
      const want = toHalfBits(x, format);
      for (let i = 0; i < x.length; i++) {
        if (Number.isNaN(x[i])) {
          // any NaN encoding will do, as long as it is a NaN
          ok(
            format === "fp16"
              ? (bits[i] & 0x7c00) === 0x7c00 && (bits[i] & 0x3ff) !== 0
              : (bits[i] & 0x7f80) === 0x7f80 && (bits[i] & 0x7f) !== 0,
          );
        } else strictEqual(bits[i], want[i], `${format} bits [${i}] of ${x[i]}`);
      }
      strictEqual(bits[x.length] ?? 0, 0, "padding");
      const back = unpackHalf(words, [x.length], format);
      sameValues(await back.read(), roundToHalf(x, format), "unpack");
      roundHalfInPlace(t, format);
      sameValues(await t.read(), roundToHalf(x, format), "round");
      for (const u of [t, words, back]) u.dispose();
    },
  );
}

Deno.test("packed 16-bit tensors take half the bytes", gpuTest, () => {
  const t = Tensor.fromArray(dev, new Float32Array(1000).fill(1));
  const w = packHalf(t, "bf16");
  strictEqual(w.byteLength * 2, t.byteLength);
  deepStrictEqual(w.shape, [500]);
  t.dispose();
  w.dispose();
});
