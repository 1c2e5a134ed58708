/**
 * The measuring half of `scripts/gpu_check.sh` (issue #16): each mode measures one thing on the
 * adapter the environment gives and writes one JSON object to `--out` (and stdout).
 *
 *     deno run -A scripts/gpu_bench.ts probe   --out F      # adapters; Dawn's f16 toggle on NVIDIA
 *     deno run -A scripts/gpu_bench.ts matmul  --out F [--sizes 1024,4096,8192] [--backend dawn]
 *     deno run -A scripts/gpu_bench.ts train   --out F [--configs reference,gpt2-small,gpt2-medium]
 *                                              [--steps 3] [--warmup 2] [--backend dawn] [--smoke]
 *     deno run -A scripts/gpu_bench.ts scaling --out F [--max-ranks 8] [--placement procs]
 *                                              [--ladder base] [--steps 4] [--repeats 1]
 *     deno run -A scripts/gpu_bench.ts tp2     --out F [--backend deno] [--smoke]
 *
 * `--smoke` shrinks every size so that a software adapter finishes in seconds.
 * @module
 */

import { parseArgs } from "node:util";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { toHalfBits } from "../core/half.ts";
import { TokenIds } from "../core/token_ids.ts";
import { DataRng } from "../data/rng.ts";
import { importDawn } from "../deps/dawn.ts";
import { chooseTiling, matmulPlanWith, type MatmulShape } from "../kernels/matmul.ts";
import { recordPlan } from "../core/ops/matmul.ts";
import { trainingFlops } from "../models/flops.ts";
import { Gpt, type GptConfig, paddedVocabSize } from "../models/gpt.ts";
import { Trainer } from "../models/trainer.ts";
import { formatScaling, runScaling, type ScalingConfig } from "../bench/scaling.ts";
import { median } from "../bench/stats.ts";

/** The fp32 peak the MFU is taken against: H200 SXM, plain fp32 (no tensor cores), FLOP/s. */
export const FP32_PEAK = 67e12;

/** A training shape of the check. */
export interface TrainShape {
  /** Model. */
  model: GptConfig;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence. */
  seq: number;
}

/** The three training sizes of the check (batch and sequence as the PyTorch peer uses them). */
export function trainShapes(smoke: boolean): Record<string, TrainShape> {
  const gpt = (layers: number, hidden: number, heads: number, vocab: number, seq: number) => ({
    vocabSize: vocab,
    numLayers: layers,
    hiddenSize: hidden,
    numHeads: heads,
    maxPositions: seq,
    hiddenDropout: 0,
    attentionDropout: 0,
  });
  if (smoke) {
    return {
      reference: { model: gpt(2, 64, 4, 256, 32), batch: 2, seq: 32 },
      "gpt2-small": { model: gpt(2, 64, 4, 512, 32), batch: 2, seq: 32 },
      "gpt2-medium": { model: gpt(2, 96, 4, 512, 32), batch: 1, seq: 32 },
    };
  }
  return {
    // The 470K-parameter reference config (bench/train.ts REFERENCE).
    reference: { model: gpt(2, 128, 4, 256, 64), batch: 8, seq: 64 },
    "gpt2-small": { model: gpt(12, 768, 12, 50257, 1024), batch: 4, seq: 1024 },
    "gpt2-medium": { model: gpt(24, 1024, 16, 50257, 1024), batch: 2, seq: 1024 },
  };
}

/** FLOPs of one training step of `s` (Megatron's count, models/flops.ts). */
export function stepFlops(s: TrainShape): number {
  return trainingFlops(
    {
      numLayers: s.model.numLayers,
      hiddenSize: s.model.hiddenSize,
      ffnHiddenSize: 4 * s.model.hiddenSize,
      paddedVocab: paddedVocabSize(s.model.vocabSize),
      seqLength: s.seq,
    },
    s.batch * s.seq,
  );
}

const errText = (e: unknown) => ((e as Error)?.message ?? String(e)).split("\n")[0];

async function probe(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const backend of ["dawn", "deno"] as const) {
    try {
      const d = await Device.create({ backend });
      out[backend] = d.summary();
      d.destroy();
    } catch (e) {
      out[backend] = { error: errText(e) };
    }
  }
  // Dawn's Vulkan backend hides shader-f16 on NVIDIA unless given this toggle.
  const dawnF16: Record<string, unknown> = {};
  try {
    const mod = await importDawn() as unknown as { create: (o: string[]) => GPU };
    const back = Deno.env.get("WEBGPU_DAWN_BACKEND");
    for (
      const [label, toggles] of [
        ["default", []],
        ["vulkan_enable_f16_on_nvidia", ["enable-dawn-features=vulkan_enable_f16_on_nvidia"]],
      ] as const
    ) {
      const gpu = mod.create([...(back ? [`backend=${back}`] : []), ...toggles]);
      const a = await gpu.requestAdapter({ powerPreference: "high-performance" });
      dawnF16[label] = a
        ? {
          adapter: `${a.info.vendor} ${a.info.architecture} ${a.info.description}`.trim(),
          shaderF16: a.features.has("shader-f16"),
          features: [...a.features].sort(),
        }
        : { error: "no adapter" };
    }
  } catch (e) {
    dawnF16.error = errText(e);
  }
  out.dawnF16Toggle = dawnF16;
  return out;
}

function random(n: number): Float32Array {
  const a = new Float32Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    a[i] = (x / 2 ** 32) * 2 - 1;
  }
  return a;
}

async function matmul(sizes: number[], backend: string): Promise<Record<string, unknown>> {
  const device = await Device.create({ backend: parseBackend(backend) });
  const opts = {
    software: device.isSoftware,
    maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
    maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
    shaderF16: device.nativeF16,
  };
  // With shader-f16, the gpu variant also reads a packed fp16 B (native f16 loads, f32
  // arithmetic) and computes in f16 (--f16-arithmetic): what --fp16's linears run.
  const variants = [
    "gpu",
    "software",
    ...(device.nativeF16 ? ["gpu fp16-B", "gpu f16-arith"] : []),
  ];
  const rows: Record<string, unknown>[] = [];
  for (const n of sizes) {
    const shape: MatmulShape = {
      batch: 1,
      M: n,
      N: n,
      K: n,
      transA: false,
      transB: false,
      batchA: false,
      batchB: false,
      bias: false,
    } as MatmulShape;
    const bytes = n * n * 4;
    const bufs = [0, 1, 2, 3].map(() => device.pool.acquire(bytes));
    try {
      device.upload(bufs[0], random(n * n));
      device.upload(bufs[1], random(n * n));
      device.upload(bufs[3], toHalfBits(random(n * n), "fp16"));
      await device.sync();
      for (const variant of variants) {
        const row: Record<string, unknown> = { n, variant };
        try {
          const packed = variant.startsWith("gpu f");
          const s: MatmulShape = packed ? { ...shape, packedB: "fp16" } : shape;
          const tiling = chooseTiling(s, { ...opts, software: variant === "software" });
          row.tiling = tiling;
          const plan = matmulPlanWith(s, {
            ...opts,
            f16Arithmetic: variant === "gpu f16-arith",
          }, tiling);
          const bind = [bufs[0], packed ? bufs[3] : bufs[1], bufs[2]].map((buffer) => ({
            buffer,
            size: buffer === bufs[3] ? bytes / 2 : bytes,
          }));
          const run = async (count: number) => {
            const t0 = performance.now();
            for (let i = 0; i < count; i++) {
              recordPlan(device, plan, bind); // fills A's/B's textures first where the plan reads them
            }
            await device.sync();
            return performance.now() - t0;
          };
          const first = await run(1); // compile + warm-up
          // About 0.4 s of work per timing, 1 to 50 products, median of 3.
          const count = Math.max(1, Math.min(50, Math.round(400 / Math.max(first, 1e-3))));
          const times = [];
          for (let r = 0; r < 3; r++) times.push((await run(count)) / count);
          const ms = median(times);
          row.msPerMatmul = ms;
          row.gflops = (2 * n ** 3) / (ms / 1000) / 1e9;
        } catch (e) {
          row.error = errText(e);
        }
        console.error(JSON.stringify(row));
        rows.push(row);
      }
    } finally {
      for (const b of bufs) device.pool.release(b);
    }
  }
  const adapter = device.summary().name;
  device.destroy();
  return { backend, adapter, software: opts.software, rows };
}

async function train(
  names: string[],
  backend: string,
  steps: number,
  warmup: number,
  smoke: boolean,
): Promise<Record<string, unknown>> {
  const device = await Device.create({ backend: parseBackend(backend) });
  const shapes = trainShapes(smoke);
  const rows: Record<string, unknown>[] = [];
  for (const name of names) {
    const s = shapes[name];
    const row: Record<string, unknown> = { name, batch: s?.batch, seq: s?.seq, model: s?.model };
    if (!s) {
      rows.push({ name, error: `unknown config (${Object.keys(shapes).join(", ")})` });
      continue;
    }
    let gpt: Gpt | undefined;
    try {
      gpt = Gpt.serial(device, s.model, 1);
      const trainer = new Trainer(device, gpt, {
        schedule: { lr: 1e-4, decayIters: 1000, style: "constant" },
        clipGrad: 1,
      });
      const rng = new DataRng(7);
      const n = s.batch * s.seq;
      const ids = () => Int32Array.from({ length: n }, () => rng.nextInt(s.model.vocabSize));
      const g = gpt;
      const step = async () =>
        (await trainer.step(1, () =>
          g.loss(
            TokenIds.fromHost(device, ids(), [s.batch, s.seq]),
            TokenIds.fromHost(device, ids(), [s.batch, s.seq]),
          ))).loss;
      const t0 = performance.now();
      for (let i = 0; i < warmup; i++) await step();
      row.warmupS = (performance.now() - t0) / 1000;
      const ms: number[] = [];
      const losses: number[] = [];
      for (let i = 0; i < steps; i++) {
        const t = performance.now();
        losses.push(await step());
        ms.push(performance.now() - t);
      }
      const med = median(ms);
      row.params = gpt.numParams();
      row.msPerStep = med;
      row.stepsMs = ms;
      row.losses = losses;
      row.tokensPerS = n / (med / 1000);
      row.flopsPerStep = stepFlops(s);
      row.tflops = stepFlops(s) / (med / 1000) / 1e12;
      row.mfu = stepFlops(s) / (med / 1000) / FP32_PEAK;
    } catch (e) {
      row.error = errText(e);
    } finally {
      gpt?.dispose();
    }
    console.error(JSON.stringify({ ...row, model: undefined }));
    rows.push(row);
  }
  const adapter = device.summary().name;
  device.destroy();
  return { backend, adapter, fp32PeakFlops: FP32_PEAK, rows };
}

async function scaling(opts: {
  maxRanks: number;
  placement: "procs" | "workers";
  ladder: string;
  steps: number;
  warmup: number;
  repeats: number;
  backend?: string;
  smoke: boolean;
}): Promise<Record<string, unknown>> {
  const rows = await runScaling({
    maxRanks: opts.maxRanks,
    backend: opts.backend,
    steps: opts.steps,
    warmup: opts.warmup,
    batch: opts.smoke ? 2 : 16,
    seq: opts.smoke ? 16 : 64,
    ladder: opts.ladder as "base" | "small",
    repeats: opts.repeats,
    placement: opts.placement,
    // --smoke proves the steps run: timing every tiling with the caches cold took minutes.
    autotune: !opts.smoke,
  });
  return { ...opts, rows, table: formatScaling(rows) };
}

async function tp2(
  backend: string,
  smoke: boolean,
  steps: number,
): Promise<Record<string, unknown>> {
  // The same model at TP=1 and TP=2 (two devices on the one adapter, one Worker each): the
  // difference in step time is the host round trips of the all-reduces (commShare measures it).
  const c: ScalingConfig = smoke
    ? { ranks: 1, hidden: 64, heads: 4, layers: 2 }
    : { ranks: 1, hidden: 1024, heads: 16, layers: 4 };
  const ladder = [c, { ...c, ranks: 2 }];
  const rows = await runScaling({
    maxRanks: 2,
    backend,
    steps,
    warmup: 1,
    batch: smoke ? 2 : 8,
    seq: smoke ? 16 : 64,
    ladder,
    repeats: 1,
    placement: "workers",
  });
  return { backend, rows, table: formatScaling(rows) };
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      backend: { type: "string" },
      sizes: { type: "string", default: "1024,4096,8192" },
      configs: { type: "string", default: "reference,gpt2-small,gpt2-medium" },
      steps: { type: "string" },
      warmup: { type: "string" },
      "max-ranks": { type: "string", default: "8" },
      placement: { type: "string", default: "procs" },
      ladder: { type: "string", default: "base" },
      repeats: { type: "string", default: "1" },
      smoke: { type: "boolean", default: false },
    },
  });
  const mode = positionals[0];
  const smoke = values.smoke!;
  const t0 = performance.now();
  let result: Record<string, unknown>;
  try {
    switch (mode) {
      case "probe":
        result = await probe();
        break;
      case "matmul":
        result = await matmul(values.sizes!.split(",").map(Number), values.backend ?? "dawn");
        break;
      case "train":
        result = await train(
          values.configs!.split(","),
          values.backend ?? "dawn",
          Number(values.steps ?? 3),
          Number(values.warmup ?? 2),
          smoke,
        );
        break;
      case "scaling":
        result = await scaling({
          maxRanks: Number(values["max-ranks"]),
          placement: values.placement as "procs" | "workers",
          ladder: values.ladder!,
          steps: Number(values.steps ?? 4),
          warmup: Number(values.warmup ?? 2),
          repeats: Number(values.repeats),
          backend: values.backend,
          smoke,
        });
        break;
      case "tp2":
        result = await tp2(values.backend ?? "deno", smoke, Number(values.steps ?? 4));
        break;
      default:
        throw new Error(`unknown mode "${mode}": probe, matmul, train, scaling or tp2`);
    }
  } catch (e) {
    result = { error: errText(e) };
  }
  result = { mode, smoke, seconds: (performance.now() - t0) / 1000, ...result };
  const text = JSON.stringify(result, null, 1);
  if (values.out) await Deno.writeTextFile(values.out, text + "\n");
  console.log(text);
  await new Promise((r) => setTimeout(r, 100));
  Deno.exit(result.error ? 1 : 0);
}
