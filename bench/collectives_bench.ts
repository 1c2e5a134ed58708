/**
 * Collectives benchmark, nccl-tests style. The bench "all-reduce sweep" measures, in one
 * iteration: raw single-thread memcpy bandwidth, raw one-stream TCP loopback throughput,
 * then all-reduce (sum, f32) from 1 KiB to 64 MiB over shared memory (Workers
 * of this process; the default direct algorithm, and the ring beside it) and
 * over TCP (a ring of separate OS processes on 127.0.0.1; `tcp` keeps payloads
 * in the sockets, `tcp+shm` sends them through shared mappings as processes
 * on one host do by default),
 * for 2 and 4 ranks, and prints a table with algbw = bytes/time and
 * busbw = algbw·2(n−1)/n, plus the two target ratios. The "reduce16MiB" group times
 * the host reduction kernels (WebAssembly SIMD against a plain JS loop). Nothing runs at
 * load: `--filter` picks what runs.
 *
 *   deno bench -A bench/collectives_bench.ts
 *   deno bench -A bench/collectives_bench.ts --filter "16 MiB"   # the host kernels only
 *   deno bench -A bench/collectives_bench.ts --filter "16-bit"   # bf16 against f32 all-reduce
 *
 * Set COLLECTIVES_BENCH_QUICK=1 to skip the 4-rank and small-size rows.
 * @module
 */

import { resolveDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import { type BenchRow, benchSizes } from "../collectives/bench_worker.ts";
import { Arena } from "../collectives/arena.ts";
import type { ShmAlgorithm } from "../collectives/group.ts";
import { freeLocalPort } from "../collectives/tcp.ts";
import { grantedPermissionFlags } from "../collectives/procs.ts";
import { halfBenchCounts, type HalfBenchRow } from "./half_allreduce_worker.ts";

const MiB = 1 << 20;
const deno = Deno.execPath();
const root = new URL("../", import.meta.url);
const workerUrl = new URL("collectives/bench_worker.ts", root);
const halfWorkerUrl = new URL("bench/half_allreduce_worker.ts", root);
const quick = Deno.env.get("COLLECTIVES_BENCH_QUICK") === "1";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** Single-thread memcpy of 64 MiB (TypedArray.set), GB/s. */
function memcpyGBs(): number {
  const a = new Uint8Array(64 * MiB).fill(1), b = new Uint8Array(64 * MiB).fill(2);
  const ts: number[] = [];
  for (let i = 0; i < 12; i++) {
    const t0 = performance.now();
    b.set(a);
    ts.push(performance.now() - t0);
  }
  return 64 * MiB / (median(ts.slice(2)) / 1000) / 1e9;
}

/** One TCP stream to a sink process on loopback: 3 × 256 MiB in 4 MiB writes, median GB/s. */
async function tcpGBs(): Promise<number> {
  const rates: number[] = [];
  const chunk = new Uint8Array(4 * MiB).fill(7);
  const total = 256 * MiB;
  for (let run = 0; run < 3; run++) {
    const port = freeLocalPort();
    const child = new Deno.Command(deno, {
      args: [
        "run",
        ...grantedPermissionFlags(),
        new URL("collectives/bench_worker.ts", root).href,
        "--tcp-sink",
        String(port),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.getReader();
    await reader.read(); // READY
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.setNoDelay(true);
    const head = new Uint8Array(8);
    new DataView(head.buffer).setBigUint64(0, BigInt(total));
    await c.write(head);
    const t0 = performance.now();
    for (let sent = 0; sent < total;) {
      let off = 0;
      while (off < chunk.length) off += await c.write(chunk.subarray(off));
      sent += chunk.length;
    }
    const ack = new Uint8Array(1);
    await c.read(ack);
    rates.push(total / ((performance.now() - t0) / 1000) / 1e9);
    c.close();
    reader.releaseLock();
    await child.stdout.cancel();
    await child.status;
  }
  return median(rates);
}

async function shmSweep<Row = BenchRow>(
  n: number,
  sizes: number[],
  shmAlgorithm: ShmAlgorithm = "direct",
  worker: URL = workerUrl,
): Promise<Row[]> {
  const cfg = resolveDistConfig({ "nproc-per-node": String(n), "dist-timeout": "60s" }, {});
  const res = await runWorkers(cfg, worker, [sizes.join(",")], { gpus: [], shmAlgorithm });
  if (!res.ok) throw new Error(`shm sweep failed: ${JSON.stringify(res.ranks)}`);
  return res.ranks[0].result as Row[];
}

/**
 * The sweep over `n` processes on loopback; `hostShm` "on" lets their links
 * carry payloads through shared memory (collectives/mapping.ts), "off" (the
 * plain TCP rows) keeps everything in the sockets.
 */
async function tcpSweep<Row = BenchRow>(
  n: number,
  sizes: number[],
  worker: URL = workerUrl,
  hostShm: "on" | "off" = "off",
): Promise<Row[]> {
  const port = freeLocalPort();
  const procs = Array.from({ length: n }, (_, i) =>
    new Deno.Command(deno, {
      args: [
        "run",
        ...grantedPermissionFlags(),
        new URL("cli/launch.ts", root).href,
        "--nnodes",
        String(n),
        "--node-rank",
        String(i),
        "--nproc-per-node",
        "1",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        String(port),
        "--dist-timeout",
        "60s",
        "--host-shm",
        hostShm,
        worker.href,
        sizes.join(","),
        "--print",
      ],
      stdout: "piped",
      stderr: "inherit",
      env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    }).output());
  const outs = await Promise.all(procs);
  const text = new TextDecoder().decode(outs[0].stdout);
  const line = text.split("\n").find((l) => l.startsWith("BENCH_ROWS "));
  if (!line || outs.some((o) => !o.success)) throw new Error(`tcp sweep failed:\n${text}`);
  return JSON.parse(line.slice("BENCH_ROWS ".length));
}

function fmtSize(b: number): string {
  return b >= MiB ? `${b / MiB} MiB` : `${b / 1024} KiB`;
}

/** Prints the table; returns busbw at the largest size. */
function table(name: string, n: number, rows: BenchRow[]): number {
  let last = 0;
  for (const r of rows) {
    const alg = r.bytes / r.seconds / 1e9;
    const bus = alg * 2 * (n - 1) / n;
    last = bus;
    console.log(
      `${name.padEnd(8)} ${String(n).padStart(5)} ${fmtSize(r.bytes).padStart(9)} ` +
        `${(r.seconds * 1e6).toFixed(1).padStart(11)} ${alg.toFixed(2).padStart(11)} ` +
        `${bus.toFixed(2).padStart(11)}`,
    );
  }
  return last;
}

async function sweep(): Promise<void> {
  const sizes = quick ? [MiB, 16 * MiB, 64 * MiB] : benchSizes();
  const memcpy = memcpyGBs();
  const tcp = await tcpGBs();
  console.log(`\n# collectives all-reduce (sum, f32, in place on arena buffers; median time)`);
  console.log(`# raw single-thread memcpy: ${memcpy.toFixed(2)} GB/s`);
  console.log(`# raw one-stream TCP loopback: ${tcp.toFixed(2)} GB/s`);
  console.log(`# transport   ranks      size    time(us)  algbw(GB/s) busbw(GB/s)`);
  const shm2 = table("shm", 2, await shmSweep(2, sizes));
  if (!quick) table("shm", 4, await shmSweep(4, sizes));
  table("shm-ring", 2, await shmSweep(2, sizes, "ring"));
  if (!quick) table("shm-ring", 4, await shmSweep(4, sizes, "ring"));
  const tcp2 = table("tcp", 2, await tcpSweep(2, sizes));
  if (!quick) table("tcp", 4, await tcpSweep(4, sizes));
  table("tcp+shm", 2, await tcpSweep(2, sizes, workerUrl, "on"));
  if (!quick) table("tcp+shm", 4, await tcpSweep(4, sizes, workerUrl, "on"));
  const r1 = shm2 / memcpy, r2 = tcp2 / tcp;
  console.log(
    `# target shm 2 ranks 64 MiB busbw / memcpy = ${(r1 * 100).toFixed(0)}% (>= 50%: ${
      r1 >= 0.5 ? "met" : "NOT met"
    })`,
  );
  console.log(
    `# target tcp 2 procs 64 MiB busbw / TCP loopback = ${(r2 * 100).toFixed(0)}% (>= 50%: ${
      r2 >= 0.5 ? "met" : "NOT met"
    })\n`,
  );
}

Deno.bench({
  name: "all-reduce sweep (shm and tcp, 2 and 4 ranks; prints the table)",
  n: 1,
  warmup: 0,
  fn: sweep,
});

/**
 * The mixed-precision wire: f32 `allReduce` against bf16 and fp16 `allReduceHalf` of the
 * same value counts, on shared memory (direct and ring) and TCP (separate
 * processes on loopback), 2 and 4 ranks (`COLLECTIVES_BENCH_QUICK=1`: 2 only).
 */
async function halfSweep(): Promise<void> {
  const counts = quick ? [1 << 20, 1 << 24] : halfBenchCounts();
  console.log(
    `\n# 16-bit all-reduce (bf16, fp16; sum) against f32 of the same values; median time`,
  );
  console.log(`# transport   ranks    values    f32(ms)   bf16(ms)   fp16(ms)  bf16/f32  fp16/f32`);
  const print = (name: string, n: number, rows: HalfBenchRow[]) => {
    for (const r of rows) {
      console.log(
        `${name.padEnd(8)} ${String(n).padStart(8)} ${String(r.values).padStart(9)} ` +
          `${(r.f32Seconds * 1e3).toFixed(2).padStart(10)} ${
            (r.bf16Seconds * 1e3).toFixed(2).padStart(10)
          } ${(r.fp16Seconds * 1e3).toFixed(2).padStart(10)} ${
            (r.bf16Seconds / r.f32Seconds).toFixed(2).padStart(9)
          } ${(r.fp16Seconds / r.f32Seconds).toFixed(2).padStart(9)}`,
      );
    }
  };
  for (const n of quick ? [2] : [2, 4]) {
    print("shm", n, await shmSweep<HalfBenchRow>(n, counts, "direct", halfWorkerUrl));
    print("shm-ring", n, await shmSweep<HalfBenchRow>(n, counts, "ring", halfWorkerUrl));
    print("tcp", n, await tcpSweep<HalfBenchRow>(n, counts, halfWorkerUrl));
    print("tcp+shm", n, await tcpSweep<HalfBenchRow>(n, counts, halfWorkerUrl, "on"));
  }
}

Deno.bench({
  name: "16-bit all-reduce sweep (bf16 and fp16 against f32; shm and tcp; prints the table)",
  n: 1,
  warmup: 0,
  fn: halfSweep,
});

/** Two 16 MiB f32 arena buffers (1s and 2s), made on first use. */
let host: { arena: Arena; a: number; b: number; fa: Float32Array; fb: Float32Array } | null = null;
const N = 16 * MiB / 4;
function buffers(): NonNullable<typeof host> {
  if (host) return host;
  const arena = Arena.create();
  const a = arena.alloc(N * 4), b = arena.alloc(N * 4);
  const fa = arena.f32(a, N), fb = arena.f32(b, N);
  fa.fill(1);
  fb.fill(2);
  return host = { arena, a, b, fa, fb };
}

Deno.bench("memcpy 16 MiB (TypedArray.set)", { group: "reduce16MiB", baseline: true }, () => {
  const { fa, fb } = buffers();
  fa.set(fb);
});
Deno.bench("wasm simd add 16 MiB in place", { group: "reduce16MiB" }, () => {
  const { arena, a, b } = buffers();
  arena.reducer.add(a, a, b, N, 1);
});
Deno.bench("js a[i] += b[i] 16 MiB", { group: "reduce16MiB" }, () => {
  const { fa, fb } = buffers();
  for (let i = 0; i < N; i++) fa[i] += fb[i];
});
