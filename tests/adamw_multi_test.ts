/**
 * Multi-tensor AdamW (several tensors per dispatch) against the per-tensor
 * AdamW: the same weights and moments, bit for bit, over steps with clipping,
 * mixed weight decay, sizes off the workgroup size, tensors split into binding
 * windows, and a skipped (found-inf) step; and fewer dispatches.
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { Device } from "../core/device.ts";
import type { ParamInfo } from "../core/nn.ts";
import { AdamW } from "../core/optim.ts";
import { DeviceProfiler } from "../core/profiler.ts";
import { Tensor } from "../core/tensor.ts";
import { gpuTest, randomArray, testBackend } from "./helpers.ts";

const SIZES = [1, 255, 256, 257, 3000, 40, 1024, 7, 513, 2048, 100, 64, 5000, 33];

async function run(device: Device, multiTensor: boolean) {
  const params: ParamInfo[] = SIZES.map((n, i) => ({
    tensor: Tensor.fromArray(device, randomArray(n, 10 + i), [n]).keep(),
    decay: i % 3 !== 0,
    partitionDim: null,
    partitionBlocks: 1,
  }));
  const opt = new AdamW(params, { multiTensor, weightDecay: 0.1 });
  const prof = new DeviceProfiler("sync");
  const coefs = [[0.5, 2, 0], [1, 0.5, 0], [0.25, 3, 1], [0.8, 1, 0]]; // step 3 skipped
  for (const [s, c] of coefs.entries()) {
    for (const [i, p] of params.entries()) {
      p.tensor.grad?.dispose();
      p.tensor.grad = Tensor.fromArray(device, randomArray(p.tensor.size, 100 * s + i), [
        p.tensor.size,
      ]).keep();
    }
    const coef = Tensor.fromArray(device, c, [3]).keep();
    if (s === 1) device.profiler = prof;
    opt.update(1e-2 * (s + 1), coef);
    device.profiler = null;
    if (c[2] !== 0) opt.unstep();
    coef.dispose();
  }
  const out: Float32Array[] = [];
  for (const p of params) {
    const st = opt.moments.get(p.tensor)!;
    out.push(await p.tensor.read(), await st.m.read(), await st.v.read());
  }
  const dispatches = [...prof.kernels.values()].reduce((a, k) => a + k.dispatches, 0);
  return { out, dispatches, keys: [...prof.kernels.keys()] };
}

Deno.test("multi-tensor AdamW matches per-tensor AdamW bit for bit", gpuTest, async () => {
  // 4 KiB bindings: the 3000- and 5000-element tensors are updated in windows.
  const device = await Device.create({ backend: testBackend(), maxBindingBytes: 4096 });
  try {
    const single = await run(device, false);
    const multi = await run(device, true);
    deepStrictEqual(multi.out, single.out);
    // Sizes ≡ 0 mod 4 run as vec4, on CPU adapters read through stream textures
    // from STREAM_MIN_VEC4S on (the 1024-element windows): the multi-tensor
    // kernel's scalar buffer loads give the same bits.
    const vec4 = device.isSoftware ? ["adamw:vec4", "adamw:vec4:tex"] : ["adamw:vec4"];
    deepStrictEqual([...single.keys].sort(), ["adamw", ...vec4]);
    ok(multi.keys.some((k) => k.startsWith("adamw:multi:")), multi.keys.join());
    const perDispatch = Math.floor((device.limits.maxStorageBuffersPerShaderStage - 1) / 4);
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
