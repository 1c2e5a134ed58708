/**
 * Operands read through textures on CPU adapters. Mesa's llvmpipe loads a
 * storage-buffer element whose address differs between invocations one
 * invocation at a time, in a branching loop; a `textureLoad` of an
 * `rgba32float` texel is a straight-line gather. Kernels that read one operand
 * many times (the matmul's A and B, attention's keys and values) read it
 * through a texture there: measured 1.3–3.9× faster per kernel. The texture
 * holds the buffer's vec4s row-major, `width` texels per row.
 * @module
 */

import { Params } from "./kernel.ts";
import { GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";

const PACK_WG = 64;

/** WGSL: the vec4 at column `c` (in texels) of row `r` of texture `t`. */
export const texel = (t: string, c: string, r: string): string =>
  `textureLoad(${t}, vec2<u32>(${c}, ${r}), 0)`;

/** WGSL: the sum of the components of the vec4 expression `v`. */
export const hsum = (v: string): string => `(${v}.x + ${v}.y + ${v}.z + ${v}.w)`;

/** Texels of a texture holding `rows` rows of `rowVec4s` vec4s, or null past `maxDimension`. */
export function textureSizeFor(
  rowVec4s: number,
  rows: number,
  maxDimension: number | undefined,
): { width: number; height: number } | null {
  if (!maxDimension || !Number.isInteger(rowVec4s) || rowVec4s < 1 || rows < 1) return null;
  return rowVec4s <= maxDimension && rows <= maxDimension
    ? { width: rowVec4s, height: rows }
    : null;
}

/**
 * Texels per row of a stream texture: a flat buffer of vec4s read through a
 * texture (element-wise kernels, the optimizer, whole-tensor reductions) is laid
 * out 1024 texels (4096 floats) to a row, so that kernels find vec4 `i` at
 * column `i & 1023`, row `i >> 10` ({@link streamTexel}).
 */
export const STREAM_ROW_TEXELS = 1024;

/**
 * Rows of the stream texture holding `vec4s` vec4s: the next power of two, so
 * that tensors of many sizes share a few scratch textures; null when that is
 * more than `maxDimension` rows (the kernel's buffer form is used instead).
 */
export function streamTextureRows(vec4s: number, maxDimension: number | undefined): number | null {
  if (!maxDimension || !Number.isInteger(vec4s) || vec4s < 1) return null;
  const rows = 2 ** Math.ceil(Math.log2(Math.ceil(vec4s / STREAM_ROW_TEXELS)));
  return rows <= maxDimension ? rows : null;
}

/** WGSL: vec4 `i` (a u32 expression) of the stream texture `t`. */
export const streamTexel = (t: string, i: string): string =>
  texel(t, `(${i}) & ${STREAM_ROW_TEXELS - 1}u`, `(${i}) >> ${Math.log2(STREAM_ROW_TEXELS)}u`);

/**
 * The dispatch copying a buffer of vec4s (row-major, `width` per row) into a
 * `width × height` `rgba32float` texture, for widths WebGPU's buffer-to-texture
 * copy refuses (rows not a multiple of 256 bytes). Bindings: the buffer, the
 * texture as a write-only storage texture.
 */
export function texturePackPlan(
  width: number,
  height: number,
): {
  kernel: { key: string; code: string };
  params: ArrayBuffer;
  workgroups: [number, number, number];
} {
  const n = width * height;
  return {
    kernel: {
      key: "texture/pack",
      code: `struct P { width: u32, n: u32 }
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var T: texture_storage_2d<rgba32float, write>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(${PACK_WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${PACK_WG}u + lid;
  if (i >= p.n) { return; }
  textureStore(T, vec2<u32>(i % p.width, i / p.width), src[i]);
}`,
    },
    params: new Params(2).u32(width).u32(n).buffer,
    workgroups: gridFor(n, PACK_WG),
  };
}
