/**
 * The SIMD width of Mesa's CPU adapters (llvmpipe under OpenGL, lavapipe under
 * Vulkan). llvmpipe runs one workgroup's invocations as the lanes of its
 * vectors: Mesa's default is 256 bits (8 f32 lanes) even on CPUs with AVX-512,
 * whose 512-bit vectors it uses when `LP_NATIVE_VECTOR_WIDTH=512` is set before
 * the driver loads. On a Zen 5 core (full-width AVX-512) that ran the software
 * matmul up to 1.5× faster at 1024³ with 16-invocation workgroups to fill the
 * lanes, and GPT-2 small's training step 1.15–1.45× faster (README, Platform
 * notes), so {@link preferWideVectors} sets it where the CPU has AVX-512 and
 * the user has not set it. On an Intel Xeon the wide vectors pay only for large
 * products: a small model's step ran ~1.2× faster at 256 bits (see
 * {@link WIDE_VECTORS_MIN_HIDDEN_INTEL}), so there a caller that says which
 * model it runs keeps Mesa's 256. The kernels learn the width from the
 * adapter's name.
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
  | "small-model" // the project set it to 256: an Intel CPU and a small model
  | "mesa"; // left to Mesa: no AVX-512, or the CPU's features could not be read

/**
 * The smallest hidden size for which an Intel CPU with AVX-512 gets llvmpipe's
 * 512-bit vectors (below it, Mesa's 256). Measured on an Intel Xeon (2 vCPUs,
 * AVX-512 with AMX; forty-first session, docs/performance.md): the reference
 * GPT (hidden 128) trained at 9,386 and 9,746 tokens/s at 256 bits against
 * 8,259 and 8,614 at 512 (`deno task bench:torch`, alternated), its tuned
 * 512×512×128 product 59.0 against 52.1 GFLOP/s; GPT-2's tuned products
 * (hidden 768) ran 1.19–1.24× and 1024³ 1.15× faster at 512; the weak-scaling
 * models (hidden 256 on one core, 352 split over two) stepped 1% and 4% faster
 * at 256 bits (forty-second session, ten alternated `bench:scaling` runs),
 * while a 4-layer GPT of hidden 512 on both cores stepped ~5% faster at 512
 * bits (814–854 against 861–904 ms, `deno task profile`, four pairs). So the
 * threshold lies between 352 and 512. A Zen 5 core ran
 * the reference model 1.17× faster at 512 bits (tenth session), so AMD CPUs
 * keep 512 at every size.
 */
export const WIDE_VECTORS_MIN_HIDDEN_INTEL = 512;

/** What the process is about to run, for {@link preferWideVectors}. */
export interface WorkloadHint {
  /** The model's hidden size (not divided by tensor parallelism). */
  hiddenSize: number;
}

/** The CPU facts the width depends on; each `undefined` where it could not be read. */
export interface CpuFacts {
  /** Whether the CPU has AVX-512 Foundation. */
  avx512: boolean | undefined;
  /** `/proc/cpuinfo`'s `vendor_id` (`GenuineIntel`, `AuthenticAMD`, …). */
  vendor: string | undefined;
}

/** The `vendor_id` a `/proc/cpuinfo` text names (its first), or undefined. */
export function cpuinfoVendor(cpuinfo: string): string | undefined {
  return /^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1];
}

/**
 * The vector width the project asks llvmpipe for: 512 on a CPU with AVX-512,
 * except on an Intel CPU running a model of hidden size under
 * {@link WIDE_VECTORS_MIN_HIDDEN_INTEL}, where 256 is faster; null (Mesa's
 * default, 256) without AVX-512 or where it could not be read. Without a
 * workload the large products decide: 512.
 */
export function chooseVectorWidth(cpu: CpuFacts, workload?: WorkloadHint): 256 | 512 | null {
  if (!cpu.avx512) return null;
  if (
    workload && cpu.vendor === "GenuineIntel" &&
    workload.hiddenSize < WIDE_VECTORS_MIN_HIDDEN_INTEL
  ) return 256;
  return 512;
}

/** True when a `/proc/cpuinfo` text lists the `avx512f` flag (AVX-512 Foundation). */
export function cpuinfoHasAvx512(cpuinfo: string): boolean {
  return /^flags\s*:.*\bavx512f\b/m.test(cpuinfo);
}

/**
 * Whether this CPU has AVX-512, or `undefined` when the process may not find
 * out (see {@link cpuFacts}).
 */
export async function cpuHasAvx512(): Promise<boolean | undefined> {
  return (await cpuFacts()).avx512;
}

/**
 * This CPU's AVX-512 and vendor. Deno lets a program read `/proc/cpuinfo` only
 * with every permission (`NotCapable: Requires all access`), so under narrower
 * permission sets (`deno task train`'s) `grep` prints its vendor and flags
 * lines, where running it is allowed; neither is tried without its permission,
 * so nothing prompts. Asked once per process (each backend asks before its
 * adapter): the answer cannot change.
 */
export function cpuFacts(): Promise<CpuFacts> {
  return cpuAnswer ??= readCpuFacts();
}

let cpuAnswer: Promise<CpuFacts> | undefined;

async function readCpuFacts(): Promise<CpuFacts> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return { avx512: false, vendor: undefined };
  }
  const file = "/proc/cpuinfo";
  const facts = (text: string): CpuFacts => ({
    avx512: cpuinfoHasAvx512(text),
    vendor: cpuinfoVendor(text),
  });
  if (Deno.permissions.querySync({ name: "read", path: file }).state === "granted") {
    try {
      return facts(await Deno.readTextFile(file));
    } catch { /* NotCapable short of every permission: try grep */ }
  }
  const unknown = { avx512: undefined, vendor: undefined };
  if (Deno.permissions.querySync({ name: "run", command: "grep" }).state !== "granted") {
    return unknown;
  }
  try {
    // the first CPU's vendor_id line, then its flags line
    const out = await new Deno.Command("grep", {
      args: ["-m", "2", "-E", "^(vendor_id|flags)", file],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.code === 0 ? facts(new TextDecoder().decode(out.stdout)) : unknown;
  } catch {
    return unknown; // no grep on this machine
  }
}

/**
 * Sets {@link LLVMPIPE_WIDTH_ENV} to {@link chooseVectorWidth}'s width for this
 * CPU and `workload` where it is unset (a value the user set, such as `256` to
 * keep Mesa's default, is left alone), and says where the width comes from.
 * Mesa reads the variable once, when the driver loads, so this must run before
 * the process's first adapter: the backends call it, without a workload,
 * before they make one, and a command that knows its model (`train`,
 * `profile`, `eval`, `generate`, `fill-mask`, `bench:scaling`) calls it with
 * one first. The first call decides (it sets the variable, which later calls
 * then keep). Run later it changes nothing the adapter does, and the kernels
 * still read the true width from the adapter's name. Child processes (rank
 * processes) inherit it.
 */
export async function preferWideVectors(workload?: WorkloadHint): Promise<VectorWidthSource> {
  const env = Deno.permissions.querySync({ name: "env", variable: LLVMPIPE_WIDTH_ENV });
  if (env.state !== "granted") return "mesa";
  if (Deno.env.get(LLVMPIPE_WIDTH_ENV)) return decided ?? "user";
  const width = chooseVectorWidth(await cpuFacts(), workload);
  if (width === null) return "mesa";
  Deno.env.set(LLVMPIPE_WIDTH_ENV, String(width));
  return decided = width === 512 ? "avx512" : "small-model";
}

/**
 * llvmpipe's vector width as this process's adapters get it, for a report: the
 * value of {@link LLVMPIPE_WIDTH_ENV} (e.g. `512`), or `Mesa's default, 256`
 * where it is unset.
 */
export function llvmpipeWidthLabel(): string {
  return Deno.env.get(LLVMPIPE_WIDTH_ENV) ?? "Mesa's default, 256";
}

/** The source of the width this process set itself, once it has. */
let decided: VectorWidthSource | undefined;

/**
 * Whether this process narrowed llvmpipe's width for a small model itself
 * ({@link preferWideVectors}): its child processes that run other work should
 * then not inherit {@link LLVMPIPE_WIDTH_ENV}.
 */
export function widthSetForSmallModel(): boolean {
  return decided === "small-model";
}
