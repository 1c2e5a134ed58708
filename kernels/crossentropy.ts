/**
 * Cross-entropy fused with log-softmax over the (padded) vocabulary: the logits
 * are never normalised in memory. Forward writes the per-row loss and
 * log-sum-exp; backward writes `(softmax − onehot)·g` from them.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { grid2d, GRID_BUILTINS, GROUP_INDEX } from "./grid.ts";
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
export function crossEntropyDispatch(rows: number, cols: number, valid: number, start = 0) {
  return {
    params: new Params(4).u32(rows).u32(cols).u32(valid).i32(start).buffer,
    workgroups: grid2d(rows),
  };
}

/**
 * `dx[r, j] = g[r]·(exp(x − lse[r]) − [j == target − start])`, zero for padded
 * columns and ignored rows. `start` is the first global column of these logits
 * (non-zero for a vocabulary shard). Bindings: logits, targets, lse, g (per row), dx.
 */
export function crossEntropyBackwardKernel(): KernelSource {
  return {
    key: "xent:bwd",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, valid: u32, start: i32 }
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
    if (i32(j) == t - p.start) { v -= 1.0; }
    dx[base + j] = gr * v;
  }
}`,
  };
}

/**
 * Vocabulary-parallel step 1: per row, the max over this shard's first `valid`
 * columns (−3e38 when the shard has none). Bindings: logits, rowMax.
 */
export function shardMaxKernel(): KernelSource {
  return {
    key: "xent:shardmax",
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
struct P { rows: u32, cols: u32, valid: u32, start: i32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> rowMax: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var m = -3.0e38;
  for (var j = lid; j < p.valid; j += ${ROW_WG}u) { m = max(m, x[base + j]); }
  m = wg_max(m, lid);
  if (lid == 0u) { rowMax[row] = m; }
}`,
  };
}

/**
 * Vocabulary-parallel step 2: with the global row max, this shard's
 * `Σ exp(x − max)` into `stats[r]` and its target logit (0 when the target is
 * another shard's) into `stats[rows + r]`. Bindings: logits, targets, gmax, stats.
 */
export function shardSumExpKernel(): KernelSource {
  return {
    key: "xent:shardsum",
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
struct P { rows: u32, cols: u32, valid: u32, start: i32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> gmax: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  let m = gmax[row];
  var s = 0.0;
  for (var j = lid; j < p.valid; j += ${ROW_WG}u) { s += exp(x[base + j] - m); }
  s = wg_sum(s, lid);
  if (lid == 0u) {
    stats[row] = s;
    let t = targets[row] - p.start;
    stats[p.rows + row] = select(0.0, x[base + u32(max(t, 0))], t >= 0 && u32(t) < p.valid);
  }
}`,
  };
}

/**
 * Vocabulary-parallel step 3, per row from the reduced statistics:
 * `lse = max + log(Σexp)`, `loss = lse − target logit` (0 for ignored rows).
 * Bindings: targets, gmax, stats, loss, lse.
 */
export function shardFinishKernel(): KernelSource {
  return {
    key: "xent:shardfinish",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, valid: u32, start: i32 }
@group(0) @binding(0) var<storage, read> targets: array<i32>;
@group(0) @binding(1) var<storage, read> gmax: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX} * 64u + lid;
  if (row >= p.rows) { return; }
  let l = gmax[row] + log(stats[row]);
  lse[row] = l;
  loss[row] = select(0.0, l - stats[p.rows + row], targets[row] >= 0);
}`,
  };
}
