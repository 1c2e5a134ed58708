/**
 * What the adapter's shader compiler reaches with arithmetic alone
 * (kernels/fma_ceiling.ts: independent vec4 `fma` chains, no loads): the
 * ceiling of every kernel on that device (at least: a loop whose bound is a
 * constant runs ~7% faster still on llvmpipe). The matmul's GFLOP/s as a share
 * of it is what its loads, spills and execution masks cost. `bench:torch`
 * prints it beside the 1024³ matmul.
 * `deno task bench:fma-ceiling --help` gives the usage and flags.
 *
 * Run it under `LP_NUM_THREADS=1 taskset -c 0` for one core's ceiling, the
 * "GPU" of a pinned rank.
 * @module
 */

import { Device } from "../core/device.ts";
import { BACKENDS, parseBackend } from "../core/gpu.ts";
import { DEBUG_FLAG, handled } from "../cli/errors.ts";
import { type FlagSpec, parseCommandLine, UsageError } from "../cli/flags.ts";
import { fmaCeilingFlops, fmaCeilingKernel, fmaCeilingParams } from "../kernels/fma_ceiling.ts";
import { median } from "./stats.ts";

/** Chains per invocation by default: 8 vec4s fill a 512-bit llvmpipe's 32 vector registers. */
export const DEFAULT_CHAINS = 8;

/** The most chains a run may ask for (a shader of many more fails to compile). */
const MAX_CHAINS = 256;

/**
 * GFLOP/s of the probe on `device`: the median of 5 timed dispatches of at
 * least ~50 ms each, after one untimed (compiling) dispatch.
 */
export async function fmaCeiling(device: Device, chains = DEFAULT_CHAINS): Promise<number> {
  const shape = { lanes: device.isSoftware ? device.softwareLanes : 64, chains };
  const kernel = fmaCeilingKernel(shape);
  const workgroups = device.isSoftware ? 256 : 65535;
  const size = workgroups * shape.lanes * 16;
  const buffer = device.pool.acquire(size);
  const time = async (iterations: number) => {
    const t0 = performance.now();
    device.dispatch(kernel, [{ buffer, size }], fmaCeilingParams(iterations), [workgroups]);
    await device.sync();
    return performance.now() - t0;
  };
  try {
    let iterations = 256;
    await time(iterations);
    // grow the work until one dispatch takes ~50 ms (within Mesa's loop cap)
    while (iterations < 32768 && (await time(iterations)) < 50) iterations *= 2;
    const ms: number[] = [];
    for (let i = 0; i < 5; i++) ms.push(await time(iterations));
    return fmaCeilingFlops(shape, workgroups, iterations) / median(ms) / 1e6;
  } finally {
    device.pool.release(buffer);
  }
}

/** Every flag of `deno task bench:fma-ceiling`. */
export const FMA_CEILING_FLAGS: Record<string, FlagSpec> = {
  "backend": { type: "string", choices: BACKENDS, default: "dawn", help: "WebGPU implementation" },
  "chains": {
    type: "int",
    min: 1,
    default: DEFAULT_CHAINS,
    help: "vec4 fma chains per invocation (at most 256)",
  },
  ...DEBUG_FLAG,
};

const USAGE = "Usage: deno task bench:fma-ceiling [--backend dawn|deno] [--chains 8]";

/** Runs `deno task bench:fma-ceiling` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, FMA_CEILING_FLAGS, USAGE);
  if (typeof f === "number") return f;
  // Past a few hundred chains the shader outgrows WGSL compilers' expression depth (naga's is 512),
  // and a failed compile timed nothing: it printed millions of GFLOP/s.
  if ((f.chains as number) > MAX_CHAINS) {
    throw new UsageError(`--chains ${f.chains}: at most ${MAX_CHAINS} (default ${DEFAULT_CHAINS})`);
  }
  const device = await Device.create({ backend: parseBackend(f.backend as string) });
  const s = device.summary();
  const gflops = await fmaCeiling(device, f.chains as number);
  console.log(
    `${s.backend}: ${s.name}${device.isSoftware ? ` (${device.softwareLanes} lanes)` : ""}`,
  );
  console.log(`fma chains, no loads: ${gflops.toFixed(1)} GFLOP/s`);
  await device.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
