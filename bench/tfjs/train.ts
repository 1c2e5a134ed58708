/**
 * The training-step benchmark of `bench/train.ts` with the same GPT written in TensorFlow.js
 * (WebGPU backend, same `GPU` object and adapter) beside the project's, in one run. Not named
 * `*_bench.ts`, so `deno task bench` leaves it (and TF.js) out; `deno task bench:tfjs` runs it.
 *
 *     deno bench -A bench/tfjs/train.ts        # deno bench report + Markdown table
 *     deno run -A bench/tfjs/train.ts          # only the table
 * @module
 */

import type { BackendName } from "../../core/gpu.ts";
import { DEFAULT_DROPOUT } from "../../models/shape.ts";
import {
  type BenchRow,
  deviceFor,
  type Runner,
  tokenSource,
  trainBenchEntry,
  useTfjs,
} from "../train.ts";
import { createTfjs, type Tfjs } from "./backend.ts";
import { TfjsGpt, TfjsTrainer } from "./gpt.ts";

let tfjsLive: { backend: BackendName; tfjs: Promise<Tfjs> } | null = null;
/** One TF.js backend is live at a time: the one on `b`'s adapter. */
async function tfjsFor(b: BackendName): Promise<Tfjs> {
  if (tfjsLive?.backend !== b) {
    const device = await deviceFor(b);
    tfjsLive = { backend: b, tfjs: createTfjs(device.provider) };
  }
  return await tfjsLive.tfjs;
}

async function tfjsRunner(row: BenchRow): Promise<Runner> {
  const tfjs = await tfjsFor(row.backend);
  const { model: m, batch, seq } = row.config;
  if (m.hiddenDropout !== m.attentionDropout) {
    throw new Error("the TF.js model takes one dropout rate for both places");
  }
  const gpt = new TfjsGpt(tfjs.tf, {
    vocabSize: m.vocabSize,
    numLayers: m.numLayers,
    hiddenSize: m.hiddenSize,
    numHeads: m.numHeads,
    maxPositions: m.maxPositions,
    ffnHiddenSize: m.ffnHiddenSize,
    dropout: m.hiddenDropout ?? DEFAULT_DROPOUT,
  }, 1);
  const trainer = new TfjsTrainer(tfjs, gpt, 1e-3, 1);
  const tokens = tokenSource(row.config);
  return {
    params: gpt.parameterCount,
    async step() {
      return (await trainer.step(tokens(), tokens(), batch, seq)).loss;
    },
  };
}

useTfjs(tfjsRunner);
await trainBenchEntry(import.meta.main);
