/**
 * Bad input gets a clear error naming what is wrong, never a wrong answer or a
 * hang: mismatched shapes (both shown), tensors over the adapter's binding
 * limit (the limit named), use of a disposed tensor, a missing or unknown backend.
 */

import { fillKernel } from "../kernels/elementwise.ts";
import { match, rejects, throws } from "node:assert/strict";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { gpuTest, testDevice } from "./helpers.ts";

const dev = await testDevice();
const T = (shape: number[]) =>
  Tensor.fromArray(dev, new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);

Deno.test("shape mismatches show both shapes", gpuTest, () => {
  throws(
    () => ops.matmul(T([2, 3]), T([4, 5])),
    /matmul: shape mismatch \[2, 3\] · \[4, 5\] \(inner dimensions 3 and 4 differ\)/,
  );
  throws(() => ops.add(T([2, 3]), T([2])), /add: shape mismatch \[2, 3\] vs \[2\]/);
  throws(
    () => ops.linear(T([5, 7]), T([3, 6])),
    /linear: shape mismatch, input \[5, 7\] has 7 features but weight \[3, 6\] expects 6/,
  );
  throws(
    () => ops.layerNorm(T([4, 8]), T([7]), T([8])),
    /layerNorm: shape mismatch, input \[4, 8\] vs gamma \[7\]/,
  );
  const targets = TokenIds.fromHost(dev, new Int32Array([1, 2, 3]));
  throws(
    () => ops.crossEntropy(T([2, 10]), targets),
    /crossEntropy: shape mismatch, 2 rows of logits \[2, 10\] vs 3 targets \[3\]/,
  );
  throws(
    () => ops.crossEntropy(T([3, 10]), TokenIds.fromHost(dev, new Int32Array([1, 2, 12]))),
    /target 12 out of range for 10 classes/,
  );
  throws(
    () => ops.embedding(T([10, 4]), TokenIds.fromHost(dev, new Int32Array([3, 10]))),
    /id 10 out of range for a table of 10 rows/,
  );
  throws(
    () => ops.reshape(T([2, 3]), [4, 2]),
    /cannot view \[2, 3\] \(6 elements\) as \[4, 2\] \(8 elements\)/,
  );
  throws(
    () => ops.concat([T([2, 3]), T([3, 3])], 1),
    /concat: shape mismatch \[2, 3\] vs \[3, 3\] along axis 1/,
  );
  throws(
    () => Tensor.fromArray(dev, new Float32Array(5), [2, 3]),
    /5 values do not fill shape \[2, 3\]/,
  );
});

Deno.test(
  "a tensor over the adapter's binding limit is refused with the limit named",
  gpuTest,
  () => {
    // Ops bind such tensors in windows (tests/binding_windows_test.ts); a raw
    // dispatch that binds more than the limit at once is refused by name.
    const limit = dev.limits.maxStorageBufferBindingSize;
    const big = Tensor.empty(dev, [limit / 4 + 1]);
    throws(
      () => dev.dispatch(fillKernel(), [big.binding], new ArrayBuffer(16), [1]),
      new RegExp(
        `kernel fill: a tensor of ${limit + 4} bytes exceeds the adapter's ` +
          `maxStorageBufferBindingSize \\(${limit} bytes\\), and this kernel binds it whole; ` +
          `in a model, a smaller micro-batch or sequence keeps its activations within one binding`,
      ),
    );
    big.dispose();
    const maxBuffer = dev.limits.maxBufferSize;
    throws(
      () => Tensor.empty(dev, [Math.ceil(maxBuffer / 4) + 1024]),
      /exceeds the adapter's maxBufferSize/,
    );
  },
);

Deno.test("Device.create refuses caps that are not positive integers", async () => {
  for (const k of ["maxBindingBytes", "maxTextureDimension", "maxBatchedDispatches"]) {
    for (const v of [NaN, 0, -4, 2.5]) {
      await rejects(
        Device.create({ [k]: v }),
        { message: `Device.create: ${k} must be a positive integer, got ${v}` },
      );
    }
  }
});

Deno.test("use of a disposed tensor is an error", gpuTest, () => {
  const t = T([3]);
  t.name = "w";
  t.dispose();
  throws(() => ops.scale(t, 2), /use of a disposed tensor "w" of shape \[3\]/);
});

Deno.test("unknown and missing backends", async () => {
  throws(() => parseBackend("metal"), /unknown backend "metal": expected one of deno, dawn/);
  // An implementation that finds no adapter: the error says how to get one.
  for (const backend of ["deno", "dawn"] as const) {
    const provider = {
      backend,
      gpu: { requestAdapter: () => Promise.resolve(null) } as unknown as GPU,
      adapterOptions: {},
    };
    const e = await Device.create({ provider }).then(() => null, (err: Error) => err);
    match(String(e?.message), new RegExp(`No WebGPU adapter from the ${backend} backend`));
    match(
      String(e?.message),
      backend === "deno" ? /mesa-vulkan-drivers/ : /EGL_PLATFORM=surfaceless/,
    );
  }
});
