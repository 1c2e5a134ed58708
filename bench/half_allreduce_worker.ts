/**
 * Worker module of the 16-bit all-reduce sweep (bench/collectives_bench.ts):
 * for each value count, an f32 `allReduce` and a bf16 and an fp16
 * `allReduceHalf` (the mixed-precision wire: half the bytes, f32 additions on
 * the host, rounded back) of the same number of values, timed on every rank between barriers;
 * rank 0 returns (with `--print`, prints as JSON) the median times.
 * @module
 */

import { benchSizes, medianSeconds } from "../collectives/bench_worker.ts";
import type { WorkerContext } from "../collectives/launch.ts";
import { encodeHalfInto } from "../core/half.ts";
import { halfCodec } from "../models/parallel/half_codec.ts";

/** One value count: median seconds per call of each all-reduce. */
export interface HalfBenchRow {
  /** Values all-reduced. */
  values: number;
  /** f32 all-reduce (4 bytes per value). */
  f32Seconds: number;
  /** bf16 all-reduce (2 bytes per value). */
  bf16Seconds: number;
  /** fp16 all-reduce (2 bytes per value). */
  fp16Seconds: number;
}

/** Value counts measured (`args[0]`: a comma list), default 256 Ki, 1 Mi, 4 Mi, 16 Mi. */
export function halfBenchCounts(arg?: string): number[] {
  return arg && /^\d/.test(arg) ? benchSizes(arg) : [1 << 18, 1 << 20, 1 << 22, 1 << 24];
}

/** Runs the sweep; rank 0 returns the rows. */
export default async function main(ctx: WorkerContext): Promise<HalfBenchRow[]> {
  const g = ctx.group;
  const counts = halfBenchCounts(ctx.args.find((a) => /^\d/.test(a)));
  const max = Math.max(...counts);
  const f = g.alloc(max);
  const hw = g.alloc(Math.ceil(max / 2)); // the 16-bit values, in the arena as well
  const h = new Uint16Array(hw.buffer, hw.byteOffset, max);
  const start = Float32Array.from({ length: max }, (_, i) => ((i % 13) - 6) * 0.25);
  const startBits = { bf16: new Uint16Array(max), fp16: new Uint16Array(max) };
  encodeHalfInto(start, startBits.bf16, "bf16");
  encodeHalfInto(start, startBits.fp16, "fp16");
  const rows: HalfBenchRow[] = [];
  for (const values of counts) {
    const x = f.subarray(0, values), y = h.subarray(0, values);
    const iters = Math.max(5, Math.min(30, Math.round((1 << 24) / values)));
    x.set(start.subarray(0, values));
    const f32Seconds = await medianSeconds(
      g,
      () => g.allReduce(x, "sum"),
      () => x.set(start.subarray(0, values)),
      iters,
    );
    const half = async (format: "bf16" | "fp16") => {
      const codec = halfCodec(format), init = startBits[format].subarray(0, values);
      y.set(init);
      return await medianSeconds(
        g,
        () => g.allReduceHalf(y, codec, "sum"),
        () => y.set(init),
        iters,
      );
    };
    rows.push({
      values,
      f32Seconds,
      bf16Seconds: await half("bf16"),
      fp16Seconds: await half("fp16"),
    });
  }
  if (ctx.rank === 0 && ctx.args.includes("--print")) {
    console.log(`BENCH_ROWS ${JSON.stringify(rows)}`);
  }
  return rows;
}
