/**
 * What writing C costs the software matmul (kernels/matmul.ts's CPU-adapter
 * form). Mesa's llvmpipe stores a storage-buffer element whose address differs
 * between invocations one invocation at a time, in a loop over the lanes with
 * a bounds check per component, so every float of C costs the same whatever K
 * is: a product with a short K (the reference GPT's K = 128) spends a large
 * share of its time storing. This times each product as the project runs it
 * (its heuristic tiling, A and B through stream textures) and again with every
 * store of C behind a condition that never holds (`if (v.x == 12345.5)`: the
 * accumulators are still computed, nothing is written), interleaved, and
 * reports the difference: the store's share of the product and its cost per
 * float of C. The second kernel computes no result; it exists to be timed.
 * `deno task bench:matmul-store --help` gives the usage and flags.
 * @module
 */

import { BACKENDS } from "../core/gpu.ts";
import { matmulOptions } from "../core/ops/matmul.ts";
import { chooseTiling, type DispatchPlan, matmulPlanWith, tilingKey } from "../kernels/matmul.ts";
import { DEBUG_FLAG, handled } from "../cli/errors.ts";
import { type FlagSpec, parseCommandLine } from "../cli/flags.ts";
import { loadAverage, mm, msPerPlan, randomOperands, softwareDevice } from "./products.ts";
import { median } from "./stats.ts";

/** Every flag of `deno task bench:matmul-store`. */
export const MATMUL_STORE_FLAGS: Record<string, FlagSpec> = {
  "backend": { type: "string", choices: BACKENDS, default: "dawn", help: "WebGPU implementation" },
  "rounds": {
    type: "int",
    min: 1,
    default: 5,
    help: "interleaved rounds per product (the table gives medians)",
  },
  ...DEBUG_FLAG,
};

const USAGE = "Usage: deno task bench:matmul-store [--backend dawn|deno] [--rounds 5]";

/** The reference GPT's products (tokens 512, hidden 128), a long-K one, and 1024³. */
const PRODUCTS = [
  mm(512, 384, 128, "NT"), // q|k|v projection
  mm(512, 512, 128, "NT"), // MLP in
  mm(512, 512, 128, "NN"), // the MLP out's input gradient
  mm(512, 128, 512, "NT"), // MLP out
  mm(128, 512, 512, "TN"), // a weight gradient
  mm(1024, 1024, 128, "NT"),
  mm(1024, 1024, 1024, "NN"),
];

/** The plan's kernel with each store of C behind a condition that never holds. */
function withoutStores(plan: DispatchPlan): DispatchPlan {
  const code = plan.kernel.code;
  const stores = code.match(/C\[o\] = v;/g)?.length ?? 0;
  if (stores === 0) throw new Error(`${plan.kernel.key}: no vec4 store of C to take out`);
  return {
    ...plan,
    kernel: {
      key: `${plan.kernel.key}/stores-never-taken`,
      code: code.replaceAll("C[o] = v;", "if (v.x == 12345.5) { C[o] = v; }"),
    },
  };
}

/** Runs `deno task bench:matmul-store` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, MATMUL_STORE_FLAGS, USAGE);
  if (typeof f === "number") return f;
  const rounds = f.rounds as number;
  const device = await softwareDevice(
    f.backend as string,
    "this measures llvmpipe's store path only",
  );
  if (!device) return 0;
  console.log(
    "\n| product | tiling | GFLOP/s | stores never taken | store's share | ns per float of C |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: |");
  const opts = matmulOptions(device);
  for (const [name, shape] of PRODUCTS) {
    const tiling = chooseTiling(shape, opts);
    const plan = matmulPlanWith(shape, opts, tiling);
    const bare = withoutStores(plan);
    const bufs = randomOperands(device, shape);
    const full: number[] = [], none: number[] = [];
    for (let r = 0; r < rounds; r++) {
      full.push(await msPerPlan(device, plan, bufs, 3));
      none.push(await msPerPlan(device, bare, bufs, 3));
    }
    for (const b of bufs) device.pool.release(b.buffer);
    const ms = median(full), msBare = median(none);
    const flop = 2 * shape.M * shape.N * shape.K;
    const share = (ms - msBare) / ms;
    const nsPerFloat = ((ms - msBare) * 1e6) / (shape.M * shape.N);
    console.log(
      `| ${name} | ${tilingKey(tiling)} | ${(flop / ms / 1e6).toFixed(1)} | ${
        (flop / msBare / 1e6).toFixed(1)
      } | ${(100 * share).toFixed(0)}% | ${nsPerFloat.toFixed(2)} |`,
    );
  }
  console.log(
    `\n(medians of ${rounds} interleaved rounds, operand copies included in both; ` +
      `load average at the end ${loadAverage()})`,
  );
  await device.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
