/**
 * Cross-entropy fused with log-softmax over the (padded) vocabulary: the logits
 * are never normalised in memory. Forward writes the per-row loss and
 * log-sum-exp; backward writes `(softmax − onehot)·g` from them.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { GRID_BUILTINS, GROUP_INDEX, grid2d } from "./grid.ts";
import { ROW_REDUCE_WGSL, ROW_WG } from "./rowreduce.ts";

/**
 * Per row `r`: `lse = log Σ_{j<valid} exp(x_j)`, `loss = lse − x[target]`, or 0
 * where `target < 0` (ignored). Columns ≥ `valid` (vocabulary padding) never
 * count. Bindings: logits, targets (i32), loss, lse.
 */
export function crossEntropyForwardKernel(): KernelSource {
  return {
    key: "xent:fwd",
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
struct P { rows: u32, cols: u32, valid: u32, _p: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var m = -3.0e38;
  for (var j = lid; j < p.valid; j += ${ROW_WG}u) { m = max(m, x[base + j]); }
  m = wg_max(m, lid);
  var s = 0.0;
  for (var j = lid; j < p.valid; j += ${ROW_WG}u) { s += exp(x[base + j] - m); }
  s = wg_sum(s, lid);
  if (lid == 0u) {
    let l = m + log(s);
    lse[row] = l;
    let t = targets[row];
    loss[row] = select(0.0, l - x[base + u32(max(t, 0))], t >= 0);
  }
}`,
  };
}

/** Uniforms and grid for the cross-entropy kernels. */
export function crossEntropyDispatch(rows: number, cols: number, valid: number) {
  return { params: new Params(4).u32(rows).u32(cols).u32(valid).u32(0).buffer, workgroups: grid2d(rows) };
}

/**
 * `dx[r, j] = g[r]·(exp(x − lse[r]) − [j == target])`, zero for padded columns
 * and ignored rows. Bindings: logits, targets, lse, g (per row), dx.
 */
export function crossEntropyBackwardKernel(): KernelSource {
  return {
    key: "xent:bwd",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, valid: u32, _p: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  let t = targets[row];
  let gr = select(0.0, g[row], t >= 0);
  let l = lse[row];
  for (var j = lid; j < p.cols; j += ${ROW_WG}u) {
    var v = 0.0;
    if (j < p.valid) { v = exp(x[base + j] - l); }
    if (i32(j) == t) { v -= 1.0; }
    dx[base + j] = gr * v;
  }
}`,
  };
}
