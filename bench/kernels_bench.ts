/**
 * Kernel benchmarks: the project's kernels beside TensorFlow.js's WebGPU backend,
 * on the same backend and adapter, in the same run.
 *
 *     WEBGPU_BACKEND=deno|dawn deno bench -A bench/kernels_bench.ts
 *
 * Each measured iteration records `count` operations and then waits once (a
 * sync costs ~11 ms on Deno's WebGPU), so throughput is `work·count / seconds`
 * with nothing subtracted. Besides `deno bench`'s own report, a table of
 * medians (first, compiling call dropped) is printed when the run ends.
 *
 * To add a row, push a {@link Row} to `ROWS`: a name, the work of one operation
 * (flops or bytes) and, per implementation, an async setup returning a
 * {@link Runner}.
 * @module
 */

import { Device } from "../core/device.ts";
import { dispatchRows } from "../core/ops/rows.ts";
import { layerNormDispatch, layerNormForwardKernel } from "../kernels/layernorm.ts";
import { type MaskKind, softmaxDispatch, softmaxForwardKernel } from "../kernels/softmax.ts";
import { parseBackend } from "../core/gpu.ts";
import { type MatmulOptions, matmulPlan, type MatmulShape } from "../kernels/matmul.ts";
import { createTfjs, type Tfjs } from "./tfjs_backend.ts";
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

/** One line of the table. */
export interface Row {
  /** Shown in the table and as the bench group. */
  name: string;
  /** Unit of `work`·count/seconds. */
  unit: "GFLOP/s" | "GB/s";
  /** Work of one operation: flops for GFLOP/s, bytes moved for GB/s. */
  work: number;
  /** Setups per implementation; run once, lazily, on first use. */
  impls: Partial<Record<Impl, () => Promise<Runner>>>;
}

const backend = parseBackend(Deno.env.get("WEBGPU_BACKEND"));
const device = await Device.create({ backend });
const mmOpts: MatmulOptions = {
  software: device.isSoftware,
  maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
  maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
};
let tfjsHandle: Promise<Tfjs> | null = null;
const tfjs = () => (tfjsHandle ??= createTfjs(device.provider));

function random(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

function gpuArray(data: Float32Array): { buffer: GPUBuffer; size: number } {
  const buffer = device.pool.acquire(data.byteLength);
  device.upload(buffer, data);
  return { buffer, size: data.byteLength };
}

/** A row timing `C = A·B` (+bias) of `shape` in the project and in tfjs. */
export function matmulRow(name: string, shape: MatmulShape): Row {
  const { batch, M, N, K } = shape;
  const aShape = shape.transA ? [K, M] : [M, K];
  const bShape = shape.transB ? [N, K] : [K, N];
  const aData = random((shape.batchA ? batch : 1) * M * K);
  const bData = random((shape.batchB ? batch : 1) * K * N);
  const biasData = random(N);
  return {
    name,
    unit: "GFLOP/s",
    work: 2 * batch * M * N * K,
    impls: {
      project: () => {
        const plan = matmulPlan(shape, mmOpts);
        const bindings = [gpuArray(aData), gpuArray(bData)];
        if (shape.bias) bindings.push(gpuArray(biasData));
        bindings.push(gpuArray(new Float32Array(batch * M * N)));
        return Promise.resolve({
          record(count) {
            for (let i = 0; i < count; i++) {
              device.dispatch(plan.kernel, bindings, plan.params, plan.workgroups);
            }
          },
          sync: () => device.sync(),
        });
      },
      tfjs: async () => {
        const t = await tfjs();
        const tf = t.tf;
        const a = tf.tensor(aData, shape.batchA && batch > 1 ? [batch, ...aShape] : aShape);
        const b = tf.tensor(bData, shape.batchB && batch > 1 ? [batch, ...bShape] : bShape);
        const bias = tf.tensor(biasData, [N]);
        return {
          record(count) {
            for (let i = 0; i < count; i++) {
              tf.tidy(() => {
                const c = tf.matMul(a, b, shape.transA, shape.transB);
                return shape.bias ? tf.add(c, bias) : c;
              }).dispose();
            }
          },
          sync: () => t.sync(),
        };
      },
    },
  };
}

function square(n: number): MatmulShape {
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
  ...square(1),
  batch,
  M,
  N,
  K,
  ...extra,
});

/** A row timing the fused masked softmax over `rows × cols` (bytes read + written). */
export function softmaxRow(name: string, rows: number, cols: number, mask: MaskKind): Row {
  const data = random(rows * cols);
  return {
    name,
    unit: "GB/s",
    work: 2 * 4 * rows * cols,
    impls: {
      project: () => {
        const d = softmaxDispatch(rows, cols, 0.125, mask === "causal" ? cols : 1);
        const bindings = [gpuArray(data), gpuArray(new Float32Array(rows * cols))];
        const kernel = softmaxForwardKernel(mask);
        return Promise.resolve({
          record(count) {
            for (let i = 0; i < count; i++) {
              dispatchRows(device, kernel, bindings, d.params, rows, cols);
            }
          },
          sync: () => device.sync(),
        });
      },
      tfjs: async () => {
        const t = await tfjs();
        const tf = t.tf;
        const x = tf.tensor(data, [rows, cols]);
        return {
          record(count) {
            for (let i = 0; i < count; i++) tf.tidy(() => tf.softmax(tf.mul(x, 0.125))).dispose();
          },
          sync: () => t.sync(),
        };
      },
    },
  };
}

/** A row timing layer norm over `rows × cols` (bytes read + written). */
export function layerNormRow(name: string, rows: number, cols: number): Row {
  const data = random(rows * cols);
  const gamma = random(cols);
  const beta = random(cols);
  return {
    name,
    unit: "GB/s",
    work: 2 * 4 * rows * cols,
    impls: {
      project: () => {
        const d = layerNormDispatch(rows, cols, 1e-5);
        const bindings = [
          gpuArray(data),
          gpuArray(gamma),
          gpuArray(beta),
          gpuArray(new Float32Array(rows * cols)),
          gpuArray(new Float32Array(rows)),
          gpuArray(new Float32Array(rows)),
        ];
        const kernel = layerNormForwardKernel();
        return Promise.resolve({
          record(count) {
            for (let i = 0; i < count; i++) {
              dispatchRows(device, kernel, bindings, d.params, rows, cols);
            }
          },
          sync: () => device.sync(),
        });
      },
      tfjs: async () => {
        const t = await tfjs();
        const tf = t.tf;
        const x = tf.tensor(data, [rows, cols]);
        const g = tf.tensor(gamma, [cols]);
        const b = tf.tensor(beta, [cols]);
        return {
          record(count) {
            for (let i = 0; i < count; i++) {
              tf.tidy(() => {
                const { mean, variance } = tf.moments(x, -1, true);
                return tf.add(
                  tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), g),
                  b,
                );
              }).dispose();
            }
          },
          sync: () => t.sync(),
        };
      },
    },
  };
}

/** Every row, in table order. Add rows here. */
export const ROWS: Row[] = [
  matmulRow("matmul 256³", square(256)),
  matmulRow("matmul 512³", square(512)),
  matmulRow("matmul 1024³", square(1024)),
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

for (const row of ROWS) {
  const count = countFor(row);
  for (const [impl, setup] of Object.entries(row.impls) as [Impl, () => Promise<Runner>][]) {
    const id = `${row.name}\u0000${impl}`;
    Deno.bench({
      name: `${impl} ${row.name}`,
      group: row.name,
      baseline: impl === "tfjs",
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
}

/** The table of medians, as Markdown. */
export function table(): string {
  const impls: Impl[] = ["project", "tfjs"];
  const lines = [
    `backend ${backend}: ${device.summary().name}`,
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

globalThis.addEventListener("unload", () => {
  if (samples.size) console.log("\n" + table());
});
