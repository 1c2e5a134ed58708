/**
 * The SIMD width of Mesa's CPU adapters (llvmpipe under OpenGL, lavapipe under
 * Vulkan). llvmpipe runs one workgroup's invocations as the lanes of its
 * vectors: 256 bits (8 f32 lanes) by default, even on CPUs with AVX-512, whose
 * 512-bit vectors it uses when the user sets `LP_NATIVE_VECTOR_WIDTH=512`. On
 * a Zen 5 core (full-width AVX-512) that ran the software matmul up to 1.5×
 * faster at 1024³ with 16-invocation workgroups to fill the lanes (README,
 * Platform notes). The project does not set it itself: Deno lets a program read
 * `/proc/cpuinfo` (to find AVX-512) only with every permission, and Mesa keeps
 * 256 as its default. The kernels learn the width from the adapter's name.
 * @module
 */

import { SOFTWARE_LANES } from "../kernels/kernel.ts";

/**
 * Mesa's variable for llvmpipe's vector width in bits, read once when the
 * driver loads: `512` on a CPU with AVX-512 opts in to the wider vectors.
 */
export const LLVMPIPE_WIDTH_ENV = "LP_NATIVE_VECTOR_WIDTH";

/**
 * f32 lanes per SIMD step of a software adapter named `name` (its description
 * and device strings): llvmpipe says its width (`llvmpipe (LLVM 15.0.6, 512
 * bits)` from lavapipe, `llvmpipe-llvm-15-0-6-512-bits-` from Dawn's OpenGL
 * backend), so 16 at 512 bits; 8 for every other adapter.
 */
export function softwareLanesOf(name: string): number {
  const bits = /llvmpipe.*?(\d+)[ -]bits/i.exec(name)?.[1];
  return bits === "512" ? 16 : SOFTWARE_LANES;
}
