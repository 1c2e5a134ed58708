/**
 * Fused (FlashAttention-style, `ops.attention`) against unfused
 * (`ops.attentionUnfused`) attention: time of one layer's attention forward +
 * backward (from the `qkv` projection to its gradient) and the buffer pool's
 * peak bytes above what was live before (`device.pool.peakBytes`), at the
 * reference shape and at long sequences; then a whole reference GPT step
 * (forward + backward, vocab 256, hidden 128, 4 heads, 2 layers, seq 64,
 * micro-batch 8) with each. Variants run interleaved, medians reported.
 * `deno task bench:attention --help` gives the usage and flags.
 * @module
 */

import { backward } from "../core/autograd.ts";
import { Device } from "../core/device.ts";
import { BACKEND_ENV, BACKENDS, parseBackend } from "../core/gpu.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Gpt } from "../models/gpt.ts";
import { DEBUG_FLAG, handled } from "../cli/errors.ts";
import { commaCounts, type FlagSpec, parseCommandLine, UsageError } from "../cli/flags.ts";
import { median } from "./stats.ts";

/** Every flag of `deno task bench:attention`. */
export const ATTENTION_FLAGS: Record<string, FlagSpec> = {
  "reps": {
    type: "int",
    min: 1,
    default: 5,
    help: "timed repetitions per variant (at most 3 from seq 1024 on)",
  },
  "seqs": {
    type: "string",
    default: "1024,2048",
    allowEmpty: true,
    valueName: "T,T…",
    help: 'long sequence lengths, batch 1, comma-separated ("": none)',
  },
  "heads": { type: "int", min: 1, default: 4, help: "attention heads at the long lengths" },
  "head-dim": {
    type: "int",
    min: 1,
    default: 32,
    help: "head size at the long lengths (a multiple of 4, at most 256)",
  },
  "backend": {
    type: "string",
    choices: BACKENDS,
    help: "WebGPU implementation (default $WEBGPU_BACKEND, else dawn)",
  },
  "skip-model": { type: "boolean", help: "leave out the whole reference GPT step" },
  ...DEBUG_FLAG,
};

const USAGE =
  `Usage: deno task bench:attention [--reps 5] [--seqs 1024,2048] [--heads 4] [--head-dim 32]
  [--backend dawn|deno] [--skip-model]`;

/** The lengths of `--seqs`: comma-separated integers ≥ 1, empty items skipped. */
function seqLengths(text: string): number[] {
  return commaCounts(
    "seqs",
    text,
    "comma-separated sequence lengths ≥ 1 (e.g. 1024,2048)",
    true,
  );
}

/** One attention shape to measure. */
interface Shape {
  B: number;
  T: number;
  nh: number;
  hd: number;
  mask: "causal" | "padding";
  p: number;
}

type Variant = "fused" | "unfused";

/** Timing and peak memory of one variant at one shape. */
interface Measure {
  ms: number[];
  peak: number;
}

function randomData(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 2 ** 32 * 2 - 1;
  });
}

/** One forward + backward of `variant` at `s`; returns ms and the pool's peak above the start. */
async function opStep(
  dev: Device,
  variant: Variant,
  s: Shape,
  qkv: Tensor,
  dout: Tensor,
  offset: number,
): Promise<{ ms: number; peak: number }> {
  await dev.sync();
  const base = dev.pool.liveBytes;
  dev.pool.resetPeak();
  const t0 = performance.now();
  await tidy(dev, async () => {
    const opts: ops.AttentionOpts = {
      numHeads: s.nh,
      headDim: s.hd,
      mask: s.mask,
      dropout: s.p > 0 ? { p: s.p, draw: { seed: 42, offset } } : undefined,
    };
    const out = variant === "fused" ? ops.attention(qkv, opts) : ops.attentionUnfused(qkv, opts);
    await backward(out, dout);
  });
  await dev.sync();
  const ms = performance.now() - t0;
  const peak = dev.pool.peakBytes - base;
  qkv.grad?.dispose();
  qkv.grad = null;
  return { ms, peak };
}

async function benchShape(dev: Device, s: Shape, reps: number): Promise<Record<Variant, Measure>> {
  const hl = s.nh * s.hd;
  const qkv = Tensor.fromArray(dev, randomData(s.B * s.T * 3 * hl, 1), [s.B, s.T, 3 * hl])
    .requireGrad();
  const dout = Tensor.fromArray(dev, randomData(s.B * s.T * hl, 2), [s.B, s.T, hl]);
  const res: Record<Variant, Measure> = {
    fused: { ms: [], peak: 0 },
    unfused: { ms: [], peak: 0 },
  };
  const order: Variant[] = ["fused", "unfused"];
  for (let r = -1; r < reps; r++) {
    for (const v of r % 2 ? order : [...order].reverse()) {
      const m = await opStep(dev, v, s, qkv, dout, r + 1);
      if (r < 0) continue; // warm-up: pipeline compilation, pool growth
      res[v].ms.push(m.ms);
      res[v].peak = Math.max(res[v].peak, m.peak);
    }
  }
  qkv.dispose();
  dout.dispose();
  return res;
}

/** Median ms of a reference GPT forward + backward with fused and unfused attention. */
async function benchModel(dev: Device, p: number, reps: number): Promise<Record<Variant, number>> {
  const B = 8, T = 64, vocab = 256;
  const make = (fusedAttention: boolean) =>
    Gpt.serial(dev, {
      vocabSize: vocab,
      numLayers: 2,
      hiddenSize: 128,
      numHeads: 4,
      maxPositions: T,
      hiddenDropout: p,
      attentionDropout: p,
      fusedAttention,
    }, 7);
  const models: Record<Variant, Gpt> = { fused: make(true), unfused: make(false) };
  const data = Int32Array.from(randomData(B * (T + 1), 3), (x) => Math.floor((x + 1) / 2 * vocab));
  const ids = data.slice(0, B * T), tg = data.slice(B, B * T + B);
  const ms: Record<Variant, number[]> = { fused: [], unfused: [] };
  const order: Variant[] = ["fused", "unfused"];
  for (let r = -1; r < reps; r++) {
    for (const v of r % 2 ? order : [...order].reverse()) {
      const m = models[v];
      await dev.sync();
      const t0 = performance.now();
      await tidy(dev, async () => {
        const loss = await m.loss(
          TokenIds.fromHost(dev, ids, [B, T]),
          TokenIds.fromHost(dev, tg, [B, T]),
        );
        await backward(loss);
      });
      await dev.sync();
      if (r >= 0) ms[v].push(performance.now() - t0);
      for (const [, prm] of m.namedParams()) {
        prm.tensor.grad?.dispose();
        prm.tensor.grad = null;
      }
    }
  }
  models.fused.dispose();
  models.unfused.dispose();
  return { fused: median(ms.fused), unfused: median(ms.unfused) };
}

const mib = (b: number) => (b / 2 ** 20).toFixed(2);

/** Runs `deno task bench:attention` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, ATTENTION_FLAGS, USAGE);
  if (typeof f === "number") return f;
  const seqs = seqLengths(f.seqs as string);
  const reps = f.reps as number;
  const nh = f.heads as number, hd = f["head-dim"] as number;
  if (!ops.fusedAttentionSupports(hd)) {
    throw new UsageError(`--head-dim ${hd}: the fused kernels take a multiple of 4, at most 256`);
  }
  const dev = await Device.create({
    backend: parseBackend((f.backend as string | undefined) ?? Deno.env.get(BACKEND_ENV)),
  });
  const shapes: Shape[] = [
    { B: 8, T: 64, nh: 4, hd: 32, mask: "causal", p: 0 },
    { B: 8, T: 64, nh: 4, hd: 32, mask: "causal", p: 0.1 },
    ...seqs.flatMap((T) => [0, 0.1].map((p) => ({ B: 1, T, nh, hd, mask: "causal" as const, p }))),
  ];
  console.log(
    `backend ${dev.summary().backend ?? ""}, ${reps} reps, load: ${Deno.loadavg().join(" ")}`,
  );
  console.log(
    "| B | T | heads×hd | dropout | fused ms | unfused ms | unfused/fused | fused peak MiB | unfused peak MiB | peak ratio |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const s of shapes) {
    const r = await benchShape(dev, s, s.T >= 1024 ? Math.min(reps, 3) : reps);
    const f = median(r.fused.ms), u = median(r.unfused.ms);
    console.log(
      `| ${s.B} | ${s.T} | ${s.nh}×${s.hd} | ${s.p} | ${f.toFixed(1)} | ${u.toFixed(1)} | ${
        (u / f).toFixed(2)
      } | ${mib(r.fused.peak)} | ${mib(r.unfused.peak)} | ${
        (r.fused.peak / r.unfused.peak).toFixed(3)
      } |`,
    );
  }
  if (!f["skip-model"]) {
    console.log(
      "\nReference GPT forward + backward (vocab 256, h 128, 4 heads, 2 layers, seq 64, mb 8):",
    );
    console.log("| dropout | fused ms | unfused ms | unfused/fused |");
    console.log("|---|---|---|---|");
    for (const p of [0, 0.1]) {
      const r = await benchModel(dev, p, reps);
      console.log(
        `| ${p} | ${r.fused.toFixed(1)} | ${r.unfused.toFixed(1)} | ${
          (r.unfused / r.fused).toFixed(2)
        } |`,
      );
    }
  }
  console.log(`load after: ${Deno.loadavg().join(" ")}`);
  await dev.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
