/**
 * The matmul kernel against a float64 TypeScript reference: every transpose
 * combination, broadcast, bias, alpha and accumulate, on odd shapes (1, primes,
 * one past a tile) and on batches large enough to need a folded dispatch grid.
 *
 * Tolerance: |got − ref| ≤ 4·(K+2)·2⁻²³·Σ|terms| + 1e-30, where Σ|terms| is the
 * sum of the magnitudes of everything added into that output (products,
 * bias, previous C): the classic worst-case bound of f32 summation, ×4.
 *
 * Backend: env WEBGPU_BACKEND=deno|dawn (default deno). Both variant families
 * (software and GPU tiling) run on whatever adapter is found.
 */

import assert from "node:assert/strict";
import { Device } from "../core/device.ts";
import { BACKEND_ENV, parseBackend } from "../core/gpu.ts";
import { recordPlan } from "../core/ops/matmul.ts";
import {
  type MatmulOptions,
  matmulPlan,
  matmulPlanWith,
  type MatmulShape,
  type MatmulTiling,
  textureASize,
  textureBSize,
} from "../kernels/matmul.ts";

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

function randArray(n: number, r: () => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r();
  return a;
}

interface Case {
  shape: MatmulShape;
  a: Float32Array;
  b: Float32Array;
  bias?: Float32Array;
  c0: Float32Array;
}

function makeCase(shape: MatmulShape, seed: number): Case {
  const r = rng(seed);
  const { batch, M, N, K } = shape;
  return {
    shape,
    a: randArray((shape.batchA ? batch : 1) * M * K, r),
    b: randArray((shape.batchB ? batch : 1) * K * N, r),
    bias: shape.bias ? randArray(N, r) : undefined,
    c0: randArray(batch * M * N, r),
  };
}

/** Float64 reference and the per-output error bound. */
function reference(c: Case): { ref: Float64Array; tol: Float64Array } {
  const { batch, M, N, K, transA, transB, batchA, batchB } = c.shape;
  const alpha = c.shape.alpha ?? 1;
  const ref = new Float64Array(batch * M * N);
  const tol = new Float64Array(batch * M * N);
  const eps = 4 * (K + 2) * 2 ** -23;
  for (let bi = 0; bi < batch; bi++) {
    const ao = batchA ? bi * M * K : 0;
    const bo = batchB ? bi * K * N : 0;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0, mag = 0;
        for (let k = 0; k < K; k++) {
          const av = c.a[ao + (transA ? k * M + m : m * K + k)];
          const bv = c.b[bo + (transB ? n * K + k : k * N + n)];
          s += av * bv;
          mag += Math.abs(av * bv);
        }
        let v = alpha * s;
        mag *= Math.abs(alpha);
        if (c.bias) {
          v += c.bias[n];
          mag += Math.abs(c.bias[n]);
        }
        const o = bi * M * N + m * N + n;
        if (c.shape.accumulate) {
          v += c.c0[o];
          mag += Math.abs(c.c0[o]);
        }
        ref[o] = v;
        tol[o] = eps * mag + 1e-30;
      }
    }
  }
  return { ref, tol };
}

function describe(s: MatmulShape): string {
  return `${s.batch}×[${s.M}×${s.K}]${s.transA ? "ᵀ" : ""}·[${s.K}×${s.N}]${s.transB ? "ᵀ" : ""}` +
    ` batchA=${s.batchA} batchB=${s.batchB} bias=${s.bias} alpha=${s.alpha ?? 1}` +
    ` acc=${s.accumulate ?? false}`;
}

/** Runs every case on `device` with one read-back, and checks each against the reference. */
async function runCases(
  device: Device,
  opts: MatmulOptions,
  cases: Case[],
  tiling?: MatmulTiling,
): Promise<void> {
  const outs: { buffer: GPUBuffer; size: number }[] = [];
  const held: GPUBuffer[] = [];
  const upload = (data: Float32Array) => {
    const buffer = device.pool.acquire(data.byteLength);
    held.push(buffer);
    device.upload(buffer, data);
    return { buffer, size: data.byteLength };
  };
  for (const c of cases) {
    const plan = tiling ? matmulPlanWith(c.shape, opts, tiling) : matmulPlan(c.shape, opts);
    const bindings = [upload(c.a), upload(c.b)];
    if (c.bias) bindings.push(upload(c.bias));
    const out = upload(c.c0);
    bindings.push(out);
    recordPlan(device, plan, bindings); // fills A's and B's textures first when the plan reads them
    outs.push(out);
  }
  const results = await device.readMany(outs);
  for (const b of held) device.pool.release(b);
  cases.forEach((c, ci) => {
    const got = new Float32Array(results[ci]);
    const { ref, tol } = reference(c);
    let worst = -1, worstErr = 0;
    for (let i = 0; i < ref.length; i++) {
      const err = Math.abs(got[i] - ref[i]);
      if (!(err <= tol[i]) && (worst < 0 || err / tol[i] > worstErr)) {
        worst = i;
        worstErr = err / tol[i];
      }
    }
    if (worst >= 0) {
      assert.fail(
        `${describe(c.shape)} (${JSON.stringify(tiling ?? opts.software)}): C[${worst}] = ${
          got[worst]
        }, ` +
          `expected ${ref[worst]} ± ${tol[worst]}`,
      );
    }
  });
}

function shape(
  batch: number,
  M: number,
  N: number,
  K: number,
  transA: boolean,
  transB: boolean,
  extra: Partial<MatmulShape> = {},
): MatmulShape {
  return { batch, M, N, K, transA, transB, batchA: true, batchB: true, bias: false, ...extra };
}

const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

/** Odd sizes: 1, primes, one past and one short of tile multiples. */
const SIZES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 3],
  [3, 1, 13],
  [7, 13, 1],
  [17, 63, 65],
  [65, 17, 100],
  [100, 129, 257],
  [64, 64, 64],
  [33, 128, 64],
];

const backend = parseBackend(Deno.env.get(BACKEND_ENV));

Deno.test({
  name: `matmul kernels on ${backend}`,
  sanitizeResources: false,
  sanitizeOps: false,
  // Over 3 min on lavapipe on a busy 2-core machine (default limit 5 min: tests/watchdog.ts).
  timeout: 900_000,
  async fn(t) {
    const device = await Device.create({ backend });
    try {
      for (const software of [true, false]) {
        const opts: MatmulOptions = {
          software,
          maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
          maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
        };
        const label = software ? "software" : "gpu";
        let seed = software ? 1 : 1000;
        await t.step(`${label}: transposes × odd sizes`, async () => {
          const cases: Case[] = [];
          for (const [ta, tb] of TRANS) {
            for (const [M, N, K] of SIZES) cases.push(makeCase(shape(1, M, N, K, ta, tb), seed++));
          }
          await runCases(device, opts, cases);
        });
        await t.step(`${label}: broadcast, bias, alpha, accumulate`, async () => {
          const cases: Case[] = [];
          for (const [ta, tb] of TRANS) {
            for (const [batchA, batchB] of [[true, false], [false, true], [false, false]]) {
              cases.push(makeCase(shape(3, 17, 65, 33, ta, tb, { batchA, batchB }), seed++));
            }
            for (const [M, N, K] of [[5, 9, 11], [64, 128, 16]]) {
              cases.push(makeCase(shape(4, M, N, K, ta, tb, { bias: true, alpha: -0.37 }), seed++));
              cases.push(
                makeCase(
                  shape(3, M, N, K, ta, tb, {
                    bias: true,
                    alpha: 2.5,
                    accumulate: true,
                    batchB: false,
                  }),
                  seed++,
                ),
              );
            }
          }
          await runCases(device, opts, cases);
        });
        await t.step(`${label}: transformer shapes`, async () => {
          const cases = [
            // x·Wᵀ with W stored [out, in], plus bias
            makeCase(shape(1, 96, 72, 48, false, true, { bias: true, batchB: false }), seed++),
            // dY·W, dYᵀ·X (weight gradient, accumulated)
            makeCase(shape(1, 96, 48, 72, false, false), seed++),
            makeCase(shape(1, 72, 48, 96, true, false, { accumulate: true }), seed++),
            // attention q·kᵀ and p·v, batch = B·heads
            makeCase(shape(12, 33, 33, 16, false, true, { alpha: 0.25 }), seed++),
            makeCase(shape(12, 33, 16, 33, false, false), seed++),
            // tall outputs pick the tallest software tiles
            ...TRANS.map(([ta, tb]) => makeCase(shape(1, 521, 75, 12, ta, tb), seed++)),
          ];
          await runCases(device, opts, cases);
        });
        await t.step(`${label}: large batches fold into the dispatch grid`, async () => {
          const cases = [
            makeCase(shape(3001, 3, 5, 7, false, true), seed++),
            makeCase(shape(70001, 1, 1, 1, false, false, { bias: true }), seed++),
            makeCase(shape(2000, 2, 9, 4, true, false, { batchB: false }), seed++),
            makeCase(shape(1500, 20, 20, 8, true, true, { batchA: false }), seed++),
          ];
          await runCases(device, opts, cases);
        });
      }
      await t.step("software: A and B read through textures", async () => {
        // What a CPU adapter gets by default: both operands copied (or packed)
        // into rgba32float textures and read with textureLoad (texA, texB).
        const opts: MatmulOptions = {
          software: true,
          maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
          maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
          maxTextureDimension: device.maxTextureDimension,
        };
        let seed = 7000;
        const cases: Case[] = [];
        for (const [ta, tb] of TRANS) {
          for (const [M, N, K] of [[36, 20, 12], [64, 64, 64], [33, 128, 64], [128, 96, 260]]) {
            cases.push(makeCase(shape(1, M, N, K, ta, tb), seed++));
          }
          for (const [batchA, batchB] of [[true, false], [false, true], [true, true]]) {
            cases.push(
              makeCase(shape(3, 16, 68, 36, ta, tb, { batchA, batchB, bias: true }), seed++),
            );
          }
          cases.push(makeCase(shape(2, 24, 48, 64, ta, tb, { accumulate: true }), seed++));
        }
        // Bound without recordPlan (buffers where the kernel reads textures): refused by name.
        const plan = matmulPlan(cases[0].shape, opts);
        const buf = { buffer: device.pool.acquire(4096), size: 4096 };
        assert.throws(
          () => device.dispatch(plan.kernel, [buf, buf, buf], plan.params, plan.workgroups),
          /binding 0 must be a texture view, got a buffer/,
        );
        device.pool.release(buf.buffer);
        const textured = cases.filter((c) => textureASize(c.shape, opts)).length;
        assert.ok(textured >= 20, `only ${textured} cases read A through a texture`);
        assert.ok(cases.some((c) => textureASize(c.shape, opts) && textureBSize(c.shape, opts)));
        await runCases(device, opts, cases);
        for (const [tm, lx, lanes] of [[4, 4, 8], [16, 4, 8], [8, 1, 8], [8, 2, 16]]) {
          await runCases(device, opts, cases.slice(0, 8), {
            software: true,
            tm,
            tv: 2,
            lx,
            lanes,
            texA: true,
          });
        }
      });
      await t.step("explicit tilings", async () => {
        const opts: MatmulOptions = {
          software: true,
          maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
          maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
        };
        const tilings: MatmulTiling[] = [
          { software: true, tm: 4, tv: 1, lx: 1 },
          { software: true, tm: 12, tv: 3, lx: 2 },
          { software: true, tm: 8, tv: 2, lx: 4 },
          { software: true, tm: 20, tv: 1, lx: 8 },
          // 16-invocation workgroups (llvmpipe at 512 bits), whatever this adapter's width
          { software: true, tm: 4, tv: 1, lx: 1, lanes: 16 },
          { software: true, tm: 8, tv: 2, lx: 4, lanes: 16 },
          { software: true, tm: 12, tv: 3, lx: 8, lanes: 16 },
          { software: false, tm: 16, tv: 64 },
          { software: false, tm: 64, tv: 32 },
        ];
        let seed = 5000;
        for (const tiling of tilings) {
          const cases = [
            makeCase(shape(2, 37, 41, 23, false, false, { bias: true }), seed++),
            makeCase(shape(2, 36, 44, 24, true, true, { accumulate: true, batchB: false }), seed++),
          ];
          await runCases(device, opts, cases, tiling);
        }
        for (
          const bad of [{ tm: 6, tv: 1 }, { tm: 8, tv: 1, lanes: 12 }, { tm: 8, tv: 1, lx: 16 }]
        ) {
          assert.throws(
            () => matmulPlanWith(shape(1, 3, 3, 3, false, false), opts, { software: true, ...bad }),
            /unsupported tiling/,
          );
        }
      });
      await t.step("bad shapes are rejected with a message", () => {
        const opts = { software: true, maxInvocations: 256, maxWorkgroupStorage: 16384 };
        assert.throws(() => matmulPlan(shape(1, 0, 3, 3, false, false), opts), /M must be/);
        assert.throws(() => matmulPlan(shape(1.5, 2, 3, 3, false, false), opts), /batch must/);
      });
    } finally {
      await device.close();
    }
  },
});
