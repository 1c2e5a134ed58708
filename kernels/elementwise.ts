/**
 * Elementwise kernels: one generator for maps over one or two inputs (the second
 * may broadcast by repeating, e.g. a bias over rows), plus an in-place
 * `y += alpha·x` and fills. The activation formulas live here too.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { STREAM_TEXTURE, streamTexel } from "./texture.ts";

const WG = 256;

/** The GeLU variants: the tanh approximation (GPT-2) and the exact erf form (BERT). */
export type GeluKind = "tanh" | "erf";

/** WGSL helpers for the GeLU variants (tanh approximation and exact erf). */
export const ACTIVATIONS_WGSL = /* wgsl */ `
fn tanh_safe(u: f32) -> f32 {
  let v = clamp(u, -15.0, 15.0);
  let e = exp(2.0 * v);
  return (e - 1.0) / (e + 1.0);
}
const GELU_K: f32 = 0.7978845608028654; // sqrt(2/pi)
const GELU_C: f32 = 0.044715;
fn gelu_tanh(x: f32) -> f32 {
  return 0.5 * x * (1.0 + tanh_safe(GELU_K * (x + GELU_C * x * x * x)));
}
fn gelu_tanh_grad(x: f32) -> f32 {
  let t = tanh_safe(GELU_K * (x + GELU_C * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * x * x);
}
// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)
fn erf_approx(x: f32) -> f32 {
  let s = sign(x);
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
    + 0.254829592) * t * exp(-a * a);
  return s * y;
}
fn gelu_erf(x: f32) -> f32 {
  return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}
fn gelu_erf_grad(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_approx(x * 0.7071067811865476))
    + x * 0.3989422804014327 * exp(-0.5 * x * x);
}
`;

/** Expressions over `x` (first input), `y` (second input), `alpha`, `beta`. */
export const MAP_EXPRESSIONS = {
  add: "x + y",
  sub: "x - y",
  mul: "x * y",
  axpby: "alpha * x + beta * y",
  scale: "alpha * x + beta",
  geluTanh: "gelu_tanh(x)",
  geluErf: "gelu_erf(x)",
  geluTanhGrad: "y * gelu_tanh_grad(x)",
  geluErfGrad: "y * gelu_erf_grad(x)",
  relu: "max(x, 0.0)",
  max: "max(x, y)",
  tanh: "tanh_safe(x)",
  tanhGrad: "y * (1.0 - tanh_safe(x) * tanh_safe(x))",
  square: "x * x",
} as const;

/** Names of the available maps. */
export type MapOp = keyof typeof MAP_EXPRESSIONS;

/** Number of inputs each map reads. */
export function mapArity(op: MapOp): 1 | 2 {
  return /\by\b/.test(MAP_EXPRESSIONS[op]) ? 2 : 1;
}

/**
 * `out[i] = op(x[i], y[i mod ny])`. Bindings: x, [y], out. `broadcast` selects
 * the modulo indexing (y repeats over the leading dimensions of x). `width` 4
 * handles four elements per invocation as vec4 loads and stores (n and ny then
 * count vec4s, so both must divide by 4), the expression applied to each
 * component: the same values, and ~1.5× faster on the software adapters, whose
 * per-invocation loads cost the same whatever their width. `textures` (vec4
 * only, CPU adapters) reads x and y from stream textures (kernels/texture.ts)
 * bound in their places: the same bits.
 */
export function mapKernel(
  op: MapOp,
  broadcast: boolean,
  width: 1 | 4 = 1,
  textures = false,
): KernelSource {
  if (textures && width !== 4) throw new Error(`map ${op}: the texture form is vec4 only`);
  const arity = mapArity(op);
  const t = width === 4 ? "vec4<f32>" : "f32";
  const inputDecl = (name: string, b: number) =>
    textures
      ? `@group(0) @binding(${b}) var ${name}T: ${STREAM_TEXTURE};`
      : `@group(0) @binding(${b}) var<storage, read> ${name}b: array<${t}>;`;
  const load = (name: string, i: string) =>
    textures ? streamTexel(`${name}T`, i) : `${name}b[${i}]`;
  const yDecl = arity === 2 ? inputDecl("y", 1) : "";
  const outBinding = arity === 2 ? 2 : 1;
  const yLoad = arity === 2 ? `let y = ${load("y", broadcast ? "i % p.ny" : "i")};` : "";
  const expr = MAP_EXPRESSIONS[op];
  const y = (c: string) => (arity === 2 ? `y.${c}` : "0.0");
  const body = width === 4
    ? `out[i] = vec4<f32>(${["x", "y", "z", "w"].map((c) => `f(x.${c}, ${y(c)}, alpha, beta)`)});`
    : `out[i] = ${expr};`;
  const helper = width === 4
    ? `fn f(x: f32, y: f32, alpha: f32, beta: f32) -> f32 { return ${expr}; }`
    : "";
  return {
    key: `map:${op}:${broadcast ? "b" : "s"}${width === 4 ? ":v4" : ""}${textures ? ":tex" : ""}`,
    code: /* wgsl */ `
${ACTIVATIONS_WGSL}
${helper}
struct P { n: u32, ny: u32, alpha: f32, beta: f32 }
${inputDecl("x", 0)}
${yDecl}
@group(0) @binding(${outBinding}) var<storage, read_write> out: array<${t}>;
@group(0) @binding(${outBinding + 1}) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  let x = ${load("x", "i")};
  ${yLoad}
  let alpha = p.alpha;
  let beta = p.beta;
  ${body}
}`,
  };
}

/** Uniforms and grid for {@link mapKernel} of `width` (n and ny in elements). */
export function mapDispatch(n: number, ny: number, alpha = 1, beta = 0, width: 1 | 4 = 1) {
  return {
    params: new Params(4).u32(n / width).u32(Math.max(ny / width, 1)).f32(alpha).f32(beta)
      .buffer,
    workgroups: gridFor(n / width, WG),
  };
}

/** In place `y[i] = beta·y[i] + alpha·x[i mod nx]`. Bindings: x, y. */
export function axpyKernel(): KernelSource {
  return {
    key: "axpy",
    code: /* wgsl */ `
struct P { n: u32, nx: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<storage, read> xb: array<f32>;
@group(0) @binding(1) var<storage, read_write> yb: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  yb[i] = p.beta * yb[i] + p.alpha * xb[i % p.nx];
}`,
  };
}

/**
 * {@link axpyKernel} for CPU adapters, four elements per invocation: x and the
 * old y read from stream textures (kernels/texture.ts), the new y written as
 * vec4; the same arithmetic per element, so the same bits. n and nx count vec4s
 * ({@link axpyParams} at width 4). Bindings: x's texture, y's texture, y.
 */
export function axpyTextureKernel(): KernelSource {
  return {
    key: "axpy:v4:tex",
    code: /* wgsl */ `
struct P { n: u32, nx: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var yT: ${STREAM_TEXTURE};
@group(0) @binding(2) var<storage, read_write> yb: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  yb[i] = p.beta * ${streamTexel("yT", "i")} + p.alpha * ${streamTexel("xT", "i % p.nx")};
}`,
  };
}

/** Uniforms and grid for {@link axpyKernel} (width 1) or {@link axpyTextureKernel} (4) over n elements of y. */
export function axpyParams(n: number, nx: number, alpha: number, beta: number, width: 1 | 4 = 1) {
  return {
    params: new Params(4).u32(n / width).u32(nx / width).f32(alpha).f32(beta).buffer,
    workgroups: gridFor(n / width, WG),
  };
}

/**
 * `out[i] = value` (value passed as raw bits, so it also fills i32 tensors);
 * width 4 writes a vec4 per invocation (`n` counts vec4s). Bindings: out.
 */
export function fillKernel(width: 1 | 4 = 1): KernelSource {
  const t = width === 4 ? "vec4<u32>" : "u32";
  return {
    key: width === 4 ? "fill:v4" : "fill",
    code: /* wgsl */ `
struct P { n: u32, bits: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<${t}>;
@group(0) @binding(1) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  out[i] = ${t}(p.bits);
}`,
  };
}
