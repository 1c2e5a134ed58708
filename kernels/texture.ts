/**
 * Operands read through textures on CPU adapters. Mesa's llvmpipe loads a
 * storage-buffer element whose address differs between invocations one
 * invocation at a time, in a branching loop; a `textureLoad` of an
 * `rgba32float` texel is a straight-line gather. Measured here (Mesa 22.3):
 * ~11 ns per float from a buffer, ~1–2 from a texture. Kernels on CPU adapters
 * read their operands from stream textures: the buffer's vec4s in order, 1024
 * texels (4096 floats) to a row, so that vec4 `i` of the buffer is texel
 * `(i & 1023, i >> 10)` ({@link streamTexel}) and a texture form indexes its
 * operand exactly as the buffer form does. Any buffer fills one with two copies
 * (the whole rows, then the last partial row), whatever its shape.
 *
 * A stream texture is bound as a read-only storage texture
 * ({@link STREAM_TEXTURE}), not a sampled one. llvmpipe fetches an
 * `rgba32float` texel of a sampled texture by calling a generic function that
 * looks up the mip level's size, stride and offset for every lane; a storage
 * texture has one level and its loads are inline. Measured on one core at 512
 * bits (GPT-2's 256×2304×768 NT product, A and B from textures): that function
 * took 42% of the product's time, and the product ran at 53 instead of 41
 * GFLOP/s on Dawn, 44 instead of 36 on Deno's WebGPU.
 * @module
 */

/** Texels per row of a stream texture (a power of two). */
export const STREAM_ROW_TEXELS = 1024;

/** Bytes per row of a stream texture (rgba32float: 16 bytes a texel). */
export const STREAM_ROW_BYTES = 16 * STREAM_ROW_TEXELS;

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

/** Whether `vec4s` vec4s fit one stream texture ({@link streamTextureRows}). */
export function streamFits(vec4s: number, maxDimension: number | undefined): boolean {
  return streamTextureRows(vec4s, maxDimension) !== null;
}

/**
 * The WGSL type a kernel declares a stream texture binding with: a read-only
 * `rgba32float` storage texture (WGSL's `readonly_and_readwrite_storage_textures`).
 */
export const STREAM_TEXTURE = "texture_storage_2d<rgba32float, read>";

/** WGSL: vec4 `i` (a u32 expression: the operand's vec4 index) of the stream texture `t`. */
export const streamTexel = (t: string, i: string): string =>
  `textureLoad(${t}, vec2<u32>((${i}) & ${STREAM_ROW_TEXELS - 1}u, (${i}) >> ${
    Math.log2(STREAM_ROW_TEXELS)
  }u))`;

/** WGSL: the sum of the components of the vec4 expression `v`. */
export const hsum = (v: string): string => `(${v}.x + ${v}.y + ${v}.z + ${v}.w)`;
