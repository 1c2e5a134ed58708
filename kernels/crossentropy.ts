/**
 * Cross-entropy fused with log-softmax over the (padded) vocabulary: the logits
 * are never normalised in memory. Forward writes the per-row loss and
 * log-sum-exp; backward writes `(softmax − onehot)·g` from them. The
 * vocabulary-parallel kernels and the backward have texture forms for CPU
 * adapters (one invocation per row, the logits read through a stream texture).
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { grid2d, GRID_BUILTINS, GROUP_INDEX } from "./grid.ts";
import { ROW_REDUCE_WGSL, ROW_WG } from "./rowreduce.ts";
import { hsum, STREAM_TEXTURE, streamTexel } from "./texture.ts";

/**
 * The uniforms of the vocabulary-parallel kernels and the backward, buffer and
 * texture forms alike, as {@link crossEntropyDispatch} writes them.
 */
const XENT_PARAMS_WGSL = "struct P { rows: u32, cols: u32, valid: u32, start: i32 }";

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
${XENT_PARAMS_WGSL}
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
${XENT_PARAMS_WGSL}
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
${XENT_PARAMS_WGSL}
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
${XENT_PARAMS_WGSL}
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

/**
 * Vocabulary-parallel step 3 from statistics gathered over `ranks` ranks:
 * `slots` holds, per rank in order, its row maxima `m_r`, its `Σexp(x − m_r)`
 * and its target logits (`[ranks, 3, rows]`). Per row: `M = max_r m_r`,
 * `lse = M + log Σ_r Σexp_r · exp(m_r − M)`, `loss = lse − Σ_r target_r` (0
 * for ignored rows). Bindings: targets, slots, loss, lse.
 */
export function shardGatheredFinishKernel(ranks: number): KernelSource {
  if (!Number.isInteger(ranks) || ranks < 1) {
    throw new Error(`shardGatheredFinishKernel: ranks ${ranks}`);
  }
  return {
    key: `xent:shardfinish:gathered${ranks}`,
    code: /* wgsl */ `
${XENT_PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> targets: array<i32>;
@group(0) @binding(1) var<storage, read> slots: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
const RANKS = ${ranks}u;
@compute @workgroup_size(64)
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX} * 64u + lid;
  if (row >= p.rows) { return; }
  var m = -3.0e38;
  for (var r = 0u; r < RANKS; r++) { m = max(m, slots[3u * r * p.rows + row]); }
  var s = 0.0;
  var t = 0.0;
  for (var r = 0u; r < RANKS; r++) {
    let at = 3u * r * p.rows + row;
    s += slots[at + p.rows] * exp(slots[at] - m);
    t += slots[at + 2u * p.rows];
  }
  let l = m + log(s);
  lse[row] = l;
  loss[row] = select(0.0, l - t, targets[row] >= 0);
}`,
  };
}

// Texture forms for CPU adapters (dispatched by `dispatchRowsFrom`, core/ops/rows.ts): one invocation per row
// (dispatch over `gridFor(rows, ROW_WG)`), the logits read vec4 by vec4 through
// a stream texture (kernels/texture.ts), `cols` a multiple of 4. A vec4 whose
// columns straddle `valid` keeps only the valid ones (`lanes < valid`).

/** WGSL: the columns of vec4 `c` (a u32 expression) as a vec4<u32>. */
const lanes = (c: string): string => `(vec4<u32>(${c} * 4u) + vec4<u32>(0u, 1u, 2u, 3u))`;

/** WGSL heading the texture forms: the row of this invocation and its first texel. */
const TEXTURE_ROW_WGSL = /* wgsl */ `
  let row = ${GROUP_INDEX} * ${ROW_WG}u + lid;
  if (row >= p.rows) { return; }
  let c4 = p.cols / 4u;
  let base = row * c4;`;

/** WGSL: the vec4s whose columns are all valid, and whether one more holds some. */
const VALID_VEC4S_WGSL = /* wgsl */ `
  let full = p.valid / 4u;
  let partial = full * 4u < p.valid;`;

/**
 * {@link shardMaxKernel} for CPU adapters (see above). Bindings: logits as a
 * stream texture, rowMax.
 */
export function shardMaxTextureKernel(): KernelSource {
  return {
    key: "xent:shardmax:tex",
    code: /* wgsl */ `
${XENT_PARAMS_WGSL}
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var<storage, read_write> rowMax: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {${TEXTURE_ROW_WGSL}${VALID_VEC4S_WGSL}
  var m = vec4<f32>(-3.0e38);
  for (var c = 0u; c < full; c++) { m = max(m, ${streamTexel("xT", "base + c")}); }
  if (partial) {
    let v = ${streamTexel("xT", "base + full")};
    m = max(m, select(vec4<f32>(-3.0e38), v, ${lanes("full")} < vec4<u32>(p.valid)));
  }
  rowMax[row] = max(max(m.x, m.y), max(m.z, m.w));
}`,
  };
}

/**
 * {@link shardSumExpKernel} for CPU adapters (see above): Σexp summed in four
 * lanes (columns ≡ k mod 4), then across them. Bindings: logits as a stream
 * texture, targets, gmax, stats.
 */
export function shardSumExpTextureKernel(): KernelSource {
  return {
    key: "xent:shardsum:tex",
    code: /* wgsl */ `
${XENT_PARAMS_WGSL}
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> gmax: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {${TEXTURE_ROW_WGSL}${VALID_VEC4S_WGSL}
  let m = gmax[row];
  var s = vec4<f32>();
  for (var c = 0u; c < full; c++) { s += exp(${streamTexel("xT", "base + c")} - m); }
  if (partial) {
    let e = exp(${streamTexel("xT", "base + full")} - m);
    s += select(vec4<f32>(), e, ${lanes("full")} < vec4<u32>(p.valid));
  }
  stats[row] = ${hsum("s")};
  let t = targets[row] - p.start;
  var xt = 0.0;
  if (t >= 0 && u32(t) < p.valid) { xt = ${streamTexel("xT", "base + u32(t) / 4u")}[u32(t) & 3u]; }
  stats[p.rows + row] = xt;
}`,
  };
}

/**
 * {@link crossEntropyBackwardKernel} for CPU adapters (see above), the same
 * arithmetic per element. Bindings: logits as a stream texture, targets, lse,
 * g (per row), dx (vec4).
 */
export function crossEntropyBackwardTextureKernel(): KernelSource {
  return {
    key: "xent:bwd:tex",
    code: /* wgsl */ `
${XENT_PARAMS_WGSL}
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {${TEXTURE_ROW_WGSL}
  let t = targets[row];
  let gr = select(0.0, g[row], t >= 0);
  let l = lse[row];
  // the target's column in this block, or past every column (never matches)
  let tc = select(0xffffffffu, u32(t - p.start), t - p.start >= 0);
  for (var c = 0u; c < c4; c++) {
    let j = ${lanes("c")};
    var v = select(vec4<f32>(), exp(${streamTexel("xT", "base + c")} - l), j < vec4<u32>(p.valid));
    v -= select(vec4<f32>(), vec4<f32>(1.0), j == vec4<u32>(tc));
    dx[base + c] = gr * v;
  }
}`,
  };
}
