/**
 * The SIMD width of Mesa's CPU adapters (llvmpipe under OpenGL, lavapipe under
 * Vulkan). llvmpipe runs one workgroup's invocations as the lanes of its
 * vectors: Mesa's default is 256 bits (8 f32 lanes) even on CPUs with AVX-512,
 * whose 512-bit vectors it uses when `LP_NATIVE_VECTOR_WIDTH=512` is set before
 * the driver loads. On a Zen 5 core (full-width AVX-512) that ran the software
 * matmul up to 1.5× faster at 1024³ with 16-invocation workgroups to fill the
 * lanes, and GPT-2 small's training step 1.15–1.45× faster (README, Platform
 * notes), so {@link preferWideVectors} sets it where the CPU has AVX-512 and
 * the user has not set it. The kernels learn the width from the adapter's name.
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

/** Where this process's llvmpipe vector width comes from (see {@link preferWideVectors}). */
export type VectorWidthSource =
  | "user" // LP_NATIVE_VECTOR_WIDTH was set before the project looked
  | "avx512" // the project set it to 512: the CPU has AVX-512
  | "mesa"; // left to Mesa: no AVX-512, or the CPU's features could not be read

/** True when a `/proc/cpuinfo` text lists the `avx512f` flag (AVX-512 Foundation). */
export function cpuinfoHasAvx512(cpuinfo: string): boolean {
  return /^flags\s*:.*\bavx512f\b/m.test(cpuinfo);
}

/**
 * Whether this CPU has AVX-512, or `undefined` when the process may not find
 * out. Deno lets a program read `/proc/cpuinfo` only with every permission
 * (`NotCapable: Requires all access`), so under narrower permission sets
 * (`deno task train`'s) `grep` prints its flags line, where running it is
 * allowed; neither is tried without its permission, so nothing prompts. Asked
 * once per process (each backend asks before its adapter): the answer cannot
 * change.
 */
export function cpuHasAvx512(): Promise<boolean | undefined> {
  return avx512Answer ??= readAvx512();
}

let avx512Answer: Promise<boolean | undefined> | undefined;

async function readAvx512(): Promise<boolean | undefined> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return false;
  const file = "/proc/cpuinfo";
  if (Deno.permissions.querySync({ name: "read", path: file }).state === "granted") {
    try {
      return cpuinfoHasAvx512(await Deno.readTextFile(file));
    } catch { /* NotCapable short of every permission: try grep */ }
  }
  if (Deno.permissions.querySync({ name: "run", command: "grep" }).state !== "granted") {
    return undefined;
  }
  try {
    const out = await new Deno.Command("grep", {
      args: ["-m", "1", "^flags", file],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.code === 0 ? cpuinfoHasAvx512(new TextDecoder().decode(out.stdout)) : undefined;
  } catch {
    return undefined; // no grep on this machine
  }
}

/**
 * Opts this process in to llvmpipe's 512-bit vectors where the CPU has AVX-512
 * and {@link LLVMPIPE_WIDTH_ENV} is unset (a value the user set, such as
 * `256` to keep Mesa's default, is left alone), and says where the width comes
 * from. Mesa reads the variable once, when the driver loads, so this must run
 * before the process's first adapter: the backends call it before they make
 * one. Run later it changes nothing the adapter does, and the kernels still
 * read the true width from the adapter's name. Child processes inherit it.
 */
export async function preferWideVectors(): Promise<VectorWidthSource> {
  const env = Deno.permissions.querySync({ name: "env", variable: LLVMPIPE_WIDTH_ENV });
  if (env.state !== "granted") return "mesa";
  if (Deno.env.get(LLVMPIPE_WIDTH_ENV)) return "user";
  if (!(await cpuHasAvx512())) return "mesa";
  Deno.env.set(LLVMPIPE_WIDTH_ENV, "512");
  return "avx512";
}
