/**
 * Embedding lookup and its deterministic scatter-add backward.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";

const WG = 256;

/**
 * `out[n, :] = weight[ids[n] − start, :]` when `start ≤ ids[n] < start + rows`;
 * other rows get zeros when `zeroOutside` is set, else are left as they are (a
 * table bound in several windows writes each window's rows in turn). The
 * vocabulary-parallel convention. Bindings: weight, ids (i32), out.
 */
export function embeddingForwardKernel(): KernelSource {
  return {
    key: "embedding:fwd",
    code: /* wgsl */ `
struct P { n: u32, dim: u32, start: i32, rows: i32, zeroOutside: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> weight: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n * p.dim) { return; }
  let tok = i / p.dim;
  let col = i % p.dim;
  let r = ids[tok] - p.start;
  let inside = r >= 0 && r < p.rows;
  if (inside || p.zeroOutside != 0u) {
    out[i] = select(0.0, weight[u32(max(r, 0)) * p.dim + col], inside);
  }
}`,
  };
}

/** Uniforms and grid for {@link embeddingForwardKernel}. */
export function embeddingForwardDispatch(
  n: number,
  dim: number,
  start: number,
  rows: number,
  zeroOutside = true,
) {
  return {
    params: new Params(8).u32(n).u32(dim).i32(start).i32(rows).u32(+zeroOutside).u32(0).u32(0)
      .u32(0).buffer,
    workgroups: gridFor(n * dim, WG),
  };
}

/**
 * Backward as a gather over a host-built index (CSR): for each distinct local row
 * `u`, `dweight[rowIds[u], :] += Σ dout[positions[offsets[u] .. offsets[u+1]], :]`,
 * summed in a fixed order, so it is deterministic and needs no float atomics.
 * `dweight` must be zeroed first. Bindings: dout, rowIds, offsets, positions, dweight.
 */
export function embeddingBackwardKernel(): KernelSource {
  return {
    key: "embedding:bwd",
    code: /* wgsl */ `
struct P { unique: u32, dim: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read> rowIds: array<i32>;
@group(0) @binding(2) var<storage, read> offsets: array<i32>;
@group(0) @binding(3) var<storage, read> positions: array<i32>;
@group(0) @binding(4) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(5) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.unique * p.dim) { return; }
  let u = i / p.dim;
  let col = i % p.dim;
  var s = 0.0;
  for (var k = offsets[u]; k < offsets[u + 1u]; k++) {
    s += dout[u32(positions[k]) * p.dim + col];
  }
  let dst = u32(rowIds[u]) * p.dim + col;
  dweight[dst] = dweight[dst] + s;
}`,
  };
}

/** Uniforms and grid for {@link embeddingBackwardKernel}. */
export function embeddingBackwardDispatch(unique: number, dim: number) {
  return {
    params: new Params(4).u32(unique).u32(dim).u32(0).u32(0).buffer,
    workgroups: gridFor(unique * dim, WG),
  };
}
