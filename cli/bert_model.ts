/**
 * BERT for the command line: a model and its WordPiece tokenizer from a checkpoint
 * (`--load`) or a Hugging Face BERT directory (`--init-from-hf`), and the masked-LM
 * and sentence-order metrics of `deno task eval --model bert`.
 * @module
 */

import type { Device } from "../core/device.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import type { BertBatch } from "../data/bert_batches.ts";
import { DataError } from "../data/errors.ts";
import {
  createBertTokenizer,
  readWordPieceTokenizer,
  type WordPieceTokenizer,
} from "../data/wordpiece_tokenizer.ts";
import { Bert, type BertConfig } from "../models/bert.ts";
import { assignBert, bertFromHfDir, type BertHfConfig, bertPaddedRows } from "../models/hf/bert.ts";
import type { TensorSource } from "../models/checkpoint/shard.ts";
import { HF_SHAPE_FIELDS } from "../models/hf/config_fields.ts";
import { hfInitializerRange, readHfDir } from "../models/hf/io.ts";
import type { ParallelLayers } from "../models/parallel/layers.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import {
  loadHfModel,
  loadSavedModel,
  type ModelFamily,
  type ModelSource,
  openSavedModel,
} from "./load_model.ts";
import { savedCheckpointArgs } from "./model_source.ts";

/**
 * The tokenizer for a BERT of `vocabSize` ids whose files are in `dir`. With
 * `saved` (a checkpoint of this project, which saves the vocabulary it trained
 * with) the vocabulary must have exactly `vocabSize` tokens: a shorter one was
 * cut (a truncated vocab.txt ranked only its ids).
 */
export async function bertTokenizerFor(
  dir: string,
  vocabSize: number,
  saved = false,
): Promise<{ tokenizer: WordPieceTokenizer; source: string }> {
  const own = await readWordPieceTokenizer(dir);
  let tokenizer = own;
  if (!tokenizer) {
    tokenizer = await createBertTokenizer();
    if (tokenizer.vocabSize !== vocabSize) {
      throw new DataError(
        `${dir} has no vocab.txt or tokenizer.json, and its vocabulary (${vocabSize}) is not ` +
          `bert-base-uncased's (${tokenizer.vocabSize}); put the model's vocab.txt there`,
      );
    }
  }
  if (tokenizer.vocabSize > vocabSize) {
    throw new DataError(
      `${dir}: the tokenizer has ${tokenizer.vocabSize} ids but the model only ${vocabSize}`,
    );
  }
  if (saved && own && tokenizer.vocabSize !== vocabSize) {
    throw new DataError(
      `${dir}: its vocabulary has ${tokenizer.vocabSize} tokens, the model it was saved with ` +
        `${vocabSize}: the file was cut or replaced; restore the vocab.txt saved with the checkpoint`,
    );
  }
  return {
    tokenizer,
    source: own ? `WordPiece from ${dir}` : "WordPiece (bert-base-uncased, vendored vocab.txt)",
  };
}

/** A Hugging Face BERT directory opened, with its tokenizer. */
export interface HfBert {
  /** The model's shape, from `config.json` (post-LN, as HF BERT is). */
  config: BertHfConfig;
  /** Our full tensors (vocabulary unpadded), each read from the file when asked for. */
  tensors: TensorSource;
  /** The weights file, for messages. */
  source: string;
  /**
   * The pooler and sentence-order head, where the directory has neither (a
   * `BertForMaskedLM`): left at the model's initialization. Empty otherwise.
   */
  freshHeads: readonly string[];
  /** Its WordPiece tokenizer. */
  tokenizer: WordPieceTokenizer;
  /** Where the tokenizer came from, for messages. */
  tokenizerSource: string;
  /** The std its weights were initialized with, where `config.json` says (`initializer_range`). */
  initializerRange?: number;
}

/**
 * Opens a Hugging Face BERT directory: reads its config and tokenizer and checks its
 * weights' names and shapes (their values are read when assigned); no device needed.
 */
export async function readHfBert(
  dir: string,
  progress?: (done: number, total: number) => void,
): Promise<HfBert> {
  const hf = await readHfDir(dir, progress);
  const { config, tensors, freshHeads } = bertFromHfDir(hf);
  const tok = await bertTokenizerFor(dir, config.vocabSize);
  return {
    config,
    tensors,
    freshHeads,
    source: hf.fileOf(hf.names[0] ?? ""),
    tokenizer: tok.tokenizer,
    tokenizerSource: tok.source,
    initializerRange: hfInitializerRange(hf.config),
  };
}

/**
 * The warning for a model whose pooler and sentence-order head were not in its
 * directory (`freshHeads`, a `BertForMaskedLM`), or null; `effect` says what
 * that means for the command.
 */
export function freshHeadsWarning(
  dir: string,
  freshHeads: readonly string[],
  effect: string,
): string | null {
  if (freshHeads.length === 0) return null;
  return `warning: ${dir} has no pooler or sentence-order head (a BertForMaskedLM's weights): ` +
    `they start from a fresh initialization; ${effect}`;
}

/** A BERT loaded for the command line, with its tokenizer. */
export interface LoadedBert {
  /** The model (this rank's shards under tensor parallelism). */
  model: Bert;
  /** Its WordPiece tokenizer. */
  tokenizer: WordPieceTokenizer;
  /** Where the model came from, for messages. */
  source: string;
  /** Where the tokenizer came from, for messages. */
  tokenizerSource: string;
  /**
   * What a Hugging Face `BertForMaskedLM` directory has not, the pooler and the
   * sentence-order head, left at their initialization; empty otherwise.
   */
  freshHeads: readonly string[];
  /**
   * A checkpoint's saved run arguments (`--seq-length` …, for
   * `--use-checkpoint-args`); absent for a Hugging Face directory.
   */
  savedArgs?: Record<string, number | string | boolean>;
}

/** How the commands load a BERT (see {@link ModelFamily}). */
const BERT_FAMILY: ModelFamily<BertConfig, Bert, HfBert> = {
  arch: "bert",
  name: "BERT",
  hfName: "BERT",
  hfFields: HF_SHAPE_FIELDS.bert,
  readHf: readHfBert,
  create: (layers, config) => new Bert(layers, config, { seed: 0 }),
  assignHf: (model, hf, place) =>
    assignBert(model.namedParams(), hf.tensors, hf.config.vocabSize, place, hf.source),
  paddedRows: (config) => bertPaddedRows(config.vocabSize),
};

/**
 * Builds a BERT from `from.hfDir` (a Hugging Face BERT directory, always post-LN)
 * or `from.load` (a checkpoint of `deno task train --model bert`, `from.iteration`
 * optional) on `device`, or over `layers` (a tensor-parallel layout: this rank's shards
 * are loaded). The tokenizer is the directory's `vocab.txt` (or `tokenizer.json`), else
 * bert-base-uncased's when the vocabulary has its size. `checkSaved` sees a
 * checkpoint's saved config (and the source named in messages) before its
 * tokenizer or weights are read.
 */
export async function loadBert(
  device: Device,
  from: ModelSource,
  layers: ParallelLayers = TensorParallelLayers.single(device),
  progress?: (done: number, total: number) => void,
  checkSaved?: (config: BertConfig, source: string) => void,
): Promise<LoadedBert> {
  if (from.hfDir) {
    const { model, hf, source } = await loadHfModel(BERT_FAMILY, from.hfDir, layers, progress);
    return {
      model,
      tokenizer: hf.tokenizer,
      source,
      tokenizerSource: hf.tokenizerSource,
      freshHeads: hf.freshHeads,
    };
  }
  const saved = await openSavedModel(BERT_FAMILY, from);
  checkSaved?.(saved.config, saved.source);
  const tok = await bertTokenizerFor(saved.dir, saved.config.vocabSize, true);
  const model = await loadSavedModel(BERT_FAMILY, saved, layers, progress);
  return {
    model,
    tokenizer: tok.tokenizer,
    source: saved.source,
    tokenizerSource: tok.source,
    freshHeads: [],
    savedArgs: savedCheckpointArgs(saved.meta),
  };
}

/** What `deno task eval --model bert` reports. */
export interface BertEvalResult {
  /** Mean cross-entropy over all masked tokens (nats). */
  mlmLoss: number;
  /** Share of masked tokens whose most likely filler is the original token. */
  mlmAccuracy: number;
  /** Mean sentence-order cross-entropy over all sequences (nats). */
  sopLoss: number;
  /** Share of sequences whose order is predicted right. */
  sopAccuracy: number;
  /** Masked tokens scored. */
  maskedTokens: number;
  /** Sequences (sentence pairs) scored. */
  sequences: number;
}

/** Per-row sums of the two heads for one batch: the host side of {@link evaluateBert}. */
export function scoreBertLogits(
  mlmLogits: Float32Array | null,
  paddedVocab: number,
  vocabSize: number,
  targets: ArrayLike<number>,
  sopLogits: Float32Array,
  sopLabels: ArrayLike<number>,
): { mlmLoss: number; mlmCorrect: number; sopLoss: number; sopCorrect: number } {
  let mlmLoss = 0, mlmCorrect = 0, sopLoss = 0, sopCorrect = 0;
  for (let r = 0; r < targets.length; r++) {
    const row = mlmLogits!.subarray(r * paddedVocab, r * paddedVocab + vocabSize);
    let best = 0;
    for (let v = 1; v < vocabSize; v++) if (row[v] > row[best]) best = v;
    let z = 0;
    for (let v = 0; v < vocabSize; v++) z += Math.exp(row[v] - row[best]);
    mlmLoss += row[best] + Math.log(z) - row[targets[r]];
    if (best === targets[r]) mlmCorrect++;
  }
  for (let r = 0; r < sopLabels.length; r++) {
    const a = sopLogits[2 * r], b = sopLogits[2 * r + 1];
    const m = Math.max(a, b);
    sopLoss += m + Math.log(Math.exp(a - m) + Math.exp(b - m)) - (sopLabels[r] ? b : a);
    if ((b > a ? 1 : 0) === sopLabels[r]) sopCorrect++;
  }
  return { mlmLoss, mlmCorrect, sopLoss, sopCorrect };
}

/**
 * Masked-LM loss and accuracy over every masked token of `batches`, and sentence-order
 * loss and accuracy over every sequence, with dropout off. Each batch's logits come back
 * to the host, where the cross-entropies and argmaxes are summed in float64.
 */
export async function evaluateBert(
  model: Bert,
  batches: Iterable<BertBatch>,
): Promise<BertEvalResult> {
  const device = model.parallel.device;
  const V = model.config.vocabSize;
  model.train(false);
  let mlmLoss = 0, mlmCorrect = 0, masked = 0, sopLoss = 0, sopCorrect = 0, sequences = 0;
  await device.noGrad(async () => {
    for (const b of batches) {
      const S = b.seqLength, B = b.batchSize;
      const positions: number[] = [];
      const targets: number[] = [];
      b.mlmTargets.forEach((t, i) => {
        if (t >= 0) {
          positions.push(i);
          targets.push(t);
        }
      });
      const logits = await tidy(device, async () => {
        const hidden = await model.encode(
          TokenIds.fromHost(device, b.inputIds, [B, S]),
          TokenIds.fromHost(device, b.tokenTypes, [B, S]),
          Tensor.fromArray(device, Float32Array.from(b.paddingMask), [B, S]),
        );
        const { mlm, sop } = await model.headLogits(hidden, positions);
        return { mlm: mlm ? await mlm.read() : null, sop: await sop.read() };
      });
      const s = scoreBertLogits(logits.mlm, model.paddedVocab, V, targets, logits.sop, b.sopLabels);
      mlmLoss += s.mlmLoss;
      mlmCorrect += s.mlmCorrect;
      sopLoss += s.sopLoss;
      sopCorrect += s.sopCorrect;
      masked += targets.length;
      sequences += B;
    }
  });
  if (sequences === 0) throw new DataError("no sentence pairs to evaluate");
  return {
    mlmLoss: masked > 0 ? mlmLoss / masked : NaN,
    mlmAccuracy: masked > 0 ? mlmCorrect / masked : NaN,
    sopLoss: sopLoss / sequences,
    sopAccuracy: sopCorrect / sequences,
    maskedTokens: masked,
    sequences,
  };
}
