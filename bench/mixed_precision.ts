/**
 * fp32 against --bf16 and --fp16 on one rank: ms per training step and the
 * buffer pool's peak bytes, split into what persists (weights, 16-bit weight
 * copies, AdamW moments), the gradients, and the activations: those saved for
 * backward at the end of the forward pass (16-bit under --bf16/--fp16) and the
 * forward's peak (saved activations plus a layer's working set).
 * Then, where the adapter offers `shader-f16`, one fp16-weight linear read by
 * integer unpacking and by native f16 loads (`--read-only`: only that).
 * `WEBGPU_BACKEND=deno|dawn deno run -P=bench bench/mixed_precision.ts [--steps N] [--shape reference|deep|wide] [--recompute] [--read-only]`.
 * @module
 */

import { parseArgs } from "node:util";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { packSaved, type Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { LossScaler } from "../models/loss_scale.ts";
import { Trainer } from "../models/trainer.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    steps: { type: "string", default: "10" },
    shape: { type: "string", default: "reference" },
    "read-only": { type: "boolean", default: false },
    recompute: { type: "boolean", default: false },
  },
});
const steps = Number(args.values.steps);
const backend = parseBackend(Deno.env.get("WEBGPU_BACKEND"));
const SHAPES: Record<string, { config: GptConfig; batch: number; seq: number }> = {
  // the default `deno task train` run
  reference: {
    config: {
      vocabSize: 256,
      numLayers: 2,
      hiddenSize: 128,
      numHeads: 4,
      maxPositions: 64,
      hiddenDropout: 0.1,
      attentionDropout: 0.1,
    },
    batch: 8,
    seq: 64,
  },
  // the reference width, 12 layers deep (where recompute's saved inputs add up)
  deep: {
    config: {
      vocabSize: 256,
      numLayers: 12,
      hiddenSize: 128,
      numHeads: 4,
      maxPositions: 64,
      hiddenDropout: 0.1,
      attentionDropout: 0.1,
    },
    batch: 8,
    seq: 64,
  },
  // one GPT-2-medium-wide layer (hidden 1024, 16 heads), short sequences
  wide: {
    config: {
      vocabSize: 256,
      numLayers: 1,
      hiddenSize: 1024,
      numHeads: 16,
      maxPositions: 32,
      hiddenDropout: 0.1,
      attentionDropout: 0.1,
    },
    batch: 2,
    seq: 32,
  },
};
const { config: base, batch, seq } = SHAPES[args.values.shape!];
const config = { ...base, recomputeActivations: args.values.recompute };
const MiB = (b: number) => (b / 2 ** 20).toFixed(2);
console.log(
  `shape ${args.values.shape}: ${config.numLayers} layers, hidden ${config.hiddenSize}, ` +
    `batch ${batch} × seq ${seq}, ${steps} steps${
      config.recomputeActivations ? ", recompute" : ""
    }`,
);
console.log(
  "| mode | ms/step | peak MiB | weights+copies+moments MiB | grads MiB | saved activations MiB | forward peak MiB |",
);
console.log(
  "| ---- | ------: | -------: | -------------------------: | --------: | --------------------: | ---------------: |",
);
for (const mode of args.values["read-only"] ? [] : ["fp32", "bf16", "fp16"] as const) {
  const device = await Device.create({ backend });
  const m = Gpt.serial(device, config, 1);
  const trainer = new Trainer(device, m, {
    schedule: { lr: 1e-3, decayIters: 1000, style: "constant" },
    clipGrad: 1,
    precision: mode === "fp32" ? undefined : {
      half: mode,
      scaler: mode === "fp16" ? new LossScaler({ initial: 2 ** 12 }) : undefined,
    },
  });
  const ids = Int32Array.from({ length: batch * seq }, (_, i) => (i * 7919) % 256);
  const tg = Int32Array.from({ length: batch * seq }, (_, i) => (i * 104729 + 1) % 256);
  const x = TokenIds.fromHost(device, ids, [batch, seq]).keep();
  const y = TokenIds.fromHost(device, tg, [batch, seq]).keep();
  await trainer.step(1, () => m.loss(x, y)); // compiles pipelines, creates moments and copies
  await tidy(device, () => Promise.resolve());
  const persistent = device.pool.liveBytes;
  const grads = m.namedParams().reduce((n, [, p]) => n + p.tensor.size * 4, 0);
  device.pool.resetPeak();
  let saved = 0, forwardPeak = 0, peak = 0;
  // the forward, then what the trainer does next (packSaved: a no-op for fp32)
  const lossOf = async (): Promise<Tensor> => {
    peak = Math.max(peak, device.pool.peakBytes);
    device.pool.resetPeak();
    const l = await m.loss(x, y);
    packSaved(device, [l]);
    saved = Math.max(saved, device.pool.liveBytes - persistent);
    forwardPeak = Math.max(forwardPeak, device.pool.peakBytes - persistent);
    return l;
  };
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await trainer.step(1, lossOf);
  const ms = (performance.now() - t0) / steps;
  peak = Math.max(peak, device.pool.peakBytes);
  console.log(
    `| ${mode} | ${ms.toFixed(1)} | ${MiB(peak)} | ${MiB(persistent)} | ${MiB(grads)} | ${
      MiB(saved)
    } | ${MiB(forwardPeak)} |`,
  );
  m.dispose();
  await device.close();
}

// The fp16 weight read two ways where the adapter offers shader-f16: integer unpacking
// (every adapter) against native f16 loads, on one [512×1024]·[1024×1024]ᵀ linear.
{
  const device = await Device.create({ backend });
  if (!device.gpu.features.has("shader-f16")) {
    console.log(`\n${device.summary().backend}: no shader-f16, packed path only`);
  } else {
    const { linear, packHalf } = await import("../core/ops/mod.ts");
    const { Tensor } = await import("../core/tensor.ts");
    const x = Tensor.fromArray(device, new Float32Array(512 * 1024).fill(0.01), [512, 1024]).keep();
    const w = Tensor.fromArray(device, new Float32Array(1024 * 1024).fill(0.02), [1024, 1024])
      .keep();
    w.halfCopy = { words: packHalf(w, "fp16").keep(), format: "fp16" };
    console.log(`\n${device.summary().backend}: fp16 weight read, linear [512×1024]·[1024×1024]ᵀ`);
    console.log("| path | ms | GFLOP/s |");
    console.log("| ---- | -: | ------: |");
    const copy = w.halfCopy;
    for (const path of ["f32 weight", "packed (u32 unpack)", "native f16"].flatMap((p) => [p, p])) {
      w.halfCopy = path === "f32 weight" ? null : copy;
      device.nativeF16 = path === "native f16";
      await tidy(device, async () => await linear(x, w).read()); // compile
      const reps = 10;
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) await tidy(device, async () => await linear(x, w).read());
      const ms = (performance.now() - t0) / reps;
      const gf = (2 * 512 * 1024 * 1024) / (ms / 1000) / 1e9;
      console.log(`| ${path} | ${ms.toFixed(1)} | ${gf.toFixed(2)} |`);
    }
  }
  await device.close();
}
