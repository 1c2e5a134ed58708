/**
 * The device's bind-group cache (core/device.ts): a dispatch that binds what an
 * earlier one bound reuses its bind group, and the reuse never changes a
 * result: pooled buffers handed to new tensors, other byte ranges of one
 * buffer and other uniforms each read what they hold now.
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor } from "../core/tensor.ts";
import { mapDispatch, mapKernel } from "../kernels/elementwise.ts";
import { subBinding } from "../core/windows.ts";
import { randomArray, testBackend, withTimeLimit } from "./helpers.ts";

/**
 * The checks, in a function of their own: once it returns nothing refers to
 * the device's buffers, so closing the device destroys Dawn's GL context on
 * this thread (README, Platform notes: the EGL exit race).
 */
async function checkReuse(device: Device): Promise<void> {
  const n = 4096;
  const step = async (seed: number) => {
    const a = randomArray(n, seed), b = randomArray(n, seed + 1);
    const x = Tensor.fromArray(device, a, [n]);
    const y = Tensor.fromArray(device, b, [n]);
    const sum = ops.add(x, y);
    const got = await sum.read();
    for (const t of [x, y, sum]) t.dispose(); // their buffers go back to the pool
    deepStrictEqual(got, Float32Array.from(a, (v, i) => Math.fround(v + b[i])));
  };
  // The pool hands the freed buffers out in reverse order, so steps alternate
  // between two assignments: after two steps, every later one is a repeat.
  await step(1);
  await step(3);
  const made = device.bindGroupsMade;
  await step(5);
  await step(7);
  deepStrictEqual(device.bindGroupsMade, made, "a repeated step made new bind groups");

  // Two halves of one buffer: the byte range is part of the key.
  const half = n / 2;
  const data = randomArray(n, 7);
  const x = Tensor.fromArray(device, data, [n]);
  const out = Tensor.empty(device, [half]);
  const scale = async (start: number, alpha: number) => {
    const d = mapDispatch(half, 1, alpha, 0, 4);
    device.dispatch(
      mapKernel("scale", false, 4, false),
      [subBinding(x.binding, start, half), out.binding],
      d.params,
      d.workgroups,
    );
    return await out.read();
  };
  const scaled = [await scale(0, 2), await scale(half, 2), await scale(0, 2)];
  deepStrictEqual(scaled[0], Float32Array.from(data.subarray(0, half), (v) => 2 * v));
  deepStrictEqual(scaled[1], Float32Array.from(data.subarray(half), (v) => 2 * v));
  deepStrictEqual(scaled[2], scaled[0]);
  // Another uniform (alpha 3) with the same buffers: a new group, the new factor.
  const made2 = device.bindGroupsMade;
  deepStrictEqual(await scale(0, 3), Float32Array.from(data.subarray(0, half), (v) => 3 * v));
  ok(device.bindGroupsMade === made2 + 1);
  x.dispose();
  out.dispose();
}

Deno.test(
  "bind groups are reused across steps and never change a result",
  withTimeLimit(60),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      await checkReuse(device);
    } finally {
      await device.close();
    }
  },
);
