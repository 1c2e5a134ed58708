/**
 * Reductions: sum, sum of squares and max of a whole tensor (two passes, fixed
 * order, deterministic), and column sums of a matrix (bias gradients).
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { grid2d, GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { STREAM_ROW_TEXELS, STREAM_TEXTURE, streamTexel } from "./texture.ts";

/**
 * Threads per reduction workgroup. Few threads folding long runs each: llvmpipe
 * runs a workgroup's invocations as coroutines switched at every barrier, so
 * the tree's cost grows with the workgroup (measured over 437,760 floats on
 * this project's machine: 256 threads folding 4,096 floats per workgroup took
 * 3.6 ms, 64 threads folding 16,384 took 0.8).
 */
export const REDUCE_WG = 64;
/** Elements each reduction workgroup folds in the first pass (four stream-texture rows). */
export const REDUCE_CHUNK = 16 * STREAM_ROW_TEXELS;

/** What {@link reduceKernel} folds. */
export type TensorReduceOp = "sum" | "sumsq" | "max";

/**
 * Each op's identity. Max starts from −∞, made at run time (`p.ninf` holds its
 * bits; WGSL refuses an infinite constant), so a tensor of −∞ or of floats
 * below −3e38 has its own largest element as its max.
 */
const INIT = { sum: "0.0", sumsq: "0.0", max: "bitcast<f32>(p.ninf)" };
/** Max carries a NaN through, as the sums do (WGSL's `max` may drop it). */
const COMBINE = {
  sum: "a + b",
  sumsq: "a + b",
  max: "select(max(a, b), a + b, isNan(a) || isNan(b))",
};
/** The bits of −∞ as an f32, the uniform `ninf` every reduction pass gets. */
const NEG_INFINITY_BITS = 0xff800000;

/**
 * WGSL opening a reduction pass: uniforms, the input (binding 0, declared by
 * `x`), out, the workgroup's scratch, `combine`, and `main` up to `w`, the
 * workgroup's index.
 */
function passHead(op: TensorReduceOp, x: string): string {
  return `struct P { n: u32, chunk: u32, outOffset: u32, ninf: u32, mul: f32 }
@group(0) @binding(0) ${x};
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
var<workgroup> red: array<f32, ${REDUCE_WG}>;
fn isNan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn combine(a: f32, b: f32) -> f32 { return ${COMBINE[op]}; }
@compute @workgroup_size(${REDUCE_WG})
fn main(${GRID_BUILTINS}) {
  let w = ${GROUP_INDEX};`;
}

/** WGSL closing a pass: each invocation's `value` folded in a fixed tree, written at `out[outOffset + w]`. */
function passTail(value: string): string {
  return `  red[lid] = ${value};
  workgroupBarrier();
  for (var s = ${REDUCE_WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = combine(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) { out[p.outOffset + w] = red[0]; }`;
}

/**
 * One pass: workgroup `w` folds `x[w·chunk .. (w+1)·chunk)` into `out[w]`
 * (for `sumsq` with `square` set, each element multiplied by `p.mul`, then
 * squared: a loss scale divided out before the squares, which could pass f32's
 * range where the elements do not). Run once over the data
 * (`square` = op is sumsq) and again over the partials until one value is left;
 * the last pass may write at `out[outOffset]`. Bindings: x, out.
 */
export function reduceKernel(op: TensorReduceOp, square: boolean): KernelSource {
  const load = square
    ? "let v = x[i] * p.mul; acc = combine(acc, v * v);"
    : "acc = combine(acc, x[i]);";
  return {
    key: `reduce:${op}:${square ? "sq" : "id"}`,
    code: /* wgsl */ `
${passHead(op, "var<storage, read> x: array<f32>")}
  let start = w * p.chunk;
  let end = min(start + p.chunk, p.n);
  var acc = ${INIT[op]};
  for (var i = start + lid; i < end; i += ${REDUCE_WG}u) { ${load} }
${passTail("acc")}
}`,
  };
}

/**
 * {@link reduceKernel}'s first pass for CPU adapters: x (`n` elements, a
 * multiple of 4) read through a stream texture (kernels/texture.ts), whose rows
 * of 1024 texels are the workgroups' chunks. Each invocation folds its vec4s
 * (texels `lid`, `lid + 256`, … of row `w`) component by component, then the
 * four components, then the workgroup's tree as in the buffer form: a fixed
 * order, not the buffer form's. Same bindings and dispatch as
 * {@link reduceKernel}, with x's stream texture for x.
 */
export function reduceTextureKernel(op: TensorReduceOp, square: boolean): KernelSource {
  const perInvocation = REDUCE_CHUNK / 4 / REDUCE_WG;
  return {
    key: `reduce:${op}:${square ? "sq" : "id"}:tex`,
    code: /* wgsl */ `
${passHead(op, `var xT: ${STREAM_TEXTURE}`)}
  let n4 = p.n / 4u;
  var acc = vec4<f32>(${INIT[op]});
  for (var k = 0u; k < ${perInvocation}u; k++) {
    let i = w * ${REDUCE_CHUNK / 4}u + k * ${REDUCE_WG}u + lid;
    if (i < n4) {
      let x = ${streamTexel("xT", "i")}${square ? " * p.mul" : ""};
      let v = ${square ? "x * x" : "x"};
      acc = vec4<f32>(combine(acc.x, v.x), combine(acc.y, v.y), combine(acc.z, v.z), combine(acc.w, v.w));
    }
  }
${passTail("combine(combine(acc.x, acc.y), combine(acc.z, acc.w))")}
}`,
  };
}

/**
 * Uniforms and grid for one {@link reduceKernel} pass over `n` elements
 * (`mul`: what a squaring pass multiplies each element by first; default 1).
 */
export function reduceDispatch(n: number, outOffset = 0, mul = 1) {
  const groups = Math.max(1, Math.ceil(n / REDUCE_CHUNK));
  return {
    groups,
    params: new Params(5).u32(n).u32(REDUCE_CHUNK).u32(outOffset).u32(NEG_INFINITY_BITS)
      .f32(mul).buffer,
    workgroups: grid2d(groups),
  };
}

/**
 * `out[outRow, c] = Σ_r x[r, c]` over the `rows` rows bound (summed in order).
 * Callers bind at most {@link COLUMN_BLOCK_ROWS} rows at a time (see
 * `SOFTWARE_LOOP_LIMIT`) and fold the per-block rows again. Bindings: x, out.
 */
export function columnSumKernel(): KernelSource {
  return {
    key: "colsum",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, outRow: u32, _b: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(${GRID_BUILTINS}) {
  let c = ${GROUP_INDEX} * 64u + lid;
  if (c >= p.cols) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.rows; r++) { s += x[r * p.cols + c]; }
  out[p.outRow * p.cols + c] = s;
}`,
  };
}

/**
 * {@link columnSumKernel} for CPU adapters: one invocation per 4 columns, x
 * read through a stream texture (kernels/texture.ts), out written as vec4. The same sums in the same order.
 * Dispatch over `gridFor(cols / 4, 64)` with {@link columnSumDispatch}'s params.
 */
export function columnSumTextureKernel(): KernelSource {
  return {
    key: "colsum:tex",
    code: /* wgsl */ `
struct P { rows: u32, cols: u32, outRow: u32, _b: u32 }
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(${GRID_BUILTINS}) {
  let c = ${GROUP_INDEX} * 64u + lid;
  let c4 = p.cols / 4u;
  if (c >= c4) { return; }
  var s = vec4<f32>();
  for (var r = 0u; r < p.rows; r++) { s += ${streamTexel("xT", "r * c4 + c")}; }
  out[p.outRow * c4 + c] = s;
}`,
  };
}

/**
 * Rows a column-walking kernel (column sums, layer-norm parameter gradients) is
 * given at once: within the software adapters' loop cap, and a multiple of 64
 * so that every block starts at an aligned byte offset.
 */
export const COLUMN_BLOCK_ROWS = 32768;

/** Uniforms and grid for {@link columnSumKernel}. */
export function columnSumDispatch(rows: number, cols: number, outRow = 0) {
  return {
    params: new Params(4).u32(rows).u32(cols).u32(outRow).u32(0).buffer,
    workgroups: gridFor(cols, 64),
  };
}
