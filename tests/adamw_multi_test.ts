/**
 * Multi-tensor AdamW (several tensors per dispatch) and flat buckets against
 * the per-tensor AdamW: the same weights and moments, bit for bit, over steps
 * with clipping, mixed weight decay, sizes off the workgroup size, tensors
 * split into binding windows, a skipped (found-inf) step and a parameter
 * without a gradient; and fewer dispatches. Also the bucketed gradient norm,
 * and moments read and set through the optimizer.
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { Device } from "../core/device.ts";
import type { ParamInfo } from "../core/nn.ts";
import { AdamW, type AdamWConfig, gradSumSquares } from "../core/optim.ts";
import { BUCKET_MEMBER_ELEMENTS, planBuckets } from "../core/param_buckets.ts";
import { DeviceProfiler } from "../core/profiler.ts";
import { Tensor } from "../core/tensor.ts";
import { gpuTest, randomArray, testBackend } from "./helpers.ts";

const SIZES = [
  1,
  255,
  256,
  257,
  3000,
  40,
  1024,
  7,
  513,
  2048,
  100,
  64,
  5000,
  33,
  128,
  48,
  96,
  512,
  32,
];

function makeParams(device: Device): ParamInfo[] {
  return SIZES.map((n, i) => ({
    tensor: Tensor.fromArray(device, randomArray(n, 10 + i), [n]).keep(),
    decay: i % 3 !== 0,
    partitionDim: null,
    partitionBlocks: 1,
  }));
}

/** The step (0-based) in which parameter `NO_GRAD_PARAM` has no gradient. */
const NO_GRAD_STEP = 3, NO_GRAD_PARAM = 5;

async function run(device: Device, config: AdamWConfig) {
  const params = makeParams(device);
  const opt = new AdamW(params, { ...config, weightDecay: 0.1 });
  const prof = new DeviceProfiler("sync");
  const coefs = [[0.5, 2, 0], [1, 0.5, 0], [0.25, 3, 1], [0.8, 1, 0]]; // step 3 skipped
  for (const [s, c] of coefs.entries()) {
    for (const [i, p] of params.entries()) {
      p.tensor.grad?.dispose();
      p.tensor.grad = s === NO_GRAD_STEP && i === NO_GRAD_PARAM
        ? null
        : Tensor.fromArray(device, randomArray(p.tensor.size, 100 * s + i), [p.tensor.size])
          .keep();
    }
    const coef = Tensor.fromArray(device, c, [3]).keep();
    if (s === 1) device.profiler = prof;
    opt.update(1e-2 * (s + 1), coef);
    device.profiler = null;
    if (c[2] !== 0) opt.unstep();
    coef.dispose();
  }
  const out: Float32Array[] = [];
  const moments = await opt.readMoments(params.map((p) => p.tensor));
  for (const [i, p] of params.entries()) {
    out.push(await p.tensor.read(), moments[i].m, moments[i].v);
  }
  const dispatches = [...prof.kernels.values()].reduce((a, k) => a + k.dispatches, 0);
  for (const p of params) p.tensor.dispose();
  return { out, dispatches, keys: [...prof.kernels.keys()] };
}

Deno.test("multi-tensor AdamW matches per-tensor AdamW bit for bit", gpuTest, async () => {
  // 4 KiB bindings: the 3000- and 5000-element tensors are updated in windows.
  const device = await Device.create({ backend: testBackend(), maxBindingBytes: 4096 });
  try {
    const single = await run(device, { bucketElements: 0 });
    const multi = await run(device, { multiTensor: true });
    deepStrictEqual(multi.out, single.out);
    // Sizes ≡ 0 mod 4 run as vec4, on CPU adapters read through stream textures
    // from STREAM_MIN_VEC4S on (the 1024-element windows): the multi-tensor
    // kernel's scalar buffer loads give the same bits.
    const vec4 = device.isSoftware ? ["adamw:vec4", "adamw:vec4:tex"] : ["adamw:vec4"];
    deepStrictEqual([...single.keys].sort(), ["adamw", ...vec4]);
    ok(multi.keys.some((k) => k.startsWith("adamw:multi:")), multi.keys.join());
    // 4 storage buffers a tensor; the clipping coefficient is a uniform.
    const perDispatch = Math.floor(device.limits.maxStorageBuffersPerShaderStage / 4);
    ok(perDispatch >= 2);
    // Greedy runs of at most perDispatch windows, never two windows of one tensor.
    const windows = SIZES.flatMap((n, t) => Array.from({ length: Math.ceil(n / 1024) }, () => t));
    let expected = 0, group: number[] = [];
    for (const t of windows) {
      if (group.length === 0 || group.length >= perDispatch || group.includes(t)) {
        expected++;
        group = [];
      }
      group.push(t);
    }
    deepStrictEqual(single.dispatches, windows.length);
    deepStrictEqual(multi.dispatches, expected);
    ok(expected < windows.length);
  } finally {
    await device.close();
  }
});

Deno.test("flat buckets leave large tensors to per-tensor updates", gpuTest, async () => {
  const device = await Device.create({ backend: testBackend() });
  try {
    const sizes = [64, 128, BUCKET_MEMBER_ELEMENTS, BUCKET_MEMBER_ELEMENTS + 4, 256];
    const params: ParamInfo[] = sizes.map((n) => ({
      tensor: Tensor.empty(device, [n]),
      decay: true,
      partitionDim: null,
      partitionBlocks: 1,
    }));
    const plan = planBuckets(device, params);
    deepStrictEqual(plan.buckets.length, 1);
    deepStrictEqual(
      plan.buckets[0].members.map((m) => m.tensor.size),
      [64, 128, BUCKET_MEMBER_ELEMENTS, 256],
    );
    deepStrictEqual(plan.single.map((p) => p.tensor.size), [BUCKET_MEMBER_ELEMENTS + 4]);
    for (const p of params) p.tensor.dispose();
  } finally {
    await device.close();
  }
});

Deno.test(
  "flat buckets match per-tensor AdamW bit for bit, in fewer dispatches",
  gpuTest,
  async () => {
    // 16 KiB bindings: buckets of at most 4,096 elements, and windows of the 5,000.
    const device = await Device.create({ backend: testBackend(), maxBindingBytes: 16384 });
    try {
      const params = makeParams(device);
      const plan = planBuckets(device, params);
      deepStrictEqual(plan.buckets.length, 2);
      for (const b of plan.buckets) {
        ok(b.size <= 4096 && b.members.every((m) => m.offset % 64 === 0));
        for (const m of b.members) {
          const decay = params.find((p) => p.tensor === m.tensor)!.decay;
          deepStrictEqual(decay, m.offset < b.decayEnd); // decayed members first
        }
      }
      ok(plan.buckets.some((b) => b.decayEnd > 0 && b.decayEnd < b.size), "a mixed bucket");
      ok(plan.buckets.some((b) => b.padded), "a padded bucket");
      for (const p of params) p.tensor.dispose();
      const single = await run(device, { bucketElements: 0 });
      const bucketed = await run(device, {});
      deepStrictEqual(bucketed.out, single.out);
      ok(bucketed.dispatches < single.dispatches, `${bucketed.dispatches} vs ${single.dispatches}`);
    } finally {
      await device.close();
    }
  },
);

Deno.test("the bucketed gradient norm matches the per-tensor one", gpuTest, async () => {
  const device = await Device.create({ backend: testBackend() });
  try {
    const check = async () => {
      const params = makeParams(device);
      params.forEach((p, i) => {
        p.tensor.grad = Tensor.fromArray(device, randomArray(p.tensor.size, 7 + i), [
          p.tensor.size,
        ]);
      });
      const opt = new AdamW(params);
      const ts = params.map((p) => p.tensor);
      const want = await gradSumSquares(device, ts).item();
      const got = await opt.gradSumSquares().item();
      ok(Math.abs(got - want) <= 1e-5 * want, `${got} vs ${want}`);
      // a subset that leaves a bucket member out: that bucket's counted members are packed
      const subset = ts.filter((_, i) => i !== 6);
      const wantSub = await gradSumSquares(device, subset).item();
      const gotSub = await opt.gradSumSquares(subset).item();
      ok(Math.abs(gotSub - wantSub) <= 1e-5 * wantSub, `${gotSub} vs ${wantSub}`);
      // moments set from the host read back unchanged, in and out of buckets
      const m = ts.map((t, i) => randomArray(t.size, 50 + i));
      const v = ts.map((t, i) => randomArray(t.size, 80 + i, 0, 1));
      ts.forEach((t, i) => opt.setMoments(t, m[i], v[i]));
      const back = await opt.readMoments(ts);
      deepStrictEqual(back.map((x) => x.m), m);
      deepStrictEqual(back.map((x) => x.v), v);
      opt.resetState(3);
      ok(!opt.hasMoments(ts[0]) && opt.step === 3);
      for (const p of params) {
        p.tensor.grad?.dispose();
        p.tensor.dispose();
      }
    };
    await check();
  } finally {
    await device.close();
  }
});
