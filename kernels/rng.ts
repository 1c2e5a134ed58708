/**
 * Counter-based random numbers (Philox-4x32-10) in WGSL. Every random value is a
 * pure function of (seed, offset, element index), so a dropout mask can be
 * regenerated in the backward pass instead of stored, and shards of a weight can
 * draw exactly the values of the matching slice of the full weight.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { STREAM_TEXTURE, streamTexel } from "./texture.ts";

const WG = 256;

/** WGSL Philox-4x32-10 with 32×32→64-bit products built from 16-bit halves. */
export const PHILOX_WGSL = /* wgsl */ `
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu; let a1 = a >> 16u;
  let b0 = b & 0xffffu; let b1 = b >> 16u;
  let p00 = a0 * b0; let p01 = a0 * b1; let p10 = a1 * b0; let p11 = a1 * b1;
  let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
  return vec2<u32>(hi, a * b);
}
fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    let m0 = mulhilo(0xD2511F53u, c.x);
    let m1 = mulhilo(0xCD9E8D57u, c.z);
    c = vec4<u32>(m1.x ^ c.y ^ k.x, m1.y, m0.x ^ c.w ^ k.y, m0.y);
    k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}
// uniform in [0, 1) with 24 random bits
fn u01(x: u32) -> f32 { return f32(x >> 8u) * 5.9604644775390625e-8; }
`;

/** Which distribution {@link randomKernel} draws. */
export type Distribution = "uniform" | "normal";

/**
 * Fills `out[i]` (i < n) with a draw for global element index `start + i`:
 * uniform in [lo, hi) or normal(mean=lo, std=hi). Bindings: out.
 * Counter = (start + i, offset, 0, 0), key = (seedLo, seedHi).
 */
export function randomKernel(dist: Distribution): KernelSource {
  const body = dist === "uniform"
    ? "out[i] = p.a + (p.b - p.a) * u01(r.x);"
    : `let u1 = f32((r.x >> 8u) + 1u) * 5.9604644775390625e-8;
  let u2 = u01(r.y);
  out[i] = p.a + p.b * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);`;
  return {
    key: `random:${dist}`,
    code: /* wgsl */ `
${PHILOX_WGSL}
struct P { n: u32, start: u32, seedLo: u32, seedHi: u32, offset: u32, a: f32, b: f32, _p: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  let r = philox(vec4<u32>(p.start + i, p.offset, 0u, 0u), vec2<u32>(p.seedLo, p.seedHi));
  ${body}
}`,
  };
}

/** Uniforms and grid for {@link randomKernel}. */
export function randomDispatch(
  n: number,
  seed: number,
  offset: number,
  a: number,
  b: number,
  start = 0,
) {
  return {
    params: new Params(8).u32(n).u32(start).u32(seed >>> 0).u32(Math.floor(seed / 2 ** 32))
      .u32(offset).f32(a).f32(b).u32(0).buffer,
    workgroups: gridFor(n, WG),
  };
}

/**
 * WGSL `keep(i)`: the dropout decision of flat element `i`,
 * `u01(philox((i, offset, 0, 0), seed).x) ≥ prob`: every dropout's mask, the
 * fused kernels' too. Needs Philox ({@link PHILOX_WGSL}) and uniforms `p` with
 * `offset`, `seedLo`, `seedHi` and `prob`.
 */
export const KEEP_WGSL = /* wgsl */ `
fn keep(i: u32) -> bool {
  let r = philox(vec4<u32>(i, p.offset, 0u, 0u), vec2<u32>(p.seedLo, p.seedHi));
  return u01(r.x) >= p.prob;
}`;

/**
 * WGSL: dropout of the vec4 expression `v` whose first element has flat index
 * `i` (a u32 expression), element by element with {@link KEEP_WGSL}'s mask and
 * the scale `p.scale`: what the scalar kernels compute for those four elements.
 */
export const dropVec4 = (v: string, i: string): string =>
  `vec4<f32>(${
    ["x", "y", "z", "w"].map((c, k) =>
      `select(0.0, ${v}.${c} * p.scale, keep(${i}${k ? ` + ${k}u` : ""}))`
    ).join(", ")
  })`;

/** The uniforms of both dropout kernels, as {@link dropoutDispatch} writes them. */
const DROPOUT_PARAMS_WGSL =
  "struct P { n: u32, seedLo: u32, seedHi: u32, offset: u32, prob: f32, scale: f32, _a: u32, _b: u32 }";

/**
 * Dropout: `out[i] = x[i] · keep(i) / (1 − p)`, where keep(i) is
 * `u01(philox((i, offset, 0, 0), seed).x) ≥ p`. The same kernel applies the same
 * mask to the upstream gradient in the backward pass. Bindings: x, out.
 */
export function dropoutKernel(): KernelSource {
  return {
    key: "dropout",
    code: /* wgsl */ `
${PHILOX_WGSL}
${DROPOUT_PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> xb: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${KEEP_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  out[i] = select(0.0, xb[i] * p.scale, keep(i));
}`,
  };
}

/**
 * {@link dropoutKernel} for CPU adapters, four elements per invocation: x read
 * from a stream texture (kernels/texture.ts), out written as vec4, each
 * element's keep decision drawn from its own flat index as in the scalar form
 * (the same mask, the same bits). n must divide by 4. Bindings: x's texture,
 * out. Dispatch: {@link dropoutDispatch} at width 4.
 */
export function dropoutTextureKernel(): KernelSource {
  return {
    key: "dropout:v4:tex",
    code: /* wgsl */ `
${PHILOX_WGSL}
${DROPOUT_PARAMS_WGSL}
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: P;
${KEEP_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n / 4u) { return; }
  let x = ${streamTexel("xT", "i")};
  out[i] = ${dropVec4("x", "4u * i")};
}`,
  };
}

/** Uniforms and grid for {@link dropoutKernel} (width 1) or {@link dropoutTextureKernel} (4). */
export function dropoutDispatch(
  n: number,
  prob: number,
  seed: number,
  offset: number,
  width: 1 | 4 = 1,
) {
  return {
    params: new Params(8).u32(n).u32(seed >>> 0).u32(Math.floor(seed / 2 ** 32)).u32(offset)
      .f32(prob).f32(1 / (1 - prob)).u32(0).u32(0).buffer,
    workgroups: gridFor(n / width, WG),
  };
}
