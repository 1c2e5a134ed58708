/**
 * Layer norm over the last dimension, forward and backward.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { grid2d, GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { ROW_REDUCE_WGSL, ROW_WG } from "./rowreduce.ts";
import { hsum, STREAM_TEXTURE, streamTexel } from "./texture.ts";

/**
 * WGSL finishing one row of a layer-norm forward once `s` holds this
 * invocation's part of the row sum of `src` (row start `base`): the mean, the
 * rstd from a second pass over `src`, `y = (src − mean)·rstd·gamma + beta`,
 * and the row's mean and rstd into `meanOut`/`rstdOut`. Shared by the plain
 * and the fused residual layer norm (kernels/residual_norm.ts).
 */
export function normalizeRowWgsl(src: string): string {
  return `  let mean = wg_sum(s, lid) / f32(p.cols);
  var q = 0.0;
  for (var c = lid; c < p.cols; c += ${ROW_WG}u) { let d = ${src}[base + c] - mean; q += d * d; }
  let rstd = inverseSqrt(wg_sum(q, lid) / f32(p.cols) + p.eps);
  for (var c = lid; c < p.cols; c += ${ROW_WG}u) {
    y[base + c] = (${src}[base + c] - mean) * rstd * gamma[c] + beta[c];
  }
  if (lid == 0u) { meanOut[row] = mean; rstdOut[row] = rstd; }`;
}

/**
 * WGSL of one row of the layer-norm input gradient from the saved statistics
 * (`meanIn`, `rstdIn`), the forward input `src`, `gamma` and `dy`: for each
 * element `i` of the row, `v = rstd·(dy·gamma − mean(g) − x̂·mean(g·x̂))`, then
 * `store` (WGSL using `i`, `c` and `v`). Shared by the plain and the fused
 * residual layer norm (kernels/residual_norm.ts).
 */
export function normGradRowWgsl(src: string, store: string): string {
  return `  let mean = meanIn[row];
  let rstd = rstdIn[row];
  var sg = 0.0;
  var sgx = 0.0;
  for (var c = lid; c < p.cols; c += ${ROW_WG}u) {
    let g = dy[base + c] * gamma[c];
    sg += g;
    sgx += g * (${src}[base + c] - mean) * rstd;
  }
  let mg = wg_sum(sg, lid) / f32(p.cols);
  let mgx = wg_sum(sgx, lid) / f32(p.cols);
  for (var c = lid; c < p.cols; c += ${ROW_WG}u) {
    let i = base + c;
    let xh = (${src}[i] - mean) * rstd;
    let v = rstd * (dy[i] * gamma[c] - mg - xh * mgx);
    ${store}
  }`;
}

/**
 * `y = (x − mean)·rstd·gamma + beta` per row; also writes mean and rstd per row
 * for the backward pass. Bindings: x, gamma, beta, y, mean, rstd.
 */
export function layerNormForwardKernel(): KernelSource {
  return {
    key: "layernorm:fwd",
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
struct P { rows: u32, cols: u32, eps: f32, _p: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> meanOut: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstdOut: array<f32>;
@group(0) @binding(6) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var s = 0.0;
  for (var c = lid; c < p.cols; c += ${ROW_WG}u) { s += x[base + c]; }
${normalizeRowWgsl("x")}
}`,
  };
}

/** Uniforms and grid for {@link layerNormForwardKernel} and the backward input kernel. */
export function layerNormDispatch(rows: number, cols: number, eps: number) {
  return {
    params: new Params(4).u32(rows).u32(cols).f32(eps).u32(0).buffer,
    workgroups: grid2d(rows),
  };
}

/**
 * Input gradient: `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))` with `g = dy·gamma`.
 * Bindings: x, gamma, dy, mean, rstd, dx.
 */
export function layerNormBackwardKernel(): KernelSource {
  return {
    key: "layernorm:bwd",
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
struct P { rows: u32, cols: u32, eps: f32, _p: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> meanIn: array<f32>;
@group(0) @binding(4) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
${normGradRowWgsl("x", "dx[i] = v;")}
}`,
  };
}

/**
 * Parameter gradients, one invocation per column summing over rows in order:
 * `dgamma = Σ dy·x̂`, `dbeta = Σ dy`. Bindings: x, dy, mean, rstd, dgamma, dbeta.
 */
export function layerNormParamGradKernel(): KernelSource {
  return {
    key: "layernorm:dparams",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, eps: f32, outRow: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> meanIn: array<f32>;
@group(0) @binding(3) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(6) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(${GRID_BUILTINS}) {
  let c = ${GROUP_INDEX} * 64u + lid;
  if (c >= p.cols) { return; }
  var sg = 0.0;
  var sb = 0.0;
  for (var r = 0u; r < p.rows; r++) {
    let g = dy[r * p.cols + c];
    sg += g * (x[r * p.cols + c] - meanIn[r]) * rstdIn[r];
    sb += g;
  }
  dgamma[p.outRow * p.cols + c] = sg;
  dbeta[p.outRow * p.cols + c] = sb;
}`,
  };
}

/** Uniforms and grid for {@link layerNormParamGradKernel}. */
export function layerNormParamGradDispatch(rows: number, cols: number, outRow = 0) {
  return {
    params: new Params(4).u32(rows).u32(cols).f32(0).u32(outRow).buffer,
    workgroups: gridFor(cols, 64),
  };
}

// ---------------------------------------------------------------------------
// CPU adapters: one invocation per row (no barriers), rows of vec4 read through
// stream textures (kernels/texture.ts) and written as vec4. On llvmpipe
// a scalar storage load or store costs a loop over the 8 lanes; these forms do
// a quarter of the stores and no storage loads of x, dy, gamma or beta
// (measured 5× faster than the one-invocation-per-row scalar form at 512×128).
// Each needs cols a multiple of 4; x[row, 4c..4c+3] is vec4 `row * c4 + c` of
// its stream texture.

/**
 * WGSL of the texture forms (below) finishing one row of a layer-norm forward
 * once `s` holds the row's vec4 sum of `src`: the mean, the rstd from a second
 * pass over `src` (`src(c)`: WGSL of the vec4 at column group `c`), `y` and
 * the row's statistics. Shared with kernels/residual_norm.ts.
 */
export function normalizeRowTextureWgsl(src: (c: string) => string): string {
  return `  let mean = ${hsum("s")} / f32(p.cols);
  var q = vec4<f32>();
  for (var c = 0u; c < c4; c++) { let d = ${src("c")} - mean; q += d * d; }
  let rstd = inverseSqrt(${hsum("q")} / f32(p.cols) + p.eps);
  for (var c = 0u; c < c4; c++) {
    y[row * c4 + c] = (${src("c")} - mean) * rstd * ${streamTexel("gammaT", "c")} +
      ${streamTexel("betaT", "c")};
  }
  meanOut[row] = mean;
  rstdOut[row] = rstd;`;
}

/**
 * WGSL of the texture forms computing one row of the layer-norm input gradient
 * as {@link normGradRowWgsl} does, vec4 by vec4: the forward input from texture
 * `srcT`, dy from `dyT`, gamma from `gammaT`; then `store` (WGSL using `c` and
 * the vec4 `v`). Shared with kernels/residual_norm.ts.
 */
export function normGradRowTextureWgsl(srcT: string, store: string): string {
  return `  let mean = meanIn[row];
  let rstd = rstdIn[row];
  var sg = vec4<f32>();
  var sgx = vec4<f32>();
  for (var c = 0u; c < c4; c++) {
    let g = ${streamTexel("dyT", "row * c4 + c")} * ${streamTexel("gammaT", "c")};
    sg += g;
    sgx += g * (${streamTexel(srcT, "row * c4 + c")} - mean) * rstd;
  }
  let mg = ${hsum("sg")} / f32(p.cols);
  let mgx = ${hsum("sgx")} / f32(p.cols);
  for (var c = 0u; c < c4; c++) {
    let xh = (${streamTexel(srcT, "row * c4 + c")} - mean) * rstd;
    let v = rstd * (${streamTexel("dyT", "row * c4 + c")} * ${
    streamTexel("gammaT", "c")
  } - mg - xh * mgx);
    ${store}
  }`;
}

/**
 * {@link layerNormForwardKernel} for CPU adapters (see above). Bindings: x,
 * gamma, beta as textures; y (vec4), mean, rstd. Dispatch over
 * `gridFor(rows, ROW_WG)` workgroups with {@link layerNormDispatch}'s params.
 */
export function layerNormForwardTextureKernel(): KernelSource {
  return {
    key: "layernorm:fwd:tex",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, eps: f32, _p: u32 }
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var gammaT: ${STREAM_TEXTURE};
@group(0) @binding(2) var betaT: ${STREAM_TEXTURE};
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> meanOut: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstdOut: array<f32>;
@group(0) @binding(6) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX} * ${ROW_WG}u + lid;
  if (row >= p.rows) { return; }
  let c4 = p.cols / 4u;
  var s = vec4<f32>();
  for (var c = 0u; c < c4; c++) { s += ${streamTexel("xT", "row * c4 + c")}; }
${normalizeRowTextureWgsl((c) => streamTexel("xT", `row * c4 + ${c}`))}
}`,
  };
}

/**
 * {@link layerNormBackwardKernel} for CPU adapters (see above). Bindings: x,
 * gamma, dy as textures; mean, rstd; dx (vec4).
 */
export function layerNormBackwardTextureKernel(): KernelSource {
  return {
    key: "layernorm:bwd:tex",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, eps: f32, _p: u32 }
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var gammaT: ${STREAM_TEXTURE};
@group(0) @binding(2) var dyT: ${STREAM_TEXTURE};
@group(0) @binding(3) var<storage, read> meanIn: array<f32>;
@group(0) @binding(4) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> p: P;
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX} * ${ROW_WG}u + lid;
  if (row >= p.rows) { return; }
  let c4 = p.cols / 4u;
${normGradRowTextureWgsl("xT", "dx[row * c4 + c] = v;")}
}`,
  };
}

/**
 * {@link layerNormParamGradKernel} for CPU adapters: one invocation per 4
 * columns, x and dy read through textures. Bindings: x, dy as textures; mean,
 * rstd; dgamma, dbeta (vec4). Dispatch over `gridFor(cols / 4, 64)` with
 * {@link layerNormParamGradDispatch}'s params.
 */
export function layerNormParamGradTextureKernel(): KernelSource {
  return {
    key: "layernorm:dparams:tex",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, eps: f32, outRow: u32 }
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var dyT: ${STREAM_TEXTURE};
@group(0) @binding(2) var<storage, read> meanIn: array<f32>;
@group(0) @binding(3) var<storage, read> rstdIn: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(${GRID_BUILTINS}) {
  let c = ${GROUP_INDEX} * 64u + lid;
  let c4 = p.cols / 4u;
  if (c >= c4) { return; }
  var sg = vec4<f32>();
  var sb = vec4<f32>();
  for (var r = 0u; r < p.rows; r++) {
    let g = ${streamTexel("dyT", "r * c4 + c")};
    sg += g * (${streamTexel("xT", "r * c4 + c")} - meanIn[r]) * rstdIn[r];
    sb += g;
  }
  dgamma[p.outRow * c4 + c] = sg;
  dbeta[p.outRow * c4 + c] = sb;
}`,
  };
}
