/**
 * The SIMD width of Mesa's CPU adapters (llvmpipe under OpenGL, lavapipe under
 * Vulkan). llvmpipe runs one workgroup's invocations as the lanes of its
 * vectors: 256 bits (8 f32 lanes) by default, even on CPUs with AVX-512, whose
 * 512-bit vectors it uses when `LP_NATIVE_VECTOR_WIDTH=512`. On a Zen 5 core
 * (full-width AVX-512) that ran the software matmul 1.5× faster at 1024³
 * (64 → 96 GFLOP/s on two cores) and the reference training step 1.25×
 * faster, with 16-invocation workgroups to fill the lanes (README, Platform
 * notes). The kernels learn the width from the adapter's name.
 * @module
 */

/** Mesa's variable for llvmpipe's vector width in bits (read when the driver loads). */
export const LLVMPIPE_WIDTH_ENV = "LP_NATIVE_VECTOR_WIDTH";

/**
 * Asks llvmpipe for 512-bit vectors when the CPU has AVX-512 (`avx512f` in
 * `/proc/cpuinfo`) and the user has not set {@link LLVMPIPE_WIDTH_ENV}: call it
 * before the process's first adapter request, since Mesa reads the variable
 * once, when it loads. Does nothing elsewhere, or without the permissions to
 * read `/proc/cpuinfo` and set the variable. Returns the width then in force,
 * if known.
 */
export function preferWideSoftwareVectors(): number | undefined {
  try {
    const set = Deno.env.get(LLVMPIPE_WIDTH_ENV);
    if (set !== undefined && set !== "") return Number(set) || undefined;
    if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return undefined;
    const flags = /^flags\s*:(.*)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "";
    if (!flags.split(/\s+/).includes("avx512f")) return undefined;
    Deno.env.set(LLVMPIPE_WIDTH_ENV, "512");
    return 512;
  } catch {
    return undefined; // no --allow-env or --allow-read: Mesa's default
  }
}

/**
 * f32 lanes per SIMD step of a software adapter named `name` (its description
 * and device strings): llvmpipe says its width (`llvmpipe (LLVM 15.0.6, 512
 * bits)` from lavapipe, `llvmpipe-llvm-15-0-6-512-bits-` from Dawn's OpenGL
 * backend), so 16 at 512 bits; 8 for every other adapter.
 */
export function softwareLanesOf(name: string): number {
  const bits = /llvmpipe.*?(\d+)[ -]bits/i.exec(name)?.[1];
  return bits === "512" ? 16 : 8;
}
