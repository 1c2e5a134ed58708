/**
 * The BERT task of `deno task train`: masked-language modelling plus
 * sentence-order prediction on text, with a WordPiece vocabulary (the
 * checkpoint's on `--load`, a Hugging Face directory's on `--init-from-hf`,
 * else bert-base-uncased's), saved beside every checkpoint.
 * @module
 */

import { paramShapeOf } from "../limits.ts";
import type { Device } from "../../core/device.ts";
import { Tensor } from "../../core/tensor.ts";
import { TokenIds } from "../../core/token_ids.ts";
import {
  type BertBatch,
  BertBatchSampler,
  type BertCorpus,
  type BertSamplerState,
  prepareBertCorpus,
} from "../../data/bert_batches.ts";
import { loadText } from "../../data/corpus.ts";
import { DataError } from "../../data/errors.ts";
import { textCut } from "../../data/split.ts";
import {
  createBertTokenizer,
  readWordPieceTokenizer,
  type WordPieceTokenizer,
  writeWordPieceTokenizer,
} from "../../data/wordpiece_tokenizer.ts";
import { Bert, type BertConfig, type BertInputs } from "../../models/bert.ts";
import type { LossParts } from "../../models/trainer.ts";
import { assignBert, bertPaddedRows } from "../../models/hf/bert.ts";
import { freshHeadsWarning, type HfBert, readHfBert } from "../bert_model.ts";
import type { DataSource } from "../data_source.ts";
import { type StreamFingerprint, TokenStreamHash } from "../same_data.ts";
import { bertConfigOf, type TrainArgs } from "../train_args.ts";
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

/** Masked positions of `b` (its MLM targets that are not −1). */
function maskedCount(b: BertBatch): number {
  let masked = 0;
  for (const t of b.mlmTargets) if (t >= 0) masked++;
  return masked;
}

/**
 * The part's rows of `b` as model inputs. The MLM loss sums over the part's
 * masked tokens and divides by `masked`, the masked count of the whole step (every
 * micro-batch, every rank) over ranks × micro-batches: the trainer's mean over
 * micro-batches and the data-parallel mean then give the step the mean over
 * every masked token of the global batch, however it is split (Megatron-core's
 * per-token loss). Dividing each micro-batch by its own count made a step with
 * accumulation differ from one without.
 */
function bertTensors(
  device: Device,
  b: BertBatch,
  part: LossPart<BertBatch>,
  masked: number,
): BertInputs {
  const S = b.seqLength, { lo, rows } = part;
  const sl = <A extends Int32Array>(a: A) => a.subarray(lo * S, (lo + rows) * S);
  return {
    ids: TokenIds.fromHost(device, sl(b.inputIds), [rows, S]),
    tokenTypes: TokenIds.fromHost(device, sl(b.tokenTypes), [rows, S]),
    keep: Tensor.fromArray(device, Float32Array.from(sl(b.paddingMask)), [rows, S]),
    mlmTargets: TokenIds.fromHost(device, sl(b.mlmTargets), [rows, S]),
    sopLabels: TokenIds.fromHost(device, b.sopLabels.subarray(lo, lo + rows), [rows]),
    mlmNormalizer: masked / (part.ranks * part.step.length),
  };
}

/** Documents for training and validation. */
interface BertSplits {
  train: BertCorpus;
  /** Null with `--eval-iters 0` (no validation). */
  val: BertCorpus | null;
  source: string;
}

/**
 * The text of a run cut into training and validation documents:
 * `--train-data-path` and `--valid-data-path` each read whole, or one text cut
 * in order by the split weights (the test part, last, is not used).
 */
async function loadBertSplits(a: TrainArgs, wp: WordPieceTokenizer): Promise<BertSplits> {
  const d = a.data;
  const validating = a.evalIters > 0;
  const trainPath = onePath(d.train), validPath = onePath(d.valid);
  if (trainPath !== undefined && validPath !== undefined) {
    return {
      train: prepareBertCorpus(await loadText(trainPath), wp),
      val: validating
        ? validationCorpus(await loadText(validPath), wp, `the validation file ${validPath}`)
        : null,
      source: `${trainPath} + ${validPath}`,
    };
  }
  const path = trainPath ?? onePath(d.source);
  const text = await loadText(path);
  // Cut between documents where the text allows, as Megatron splits (GPT's streams do too).
  const rawEnd = Math.round(text.length * (d.split.train + d.split.valid));
  const cut = textCut(text, Math.round(text.length * d.split.train), 0, rawEnd);
  const end = textCut(text, rawEnd, cut, text.length);
  return {
    train: prepareBertCorpus(text.slice(0, cut), wp),
    val: validating
      ? validationCorpus(text.slice(cut, end), wp, "the validation part of the split")
      : null,
    source: path ?? "Moby Dick",
  };
}

/** The one path of `s`: BERT does not blend corpora (GPT-only for now). */
function onePath(s: DataSource | undefined): string | undefined {
  if (s === undefined) return undefined;
  if (s.paths.length > 1) {
    throw new DataError(
      `a blend of ${s.paths.length} corpora (${s.paths.join(", ")}): only GPT runs blend ` +
        "corpora for now; give a BERT run one text file, .jsonl or folder",
    );
  }
  return s.paths[0];
}

/** The validation corpus, or an error that names the validation data, not the whole corpus. */
function validationCorpus(text: string, wp: WordPieceTokenizer, what: string): BertCorpus {
  try {
    return prepareBertCorpus(text, wp);
  } catch (e) {
    if (!(e instanceof DataError)) throw e;
    throw new DataError(
      `${what} has no document with two or more sentences for sentence pairs: give it more ` +
        `text (--split, --valid-data-path), or pass --eval-iters 0 to train without validation`,
    );
  }
}

/** Reads the BERT task's tokenizer, text and (with `--init-from-hf`) weights. */
export async function bertTaskData(a: TrainArgs): Promise<TaskData<BertBatch>> {
  const hfDir = a.initFromHf;
  const hf = hfDir ? await readHfBert(hfDir) : null;
  // A BERT resumed with --load keeps the vocabulary its checkpoint was saved with.
  const tokenizer = hf?.tokenizer ??
    (a.load ? await readWordPieceTokenizer(a.load) : null) ??
    await createBertTokenizer();
  const splits = await loadBertSplits(a, tokenizer);
  let config = bertConfigOf(a.model, tokenizer.vocabSize);
  if (hf) {
    config = withRunSettings(hf.config, config);
  }
  return {
    numHeads: config.numHeads,
    headDim: config.hiddenSize / config.numHeads,
    paramShape: paramShapeOf(config),
    hfInitStd: hf?.initializerRange,
    fingerprints: () => Promise.resolve(bertFingerprints(splits)),
    build: (env) => Promise.resolve(new BertTask(a, env, tokenizer, splits, config, hf)),
  };
}

/**
 * The fingerprint of the training and validation documents: their sentences'
 * tokens in order, each sentence followed by -1 and each document by -2 (so
 * that the same tokens cut into other sentences or documents differ), hashed
 * piece by piece without a copy.
 */
function bertFingerprints(s: BertSplits): Record<string, StreamFingerprint> {
  const fingerprint = (c: BertCorpus) => {
    const hash = new TokenStreamHash();
    for (const doc of c.documents) {
      for (const sentence of doc) {
        hash.add(sentence);
        hash.add(SENTENCE_END);
      }
      hash.add(DOCUMENT_END);
    }
    return hash.fingerprint();
  };
  const out: Record<string, StreamFingerprint> = { "training data": fingerprint(s.train) };
  if (s.val) out["validation data"] = fingerprint(s.val);
  return out;
}

const SENTENCE_END = Int32Array.of(-1), DOCUMENT_END = Int32Array.of(-2);

/** BERT pre-training: masked-language-model plus sentence-order loss. */
export class BertTask implements Task<BertBatch> {
  /** `"bert"`. */
  readonly name = "bert";
  /** The model. */
  readonly model: Bert;
  /** The model's resolved shape. */
  readonly shape;
  /** The MLM head runs on the masked ~15% of tokens. */
  readonly headShare = 0.15;
  /** The sum of the MLM and sentence-order losses (`eval` gives each alone). */
  readonly lossName = "mlm+sop loss";
  /** The validation batches. */
  readonly validation: BertBatch[];
  /** Checkpoint facts. */
  readonly checkpointInfo: TaskCheckpointInfo;
  readonly #sampler: BertBatchSampler;
  readonly #params: number;
  /**
   * The masked count of each step's batches (`LossPart.step`), counted once per
   * step: every micro-batch of it, and every validation batch, divides by it.
   */
  readonly #stepMasked = new WeakMap<readonly BertBatch[], number>();
  #vocabSaved = false;

  /** Builds the model (and loads Hugging Face weights when `hf` is given). */
  constructor(
    readonly args: TrainArgs,
    env: TaskEnv,
    readonly tokenizer: WordPieceTokenizer,
    readonly splits: BertSplits,
    config: BertConfig,
    readonly hf: HfBert | null,
  ) {
    const a = args;
    this.model = new Bert(env.parallel, config, {
      seed: a.seed,
      rng: env.rng,
      initStd: a.model.initStd,
    });
    this.shape = this.model.shape;
    const tp = env.parallel.tpSize;
    if (hf) {
      assignBert(
        this.model.namedParams(),
        hf.tensors,
        hf.config.vocabSize,
        { tp, tpRank: env.tpRank },
        hf.source,
      );
    }
    this.checkpointInfo = {
      model: { arch: "bert", config: this.model.config, shape: { ...this.shape } },
      paddedRows: bertPaddedRows(this.model.config.vocabSize),
    };
    this.#sampler = new BertBatchSampler(splits.train, tokenizer, {
      batchSize: a.microBatch * env.dp,
      seqLength: a.seqLength,
      seed: a.seed,
    });
    const val = splits.val;
    if (val) {
      const v = new BertBatchSampler(val, tokenizer, {
        batchSize: a.microBatch,
        seqLength: a.seqLength,
        seed: a.seed + 1,
      });
      this.validation = Array.from({ length: env.validationBatches }, () => v.next());
    } else this.validation = [];
    this.#params = fullParamCount(this.model, tp);
  }

  /** The next global micro-batch. */
  nextTrainBatch(): BertBatch {
    return this.#sampler.next();
  }

  /** Rows of `b`. */
  rowsOf(b: BertBatch): number {
    return b.batchSize;
  }

  /**
   * MLM + SOP loss of the part's rows (see {@link bertTensors} for the MLM
   * normalizer), with its parts under Megatron's names, `lm loss` and `sop loss`.
   */
  async loss(b: BertBatch, part: LossPart<BertBatch>): Promise<LossParts> {
    let masked = this.#stepMasked.get(part.step);
    if (masked === undefined) {
      masked = part.step.reduce((n, x) => n + maskedCount(x), 0);
      this.#stepMasked.set(part.step, masked);
    }
    const l = await this.model.losses(bertTensors(this.model.parallel.device, b, part, masked));
    return { loss: l.total, parts: { "lm loss": l.mlm, "sop loss": l.sop } };
  }

  /** The sampler's state. */
  samplerState(): BertSamplerState {
    return this.#sampler.state();
  }

  /** Restores the sampler (its own checks reject a foreign state). */
  restoreSampler(state: unknown): void {
    this.#sampler.restore(state as BertSamplerState);
  }

  /** Data, model and initialization lines. */
  describe(): string[] {
    const c = this.model.config;
    const lines = [
      `data: ${this.splits.source} | WordPiece (vocab ${this.tokenizer.vocabSize}, padded ${this.model.paddedVocab}) | ` +
      (this.splits.val
        ? `${this.splits.train.documents.length} train / ` +
          `${this.splits.val.documents.length} validation documents`
        : `${this.splits.train.documents.length} train documents / no validation`),
      modelLine(
        "BERT",
        c.postLayerNorm ? "post-LN" : "pre-LN",
        this.shape,
        this.args.seqLength,
        this.#params,
        this.args.model.recomputeActivations,
      ),
    ];
    if (this.hf) {
      lines.push(
        `initialized from ${this.args.initFromHf} (Hugging Face BERT, ${this.hf.tokenizerSource})`,
      );
      const warning = freshHeadsWarning(
        this.args.initFromHf!,
        this.hf.freshHeads,
        "the sentence-order loss starts as an untrained head's",
      );
      if (warning) lines.push(warning);
    }
    return lines;
  }

  /** The vocabulary eval and fill-mask read from the checkpoint directory (once per run). */
  async saveExtras(dir: string): Promise<void> {
    if (this.#vocabSaved) return;
    await writeWordPieceTokenizer(dir, this.tokenizer);
    this.#vocabSaved = true;
  }

  /** The final validation loss (none with `--eval-iters 0`). */
  report(lastVal: number, _a: TrainArgs, log: RankLog): Promise<void> {
    if (this.splits.val) log.say(`\nfinal validation loss (MLM + SOP) ${lastVal.toFixed(4)}`);
    return Promise.resolve();
  }
}
