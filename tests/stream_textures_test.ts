/**
 * The stream-texture forms of the element-wise kernels, the optimizer and the
 * whole-tensor reductions (CPU adapters; core/ops/streams.ts) against their
 * buffer forms dispatched directly on the same device: the same bits for maps
 * (plain and broadcast), axpy (plain and tiled), dropout, residual dropout and
 * AdamW; sums within float rounding of the buffer form's order. Sizes cover a
 * partial stream row, a whole row, and whole rows plus a partial one; smaller
 * tensors keep the buffer forms.
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import { DeviceProfiler } from "../core/profiler.ts";
import { STREAM_MIN_VEC4S } from "../core/ops/streams.ts";
import { Tensor } from "../core/tensor.ts";
import { axpyKernel, mapDispatch, mapKernel } from "../kernels/elementwise.ts";
import { Params } from "../kernels/kernel.ts";
import { gridFor } from "../kernels/grid.ts";
import { dropoutDispatch, dropoutKernel } from "../kernels/rng.ts";
import { residualDropoutDispatch, residualDropoutKernel } from "../kernels/residual_norm.ts";
import { reduceDispatch, reduceKernel } from "../kernels/reduce.ts";
import { assertClose, randomArray, testBackend, withTimeLimit } from "./helpers.ts";

// Multiples of the bias's 8, at least STREAM_MIN_VEC4S vec4s: a partial stream
// row, a whole row, whole rows and a partial one.
const SIZES = [1032, 4096, 4096 * 3 + 24];

/** Runs `f` with a profiler attached and returns the kernel keys it dispatched. */
async function keysOf(device: Device, f: () => Promise<unknown>): Promise<string[]> {
  const prof = new DeviceProfiler("sync");
  device.profiler = prof;
  try {
    await f();
  } finally {
    device.profiler = null;
  }
  return [...prof.kernels.keys()];
}

Deno.test(
  "stream-texture kernels give the buffer kernels' bits",
  withTimeLimit(120),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      if (!device.isSoftware) return; // GPUs keep the buffer forms
      for (const n of SIZES) {
        const x = Tensor.fromArray(device, randomArray(n, 1), [n]);
        const y = Tensor.fromArray(device, randomArray(n, 2), [n]);
        const bias = Tensor.fromArray(device, randomArray(8, 3), [8]);
        const buffer = async (kernel: ReturnType<typeof mapKernel>, ins: Tensor[], d: {
          params: ArrayBuffer;
          workgroups: [number, number, number];
        }) => {
          const out = Tensor.empty(device, [n]);
          device.dispatch(
            kernel,
            [...ins.map((t) => t.binding), out.binding],
            d.params,
            d.workgroups,
          );
          return await out.read();
        };
        // maps: unary, binary, broadcast
        for (const [op, other] of [["geluTanh", null], ["mul", y], ["add", bias]] as const) {
          let got: Float32Array | undefined;
          const keys = await keysOf(device, async () => {
            got = await ops.mapRaw(op, x, other ?? undefined).read();
          });
          ok(keys.some((k) => k.endsWith(":tex")), `${op}: ${keys}`);
          const broadcast = other !== null && other.size !== n;
          const want = await buffer(
            mapKernel(op, broadcast, 4),
            other ? [x, other] : [x],
            mapDispatch(n, other?.size ?? 1, 1, 0, 4),
          );
          deepStrictEqual(got, want, `map ${op} ${n}`);
        }
        // axpy, plain and tiled
        for (const src of [y, bias]) {
          const acc = Tensor.fromArray(device, randomArray(n, 4), [n]);
          const ref = Tensor.fromArray(device, randomArray(n, 4), [n]);
          const keys = await keysOf(
            device,
            () => acc.read().then(() => ops.axpyInPlace(acc, src, 0.5, 0.9)),
          );
          ok(keys.includes("axpy:v4:tex"), keys.join());
          const params = new Params(4).u32(n).u32(src.size).f32(0.5).f32(0.9).buffer;
          device.dispatch(axpyKernel(), [src.binding, ref.binding], params, gridFor(n, 256));
          deepStrictEqual(await acc.read(), await ref.read(), `axpy ${n} over ${src.size}`);
        }
        // dropout and residual dropout: the same mask
        const draw = { seed: 987654321987, offset: 7 };
        const dropped = await ops.dropoutRaw(x, 0.25, draw).read();
        deepStrictEqual(
          dropped,
          await buffer(dropoutKernel(), [x], dropoutDispatch(n, 0.25, draw.seed, draw.offset)),
          `dropout ${n}`,
        );
        const res = await ops.residualDropout(x, y, { p: 0.25, draw }).read();
        deepStrictEqual(
          res,
          await buffer(
            residualDropoutKernel(true),
            [x, y],
            residualDropoutDispatch(n, 0.25, draw.seed, draw.offset),
          ),
          `residual dropout ${n}`,
        );
        // sum of squares: another fixed order, within rounding
        const sq = await ops.sumSquares(x).item();
        const part = Tensor.empty(device, [reduceDispatch(n).groups]);
        const d = reduceDispatch(n);
        device.dispatch(
          reduceKernel("sumsq", true),
          [x.binding, part.binding],
          d.params,
          d.workgroups,
        );
        const parts = await part.read();
        assertClose([sq], [parts.reduce((a, b) => a + b, 0)], { rtol: 1e-5, what: `sumsq ${n}` });
      }
    } finally {
      await device.close();
    }
  },
);

Deno.test(
  "tensors under STREAM_MIN_VEC4S keep the buffer forms (no copy per operand)",
  withTimeLimit(60),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      const n = 4 * STREAM_MIN_VEC4S - 8;
      const x = Tensor.fromArray(device, randomArray(n, 1), [n]);
      const y = Tensor.fromArray(device, randomArray(n, 2), [n]);
      const keys = await keysOf(device, async () => {
        await ops.mapRaw("mul", x, y).read();
        await ops.sumSquares(x).item();
      });
      ok(keys.length > 0 && keys.every((k) => !k.endsWith(":tex")), keys.join());
    } finally {
      await device.close();
    }
  },
);
