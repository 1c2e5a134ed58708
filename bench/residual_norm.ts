/**
 * The fused residual kernels against the unfused ops they replace, at the
 * reference GPT's shape (batch 8 × seq 64 tokens, hidden 128, vocabulary 256):
 * forward + backward of one layer's elementwise skeleton,
 * `r = x + drop(a); n = LN(r); out = r + drop(n)` (`ops.residualLayerNorm` +
 * `ops.residualDropout` against `add`/`dropout`/`layerNorm`), and of the
 * embedding, `drop(wte[ids] + wpe[t])` (`ops.embedPositions` with the lookup
 * fused against two `embedding`s, `add` and `dropout`). Variants run
 * interleaved; medians reported, with the load average.
 * `deno task bench:residual --help` gives the usage and flags.
 * @module
 */

import { backward } from "../core/autograd.ts";
import { Device } from "../core/device.ts";
import { BACKEND_ENV, BACKENDS, parseBackend } from "../core/gpu.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { DEBUG_FLAG, handled } from "../cli/errors.ts";
import { type FlagSpec, type FlagValues, parseCommandLine, UsageError } from "../cli/flags.ts";
import { median } from "./stats.ts";

/** Every flag of `deno task bench:residual`. */
export const RESIDUAL_FLAGS: Record<string, FlagSpec> = {
  "reps": { type: "int", min: 1, default: 30, help: "timed repetitions per variant" },
  "tokens": { type: "int", min: 1, default: 512, help: "tokens (rows), a multiple of --seq" },
  "hidden": { type: "int", min: 1, default: 128, help: "hidden size" },
  "seq": { type: "int", min: 1, default: 64, help: "sequence length (position table rows)" },
  "vocab": { type: "int", min: 1, default: 256, help: "vocabulary size" },
  "backend": {
    type: "string",
    choices: BACKENDS,
    help: "WebGPU implementation (default $WEBGPU_BACKEND, else dawn)",
  },
  ...DEBUG_FLAG,
};

const USAGE =
  "Usage: deno task bench:residual [--reps 30] [--tokens 512] [--hidden 128] [--seq 64] [--vocab 256]\n" +
  "  [--backend dawn|deno]";

/** The tokens are whole sequences; throws UsageError. */
function validateResidualFlags(f: FlagValues): void {
  if ((f.tokens as number) % (f.seq as number) !== 0) {
    throw new UsageError(
      `--tokens ${f.tokens} must be a multiple of --seq ${f.seq} (the tokens are whole sequences)`,
    );
  }
}

type Variant = "fused" | "unfused";

function randomData(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 2 ** 32 * 2 - 1;
  });
}

/** Inputs of the layer skeleton: leaves x, a, gamma, beta (all needing gradients). */
function layerInputs(dev: Device, n: number, h: number): Tensor[] {
  return [
    Tensor.fromArray(dev, randomData(n * h, 1), [n, h]),
    Tensor.fromArray(dev, randomData(n * h, 2), [n, h]),
    Tensor.fromArray(dev, randomData(h, 3).map((v) => 1 + v / 4), [h]),
    Tensor.fromArray(dev, randomData(h, 4), [h]),
  ].map((t) => t.requireGrad());
}

function layerSkeleton(v: Variant, [x, a, g, b]: Tensor[], p: number, offset: number): Tensor {
  const d1 = p ? { p, draw: { seed: 5, offset } } : null;
  const d2 = p ? { p, draw: { seed: 5, offset: offset + 1 } } : null;
  if (v === "fused") {
    const r = ops.residualLayerNorm(x, a, d1, g, b);
    return ops.residualDropout(r.sum, r.normed, d2);
  }
  const drop = (t: Tensor, d: typeof d1) => d ? ops.dropout(t, d.p, d.draw) : t;
  const r = ops.add(x, drop(a, d1));
  return ops.add(r, drop(ops.layerNorm(r, g, b), d2));
}

function embeddingStep(
  v: Variant,
  [wte, wpe]: Tensor[],
  ids: TokenIds,
  pos: TokenIds,
  p: number,
  offset: number,
): Tensor {
  const d = p ? { p, draw: { seed: 6, offset } } : null;
  if (v === "fused") return ops.embedPositions({ table: wte, ids }, wpe, d);
  const x = ops.add(ops.embedding(wte, ids), ops.embedding(wpe, pos));
  return d ? ops.dropout(x, d.p, d.draw) : x;
}

/** Median ms of forward + backward of `run` per variant, interleaved. */
async function timeVariants(
  dev: Device,
  leaves: Tensor[],
  run: (v: Variant, offset: number) => Tensor,
  reps: number,
): Promise<Record<Variant, number>> {
  const ms: Record<Variant, number[]> = { fused: [], unfused: [] };
  const order: Variant[] = ["fused", "unfused"];
  for (let r = -2; r < reps; r++) {
    for (const v of r % 2 ? order : [...order].reverse()) {
      await dev.sync();
      const t0 = performance.now();
      await tidy(dev, async () => {
        const out = run(v, 2 * (r + 2));
        const dout = Tensor.fromArray(dev, randomData(out.size, 9), out.shape);
        await backward(out, dout);
      });
      await dev.sync();
      if (r >= 0) ms[v].push(performance.now() - t0);
      for (const t of leaves) {
        t.grad?.dispose();
        t.grad = null;
      }
    }
  }
  return { fused: median(ms.fused), unfused: median(ms.unfused) };
}

/** Runs `deno task bench:residual` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, RESIDUAL_FLAGS, USAGE, validateResidualFlags);
  if (typeof f === "number") return f;
  const reps = f.reps as number, n = f.tokens as number, h = f.hidden as number;
  const T = f.seq as number, V = f.vocab as number;
  const dev = await Device.create({
    backend: parseBackend((f.backend as string | undefined) ?? Deno.env.get(BACKEND_ENV)),
  });
  console.log(
    `backend ${dev.summary().backend ?? ""}, ${n} tokens × ${h}, ${reps} reps, load: ${
      Deno.loadavg().join(" ")
    }`,
  );
  console.log("| block | dropout | fused ms | unfused ms | unfused/fused |");
  console.log("|---|---|---|---|---|");
  const layer = layerInputs(dev, n, h);
  const wte = Tensor.fromArray(dev, randomData(V * h, 7), [V, h]).requireGrad();
  const wpe = Tensor.fromArray(dev, randomData(T * h, 8), [T, h]).requireGrad();
  const ids = TokenIds.fromHost(
    dev,
    Int32Array.from(randomData(n, 10), (x) => Math.floor((x + 1) / 2 * V)),
    [n / T, T],
  );
  const pos = TokenIds.fromHost(dev, Int32Array.from({ length: n }, (_, i) => i % T), [n / T, T]);
  for (const p of [0, 0.1]) {
    const rows: [string, Record<Variant, number>][] = [
      [
        "x + drop(a) → LN → + drop(·)",
        await timeVariants(dev, layer, (v, o) => layerSkeleton(v, layer, p, o), reps),
      ],
      [
        "drop(wte[ids] + wpe[t])",
        await timeVariants(
          dev,
          [wte, wpe],
          (v, o) => embeddingStep(v, [wte, wpe], ids, pos, p, o),
          reps,
        ),
      ],
    ];
    for (const [name, r] of rows) {
      console.log(
        `| ${name} | ${p} | ${r.fused.toFixed(2)} | ${r.unfused.toFixed(2)} | ${
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
