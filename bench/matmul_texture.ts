/**
 * What reading B through a texture buys the software matmul (kernels/matmul.ts's
 * `MatmulTiling.texB`): the heuristic tiling with B from its storage buffer and
 * from a texture, interleaved, on the matmul shapes of the reference GPT step
 * (vocab 256, hidden 128, seq 64, batch 8) and at 1024³. Both give the same
 * bits; only the load path differs. `deno task bench:matmul-texture --help`
 * gives the usage and flags.
 * @module
 */

import type { Device } from "../core/device.ts";
import { BACKENDS } from "../core/gpu.ts";
import { matmulOptions } from "../core/ops/matmul.ts";
import { chooseTiling, matmulPlanWith, type MatmulShape } from "../kernels/matmul.ts";
import { DEBUG_FLAG, handled } from "../cli/errors.ts";
import { type FlagSpec, parseCommandLine } from "../cli/flags.ts";
import { loadAverage, mm, msPerPlan, randomOperands, softwareDevice } from "./products.ts";
import { median } from "./stats.ts";

/** Every flag of `deno task bench:matmul-texture`. */
export const MATMUL_TEXTURE_FLAGS: Record<string, FlagSpec> = {
  "backend": { type: "string", choices: BACKENDS, default: "dawn", help: "WebGPU implementation" },
  "rounds": {
    type: "int",
    min: 1,
    default: 5,
    help: "interleaved rounds per shape (the table gives medians)",
  },
  ...DEBUG_FLAG,
};

const USAGE = "Usage: deno task bench:matmul-texture [--backend dawn|deno] [--rounds 5]";

const SHAPES = [
  mm(512, 384, 128, "NT"), // q|k|v projection
  mm(512, 512, 128, "NT"), // MLP in
  mm(512, 128, 512, "NT"), // MLP out
  mm(512, 128, 512, "NN"), // its input gradient
  mm(512, 512, 128, "NN"),
  mm(128, 512, 512, "TN"), // weight gradients
  mm(512, 128, 512, "TN"),
  mm(1024, 1024, 1024, "NN"),
];

type Reads = "buffer" | "texB" | "texAB";

async function gflops(device: Device, shape: MatmulShape, reads: Reads): Promise<number> {
  const opts = matmulOptions(device);
  const t = { ...chooseTiling(shape, opts), texB: reads !== "buffer", texA: reads === "texAB" };
  const plan = matmulPlanWith(shape, opts, t);
  const bufs = randomOperands(device, shape);
  const ms = await msPerPlan(device, plan, bufs, 4);
  for (const b of bufs) device.pool.release(b.buffer);
  return (2 * shape.M * shape.N * shape.K) / ms / 1e6;
}

/** Runs `deno task bench:matmul-texture` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, MATMUL_TEXTURE_FLAGS, USAGE);
  if (typeof f === "number") return f;
  const rounds = f.rounds as number;
  const device = await softwareDevice(
    f.backend as string,
    "the texture path is for CPU adapters only",
  );
  if (!device) return 0;
  console.log(
    "\n| matmul | buffers, GFLOP/s | B from texture | A and B from textures | B tex / buffers | A,B tex / B tex |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const [name, shape] of SHAPES) {
    const buf: number[] = [], tex: number[] = [], both: number[] = [];
    for (let r = 0; r < rounds; r++) {
      buf.push(await gflops(device, shape, "buffer"));
      tex.push(await gflops(device, shape, "texB"));
      both.push(await gflops(device, shape, "texAB"));
    }
    const b = median(buf), t = median(tex), ab = median(both);
    console.log(
      `| ${name} | ${b.toFixed(1)} | ${t.toFixed(1)} | ${ab.toFixed(1)} | ${
        (t / b).toFixed(2)
      }× | ${(ab / t).toFixed(2)}× |`,
    );
  }
  console.log(
    `\n(medians of ${rounds} interleaved rounds; load average at the end ${loadAverage()})`,
  );
  await device.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
