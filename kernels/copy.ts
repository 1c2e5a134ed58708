/**
 * Strided copy: the one kernel behind permute/transpose, slice, concat and split.
 * Element `i` of a logical `shape` (rank ≤ 8) is read at
 * `srcOffset + Σ idx_d·srcStride_d` and written at `dstOffset + Σ idx_d·dstStride_d`,
 * as 32-bit words: f32 and i32 elements move bit for bit (a float copy could
 * flush an integer's denormal bit pattern to zero on a GPU).
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";

const WG = 256;
/** Highest rank the strided copy handles. */
export const MAX_COPY_RANK = 8;

/** The strided-copy kernel. Bindings: src, dst. */
export function stridedCopyKernel(): KernelSource {
  return {
    key: "copy:strided",
    code: /* wgsl */ `
struct P {
  n: u32, rank: u32, srcOffset: u32, dstOffset: u32,
  shape: array<vec4<u32>, 2>, ss: array<vec4<u32>, 2>, ds: array<vec4<u32>, 2>,
}
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  var rem = i;
  var si = p.srcOffset;
  var di = p.dstOffset;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let q = u32(d) / 4u;
    let r = u32(d) % 4u;
    let n = p.shape[q][r];
    let idx = rem % n;
    rem = rem / n;
    si += idx * p.ss[q][r];
    di += idx * p.ds[q][r];
  }
  dst[di] = src[si];
}`,
  };
}

/** Uniforms and grid for {@link stridedCopyKernel}. */
export function stridedCopyDispatch(
  shape: readonly number[],
  srcStrides: readonly number[],
  srcOffset: number,
  dstStrides: readonly number[],
  dstOffset: number,
) {
  if (shape.length > MAX_COPY_RANK) {
    throw new Error(`strided copy supports rank ≤ ${MAX_COPY_RANK}, got ${shape.length}`);
  }
  const n = shape.reduce((a, b) => a * b, 1);
  const p = new Params(4 + 3 * MAX_COPY_RANK).u32(n).u32(shape.length).u32(srcOffset).u32(
    dstOffset,
  );
  for (const arr of [shape, srcStrides, dstStrides]) {
    for (let d = 0; d < MAX_COPY_RANK; d++) p.u32(d < arr.length ? arr[d] : 1);
  }
  return { n, params: p.buffer, workgroups: gridFor(n, WG) };
}
