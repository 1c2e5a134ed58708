/**
 * The GPT task of `deno task train`: next-token prediction on a token stream
 * (one corpus split by `--split`/`--val-fraction`, or `--train-data-path` plus
 * `--valid-data-path`), a GPT from flags or a Hugging Face GPT-2, the final
 * baselines and a sample.
 * @module
 */

import type { Device } from "../../core/device.ts";
import type { Tensor } from "../../core/tensor.ts";
import { TokenIds } from "../../core/token_ids.ts";
import { loadTokens } from "../../data/corpus.ts";
import { DataError } from "../../data/errors.ts";
import {
  evalBatches,
  GptBatchSampler,
  type GptSamplerState,
  type LmBatch,
} from "../../data/gpt_batches.ts";
import { DataRng } from "../../data/rng.ts";
import { uniformEntropy, unigramEntropy } from "../../data/stats.ts";
import { createTokenizer, type Tokenizer } from "../../data/tokenizer.ts";
import { gptCheckpointInfo } from "../../models/checkpoint/gpt.ts";
import { generate } from "../../models/generate.ts";
import { Gpt, type GptConfig } from "../../models/gpt.ts";
import { assignGpt2, readHfGpt2 } from "../../models/hf/gpt2.ts";
import { tokenizerAdvice, vocabularyMisfit } from "../model_tokenizer.ts";
import { forStdout, TextStream } from "../text_stream.ts";
import { gptConfigOf, type SampleArgs, type TrainArgs } from "../train_args.ts";
import {
  fullParamCount,
  modelLine,
  type RankLog,
  type Task,
  type TaskCheckpointInfo,
  type TaskData,
  type TaskEnv,
  withRunSettings,
} from "./task.ts";

/** Training and validation token streams, and where they came from. */
export interface GptSplits {
  /** Training tokens. */
  train: Uint32Array;
  /** Validation tokens. */
  val: Uint32Array;
  /** Held-out test tokens (`--split`'s third part; not used by training). */
  test: Uint32Array;
  /** The data, for the log. */
  source: string;
}

/**
 * The token streams of a run: `--train-data-path` and `--valid-data-path`
 * each read whole, or one corpus cut in order into train, validation and test
 * parts by the split weights (the test part last, then validation before it).
 */
export async function loadGptSplits(a: TrainArgs, tokenizer: Tokenizer): Promise<GptSplits> {
  const d = a.data;
  const T = a.seqLength;
  let splits: GptSplits;
  if (d.trainPath !== undefined && d.validPath !== undefined) {
    const train = await loadTokens(tokenizer, d.trainPath);
    const val = await loadTokens(tokenizer, d.validPath);
    splits = {
      train: train.ids,
      val: val.ids,
      test: new Uint32Array(0),
      source: `${train.source} + ${val.source}`,
    };
  } else {
    const corpus = await loadTokens(tokenizer, d.trainPath ?? d.path);
    const n = corpus.ids.length;
    const nTest = Math.round(n * d.split.test);
    const nVal = Math.round(n * d.split.valid);
    const cut = Math.max(0, n - nVal - nTest);
    splits = {
      train: corpus.ids.subarray(0, cut),
      val: corpus.ids.subarray(cut, n - nTest),
      test: corpus.ids.subarray(n - nTest),
      source: corpus.source,
    };
  }
  const files = d.trainPath !== undefined && d.validPath !== undefined;
  for (const [name, part] of [["training", splits.train], ["validation", splits.val]] as const) {
    if (name === "validation" && a.evalIters === 0) continue; // no validation: nothing read from it
    if (part.length < T + 1) {
      // Two files are read whole: --split does not apply to them.
      const what = files
        ? `the ${name} file ${name === "training" ? d.trainPath : d.validPath}`
        : `the ${name} split`;
      throw new DataError(
        `${what} has ${part.length} tokens, fewer than --seq-length + 1 = ${T + 1}; ` +
          `use more data, ${files ? "" : "another --split (or --val-fraction), "}` +
          `or a shorter --seq-length` +
          (name === "validation" ? " (--eval-iters 0 trains without validation)" : ""),
      );
    }
  }
  return splits;
}

/** Rows `lo .. lo + rows` of `b` as input and target tensors. */
function gptTensors(device: Device, b: LmBatch, lo: number, rows: number) {
  const T = b.seqLength;
  return {
    ids: TokenIds.fromHost(device, b.inputs.subarray(lo * T, (lo + rows) * T), [rows, T]),
    targets: TokenIds.fromHost(device, b.targets.subarray(lo * T, (lo + rows) * T), [rows, T]),
  };
}

/** Reads the GPT task's tokenizer, data and (with `--init-from-hf`) weights. */
export async function gptTaskData(a: TrainArgs): Promise<TaskData<LmBatch>> {
  const tokenizer = await createTokenizer(a.data.tokenizer);
  const splits = await loadGptSplits(a, tokenizer);
  const hfDir = a.initFromHf;
  const hf = hfDir ? await readHfGpt2(hfDir) : null;
  let config = gptConfigOf(a.model, tokenizer.vocabSize);
  if (hf) {
    // nanoGPT's GPT-2 pads 50,257 ids to 50,304 rows: the padding is never sampled.
    if (vocabularyMisfit(tokenizer.name, tokenizer.vocabSize, hf.config.vocabSize) !== null) {
      throw new DataError(
        `${hfDir} has a vocabulary of ${hf.config.vocabSize}, the ${tokenizer.name} tokenizer ` +
          `${tokenizer.vocabSize}; ${await tokenizerAdvice(
            hf.config.vocabSize,
            " for this checkpoint",
          )}`,
      );
    }
    config = withRunSettings(hf.config, config);
  }
  return {
    numHeads: config.numHeads,
    build: (env) => Promise.resolve(new GptTask(a, env, tokenizer, splits, config, hf)),
  };
}

/** GPT pre-training: next-token cross-entropy. */
export class GptTask implements Task<LmBatch> {
  /** `"gpt"`. */
  readonly name = "gpt";
  /** The model. */
  readonly model: Gpt;
  /** The model's resolved shape. */
  readonly shape;
  /** The LM head runs on every token. */
  readonly headShare = 1;
  /** Next-token cross-entropy: Megatron's `lm loss`. */
  readonly lossName = "lm loss";
  /** The validation batches. */
  readonly validation: LmBatch[];
  /** Checkpoint facts. */
  readonly checkpointInfo: TaskCheckpointInfo;
  readonly #sampler: GptBatchSampler;
  readonly #params: number;

  /** Builds the model (and loads Hugging Face weights when `hf` is given). */
  constructor(
    readonly args: TrainArgs,
    env: TaskEnv,
    readonly tokenizer: Tokenizer,
    readonly splits: GptSplits,
    config: GptConfig,
    readonly hf: Awaited<ReturnType<typeof readHfGpt2>> | null,
  ) {
    const a = args;
    this.model = new Gpt(env.parallel, config, { seed: a.seed, rng: env.rng });
    this.shape = this.model.shape;
    const tp = env.parallel.tpSize;
    if (hf) {
      assignGpt2(
        this.model.namedParams(),
        hf.tensors,
        hf.config,
        { tp, tpRank: env.tpRank },
        hf.source,
      );
    }
    const info = gptCheckpointInfo(this.model.config);
    this.checkpointInfo = { ...info, model: { ...info.model, shape: { ...this.shape } } };
    this.#sampler = new GptBatchSampler(splits.train, {
      batchSize: a.microBatch * env.dp,
      seqLength: a.seqLength,
      seed: a.seed,
    });
    this.validation = a.evalIters > 0
      ? [...evalBatches(splits.val, a.microBatch, a.seqLength, { maxBatches: a.evalIters })]
      : [];
    this.#params = fullParamCount(this.model, tp);
  }

  /** The next global micro-batch. */
  nextTrainBatch(): LmBatch {
    return this.#sampler.next();
  }

  /** Rows of `b`. */
  rowsOf(b: LmBatch): number {
    return b.batchSize;
  }

  /** Mean next-token loss of rows `lo .. lo + rows` (a token mean needs no DP share). */
  loss(b: LmBatch, lo: number, rows: number): Promise<Tensor> {
    const { ids, targets } = gptTensors(this.model.parallel.device, b, lo, rows);
    return this.model.loss(ids, targets);
  }

  /** The sampler's state. */
  samplerState(): GptSamplerState {
    return this.#sampler.state();
  }

  /** Restores the sampler (its own checks reject a foreign state). */
  restoreSampler(state: unknown): void {
    this.#sampler.restore(state as GptSamplerState);
  }

  /** Data, model and initialization lines. */
  describe(): string[] {
    const t = this.tokenizer, s = this.splits;
    const lines = [
      `data: ${s.source} | tokenizer ${t.name} (vocab ${t.vocabSize}, padded ${this.model.paddedVocab}) | ` +
      `${s.train.length} train / ${s.val.length} validation tokens` +
      (this.validation.length === 0 && s.val.length > 0 ? " (unused: --eval-iters 0)" : "") +
      (s.test.length > 0 ? ` (${s.test.length} test tokens held out, unused)` : ""),
      modelLine(
        "GPT",
        "pre-LN",
        this.shape,
        this.args.seqLength,
        this.#params,
        this.args.model.recomputeActivations,
      ),
    ];
    if (this.args.initFromHf) {
      lines.push(`initialized from ${this.args.initFromHf} (Hugging Face GPT-2)`);
    }
    return lines;
  }

  /** Nothing besides the checkpoint. */
  saveExtras(): Promise<void> {
    return Promise.resolve();
  }

  /** Final validation loss, its baselines, and a sample. */
  async report(lastVal: number, a: TrainArgs, log: RankLog): Promise<void> {
    const say = (s: string) => log.say(s);
    say(
      a.evalIters > 0
        ? `\nfinal validation loss ${lastVal.toFixed(4)} nats/token (perplexity ${
          Math.exp(lastVal).toFixed(2)
        })`
        : "\nno validation (--eval-iters 0)",
    );
    say(
      `  baseline, uniform over the vocabulary (ln V):  ${
        uniformEntropy(this.tokenizer.vocabSize).toFixed(4)
      }`,
    );
    say(
      `  baseline, unigram entropy of the corpus:       ${
        unigramEntropy(this.splits.train).toFixed(4)
      }`,
    );
    if (a.sample.tokens > 0) await this.#sample(a.sample, a.seed, log);
  }

  async #sample(s: SampleArgs, seed: number, log: RankLog): Promise<void> {
    // Every rank runs the model (tensor parallelism); the logging rank prints.
    const print = log.isLogger;
    log.say(`\nsample (temperature ${s.temperature}, top-p ${s.topP}):`);
    const prompt = Array.from(this.tokenizer.encode(s.prompt));
    const rng = new DataRng(seed);
    const enc = new TextEncoder();
    const stream = new TextStream(this.tokenizer, prompt);
    if (print) await Deno.stdout.write(enc.encode(forStdout(s.prompt)));
    for await (
      const t of generate(this.model, prompt, {
        maxNewTokens: s.tokens,
        temperature: s.temperature,
        topK: s.topK,
        topP: s.topP,
        uniform: () => rng.nextFloat(),
        vocabLimit: this.tokenizer.vocabSize,
      })
    ) {
      if (print) await Deno.stdout.write(enc.encode(forStdout(stream.push(t))));
    }
    if (print) console.log(forStdout(stream.flush()) + "\n");
  }
}
