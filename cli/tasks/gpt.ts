/**
 * The GPT task of `deno task train`: next-token prediction on token streams
 * (one corpus or a blend split by `--split`/`--val-fraction`, or
 * `--train-data-path` plus `--valid-data-path`: cli/tasks/gpt_data.ts), a GPT
 * from flags or a Hugging Face GPT-2, the final baselines and a sample.
 * @module
 */

import { paramShapeOf } from "../limits.ts";
import type { Device } from "../../core/device.ts";
import type { Tensor } from "../../core/tensor.ts";
import { TokenIds } from "../../core/token_ids.ts";
import {
  blendedEvalBatches,
  BlendedGptBatchSampler,
  type BlendedSamplerState,
} from "../../data/blended_gpt_batches.ts";
import { DataError } from "../../data/errors.ts";
import { checkHfTokenizerFiles } from "../hf_tokenizer.ts";
import { firstRunOfRestartableJob } from "../resume_flags.ts";
import {
  evalBatches,
  GptBatchSampler,
  type GptSamplerState,
  type LmBatch,
} from "../../data/gpt_batches.ts";
import { DataRng } from "../../data/rng.ts";
import { blendUnigramEntropy, uniformEntropy } from "../../data/stats.ts";
import { createTokenizer, documentEndId, type Tokenizer } from "../../data/tokenizer.ts";
import { gptCheckpointInfo } from "../../models/checkpoint/gpt.ts";
import { readMeta, resolveIterDir } from "../../models/checkpoint/layout.ts";
import { generate } from "../../models/generate.ts";
import { Gpt, type GptConfig } from "../../models/gpt.ts";
import { assignGpt2, type HfGpt2, readHfGpt2 } from "../../models/hf/gpt2.ts";
import { tokenizerAdvice, vocabularyMisfit } from "../model_tokenizer.ts";
import { type StreamFingerprint, streamFingerprint } from "../same_data.ts";
import { forStdout, TextStream } from "../text_stream.ts";
import {
  describeBlend,
  type GptSplits,
  isBlendPart,
  loadGptSplits,
  partTokens,
} from "./gpt_data.ts";
import { gptConfigOf, type SampleArgs, type TrainArgs } from "../train_args.ts";
import {
  fullParamCount,
  type LossPart,
  modelLine,
  type RankLog,
  type Task,
  type TaskCheckpointInfo,
  type TaskData,
  type TaskEnv,
  withRunSettings,
} from "./task.ts";

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
  // A resumed model keeps its vocabulary: one padded past the tokenizer's (nanoGPT's 50,304
  // rows, an HF start's) is saved with its rows, whose count no flag gives.
  const saved = await resumedVocabSize(a);
  if (saved !== undefined) {
    const misfit = vocabularyMisfit(tokenizer.name, tokenizer.vocabSize, saved);
    if (misfit !== null) throw new DataError(`${a.load}: ${misfit}`);
  }
  let config = gptConfigOf(a.model, saved ?? tokenizer.vocabSize);
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
    await checkHfTokenizerFiles(hfDir!, tokenizer.name);
    config = withRunSettings(hf.config, config);
  }
  return {
    numHeads: config.numHeads,
    headDim: config.hiddenSize / config.numHeads,
    paramShape: paramShapeOf(config),
    hfInitStd: hf?.initializerRange,
    fingerprints: () => gptFingerprints(splits),
    build: (env) => Promise.resolve(new GptTask(a, env, tokenizer, splits, config, hf)),
  };
}

/**
 * The vocabulary size of the checkpoint `--load` resumes, or undefined: no
 * `--load`, the first run of a restartable job, or a checkpoint that records none.
 */
async function resumedVocabSize(a: TrainArgs): Promise<number | undefined> {
  if (!a.load || await firstRunOfRestartableJob(a.load, a.save, a.loadIteration)) return undefined;
  const { path } = await resolveIterDir(a.load, a.loadIteration);
  const v = (await readMeta(path)).model?.config?.vocabSize;
  return typeof v === "number" ? v : undefined;
}

/**
 * The fingerprint of each training and validation stream (the corpora of a
 * blend named by their place in it).
 */
async function gptFingerprints(s: GptSplits): Promise<Record<string, StreamFingerprint>> {
  const out: Record<string, StreamFingerprint> = {};
  for (const [what, p] of [["training data", s.train], ["validation data", s.val]] as const) {
    for (const [i, tokens] of p.streams.entries()) {
      const name = p.streams.length > 1 ? `${what}, corpus ${i + 1} of ${p.streams.length}` : what;
      out[name] = await streamFingerprint(tokens);
    }
  }
  return out;
}

/**
 * The data of the `data:` line: the corpus, or each corpus of a blend with its
 * weight and tokens; separate training and validation data joined by `+`.
 */
function dataSource(s: GptSplits): string {
  const tokens = new Map(s.corpora.map((c) => [c.source, c.tokens]));
  const one = (p: GptSplits["train"]) =>
    isBlendPart(p) ? describeBlend(p, (n) => tokens.get(n)) : p.names[0];
  return s.separate ? `${one(s.train)} + ${one(s.val)}` : one(s.train);
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
  readonly #sampler: GptBatchSampler | BlendedGptBatchSampler;
  readonly #params: number;

  /** Builds the model (and loads Hugging Face weights when `hf` is given). */
  constructor(
    readonly args: TrainArgs,
    env: TaskEnv,
    readonly tokenizer: Tokenizer,
    readonly splits: GptSplits,
    config: GptConfig,
    readonly hf: HfGpt2 | null,
  ) {
    const a = args;
    this.model = new Gpt(env.parallel, config, {
      seed: a.seed,
      rng: env.rng,
      initStd: a.model.initStd,
    });
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
    const options = { batchSize: a.microBatch * env.dp, seqLength: a.seqLength, seed: a.seed };
    const train = splits.train, val = splits.val;
    // One corpus keeps the sampler (and checkpoint state) it had before blends.
    this.#sampler = isBlendPart(train)
      ? new BlendedGptBatchSampler(train.streams, train.weights, options, train.names)
      : new GptBatchSampler(train.streams[0], options);
    const maxBatches = env.validationBatches;
    this.validation = maxBatches === 0
      ? []
      : isBlendPart(val)
      ? blendedEvalBatches(val.streams, val.weights, a.microBatch, a.seqLength, {
        maxBatches,
        names: val.names,
      })
      : [...evalBatches(val.streams[0], a.microBatch, a.seqLength, { maxBatches })];
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

  /**
   * Mean next-token loss of the part's rows: every row has the same tokens, so
   * the mean of the parts' means is the global batch's.
   */
  loss(b: LmBatch, part: LossPart<LmBatch>): Promise<Tensor> {
    const { ids, targets } = gptTensors(this.model.parallel.device, b, part.lo, part.rows);
    return this.model.loss(ids, targets);
  }

  /** The sampler's state. */
  samplerState(): GptSamplerState | BlendedSamplerState {
    return this.#sampler.state();
  }

  /** Restores the sampler (its own checks reject a foreign state: another seed, a blend or not). */
  restoreSampler(state: unknown): void {
    if (this.#sampler instanceof BlendedGptBatchSampler) {
      this.#sampler.restore(state as BlendedSamplerState);
    } else this.#sampler.restore(state as GptSamplerState);
  }

  /** Data, model and initialization lines. */
  describe(): string[] {
    const t = this.tokenizer, s = this.splits;
    const nTrain = partTokens(s.train), nVal = partTokens(s.val);
    const lines = [
      `data: ${
        dataSource(s)
      } | tokenizer ${t.name} (vocab ${t.vocabSize}, padded ${this.model.paddedVocab}) | ` +
      `${nTrain} train / ${nVal} validation tokens` +
      (this.validation.length === 0 && nVal > 0 ? " (unused: --eval-iters 0)" : "") +
      (s.testTokens > 0 ? ` (${s.testTokens} test tokens held out, unused)` : ""),
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
        (await blendUnigramEntropy(this.splits.train.streams, this.splits.train.weights))
          .toFixed(4)
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
    // The end of a document ends the sample, and is not printed (as in `generate`).
    const endId = documentEndId(this.tokenizer);
    if (print) await Deno.stdout.write(enc.encode(forStdout(s.prompt)));
    for await (
      const t of generate(this.model, prompt, {
        maxNewTokens: s.tokens,
        temperature: s.temperature,
        topK: s.topK,
        topP: s.topP,
        uniform: () => rng.nextFloat(),
        vocabLimit: this.tokenizer.vocabSize,
        stopToken: endId,
      })
    ) {
      if (t === endId) break;
      if (print) await Deno.stdout.write(enc.encode(forStdout(stream.push(t))));
    }
    if (print) console.log(forStdout(stream.flush()) + "\n");
  }
}
