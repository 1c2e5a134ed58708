/**
 * A compute-bound probe: what an adapter's shader compiler reaches with no
 * memory traffic at all. Each invocation runs `chains` independent vec4
 * multiply-add chains (`fma`), {@link FMA_CEILING_UNROLL} steps of each per loop
 * iteration, and stores one vec4, so the time is arithmetic only. On CPU adapters (llvmpipe) it bounds what any
 * kernel of this project can do on the same device: the matmul's share of it
 * says how much its loads, spills and masks cost (bench/fma_ceiling.ts).
 * @module
 */

import { type KernelSource, lazyKernel, Params } from "./kernel.ts";

/**
 * Steps of every chain per loop iteration: llvmpipe merges each variable a loop
 * writes with the execution mask once per iteration, which at one step per
 * iteration costs as much as the arithmetic (one pinned Zen 5 core, 16 lanes:
 * 72–75 GFLOP/s at one step per iteration, 137 at four).
 */
export const FMA_CEILING_UNROLL = 4;

/** The probe's shape: invocations per workgroup and vec4 chains per invocation. */
export interface FmaCeilingShape {
  /** Invocations per workgroup (a software adapter's SIMD lanes). */
  lanes: number;
  /** Independent vec4 chains per invocation (enough to hide the latency of each step). */
  chains: number;
}

/**
 * The probe kernel. Binding 0: `out` (one vec4 per invocation, read_write);
 * binding 1: the uniform block of {@link fmaCeilingParams}.
 */
export function fmaCeilingKernel(s: FmaCeilingShape): KernelSource {
  const { lanes, chains } = s;
  if (!Number.isInteger(lanes) || lanes < 1 || !Number.isInteger(chains) || chains < 1) {
    throw new Error(
      `fma ceiling: lanes and chains must be positive integers, got ${lanes}, ${chains}`,
    );
  }
  const ids = Array.from({ length: chains }, (_, i) => i);
  return lazyKernel(`fma-ceiling/${lanes}/${chains}`, () => /* wgsl */ `
struct P { iterations: u32, scale: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(${lanes})
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let x = vec4<f32>(f32(g.x) * p.scale, 0.5, 0.25, 0.125);
${ids.map((i) => `  var c${i} = vec4<f32>(f32(${i}) * p.scale);`).join("\n")}
  for (var i = 0u; i < p.iterations; i++) {
${
    Array.from({ length: FMA_CEILING_UNROLL }, () =>
      ids.map((i) => `    c${i} = fma(c${i}, x, x);`).join("\n"))
      .join("\n")
  }
  }
  out[g.x] = ${ids.map((i) => `c${i}`).join(" + ")};
}`);
}

/**
 * The uniform block: loop iterations, each {@link FMA_CEILING_UNROLL} steps of
 * every chain (the values stay small, so no infinities).
 */
export function fmaCeilingParams(iterations: number): ArrayBuffer {
  return new Params(2).u32(iterations).f32(1e-7).buffer;
}

/** Floating-point operations of one dispatch (an fma counts two, as in GFLOP/s of a matmul). */
export function fmaCeilingFlops(
  s: FmaCeilingShape,
  workgroups: number,
  iterations: number,
): number {
  return workgroups * s.lanes * s.chains * 4 * 2 * FMA_CEILING_UNROLL * iterations;
}
