/**
 * Single matmul products for the software-matmul benches
 * (`bench:matmul-texture`, `bench:matmul-store`, `bench:torch`'s matmul row):
 * named shapes, random operand buffers, and the time of a plan's dispatches.
 * @module
 */

import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { recordPlan } from "../core/ops/matmul.ts";
import type { DispatchPlan, MatmulShape } from "../kernels/matmul.ts";

/** The load average, three numbers, for a bench's header and footer. */
export const loadAverage = (): string => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");

/**
 * The device of `backend`, named with the load average on stdout; null where
 * it is not a software adapter (said with `why`, and closed): these benches
 * measure llvmpipe's code paths.
 */
export async function softwareDevice(backend: string, why: string): Promise<Device | null> {
  const device = await Device.create({ backend: parseBackend(backend) });
  if (!device.isSoftware) {
    console.log(`not a software adapter: ${why}`);
    await device.close();
    return null;
  }
  console.log(
    `${device.summary().backend}: ${device.summary().name}; load average ${loadAverage()}`,
  );
  return device;
}

/** A named single product `M×N×K`, A and B transposed as `tt` says (`NT`: B), no bias. */
export const mm = (M: number, N: number, K: number, tt: string): [string, MatmulShape] => [
  `${tt} ${M}×${N}×${K}`,
  {
    batch: 1,
    M,
    N,
    K,
    transA: tt[0] === "T",
    transB: tt[1] === "T",
    batchA: true,
    batchB: true,
    bias: false,
  },
];

/** A, B and C of `shape` from `device`'s pool, each filled with uniform values in [-0.5, 0.5). */
export function randomOperands(
  device: Device,
  shape: MatmulShape,
): { buffer: GPUBuffer; size: number }[] {
  const sizes = [shape.M * shape.K, shape.K * shape.N, shape.M * shape.N].map((n) => 4 * n);
  return sizes.map((size) => {
    const buffer = device.pool.acquire(size);
    device.upload(buffer, Float32Array.from({ length: size / 4 }, () => Math.random() - 0.5));
    return { buffer, size };
  });
}

/** Milliseconds that `n` dispatches of `plan` on `bufs` take, recorded together and timed through one sync. */
export async function msForDispatches(
  device: Device,
  plan: DispatchPlan,
  bufs: { buffer: GPUBuffer; size: number }[],
  n: number,
): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) recordPlan(device, plan, bufs);
  await device.sync();
  return performance.now() - t0;
}

/**
 * Milliseconds per dispatch of `plan` on `bufs`: after a warm-up, at least
 * `leastReps` repeats and ~100 ms of them, timed through one sync.
 */
export async function msPerPlan(
  device: Device,
  plan: DispatchPlan,
  bufs: { buffer: GPUBuffer; size: number }[],
  leastReps: number,
): Promise<number> {
  await msForDispatches(device, plan, bufs, 1);
  const once = await msForDispatches(device, plan, bufs, 1);
  const reps = Math.max(leastReps, Math.ceil(100 / once));
  return (await msForDispatches(device, plan, bufs, reps)) / reps;
}
