/**
 * 16-bit storage on any adapter: fp16 and bf16 values packed two per `u32`,
 * converted to and from f32 with integer operations only, so the rounding is
 * the same on every adapter (round to nearest even, fp16 subnormals, overflow to
 * infinity, NaN kept NaN) and needs no `shader-f16`. WGSL's `pack2x16float`
 * would do for fp16 where values are finite, but the spec leaves its result
 * indeterminate outside fp16's range, which is exactly where a loss scaler must
 * see an infinity. Arithmetic stays in f32 registers.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { STREAM_TEXTURE, streamTexel } from "./texture.ts";

/** The 16-bit formats. */
export type HalfFormat = "fp16" | "bf16";

const WG = 256;

/**
 * WGSL functions `to_half(x: f32) -> u32` (the 16-bit bits in the low half) and
 * `from_half(h: u32) -> f32` for `format`.
 */
export function halfFunctions(format: HalfFormat): string {
  if (format === "bf16") {
    return /* wgsl */ `
fn to_half(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x7fffffu) != 0u) { return (b >> 16u) | 0x40u; }
  return ((b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u) & 0xffffu;
}
fn from_half(h: u32) -> f32 { return bitcast<f32>((h & 0xffffu) << 16u); }
`;
  }
  return /* wgsl */ `
fn to_half(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  let sign = (b >> 16u) & 0x8000u;
  let ex = (b >> 23u) & 0xffu;
  var mant = b & 0x7fffffu;
  if (ex == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u | (mant >> 13u), mant != 0u); }
  let e = i32(ex) - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant = mant | 0x800000u;
    let shift = u32(14 - e);
    var s = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (s & 1u) == 1u)) { s = s + 1u; }
    return sign | s;
  }
  var h = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) { h = h + 1u; }
  return sign | h;
}
fn from_half(hb: u32) -> f32 {
  let h = hb & 0xffffu;
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-8;
    return select(v, -v, sign != 0u);
  }
  if (e == 31u) { return bitcast<f32>(sign | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
`;
}

/**
 * `out[i] = half(x[2i]) | half(x[2i+1]) << 16` for `n` f32 values (an odd `n`
 * pads the last word's high half with +0). Bindings: x (f32), out (u32 words).
 */
export function packHalfKernel(format: HalfFormat): KernelSource {
  return {
    key: `pack_half_${format}`,
    code: /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@group(0) @binding(2) var<uniform> p: P;
${halfFunctions(format)}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let w = ${GROUP_INDEX} * ${WG}u + lid;
  let i = 2u * w;
  if (i >= p.n) { return; }
  var hi = 0u;
  if (i + 1u < p.n) { hi = to_half(x[i + 1u]); }
  out[w] = to_half(x[i]) | (hi << 16u);
}`,
  };
}

/** `out[i] = f32(half i of words)` for `n` values. Bindings: words (u32), out (f32). */
export function unpackHalfKernel(format: HalfFormat): KernelSource {
  return {
    key: `unpack_half_${format}`,
    code: /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${halfFunctions(format)}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  out[i] = from_half(words[i / 2u] >> (16u * (i % 2u)));
}`,
  };
}

/** `x[i] = f32(half(x[i]))` in place: what 16-bit storage keeps of x. Bindings: x (f32). */
export function roundHalfKernel(format: HalfFormat): KernelSource {
  return {
    key: `round_half_${format}`,
    code: /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> p: P;
${halfFunctions(format)}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  x[i] = from_half(to_half(x[i]));
}`,
  };
}

/**
 * WGSL: the four values the packed words `lo` and `hi` hold, as a `vec4<f32>`
 * (low half first, `lo`'s then `hi`'s), with {@link halfFunctions}'s `from_half`.
 */
export function halvesOf(lo: string, hi: string): string {
  return `vec4<f32>(from_half(${lo}), from_half(${lo} >> 16u), from_half(${hi}), from_half(${hi} >> 16u))`;
}

/**
 * Values each invocation of the stream-texture kernels below converts (two
 * texels of f32, or one texel of packed words): their counts must divide by it.
 */
export const HALF_TEXTURE_VALUES = 8;

/**
 * A conversion kernel for CPU adapters: its source read through the stream
 * texture `src` (kernels/texture.ts; llvmpipe loads a storage buffer one
 * invocation at a time), its result written to `array<elem>` `dst`, `body` run
 * by each invocation `g` below `p.n` (`uniforms`: the fields of `p`, four u32s).
 */
function textureConversion(
  key: string,
  format: HalfFormat,
  src: string,
  dst: string,
  elem: string,
  body: string,
  uniforms = "n: u32, _a: u32, _b: u32, _c: u32",
): KernelSource {
  return {
    key,
    code: /* wgsl */ `
struct P { ${uniforms} }
@group(0) @binding(0) var ${src}: ${STREAM_TEXTURE};
@group(0) @binding(1) var<storage, read_write> ${dst}: array<${elem}>;
@group(0) @binding(2) var<uniform> p: P;
${halfFunctions(format)}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let g = ${GROUP_INDEX} * ${WG}u + lid;
  if (g >= p.n) { return; }
${body}
}`,
  };
}

/**
 * {@link packHalfKernel} for CPU adapters: x read through a stream texture and
 * 8 values packed into a vec4 of words per invocation, the same bits.
 * Bindings: x's stream texture, out (u32 words as vec4s); `p.n` counts groups of 8.
 */
export function packHalfTextureKernel(format: HalfFormat): KernelSource {
  const pair = (v: string, a: string, b: string) =>
    `to_half(${v}.${a}) | (to_half(${v}.${b}) << 16u)`;
  return textureConversion(
    `pack_half_${format}:tex`,
    format,
    "xt",
    "out",
    "vec4<u32>",
    `  let a = ${streamTexel("xt", "2u * g")};
  let b = ${streamTexel("xt", "2u * g + 1u")};
  out[g] = vec4<u32>(${pair("a", "x", "y")}, ${pair("a", "z", "w")}, ${pair("b", "x", "y")}, ${
      pair("b", "z", "w")
    });`,
  );
}

/**
 * {@link unpackHalfKernel} for CPU adapters: the words read through a stream
 * texture (their bits as they are, taken back with `bitcast`), 8 values
 * unpacked per invocation into two vec4 stores, the same bits. Bindings: the
 * words' stream texture, out (f32 as vec4s); `p.n` counts groups of 8.
 */
export function unpackHalfTextureKernel(format: HalfFormat): KernelSource {
  return textureConversion(
    `unpack_half_${format}:tex`,
    format,
    "wt",
    "out",
    "vec4<f32>",
    `  let t = bitcast<vec4<u32>>(${streamTexel("wt", "g")});
  out[2u * g] = ${halvesOf("t.x", "t.y")};
  out[2u * g + 1u] = ${halvesOf("t.z", "t.w")};`,
  );
}

/**
 * {@link roundHalfKernel} for CPU adapters: x read through a stream texture (a
 * copy made before the dispatch) and written back as vec4s, the same bits.
 * Bindings: x's stream texture, x (f32 as vec4s); `p.n` counts vec4s.
 */
export function roundHalfTextureKernel(format: HalfFormat): KernelSource {
  const r = (c: string) => `from_half(to_half(v.${c}))`;
  return textureConversion(
    `round_half_${format}:tex`,
    format,
    "xt",
    "x",
    "vec4<f32>",
    `  let v = ${streamTexel("xt", "g")};
  x[g] = vec4<f32>(${r("x")}, ${r("y")}, ${r("z")}, ${r("w")});`,
  );
}

/** Uniforms and grid of the stream-texture kernels above over `items` invocations. */
export function halfTextureDispatch(items: number) {
  return {
    params: new Params(4).u32(items).u32(0).u32(0).u32(0).buffer,
    workgroups: gridFor(items, WG),
  };
}

/** Uniforms and grid of the kernels above over `n` values (`words`: one item per u32 word). */
export function halfDispatch(n: number, words = false) {
  return {
    params: new Params(4).u32(n).u32(0).u32(0).u32(0).buffer,
    workgroups: gridFor(words ? Math.ceil(n / 2) : n, WG),
  };
}

/**
 * The fp32 sum over `ranks` packed 16-bit vectors laid end to end (each `words`
 * u32 words long, as an all-gather returns them): `out[i] = Σ_r half(r, i)`,
 * added in rank order so every rank computes the same bits. Bindings: parts
 * (u32), out (f32).
 */
export function sumPackedKernel(format: HalfFormat): KernelSource {
  return {
    key: `sum_packed_${format}`,
    code: /* wgsl */ `
struct P { n: u32, words: u32, ranks: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> parts: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
${halfFunctions(format)}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.ranks; r++) {
    s = s + from_half(parts[r * p.words + i / 2u] >> (16u * (i % 2u)));
  }
  out[i] = s;
}`,
  };
}

/**
 * {@link sumPackedKernel} for CPU adapters: the parts read through a stream
 * texture (their words as they are), 8 values an invocation, added in rank
 * order from 0 as there, the same bits. Each part's words must fill whole
 * texels (a count of values that divides by 8). Bindings: the parts' stream
 * texture, out (f32 as vec4s); `p.n` counts groups of 8 (the texels of one part).
 */
export function sumPackedTextureKernel(format: HalfFormat): KernelSource {
  return textureConversion(
    `sum_packed_${format}:tex`,
    format,
    "pt",
    "out",
    "vec4<f32>",
    `  var s0 = vec4<f32>(0.0);
  var s1 = vec4<f32>(0.0);
  for (var r = 0u; r < p.ranks; r++) {
    let t = bitcast<vec4<u32>>(${streamTexel("pt", "r * p.n + g")});
    s0 = s0 + ${halvesOf("t.x", "t.y")};
    s1 = s1 + ${halvesOf("t.z", "t.w")};
  }
  out[2u * g] = s0;
  out[2u * g + 1u] = s1;`,
    "n: u32, _a: u32, ranks: u32, _c: u32",
  );
}

/** Uniforms and grid of {@link sumPackedTextureKernel} over `n` values (a multiple of 8) from `ranks` parts. */
export function sumPackedTextureDispatch(n: number, ranks: number) {
  const groups = n / HALF_TEXTURE_VALUES;
  return {
    params: new Params(4).u32(groups).u32(0).u32(ranks).u32(0).buffer,
    workgroups: gridFor(groups, WG),
  };
}

/** Uniforms and grid of {@link sumPackedKernel}. */
export function sumPackedDispatch(n: number, ranks: number) {
  return {
    params: new Params(4).u32(n).u32(Math.max(1, Math.ceil(n / 2))).u32(ranks).u32(0).buffer,
    workgroups: gridFor(n, WG),
  };
}
