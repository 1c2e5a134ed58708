/**
 * Worker module for the collectives benchmark (nccl-tests style): all-reduce
 * (sum) of 1 KiB .. 64 MiB on arena buffers, timed on every rank between
 * barriers; rank 0 returns (and, with `--print`, prints as JSON) the median
 * time per size. Also runnable as a script: `--tcp-sink PORT` accepts one
 * connection, reads the announced byte count and acknowledges (raw TCP
 * loopback throughput).
 * @module
 */

import type { WorkerContext } from "./launch.ts";

/** One measured size. */
export interface BenchRow {
  /** Bytes all-reduced. */
  bytes: number;
  /** Median seconds per call. */
  seconds: number;
  /** Iterations timed. */
  iters: number;
}

/** The sizes measured: 1 KiB to 64 MiB by factors of 4 (or `args[0]` as a comma list of bytes). */
export function benchSizes(arg?: string): number[] {
  if (arg && /^\d/.test(arg)) return arg.split(",").map(Number);
  const out: number[] = [];
  for (let b = 1024; b <= 64 << 20; b *= 4) out.push(b);
  return out;
}

/**
 * Median seconds of `call` over `iters` timed calls (after 2 untimed ones),
 * each started after a barrier of `group`; `reset` runs after every call (to
 * keep the values finite and the work the same).
 */
export async function medianSeconds(
  group: { barrier(): Promise<void> },
  call: () => Promise<void>,
  reset: () => void,
  iters: number,
): Promise<number> {
  const times: number[] = [];
  for (let it = 0; it < iters + 2; it++) {
    await group.barrier();
    const t0 = performance.now();
    await call();
    const t = performance.now() - t0;
    if (it >= 2) times.push(t);
    reset();
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1] / 1000;
}

/** Runs the sweep; rank 0 returns the rows. */
export default async function main(ctx: WorkerContext): Promise<BenchRow[]> {
  const g = ctx.group;
  const sizes = benchSizes(ctx.args.find((a) => /^\d/.test(a)));
  const rows: BenchRow[] = [];
  const buf = g.alloc((64 << 20) / 4);
  for (let i = 0; i < buf.length; i++) buf[i] = (i % 13) * 0.5;
  for (const bytes of sizes) {
    const x = buf.subarray(0, bytes / 4);
    const iters = Math.max(5, Math.min(50, Math.round((64 << 20) / bytes)));
    const seconds = await medianSeconds(g, () => g.allReduce(x, "sum"), () => x.fill(0.5), iters);
    rows.push({ bytes, seconds, iters });
  }
  if (ctx.rank === 0 && ctx.args.includes("--print")) {
    console.log(`BENCH_ROWS ${JSON.stringify(rows)}`);
  }
  return rows;
}

async function sink(port: number): Promise<void> {
  const l = Deno.listen({ hostname: "127.0.0.1", port });
  console.log("READY");
  const c = await l.accept();
  c.setNoDelay(true);
  const head = new Uint8Array(8);
  let got = 0;
  while (got < 8) got += (await c.read(head.subarray(got))) ?? 0;
  const total = Number(new DataView(head.buffer).getBigUint64(0));
  const buf = new Uint8Array(4 << 20);
  let n = 0;
  while (n < total) {
    const r = await c.read(buf);
    if (r === null) break;
    n += r;
  }
  await c.write(new Uint8Array([1]));
  c.close();
  l.close();
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--tcp-sink");
  if (i >= 0) await sink(Number(Deno.args[i + 1]));
}
