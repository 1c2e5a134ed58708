/**
 * Kernels' `params` blocks on lavapipe (Deno's WebGPU on Vulkan): read as a
 * read-only storage buffer ({@link Device.paramsInStorage}). Mesa 22.3's
 * lavapipe compiled the uniform values steering some kernels' control flow into
 * a new shader at every dispatch and kept each one: the weight-gradient product
 * `[256, 128]ᵀ · [256, 64]` (its default tiling, one workgroup) grew the process
 * by 2.2–2.7 MB a dispatch, a training step at TP = 2 by ~5 MB. The product is
 * checked against a plain TypeScript reference, then dispatched 200 times; the
 * process must grow by less than 100 MB (it grew ~500 MB before).
 * @module
 */

import { equal, ok } from "node:assert/strict";
import { Device } from "../core/device.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { matmul } from "../core/ops/matmul.ts";
import { assertClose, prng, withTimeLimit } from "./helpers.ts";

const K = 256, M = 128, N = 64;

Deno.test(
  "lavapipe: params in storage; a weight-gradient product dispatched 200 times keeps its memory",
  withTimeLimit(180),
  async () => {
    const device = await Device.create({ backend: "deno" });
    try {
      if (!device.isSoftware) {
        equal(device.paramsInStorage, false, "only lavapipe reads params from storage");
        return;
      }
      equal(device.paramsInStorage, true);
      const r = prng(3);
      const a = Float32Array.from({ length: K * M }, () => r() - 0.5);
      const b = Float32Array.from({ length: K * N }, () => r() - 0.5);
      const want = new Float64Array(M * N);
      for (let k = 0; k < K; k++) {
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) want[m * N + n] += a[k * M + m] * b[k * N + n];
        }
      }
      const at = Tensor.fromArray(device, a, [K, M]);
      const bt = Tensor.fromArray(device, b, [K, N]);
      const product = () => tidy(device, () => matmul(at, bt, { transA: true }).read());
      assertClose(await product(), want, { rtol: 1e-5, atol: 1e-5, what: "aᵀ·b" });
      for (let i = 0; i < 20; i++) await product();
      const before = Deno.memoryUsage().rss;
      for (let i = 0; i < 200; i++) await product();
      const grown = Deno.memoryUsage().rss - before;
      ok(grown < 100e6, `the process grew ${(grown / 1e6).toFixed(1)} MB in 200 dispatches`);
    } finally {
      await device.close();
    }
  },
);
