/**
 * Shared WGSL for row kernels: one workgroup per row, a tree reduction in
 * workgroup memory. Used by layer norm, softmax and cross-entropy.
 * @module
 */

/** Threads per row workgroup (8 SIMD groups of 8 on lavapipe; 2 warps on GPUs). */
export const ROW_WG = 64;

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
