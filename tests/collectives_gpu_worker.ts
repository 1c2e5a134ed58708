/**
 * Worker module for the GPU-tensor collectives test: each rank opens its own
 * device (Deno WebGPU), makes tensors, runs collectives on them through the
 * group (read back, ring, write again) and returns what it read afterwards.
 * @module
 */

import { Device } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";
import type { WorkerContext } from "../collectives/launch.ts";

/** Runs allReduce, broadcast and allGather on GPU tensors. */
export default async function main(ctx: WorkerContext): Promise<Record<string, number[]>> {
  const device = await Device.create({ backend: "deno" });
  ctx.deviceAcquired();
  try {
    const g = ctx.group, r = ctx.rank;
    const a = Tensor.fromArray(device, new Float32Array([1, 2, 3, 4, 5].map((v) => v * (r + 1))), [
      5,
    ]);
    await g.allReduce(a, "sum");
    const b = Tensor.fromArray(device, new Float32Array([r, r, r]), [3]);
    await g.broadcast(b, 1);
    const part = Tensor.fromArray(device, new Float32Array([r, r + 0.5]), [2]);
    const out = Tensor.fromArray(device, new Float32Array(2 * g.size), [2 * g.size]);
    await g.allGather(part, out);
    const c = Tensor.fromArray(device, new Float32Array([r, 3 - r, 2 * r, 7]), [4]);
    await g.allReduce(c, "max");
    return {
      a: [...await a.read()],
      b: [...await b.read()],
      out: [...await out.read()],
      c: [...await c.read()],
    };
  } finally {
    device.gpu.destroy();
  }
}
