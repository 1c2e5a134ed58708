/**
 * Shared WGSL for row kernels: one workgroup per row, a tree reduction in
 * workgroup memory. Used by layer norm, softmax and cross-entropy.
 * @module
 */

import type { KernelSource } from "./kernel.ts";

/** Threads per row workgroup (8 SIMD groups of 8 on lavapipe; 2 warps on GPUs). */
export const ROW_WG = 64;

/**
 * Mesa's software rasterisers (llvmpipe, and lavapipe on top of it) stop every
 * loop of a shader invocation once that invocation has run this many loop
 * iterations in total, across all its loops: silently, with no error. A kernel
 * is only right on those adapters if no invocation loops more often (measured:
 * a loop to 65,536 stops at 65,535, and two loops of 40,000 run 40,000 and
 * 25,534 times). Real GPUs have no such cap.
 */
export const SOFTWARE_LOOP_LIMIT = 65535;

/** Passes a row kernel makes over its row at most (softmax and layer norm: 3). */
export const ROW_PASSES = 4;

/** WGSL: workgroup scratch and sum/max reductions over {@link ROW_WG} threads. */
export const ROW_REDUCE_WGSL = /* wgsl */ `
var<workgroup> red: array<f32, ${ROW_WG}>;
fn wg_sum(v: f32, lid: u32) -> f32 {
  workgroupBarrier();
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  return red[0];
}
fn wg_max(v: f32, lid: u32) -> f32 {
  workgroupBarrier();
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  return red[0];
}
`;

/**
 * The one-invocation-per-row form of a row kernel written for {@link ROW_WG}
 * threads per row: each invocation walks its row alone, with no workgroup
 * barriers. On CPU adapters (lavapipe) barriers are costly and SIMD lanes are
 * better spent on different rows; dispatch it over `ceil(rows / ROW_WG)`
 * workgroups (`gridFor(rows, ROW_WG)`).
 */
export function perRowVariant(k: KernelSource): KernelSource {
  const code = k.code
    .replace(
      /let row = \(wid\.x \+ wid\.y \* nwg\.x\);/g,
      `let row = (wid.x + wid.y * nwg.x) * ${ROW_WG}u + lid;`,
    )
    .replace(/var (\w+) = lid; ([^;]+); \1 \+= 64u/g, "var $1 = 0u; $2; $1 += 1u")
    .replace(/wg_(max|sum)\((\w+), lid\)/g, "($2)")
    .replace(/if \(lid == 0u\)/g, "if (true)");
  return { key: `${k.key}:perrow`, code };
}
