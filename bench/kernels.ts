/**
 * Kernel benchmark rows, registered by `bench/kernels_bench.ts` (the project's kernels) and
 * `bench/tfjs/kernels.ts` (TensorFlow.js's WebGPU backend beside them, on the same backend and
 * adapter, in the same run: `deno task bench:tfjs`, the only task that installs TF.js).
 *
 *     WEBGPU_BACKEND=deno|dawn deno bench -A bench/kernels_bench.ts
 *
 * Nothing runs at load: the device is made, and the inputs drawn, by the first bench that runs.
 * Each measured iteration records `count` operations and then waits once (a
 * sync costs ~11 ms on Deno's WebGPU), so throughput is `work·count / seconds`
 * with nothing subtracted. Besides `deno bench`'s own report, a table of
 * medians (first, compiling call dropped) is printed when the run ends.
 *
 * To add a row, push a {@link Row} to `ROWS`: a name, the work of one operation
 * (flops or bytes), what it computes ({@link KernelOp}) and, per implementation, an async setup
 * returning a {@link Runner}.
 * @module
 */

import { Device } from "../core/device.ts";
import { dispatchRows } from "../core/ops/rows.ts";
import { layerNormDispatch, layerNormForwardKernel } from "../kernels/layernorm.ts";
import { type MaskKind, softmaxDispatch, softmaxForwardKernel } from "../kernels/softmax.ts";
import { BACKEND_ENV, type BackendName, parseBackend } from "../core/gpu.ts";
import { matmulPlan, type MatmulShape } from "../kernels/matmul.ts";
import { matmulOptions, recordPlan } from "../core/ops/matmul.ts";
import { median } from "./stats.ts";

/** Records operations of one row for one implementation. */
export interface Runner {
  /** Records (does not wait for) `count` operations. */
  record(count: number): void;
  /** Waits until everything recorded has run. */
  sync(): Promise<void>;
}

/** The implementations compared side by side. */
export type Impl = "project" | "tfjs";

/** What a row computes, with its inputs (drawn on first call, then the same for every impl). */
export type KernelOp =
  | {
    kind: "matmul";
    shape: MatmulShape;
    inputs: () => { a: Float32Array; b: Float32Array; bias: Float32Array };
  }
  | { kind: "softmax"; rows: number; cols: number; mask: MaskKind; inputs: () => Float32Array }
  | {
    kind: "layernorm";
    rows: number;
    cols: number;
    inputs: () => { x: Float32Array; gamma: Float32Array; beta: Float32Array };
  };

/** One line of the table. */
export interface Row {
  /** Shown in the table and as the bench group. */
  name: string;
  /** Unit of `work`·count/seconds. */
  unit: "GFLOP/s" | "GB/s";
  /** Work of one operation: flops for GFLOP/s, bytes moved for GB/s. */
  work: number;
  /** What it computes, for implementations added from other files. */
  op: KernelOp;
  /** Setups per implementation; run once, lazily, on first use. */
  impls: Partial<Record<Impl, () => Promise<Runner>>>;
}

/** The backend of this run (env `WEBGPU_BACKEND`). */
export const backend: BackendName = parseBackend(Deno.env.get(BACKEND_ENV));
let devicePromise: Promise<Device> | null = null;
let adapterName = "(not started)";
/** The project's device, made by the first bench that needs it. */
export function benchDevice(): Promise<Device> {
  return devicePromise ??= Device.create({ backend }).then((d) => {
    adapterName = d.summary().name;
    return d;
  });
}

function random(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

/** `make()` on first call, the same value after. */
function once<T>(make: () => T): () => T {
  let v: T | undefined;
  return () => (v ??= make());
}

function gpuArray(device: Device, data: Float32Array): { buffer: GPUBuffer; size: number } {
  const buffer = device.pool.acquire(data.byteLength);
  device.upload(buffer, data);
  return { buffer, size: data.byteLength };
}

/** A row timing `C = A·B` (+bias) of `shape`. */
export function matmulRow(name: string, shape: MatmulShape): Row {
  const { batch, M, N, K } = shape;
  const inputs = once(() => ({
    a: random((shape.batchA ? batch : 1) * M * K),
    b: random((shape.batchB ? batch : 1) * K * N),
    bias: random(N),
  }));
  return {
    name,
    unit: "GFLOP/s",
    work: 2 * batch * M * N * K,
    op: { kind: "matmul", shape, inputs },
    impls: {
      project: async () => {
        const device = await benchDevice();
        const plan = matmulPlan(shape, matmulOptions(device));
        const { a, b, bias } = inputs();
        const bindings = [gpuArray(device, a), gpuArray(device, b)];
        if (shape.bias) bindings.push(gpuArray(device, bias));
        bindings.push(gpuArray(device, new Float32Array(batch * M * N)));
        return {
          record(count) {
            for (let i = 0; i < count; i++) recordPlan(device, plan, bindings);
          },
          sync: () => device.sync(),
        };
      },
    },
  };
}

/** An n×n×n matmul, no transposes, no bias. */
export function squareMatmul(n: number): MatmulShape {
  return {
    batch: 1,
    M: n,
    N: n,
    K: n,
    transA: false,
    transB: false,
    batchA: true,
    batchB: true,
    bias: false,
  };
}

const mm = (batch: number, M: number, N: number, K: number, extra: Partial<MatmulShape> = {}) => ({
  ...squareMatmul(1),
  batch,
  M,
  N,
  K,
  ...extra,
});

/** A row timing the fused masked softmax over `rows × cols` (bytes read + written). */
export function softmaxRow(name: string, rows: number, cols: number, mask: MaskKind): Row {
  const inputs = once(() => random(rows * cols));
  return {
    name,
    unit: "GB/s",
    work: 2 * 4 * rows * cols,
    op: { kind: "softmax", rows, cols, mask, inputs },
    impls: {
      project: async () => {
        const device = await benchDevice();
        const d = softmaxDispatch(rows, cols, 0.125, mask === "causal" ? cols : 1);
        const bindings = [
          gpuArray(device, inputs()),
          gpuArray(device, new Float32Array(rows * cols)),
        ];
        const kernel = softmaxForwardKernel(mask);
        return {
          record(count) {
            for (let i = 0; i < count; i++) {
              dispatchRows(device, kernel, bindings, d.params, rows, cols);
            }
          },
          sync: () => device.sync(),
        };
      },
    },
  };
}

/** A row timing layer norm over `rows × cols` (bytes read + written). */
export function layerNormRow(name: string, rows: number, cols: number): Row {
  const inputs = once(() => ({ x: random(rows * cols), gamma: random(cols), beta: random(cols) }));
  return {
    name,
    unit: "GB/s",
    work: 2 * 4 * rows * cols,
    op: { kind: "layernorm", rows, cols, inputs },
    impls: {
      project: async () => {
        const device = await benchDevice();
        const d = layerNormDispatch(rows, cols, 1e-5);
        const { x, gamma, beta } = inputs();
        const bindings = [
          gpuArray(device, x),
          gpuArray(device, gamma),
          gpuArray(device, beta),
          gpuArray(device, new Float32Array(rows * cols)),
          gpuArray(device, new Float32Array(rows)),
          gpuArray(device, new Float32Array(rows)),
        ];
        const kernel = layerNormForwardKernel();
        return {
          record(count) {
            for (let i = 0; i < count; i++) {
              dispatchRows(device, kernel, bindings, d.params, rows, cols);
            }
          },
          sync: () => device.sync(),
        };
      },
    },
  };
}

/** Every row, in table order. Add rows here. */
export const ROWS: Row[] = [
  matmulRow("matmul 256³", squareMatmul(256)),
  matmulRow("matmul 512³", squareMatmul(512)),
  matmulRow("matmul 1024³", squareMatmul(1024)),
  matmulRow(
    "x·Wᵀ+b [512×128]·[384×128]ᵀ",
    mm(1, 512, 384, 128, { transB: true, bias: true, batchB: false }),
  ),
  matmulRow("x·Wᵀ [512×512]·[128×512]ᵀ", mm(1, 512, 128, 512, { transB: true })),
  matmulRow("dY·W [512×384]·[384×128]", mm(1, 512, 128, 384)),
  matmulRow("dYᵀ·X [512×384]ᵀ·[512×128]", mm(1, 384, 128, 512, { transA: true })),
  matmulRow("[512×512]·[512×128]", mm(1, 512, 128, 512)),
  matmulRow("q·kᵀ 32×[64×32]·[64×32]ᵀ", mm(32, 64, 64, 32, { transB: true })),
  matmulRow("p·v 32×[64×64]·[64×32]", mm(32, 64, 32, 64)),
  matmulRow("32×[64×32]·[32×64]", mm(32, 64, 64, 32)),
  softmaxRow("softmax causal 32·64×64 (attention)", 32 * 64, 64, "causal"),
  softmaxRow("softmax 512×8192", 512, 8192, "none"),
  layerNormRow("layer norm 512×128", 512, 128),
  layerNormRow("layer norm 4096×1024", 4096, 1024),
];

/** Operations per measured iteration: about `target` of work, at least 2, at most 50. */
function countFor(row: Row, target = 1.5e9): number {
  return Math.max(2, Math.min(50, Math.round(target / row.work)));
}

const samples = new Map<string, number[]>();
const runners = new Map<string, Promise<Runner>>();

/**
 * Registers a `deno bench` entry per row and implementation of `impls` the row has (grouped by
 * row, the project as baseline), and the table of medians printed when the run ends.
 */
export function registerBenches(impls: Impl[]): void {
  globalThis.addEventListener("unload", () => {
    if (samples.size) console.log("\n" + table());
  });
  for (const row of ROWS) {
    for (const impl of impls) registerOne(row, impl);
  }
}

function registerOne(row: Row, impl: Impl): void {
  const setup = row.impls[impl];
  if (!setup) return;
  const count = countFor(row);
  const id = `${row.name}\u0000${impl}`;
  Deno.bench({
    name: `${impl} ${row.name}`,
    group: row.name,
    baseline: impl === "project",
    n: 5,
    warmup: 1,
    async fn(b) {
      let r = runners.get(id);
      if (!r) runners.set(id, r = setup());
      const runner = await r;
      await runner.sync();
      b.start();
      const t0 = performance.now();
      runner.record(count);
      await runner.sync();
      const seconds = (performance.now() - t0) / 1000;
      b.end();
      let list = samples.get(id);
      if (!list) samples.set(id, list = []);
      list.push((row.work * count) / seconds / 1e9);
    },
  });
}

/** The table of medians, as Markdown. */
export function table(): string {
  const impls: Impl[] = ["project", "tfjs"];
  const lines = [
    `backend ${backend}: ${adapterName}`,
    "",
    `| kernel | unit | ${impls.join(" | ")} | project/tfjs |`,
    `| --- | --- | ${impls.map(() => "---:").join(" | ")} | ---: |`,
  ];
  for (const row of ROWS) {
    const med = impls.map((impl) => {
      const xs = samples.get(`${row.name}\u0000${impl}`) ?? [];
      // the first sample compiled the pipelines: drop it when there are others
      return xs.length > 1 ? median(xs.slice(1)) : xs.length ? xs[0] : NaN;
    });
    const cells = med.map((v) => (Number.isNaN(v) ? "–" : v.toFixed(2)));
    const ratio = med[0] / med[1];
    lines.push(
      `| ${row.name} | ${row.unit} | ${cells.join(" | ")} | ` +
        `${Number.isFinite(ratio) ? ratio.toFixed(2) + "×" : "–"} |`,
    );
  }
  return lines.join("\n");
}
