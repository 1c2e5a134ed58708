/**
 * Embedding lookup and its deterministic scatter-add backward.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { STREAM_TEXTURE, streamTexel } from "./texture.ts";

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

/** Invocations per workgroup of {@link embeddingBackwardTextureKernel}. */
const TEX_WG = 64;

/**
 * {@link embeddingBackwardKernel} for CPU adapters, `width` vec4s of a row per
 * invocation (1, 2 or 4, dividing `dim / 4`): the output gradient and the
 * scatter index read from stream textures (kernels/texture.ts), the table
 * gradient written as vec4. The index is one `f32` tensor (every value an
 * integer below 2^24, so exact; see `packScatterIndex` in core/ops/nn.ts): vec4
 * `u < unique` is (rowId, first, end, 0) of distinct row `u`, and position `k`
 * of the CSR list is component `k & 3` of vec4 `unique + (k >> 2)`. Each
 * invocation reads its row's entry once and each position once for its
 * `width` vec4s, and sums the positions' rows in the CSR order of the buffer
 * form, so the same bits. With `accumulate` (uniform `acc`) the sum is added
 * to `dweight`; without, it is stored (`dweight` is zero there, and reading it
 * back is a slow storage load on these adapters). Each invocation loops at
 * most once per position, within `SOFTWARE_LOOP_LIMIT` for token blocks of
 * `COLUMN_BLOCK_ROWS`. Bindings: dout's texture, the index's texture, dweight.
 */
export function embeddingBackwardTextureKernel(width: 1 | 2 | 4): KernelSource {
  const parts = Array.from({ length: width }, (_, j) => j);
  return {
    key: `embedding:bwd:w${width}:tex`,
    code: /* wgsl */ `
struct P { unique: u32, dim: u32, acc: u32, _b: u32 }
@group(0) @binding(0) var doutT: ${STREAM_TEXTURE};
@group(0) @binding(1) var indexT: ${STREAM_TEXTURE};
@group(0) @binding(2) var<storage, read_write> dweight: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${TEX_WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${TEX_WG}u + lid;
  let c4 = p.dim / 4u;
  let per = c4 / ${width}u;
  if (i >= p.unique * per) { return; }
  let u = i / per;
  let c = (i % per) * ${width}u;
  let e = ${streamTexel("indexT", "u")};
  ${parts.map((j) => `var s${j} = vec4<f32>();`).join(" ")}
  for (var k = u32(e.y); k < u32(e.z); k++) {
    let q = u32(${streamTexel("indexT", "p.unique + (k >> 2u)")}[k & 3u]) * c4 + c;
    ${parts.map((j) => `s${j} += ${streamTexel("doutT", `q + ${j}u`)};`).join("\n    ")}
  }
  let dst = u32(e.x) * c4 + c;
  if (p.acc != 0u) {
    ${parts.map((j) => `s${j} = dweight[dst + ${j}u] + s${j};`).join("\n    ")}
  }
  ${parts.map((j) => `dweight[dst + ${j}u] = s${j};`).join("\n  ")}
}`,
  };
}

/**
 * Uniforms and grid for {@link embeddingBackwardTextureKernel} at `width`;
 * `accumulate` adds into `dweight` rather than storing.
 */
export function embeddingBackwardTextureDispatch(
  unique: number,
  dim: number,
  width: 1 | 2 | 4,
  accumulate: boolean,
) {
  return {
    params: new Params(4).u32(unique).u32(dim).u32(+accumulate).u32(0).buffer,
    workgroups: gridFor((unique * dim) / (4 * width), TEX_WG),
  };
}
