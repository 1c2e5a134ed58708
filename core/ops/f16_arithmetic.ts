/**
 * Turning on native `f16` arithmetic (`--f16-arithmetic`) only after the
 * adapter has shown it computes in f16, and correctly: Deno's WebGPU has had
 * reports of f16 compute returning zeros, and a stack that silently computes in
 * f32 would measure the wrong thing.
 * @module
 */

import { type MatmulOptions, matmulPlan } from "../../kernels/matmul.ts";
import type { Device } from "../device.ts";
import { toHalfBits } from "../half.ts";
import { Tensor } from "../tensor.ts";
import { matmulOptions, recordPlan } from "./matmul.ts";

/**
 * What a packed-fp16 matmul with `opts` returns for A = [1, 1, 1, 1] and
 * B = [2048, 1, 0, 0] (every value exact in fp16): 2049 with f32 arithmetic,
 * 2048 with f16 arithmetic (2049 lies halfway between the fp16 neighbours 2048
 * and 2050, and ties go to even).
 */
export async function f16GroupSumProbe(device: Device, opts: MatmulOptions): Promise<number> {
  const a = Tensor.fromArray(device, new Float32Array([1, 1, 1, 1]));
  const bits = toHalfBits(new Float32Array([2048, 1, 0, 0]), "fp16");
  const b = Tensor.fromArray(device, new Int32Array(bits.buffer), undefined, "i32");
  const c = Tensor.empty(device, [1]);
  try {
    const plan = matmulPlan({
      batch: 1,
      M: 1,
      N: 1,
      K: 4,
      transA: false,
      transB: true,
      batchA: false,
      batchB: false,
      bias: false,
      packedB: "fp16",
    }, opts);
    recordPlan(device, plan, [a.binding, b.binding, c.binding]); // A may be read through a texture
    return (await c.read())[0];
  } finally {
    for (const t of [a, b, c]) t.dispose();
  }
}

/**
 * Sets {@link Device.f16Arithmetic} after checking that the device offers
 * `shader-f16` and that its matmul kernel family really sums in f16
 * ({@link f16GroupSumProbe}); throws a plain-language error otherwise.
 */
export async function enableF16Arithmetic(device: Device): Promise<void> {
  const { backend, name } = device.summary();
  if (!device.nativeF16) {
    throw new Error(
      `native f16 arithmetic needs the shader-f16 feature, which this adapter does not offer ` +
        `(${backend}: ${name})` +
        (backend === "dawn"
          ? `; Deno's WebGPU has it on lavapipe (--backend deno on a command's line, ` +
            `WEBGPU_BACKEND=deno before a bench task, backend: "deno" in Device.create)`
          : ""),
    );
  }
  const got = await f16GroupSumProbe(device, { ...matmulOptions(device), f16Arithmetic: true });
  if (got !== 2048) {
    throw new Error(
      `native f16 arithmetic on this adapter (${backend}: ${name}) summed 2048 + 1 to ${got}, ` +
        `not fp16's 2048: its f16 path is broken or not f16`,
    );
  }
  device.f16Arithmetic = true;
}
