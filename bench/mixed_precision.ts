/**
 * fp32 against --bf16 and --fp16 on one rank: ms per training step and the
 * buffer pool's peak bytes, split into what persists (weights, 16-bit weight
 * copies, AdamW moments), the gradients, and the activations: those saved for
 * backward at the end of the forward pass (16-bit under --bf16/--fp16) and the
 * forward's peak (saved activations plus a layer's working set).
 * Then, where the adapter offers `shader-f16`, one fp16-weight linear read by
 * integer unpacking, by native f16 loads and computed in native f16 arithmetic
 * (`--read-only`: only that).
 * At `--tp 2` each rank is a Worker with its own device (the shard's memory,
 * the larger of the ranks) and the table adds the bytes each rank sends through
 * its tensor-parallel group per step (`countedGroup`, as a ring moves them).
 * At `--dp N` (ranks = tp · dp Workers; each replica its own tokens) the bf16/fp16
 * gradients are averaged over the data-parallel group with 16-bit values on the
 * wire (`--dp-wire half`, the trainer's default), as fp32
 * (`fp32`: `--accumulate-allreduce-grads-in-fp32`) or both, one run each; the
 * table adds the bytes each rank sends through its DP group per step and the
 * time of the gradient average (the larger rank's), and a
 * second table compares the runs: the largest relative difference of the loss
 * over the steps (the untimed first one included) and the relative 2-norm
 * difference of the weights after the last, 16-bit wire against fp32 wire and
 * each against the fp32 run. Mode `fp16-f16` is `--fp16 --f16-arithmetic`
 * (needs shader-f16). `deno run -P=bench bench/mixed_precision.ts --help` gives
 * the usage and flags.
 * @module
 */

import { Device } from "../core/device.ts";
import { BACKEND_ENV, parseBackend } from "../core/gpu.ts";
import { preferWideVectors } from "../core/simd.ts";
import { tidy } from "../core/tensor.ts";
import { localDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import type { GptConfig } from "../models/gpt.ts";
import { bytesSent as sent } from "../models/parallel/hooks.ts";
import { DEBUG_FLAG, handled, splitMisfit } from "../cli/errors.ts";
import {
  commaList,
  type FlagSpec,
  type FlagValues,
  parseCommandLine,
  UsageError,
} from "../cli/flags.ts";
import { measure, type MixedResult, type MixedRun } from "./mixed_precision_worker.ts";

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
  // GPT-2 medium (355M): 24 layers, hidden 1024, 16 heads, vocabulary padded to 50,304
  medium: {
    config: {
      vocabSize: 50304,
      numLayers: 24,
      hiddenSize: 1024,
      numHeads: 16,
      maxPositions: 1024,
      hiddenDropout: 0.1,
      attentionDropout: 0.1,
    },
    batch: 1,
    seq: 256,
  },
};
/** The modes of `--modes`. */
const MODES: readonly MixedRun["mode"][] = ["fp32", "bf16", "fp16", "fp16-f16"];

/** Every flag of `bench/mixed_precision.ts`. */
export const MIXED_PRECISION_FLAGS: Record<string, FlagSpec> = {
  "steps": { type: "int", min: 1, default: 10, help: "timed training steps per run" },
  "shape": {
    type: "string",
    choices: Object.keys(SHAPES),
    default: "reference",
    help: "model and batch: reference, 12 layers deep, one wide layer, GPT-2 medium",
  },
  "layers": { type: "int", min: 1, help: "layers (default: the shape's)" },
  "seq": { type: "int", min: 1, help: "tokens per sequence (default: the shape's)" },
  "batch": { type: "int", min: 1, help: "sequences per step (default: the shape's)" },
  "tp": { type: "int", min: 1, default: 1, help: "tensor-parallel ranks (Workers)" },
  "dp": { type: "int", min: 1, default: 1, help: "data-parallel replicas (ranks: tp · dp)" },
  "dp-wire": {
    type: "string",
    default: "both",
    valueName: "half|fp32|both",
    help: "at --dp 2 or more, the 16-bit gradients' all-reduce: 16-bit, fp32, or both",
  },
  "modes": {
    type: "string",
    default: "fp32,bf16,fp16",
    valueName: "M,M…",
    help: `runs, comma-separated: ${MODES.join(", ")}`,
  },
  "recompute": { type: "boolean", help: "recompute activations in backward" },
  "read-only": { type: "boolean", help: "only the fp16 weight read (no training runs)" },
  ...DEBUG_FLAG,
};

const USAGE = `Usage: WEBGPU_BACKEND=deno|dawn deno task bench:mixed-precision [--steps N]
  [--shape reference|deep|wide|medium] [--layers N] [--seq N] [--batch N] [--tp N]
  [--dp N] [--dp-wire half|fp32|both] [--modes fp32,bf16,fp16,fp16-f16] [--recompute]
  [--read-only]`;

/** The gradient wires of `--dp-wire`: both, or half and fp32 comma-separated. */
function dpWiresOf(text: string): NonNullable<MixedRun["dpWire"]>[] {
  const wires = commaList(
    "dp-wire",
    text === "both" ? "half,fp32" : text,
    (w) => w === "half" || w === "fp32",
    "half, fp32 or both",
  );
  return wires as NonNullable<MixedRun["dpWire"]>[];
}

/** The runs of `--modes`: comma-separated {@link MODES}. */
function modesOf(text: string): MixedRun["mode"][] {
  const modes = commaList(
    "modes",
    text,
    (m) => (MODES as readonly string[]).includes(m),
    `comma-separated modes among ${MODES.join(", ")}`,
  );
  return modes as MixedRun["mode"][];
}

/** Checks the flags' lists and the TP size against the shape; throws UsageError. */
function validateMixedFlags(f: FlagValues): void {
  dpWiresOf(f["dp-wire"] as string);
  modesOf(f.modes as string);
  // Known before any run: a TP size the shape's heads or MLP do not split.
  const misfit = splitMisfit(SHAPES[f.shape as string].config, f.tp as number);
  if (misfit) throw new UsageError(`--shape ${f.shape} --tp ${f.tp}: ${misfit}`);
}

/** Runs `bench/mixed_precision.ts` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, MIXED_PRECISION_FLAGS, USAGE, validateMixedFlags);
  if (typeof f === "number") return f;
  const steps = f.steps as number;
  const backend = parseBackend(Deno.env.get(BACKEND_ENV));
  const { config: base, batch: shapeBatch, seq: shapeSeq } = SHAPES[f.shape as string];
  const L = (f.layers as number | undefined) ?? base.numLayers;
  const seq = (f.seq as number | undefined) ?? shapeSeq;
  const batch = (f.batch as number | undefined) ?? shapeBatch;
  const tp = f.tp as number;
  const dp = f.dp as number;
  const world = tp * dp;
  const dpWires = dpWiresOf(f["dp-wire"] as string);
  const config = {
    ...base,
    numLayers: L,
    maxPositions: Math.max(base.maxPositions, seq),
    recomputeActivations: f.recompute === true,
  };
  // llvmpipe's vector width as `train` picks it for this model, before any adapter.
  await preferWideVectors({ hiddenSize: config.hiddenSize });
  const MiB = (b: number) => (b / 2 ** 20).toFixed(2);
  console.log(
    `shape ${f.shape}: ${config.numLayers} layers, hidden ${config.hiddenSize}, ` +
      `${config.numHeads} heads, vocab ${config.vocabSize}, batch ${batch} × seq ${seq}` +
      `${dp > 1 ? " per replica" : ""}, TP=${tp}, DP=${dp}, ` +
      `${steps} steps${config.recomputeActivations ? ", recompute" : ""}${
        world > 1 ? " (per rank: the larger of the ranks)" : ""
      }`,
  );
  // The table's columns: the text ones left-aligned, the numbers right-aligned.
  const textColumns = ["mode", ...(dp > 1 ? ["DP wire"] : [])];
  const numberColumns = [
    "ms/step",
    "peak MiB",
    "weights+copies+moments MiB",
    "grads MiB",
    "saved activations MiB",
    "forward peak MiB",
    ...(tp > 1
      ? ["TP fp32 all-reduce bytes/step", "TP 16-bit f/g bytes/step", "TP bytes/step"]
      : []),
    ...(dp > 1
      ? ["DP gradient bytes/step", "DP other bytes/step", "DP calls/step", "DP gradient ms/step"]
      : []),
  ];
  console.log(`| ${[...textColumns, ...numberColumns].join(" | ")} |`);
  console.log(
    `| ${[...textColumns.map(() => "---"), ...numberColumns.map(() => "---:")].join(" | ")} |`,
  );
  const modes = modesOf(f.modes as string);
  /** Every rank's result of each run, by `mode/wire`. */
  const done = new Map<string, MixedResult[]>();
  const label = (mode: string, wire: string) => mode === "fp32" ? "fp32" : `${mode}/${wire}`;
  for (const mode of f["read-only"] ? [] : modes) {
    for (const dpWire of dp > 1 && mode !== "fp32" ? dpWires : ["fp32" as const]) {
      const run: MixedRun = {
        config,
        batch,
        seq,
        steps,
        mode,
        tp,
        dp,
        dpWire,
        keepWeights: dp > 1,
        backend,
      };
      const wire = dp > 1
        ? ` ${mode === "fp32" ? "fp32" : dpWire === "half" ? mode : "fp32"} |`
        : "";
      let rs: MixedResult[];
      if (world === 1) {
        const device = await Device.create({ backend });
        rs = [await measure(device, run)];
        await device.close();
      } else {
        const res = await runWorkers(
          localDistConfig(world, 60 * 60_000),
          new URL("./mixed_precision_worker.ts", import.meta.url),
          [JSON.stringify(run)],
          { log: false, gpus: [] },
        );
        if (!res.ok) {
          const why = res.ranks.filter((r) => !r.ok).map((r) => `rank ${r.rank}: ${r.error}`);
          console.log(`| ${mode} |${wire} failed: ${why.join("; ")} |`);
          continue;
        }
        rs = res.ranks.map((r) => r.result as MixedResult);
      }
      done.set(label(mode, dpWire), rs);
      const max = (f: (r: MixedResult) => number) => Math.max(...rs.map(f));
      const b = rs[0].tpBytes, d = rs[0].dpBytes, g = rs[0].dpGradBytes;
      const same = rs.every((r) => r.dpGradBytes === g && sent(r.dpBytes) === sent(d));
      console.log(
        `| ${mode} |${wire} ${max((r) => r.msPerStep).toFixed(1)} | ${MiB(max((r) => r.peak))} | ${
          MiB(max((r) => r.persistent))
        } | ${MiB(max((r) => r.grads))} | ${MiB(max((r) => r.saved))} | ${
          MiB(max((r) => r.forwardPeak))
        } |` + (tp > 1 ? ` ${b.allReduce} | ${b.allGather + b.half} | ${sent(b)} |` : "") +
          (dp > 1
            ? ` ${g}${same ? "" : " (ranks differ)"} | ${+(sent(d) - g).toFixed(
              2,
            )} | ${d.calls} | ${max((r) => r.dpGradMs).toFixed(1)} |`
            : ""),
      );
    }
  }

  // At DP > 1: how far apart the runs end (losses are DP averages, the same on every rank;
  // weights compared rank by rank, i.e. shard by shard at TP > 1).
  if (dp > 1 && done.size > 1) {
    const relLoss = (a: number[], b: number[]) =>
      Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));
    const relNorm = (a: MixedResult[], b: MixedResult[]) => {
      let d2 = 0, n2 = 0;
      a.forEach((r, k) => {
        const wa = r.weights!, wb = b[k].weights!;
        for (let i = 0; i < wa.length; i++) {
          d2 += (wa[i] - wb[i]) ** 2;
          n2 += wb[i] ** 2;
        }
      });
      return Math.sqrt(d2 / n2);
    };
    const identical = (a: MixedResult[], b: MixedResult[]) =>
      a.every((r, k) =>
        r.losses.every((l, i) => Object.is(l, b[k].losses[i])) &&
        r.weights!.every((w, i) => Object.is(w, b[k].weights![i]))
      );
    // every data-parallel replica must hold the same weights
    for (const [name, rs] of done) {
      for (const r of rs) {
        const ref = rs[rs.indexOf(r) % tp];
        if (!r.weights!.every((w, i) => Object.is(w, ref.weights![i]))) {
          console.log(`${name}: DP replicas hold different weights`);
        }
      }
    }
    const fmt = (x: number) => x === 0 ? "0" : x.toExponential(2);
    console.log(`\n${steps + 1} steps (the untimed first one included), DP=${dp}:`);
    console.log("| run | against | max rel. loss diff | rel. 2-norm weight diff | bit-identical |");
    console.log("| --- | ------- | -----------------: | ----------------------: | ------------- |");
    for (const mode of modes.filter((m) => m !== "fp32")) {
      const pairs: [string, string][] = [
        [label(mode, "half"), label(mode, "fp32")],
        [label(mode, "half"), "fp32"],
        [label(mode, "fp32"), "fp32"],
      ];
      for (const [a, b] of pairs) {
        const ra = done.get(a), rb = done.get(b);
        if (!ra || !rb) continue;
        console.log(
          `| ${a} | ${b} | ${fmt(relLoss(ra[0].losses, rb[0].losses))} | ${
            fmt(relNorm(ra, rb))
          } | ${identical(ra, rb) ? "yes" : "no"} |`,
        );
      }
    }
    console.log("\nlosses per step (rank 0; skipped: steps the fp16 scaler skipped):");
    for (const [name, rs] of done) {
      console.log(
        `${name}: ${rs[0].losses.map((l) => l.toFixed(6)).join(" ")} (skipped ${rs[0].skipped})`,
      );
    }
  }

  // The fp16 weight read three ways where the adapter offers shader-f16: integer unpacking
  // (every adapter), native f16 loads, native f16 arithmetic, on one [512×1024]·[1024×1024]ᵀ
  // linear.
  {
    const device = await Device.create({ backend });
    if (!device.gpu.features.has("shader-f16")) {
      console.log(`\n${device.summary().backend}: no shader-f16, packed path only`);
    } else {
      const { linear, packHalf } = await import("../core/ops/mod.ts");
      const { Tensor } = await import("../core/tensor.ts");
      const x = Tensor.fromArray(device, new Float32Array(512 * 1024).fill(0.01), [512, 1024])
        .keep();
      const w = Tensor.fromArray(device, new Float32Array(1024 * 1024).fill(0.02), [1024, 1024])
        .keep();
      w.halfCopy = { words: packHalf(w, "fp16").keep(), format: "fp16" };
      console.log(
        `\n${device.summary().backend}: fp16 weight read, linear [512×1024]·[1024×1024]ᵀ`,
      );
      console.log("| path | ms | GFLOP/s |");
      console.log("| ---- | -: | ------: |");
      const copy = w.halfCopy;
      const paths = ["f32 weight", "packed (u32 unpack)", "native f16", "native f16 arithmetic"];
      for (const path of paths.flatMap((p) => [p, p])) {
        w.halfCopy = path === "f32 weight" ? null : copy;
        device.nativeF16 = path.startsWith("native f16");
        device.f16Arithmetic = path === "native f16 arithmetic";
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
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
