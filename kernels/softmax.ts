/**
 * Softmax over the last dimension fused with a scale and a causal or padding
 * mask (the attention-probability kernel), forward and backward.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { grid2d, GRID_BUILTINS, GROUP_INDEX } from "./grid.ts";
import { ROW_REDUCE_WGSL, ROW_WG } from "./rowreduce.ts";

/** Which entries the softmax masks out. */
export type MaskKind = "none" | "causal" | "padding";

/**
 * `y = softmax(scale·x)` per row of `cols`, masked entries set to 0 (and excluded).
 * Causal: row `r` is query `q = r mod qLen` and key `j` is masked when
 * `j > q + (cols − qLen)`. Padding: key `j` of batch `b = r / rowsPerBatch` is
 * masked where `keep[b·cols + j] == 0`. A fully masked row gives zeros.
 * Bindings: x, [keep (padding)], y.
 */
export function softmaxForwardKernel(mask: MaskKind): KernelSource {
  const keepDecl = mask === "padding"
    ? "@group(0) @binding(1) var<storage, read> keep: array<f32>;"
    : "";
  const yBinding = mask === "padding" ? 2 : 1;
  const masked = mask === "causal"
    ? "(j > (row % p.qLen) + (p.cols - p.qLen))"
    : mask === "padding"
    ? "(keep[(row / p.rowsPerBatch) * p.cols + j] == 0.0)"
    : "false";
  return {
    key: `softmax:fwd:${mask}`,
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
struct P { rows: u32, cols: u32, qLen: u32, rowsPerBatch: u32, scale: f32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
${keepDecl}
@group(0) @binding(${yBinding}) var<storage, read_write> y: array<f32>;
@group(0) @binding(${yBinding + 1}) var<uniform> p: P;
fn is_masked(row: u32, j: u32) -> bool { return ${masked}; }
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var m = -3.0e38;
  for (var j = lid; j < p.cols; j += ${ROW_WG}u) {
    if (!is_masked(row, j)) { m = max(m, p.scale * x[base + j]); }
  }
  m = wg_max(m, lid);
  var s = 0.0;
  for (var j = lid; j < p.cols; j += ${ROW_WG}u) {
    if (!is_masked(row, j)) { s += exp(p.scale * x[base + j] - m); }
  }
  s = wg_sum(s, lid);
  let inv = select(0.0, 1.0 / s, s > 0.0);
  for (var j = lid; j < p.cols; j += ${ROW_WG}u) {
    y[base + j] = select(exp(p.scale * x[base + j] - m) * inv, 0.0, is_masked(row, j));
  }
}`,
  };
}

/** Uniforms and grid for the softmax kernels. */
export function softmaxDispatch(
  rows: number,
  cols: number,
  scale: number,
  qLen = 1,
  rowsPerBatch = 1,
) {
  return {
    params: new Params(8).u32(rows).u32(cols).u32(qLen).u32(rowsPerBatch).f32(scale).u32(0)
      .u32(0).u32(0).buffer,
    workgroups: grid2d(rows),
  };
}

/** `dx = scale·y·(dy − Σ dy·y)` per row. Bindings: y, dy, dx. */
export function softmaxBackwardKernel(): KernelSource {
  return {
    key: "softmax:bwd",
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
struct P { rows: u32, cols: u32, qLen: u32, rowsPerBatch: u32, scale: f32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var s = 0.0;
  for (var j = lid; j < p.cols; j += ${ROW_WG}u) { s += dy[base + j] * y[base + j]; }
  s = wg_sum(s, lid);
  for (var j = lid; j < p.cols; j += ${ROW_WG}u) {
    dx[base + j] = p.scale * y[base + j] * (dy[base + j] - s);
  }
}`,
  };
}
