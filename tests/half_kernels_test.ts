/**
 * The 16-bit WGSL kernels (kernels/half.ts through core/ops/half.ts) against
 * the host reference (core/half.ts), bit for bit: fp16 subnormals, ties,
 * overflow to infinity and NaN; bf16 round to nearest even; packing two values
 * per word (odd lengths included) and unpacking back.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { f32FromBits, type HalfFormat, roundToHalf, toHalfBits } from "../core/half.ts";
import {
  f16GroupSumProbe,
  linear,
  matmul,
  packHalf,
  roundHalfInPlace,
  sum,
  sumPackedInto,
  unpackHalf,
} from "../core/ops/mod.ts";
import { backward, zeroGrad } from "../core/autograd.ts";
import { recordPlan } from "../core/ops/matmul.ts";
import { Tensor } from "../core/tensor.ts";
import {
  type MatmulOptions,
  matmulPlan,
  matmulPlanWith,
  type MatmulShape,
  type MatmulTiling,
  textureASize,
} from "../kernels/matmul.ts";
import { gpuTest, prng, randomArray, testDevice } from "./helpers.ts";
import { matmulRef } from "./reference.ts";
import {
  halfDispatch,
  packHalfKernel,
  roundHalfKernel,
  sumPackedDispatch,
  sumPackedKernel,
  unpackHalfKernel,
} from "../kernels/half.ts";

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

for (const format of ["fp16", "bf16"] as HalfFormat[]) {
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

for (const format of ["fp16", "bf16"] as HalfFormat[]) {
  Deno.test({
    name:
      `${format}: pack, unpack and round through stream textures give the one-value kernels' bits`,
    ignore: !dev.isSoftware || !dev.maxTextureDimension,
    ...gpuTest,
    async fn() {
      // a count of 8s: the CPU adapter's conversions read their source through a stream
      // texture, 8 values an invocation (core/half_convert.ts); the one-value kernels, run
      // directly here, are the reference, every bit of it (NaN payloads included)
      const all = values(format === "fp16" ? 3 : 4);
      const x = all.subarray(0, all.length - (all.length % 8));
      const n = x.length;
      const scalar = (kernel: typeof packHalfKernel, words: boolean, bufs: Tensor[]) => {
        const d = halfDispatch(n, words);
        dev.dispatch(kernel(format), bufs.map((b) => b.binding), d.params, d.workgroups);
      };
      const t = Tensor.fromArray(dev, x);
      const wordsRef = Tensor.empty(dev, [n / 2], "i32");
      scalar(packHalfKernel, true, [t, wordsRef]);
      const backRef = Tensor.empty(dev, [n]);
      scalar(unpackHalfKernel, false, [wordsRef, backRef]);
      const roundRef = Tensor.fromArray(dev, x);
      scalar(roundHalfKernel, false, [roundRef]);

      const copies = dev.textureCopies;
      const words = packHalf(t, format);
      const back = unpackHalf(words, [n], format);
      const rounded = Tensor.fromArray(dev, x);
      roundHalfInPlace(rounded, format);
      ok(dev.textureCopies >= copies + 3, "each conversion read its source through a texture");
      const bits = async (u: Tensor) => new Uint32Array(await dev.read(u.buffer, u.byteLength));
      deepStrictEqual(await bits(words), await bits(wordsRef), "pack");
      deepStrictEqual(await bits(back), await bits(backRef), "unpack");
      deepStrictEqual(await bits(rounded), await bits(roundRef), "round");
      sameValues(await back.read(), roundToHalf(x, format), "unpack against the host");
      for (const u of [t, wordsRef, backRef, roundRef, words, back, rounded]) u.dispose();
    },
  });
}

Deno.test({
  name: "the sum of packed parts through a stream texture gives the one-value kernel's bits",
  ignore: !dev.isSoftware || !dev.maxTextureDimension,
  ...gpuTest,
  async fn() {
    // what a 16-bit all-reduce adds up: each rank's packed values, in rank order
    for (const format of ["fp16", "bf16"] as HalfFormat[]) {
      for (const ranks of [1, 2, 3]) {
        const x = values(10 + ranks);
        const n = 8 * Math.floor(x.length / (8 * ranks));
        const words = n / 2;
        const parts = Tensor.empty(dev, [ranks * words], "i32");
        for (let r = 0; r < ranks; r++) {
          const part = Tensor.fromArray(dev, x.slice(r * n, (r + 1) * n));
          const packed = packHalf(part, format);
          dev.copy(packed.buffer, 0, parts.buffer, r * words * 4, words * 4);
          part.dispose();
          packed.dispose();
        }
        const want = Tensor.empty(dev, [n]);
        const d = sumPackedDispatch(n, ranks);
        dev.dispatch(
          sumPackedKernel(format),
          [parts.binding, want.binding],
          d.params,
          d.workgroups,
        );
        const copies = dev.textureCopies;
        const got = sumPackedInto(Tensor.empty(dev, [n]), parts, ranks, format);
        ok(dev.textureCopies > copies, "the parts were read through a texture");
        const bits = async (u: Tensor) => new Uint32Array(await dev.read(u.buffer, u.byteLength));
        deepStrictEqual(await bits(got), await bits(want), `${format}, ${ranks} ranks`);
        for (const u of [parts, want, got]) u.dispose();
      }
    }
  },
});

Deno.test("packed 16-bit tensors take half the bytes", gpuTest, () => {
  const t = Tensor.fromArray(dev, new Float32Array(1000).fill(1));
  const w = packHalf(t, "bf16");
  strictEqual(w.byteLength * 2, t.byteLength);
  deepStrictEqual(w.shape, [500]);
  t.dispose();
  w.dispose();
});

for (const format of ["fp16", "bf16"] as HalfFormat[]) {
  Deno.test(
    `${format}: matmul reading a packed 16-bit B equals f32 matmul on the rounded B`,
    gpuTest,
    async () => {
      // Odd and vec4-friendly shapes, both transposes of B (scalar and vec4 reads).
      for (const [M, N, K] of [[5, 7, 3], [8, 12, 16], [3, 16, 9]]) {
        for (const transB of [false, true]) {
          const r = prng(M * 100 + N * 10 + K + (transB ? 7 : 0));
          const a = Float32Array.from({ length: M * K }, () => r() * 2 - 1);
          const b = Float32Array.from({ length: K * N }, () => r() * 2 - 1);
          const A = Tensor.fromArray(dev, a, [M, K]);
          const B = Tensor.fromArray(dev, b, transB ? [N, K] : [K, N]);
          const words = packHalf(B, format);
          const got = await matmul(A, B, { transB, bHalf: { words, format } }).read();
          const want = matmulRef(a, roundToHalf(b, format), M, N, K, false, transB);
          const full = matmulRef(a, b, M, N, K, false, transB);
          let diffFromF32 = 0;
          for (let i = 0; i < got.length; i++) {
            ok(
              Math.abs(got[i] - want[i]) <= 1e-5 * (1 + Math.abs(want[i])),
              `[${i}] ${got[i]} vs ${want[i]}`,
            );
            diffFromF32 = Math.max(diffFromF32, Math.abs(got[i] - full[i]));
          }
          // and within the format's rounding of the f32 product (|b| < 1, K terms)
          ok(
            diffFromF32 <= K * (format === "fp16" ? 2 ** -11 : 2 ** -8),
            `${format} vs f32: ${diffFromF32}`,
          );
          for (const t of [A, B, words]) t.dispose();
        }
      }
    },
  );
}

Deno.test(
  "linear layers read a weight's halfCopy in forward and input-gradient, not in weight-gradient",
  gpuTest,
  async () => {
    const x = Tensor.fromArray(dev, randomArray(4 * 6, 1), [4, 6]);
    const w = Tensor.fromArray(dev, randomArray(5 * 6, 2), [5, 6]);
    x.requiresGrad = w.requiresGrad = true;
    x.persistent = w.persistent = true;
    const run = async () => {
      const y = linear(x, w);
      await backward(sum(y));
      const out = [await y.read(), await x.grad!.read(), await w.grad!.read()];
      zeroGrad([x, w]);
      return out;
    };
    const [y32, gx32, gw32] = await run();
    w.halfCopy = { words: packHalf(w, "bf16").keep(), format: "bf16" };
    const [y16, gx16, gw16] = await run();
    const wr = roundToHalf(await w.read(), "bf16");
    const xs = await x.read();
    const yRef = matmulRef(xs, wr, 4, 5, 6, false, true);
    for (let i = 0; i < y16.length; i++) ok(Math.abs(y16[i] - yRef[i]) < 1e-5, `y [${i}]`);
    ok(y16.some((v, i) => v !== y32[i]), "forward reads the 16-bit copy");
    // dx = dy·W (dy = 1): the column sums of the rounded W
    for (let i = 0; i < 6; i++) {
      let s = 0;
      for (let o = 0; o < 5; o++) s += wr[o * 6 + i];
      ok(Math.abs(gx16[i] - s) < 1e-5, `dx [${i}]`);
    }
    ok(gx16.some((v, i) => v !== gx32[i]));
    deepStrictEqual(gw16, gw32, "the weight gradient needs only x and dy");
    w.dispose();
    x.dispose();
  },
);

/**
 * How a packed-B matmul reads and computes: integer unpacking with f32
 * arithmetic, native f16 reads with f32 arithmetic, or native f16 arithmetic.
 */
type PackedPath = "unpack" | "f16 read" | "f16 arithmetic";

/** Largest |C − C_ref| / Σ|a·b| (f64 reference on the rounded operands) a path may give. */
function packedTolerance(path: PackedPath): number {
  // f16 arithmetic: A rounded to f16 (u), a product rounded (u), the k-group's
  // three additions (3u), the f32 accumulation (negligible): 5u, u = 2^-11.
  return path === "f16 arithmetic" ? 5 * 2 ** -11 : 1e-5;
}

async function packedMatmulCases(path: PackedPath): Promise<void> {
  const shaderF16 = path !== "unpack";
  for (const software of [true, false]) {
    const opts: MatmulOptions = {
      software,
      maxInvocations: dev.limits.maxComputeInvocationsPerWorkgroup,
      maxWorkgroupStorage: dev.limits.maxComputeWorkgroupStorageSize,
      shaderF16,
      f16Arithmetic: path === "f16 arithmetic",
    };
    let seed = software ? 10 : 20;
    for (const format of (shaderF16 ? ["fp16"] : ["fp16", "bf16"]) as HalfFormat[]) {
      for (
        const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]
      ) {
        for (const [M, N, K] of [[5, 7, 3], [8, 16, 12], [33, 20, 17], [9, 40, 70]]) {
          const a = randomArray(M * K, seed++), b = randomArray(K * N, seed++);
          const bits = toHalfBits(b, format);
          const padded = new Uint16Array(bits.length + (bits.length % 2));
          padded.set(bits);
          const A = Tensor.fromArray(dev, a);
          const W = Tensor.fromArray(dev, new Int32Array(padded.buffer), undefined, "i32");
          const C = Tensor.empty(dev, [M * N]);
          const plan = matmulPlan({
            batch: 1,
            M,
            N,
            K,
            transA,
            transB,
            batchA: false,
            batchB: false,
            bias: false,
            packedB: format,
          }, opts);
          recordPlan(dev, plan, [A.binding, W.binding, C.binding]);
          const got = await C.read();
          const bRounded = roundToHalf(b, format);
          const want = matmulRef(a, bRounded, M, N, K, transA, transB);
          // Σ|a·b| per output, the scale of the rounding errors
          const mag = matmulRef(a.map(Math.abs), bRounded.map(Math.abs), M, N, K, transA, transB);
          const tol = packedTolerance(path);
          for (let i = 0; i < got.length; i++) {
            ok(
              Math.abs(got[i] - want[i]) <= tol * (1 + mag[i]),
              `${software ? "software" : "gpu"} ${path} ${format} ${transA}/${transB} ` +
                `${M}×${N}×${K} [${i}]: ${got[i]} vs ${want[i]}`,
            );
          }
          for (const t of [A, W, C]) t.dispose();
        }
      }
    }
  }
}

Deno.test(
  "packed-B matmul kernels, software and GPU tilings, every transpose",
  gpuTest,
  async () => {
    await packedMatmulCases("unpack");
  },
);

Deno.test({
  name: "packed-B matmul through a stream texture (software tilings): the buffer path's bits",
  ignore: !dev.isSoftware || !dev.maxTextureDimension,
  ...gpuTest,
  async fn() {
    // A packed B's words copied as they are into an rgba32float stream texture and taken back
    // with bitcast: every product equals the buffer path's bit for bit, and the reference.
    const opts: MatmulOptions = {
      software: true,
      maxInvocations: dev.limits.maxComputeInvocationsPerWorkgroup,
      maxWorkgroupStorage: dev.limits.maxComputeWorkgroupStorageSize,
      maxTextureDimension: dev.maxTextureDimension,
      lanes: dev.softwareLanes,
    };
    let seed = 300;
    let textured = 0;
    for (const format of ["fp16", "bf16"] as HalfFormat[]) {
      for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
        for (
          const [batch, M, N, K] of [[1, 8, 16, 12], [1, 9, 40, 72], [2, 12, 8, 20], [
            1,
            33,
            20,
            17,
          ]]
        ) {
          // batch 2: B batched too (a packed B per entry)
          const a = randomArray(batch * M * K, seed++), b = randomArray(batch * K * N, seed++);
          const bits = toHalfBits(b, format);
          const padded = new Uint16Array(bits.length + (bits.length % 2));
          padded.set(bits);
          const A = Tensor.fromArray(dev, a);
          const W = Tensor.fromArray(dev, new Int32Array(padded.buffer), undefined, "i32");
          const shape: MatmulShape = {
            batch,
            M,
            N,
            K,
            transA,
            transB,
            batchA: batch > 1,
            batchB: batch > 1,
            bias: false,
            packedB: format,
          };
          const base: MatmulTiling = {
            software: true,
            tm: 8,
            tv: 2,
            lx: 2,
            lanes: dev.softwareLanes,
          };
          const run = async (tiling: MatmulTiling) => {
            const C = Tensor.empty(dev, [batch * M * N]);
            recordPlan(dev, matmulPlanWith(shape, opts, tiling), [A.binding, W.binding, C.binding]);
            const got = await C.read();
            C.dispose();
            return got;
          };
          const viaBuffer = await run(base);
          const chosen = matmulPlan(shape, opts);
          // a packed B fills whole texels when its count of values divides by 8, and is read as vec4s
          const fits = (batch * N * K) % 8 === 0 && (transB ? K % 4 === 0 : N % 4 === 0);
          strictEqual(chosen.textureB !== undefined, fits, `${format} ${M}×${N}×${K} textureB`);
          const name = `${format} ${transA}/${transB} ${batch}×${M}×${N}×${K}`;
          if (fits) {
            textured++;
            strictEqual(chosen.textureB, (batch * N * K) / 8);
            deepStrictEqual(await run({ ...base, texB: true }), viaBuffer, `${name}: texture B`);
            if (textureASize(shape, opts)) {
              deepStrictEqual(
                await run({ ...base, texB: true, texA: true }),
                viaBuffer,
                `${name}: texture A and B`,
              );
            }
          }
          const bRounded = roundToHalf(b, format);
          for (let e = 0; e < batch; e++) {
            const at = (x: Float32Array, n: number) => x.subarray(e * n, (e + 1) * n);
            const want = matmulRef(at(a, M * K), at(bRounded, K * N), M, N, K, transA, transB);
            const mag = matmulRef(
              at(a, M * K).map(Math.abs),
              at(bRounded, K * N).map(Math.abs),
              M,
              N,
              K,
              transA,
              transB,
            );
            const got = at(viaBuffer, M * N);
            for (let i = 0; i < got.length; i++) {
              const tol = packedTolerance("unpack") * (1 + mag[i]);
              ok(Math.abs(got[i] - want[i]) <= tol, `${name} [${e}, ${i}]`);
            }
          }
          A.dispose();
          W.dispose();
        }
      }
    }
    ok(textured >= 16, `${textured} textured cases`);
  },
});

Deno.test({
  name: "native f16 reads of packed fp16 B (shader-f16), software and GPU tilings",
  ignore: !dev.nativeF16,
  ...gpuTest,
  async fn() {
    const p = matmulPlan({
      batch: 1,
      M: 4,
      N: 4,
      K: 4,
      transA: false,
      transB: false,
      batchA: false,
      batchB: false,
      bias: false,
      packedB: "fp16",
    }, { software: true, maxInvocations: 256, maxWorkgroupStorage: 16384, shaderF16: true });
    ok(p.kernel.code.startsWith("enable f16;") && p.kernel.code.includes("array<vec4<f16>>"));
    await packedMatmulCases("f16 read");
  },
});

Deno.test({
  name:
    "native f16 arithmetic (shader-f16): f16 products and k-group sums, software and GPU tilings",
  ignore: !dev.nativeF16,
  ...gpuTest,
  async fn() {
    for (const software of [true, false]) {
      // the arithmetic really is f16 (and does not return zeros), the f32 path really f32
      const opts = (f16Arithmetic: boolean): MatmulOptions => ({
        software,
        maxInvocations: dev.limits.maxComputeInvocationsPerWorkgroup,
        maxWorkgroupStorage: dev.limits.maxComputeWorkgroupStorageSize,
        shaderF16: true,
        f16Arithmetic,
      });
      strictEqual(await f16GroupSumProbe(dev, opts(true)), 2048, `software ${software}`);
      strictEqual(await f16GroupSumProbe(dev, opts(false)), 2049, `software ${software}`);
    }
    await packedMatmulCases("f16 arithmetic");
  },
});

Deno.test({
  name: "Device.f16Arithmetic: linear layers compute their fp16-weight products in f16",
  ignore: !dev.nativeF16,
  ...gpuTest,
  async fn() {
    const [M, N, K] = [6, 10, 36];
    const x = Tensor.fromArray(dev, randomArray(M * K, 31), [M, K]);
    const w = Tensor.fromArray(dev, randomArray(N * K, 32), [N, K]);
    x.requiresGrad = w.requiresGrad = true;
    x.persistent = w.persistent = true;
    w.halfCopy = { words: packHalf(w, "fp16").keep(), format: "fp16" };
    const run = async (f16Arithmetic: boolean) => {
      dev.f16Arithmetic = f16Arithmetic;
      try {
        const y = linear(x, w);
        await backward(sum(y));
        const out = [await y.read(), await x.grad!.read(), await w.grad!.read()];
        zeroGrad([x, w]);
        return out;
      } finally {
        dev.f16Arithmetic = false;
      }
    };
    const [y32, gx32, gw32] = await run(false);
    const [y16, gx16, gw16] = await run(true);
    const xs = await x.read(), wr = roundToHalf(await w.read(), "fp16");
    const abs = (a: Float32Array) => a.map(Math.abs);
    // y = x·Wᵀ against the f64 reference on the fp16 weights, within 5u·Σ|x·w|
    const yRef = matmulRef(xs, wr, M, N, K, false, true);
    const yMag = matmulRef(abs(xs), abs(wr), M, N, K, false, true);
    const tol = 5 * 2 ** -11;
    for (let i = 0; i < y16.length; i++) {
      ok(Math.abs(y16[i] - yRef[i]) <= tol * yMag[i], `y [${i}]: ${y16[i]} vs ${yRef[i]}`);
    }
    // dx = 1·W: column sums of the fp16 W, each a 10-term product sum
    const ones = new Float32Array(M * N).fill(1);
    const gxRef = matmulRef(ones, wr, M, K, N);
    const gxMag = matmulRef(ones, abs(wr), M, K, N);
    for (let i = 0; i < gx16.length; i++) {
      ok(Math.abs(gx16[i] - gxRef[i]) <= tol * gxMag[i], `dx [${i}]: ${gx16[i]} vs ${gxRef[i]}`);
    }
    ok(y16.some((v, i) => v !== y32[i]), "forward computes in f16");
    ok(gx16.some((v, i) => v !== gx32[i]), "the input gradient computes in f16");
    deepStrictEqual(gw16, gw32, "the weight gradient reads no weights: f32 either way");
    w.dispose();
    x.dispose();
  },
});
