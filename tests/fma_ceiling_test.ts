/**
 * The arithmetic-ceiling probe (kernels/fma_ceiling.ts) computes what it says:
 * each invocation's sum of `chains` vec4 chains `c ← fma(c, x, x)` against a
 * float64 TypeScript reference of the same recurrence, to a relative 1e-5
 * (f32 rounding over 40 steps; llvmpipe rounds the multiply and the add
 * separately). And `fmaCeiling` (bench/fma_ceiling.ts) gives a finite,
 * positive rate on the test device.
 */

import assert from "node:assert/strict";
import { fmaCeiling } from "../bench/fma_ceiling.ts";
import {
  FMA_CEILING_UNROLL,
  fmaCeilingFlops,
  fmaCeilingKernel,
  fmaCeilingParams,
} from "../kernels/fma_ceiling.ts";
import { assertClose, testDevice, withTimeLimit } from "./helpers.ts";

const device = await testDevice();

/** The kernel's output for invocation `g`: the sum over chains of the recurrence, in float64. */
function reference(g: number, chains: number, iterations: number): number[] {
  const scale = Math.fround(1e-7);
  const x = [Math.fround(g * scale), 0.5, 0.25, 0.125];
  const out = [0, 0, 0, 0];
  for (let i = 0; i < chains; i++) {
    for (let c = 0; c < 4; c++) {
      let v = Math.fround(i * scale);
      for (let s = 0; s < iterations; s++) v = v * x[c] + x[c];
      out[c] += v;
    }
  }
  return out;
}

Deno.test("fma ceiling: the probe computes its recurrence", withTimeLimit(60), async () => {
  const lanes = device.isSoftware ? device.softwareLanes : 64;
  const shape = { lanes, chains: 3 };
  const workgroups = 2, iterations = 5;
  const size = workgroups * lanes * 16;
  const buffer = device.pool.acquire(size);
  try {
    device.dispatch(fmaCeilingKernel(shape), [{ buffer, size }], fmaCeilingParams(iterations), [
      workgroups,
    ]);
    const got = new Float32Array(await device.read(buffer, size));
    const want = new Float64Array(got.length);
    for (let g = 0; g < workgroups * lanes; g++) {
      want.set(reference(g, 3, iterations * FMA_CEILING_UNROLL), 4 * g);
    }
    assertClose(got, want, { rtol: 1e-5, atol: 1e-6 });
    assert.equal(
      fmaCeilingFlops(shape, workgroups, iterations),
      2 * lanes * 3 * 4 * 2 * FMA_CEILING_UNROLL * 5,
    );
  } finally {
    device.pool.release(buffer);
  }
});

Deno.test("fma ceiling: bad shapes are refused", () => {
  assert.throws(() => fmaCeilingKernel({ lanes: 0, chains: 8 }), /positive integers/);
  assert.throws(() => fmaCeilingKernel({ lanes: 16, chains: 1.5 }), /positive integers/);
});

Deno.test("fma ceiling: the bench gives a positive rate", withTimeLimit(120), async () => {
  const gflops = await fmaCeiling(device, 2);
  assert.ok(Number.isFinite(gflops) && gflops > 0, `got ${gflops}`);
});
