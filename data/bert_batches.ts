/**
 * BERT pre-training batches: sentence pairs for sentence-order prediction (SOP) and the standard
 * masked-language-model corruption (15% of ordinary tokens: 80% [MASK], 10% random, 10% kept),
 * reproducible from a seed and resumable from a saved state.
 * @module
 */

import { DataError } from "./errors.ts";
import { DataRng, type DataRngState } from "./rng.ts";
import { splitDocuments } from "./sentences.ts";
import type { BertSpecialIds } from "./wordpiece_tokenizer.ts";

/** Target value at positions that are not masked (the loss ignores them). */
export const MLM_IGNORE_INDEX: number = -1;

/** What the BERT data pipeline needs from a tokenizer. */
export interface BertVocab {
  /** Number of ids. */
  vocabSize: number;
  /** Special ids. */
  special: BertSpecialIds;
  /** Whether an id is special or unused: never masked, never drawn as a random replacement. */
  isSpecial(id: number): boolean;
  /** The ids that are not special, ascending (random replacements are drawn from them). */
  ordinaryIds: ArrayLike<number>;
  /** Encodes text without special tokens. */
  encode(text: string): ArrayLike<number>;
}

/** A tokenized corpus: documents, each a list of tokenized sentences (at least two). */
export interface BertCorpus {
  /** documents[d][s] is the ids of sentence s of document d. */
  documents: Int32Array[][];
}

/** Splits text into documents and sentences and tokenizes them; keeps documents of ≥ 2 sentences. */
export function prepareBertCorpus(text: string, vocab: BertVocab): BertCorpus {
  const documents = splitDocuments(text)
    .map((doc) => doc.map((s) => Int32Array.from(vocab.encode(s))).filter((s) => s.length > 0))
    .filter((doc) => doc.length >= 2);
  if (documents.length === 0) {
    throw new DataError("the corpus has no document with two or more sentences for sentence pairs");
  }
  return { documents };
}

/** One micro-batch of BERT inputs and targets, row-major [batchSize, seqLength]. */
export interface BertBatch {
  /** [CLS] A [SEP] B [SEP] [PAD]…, after masking. */
  inputIds: Int32Array;
  /** 0 for [CLS], segment A and its [SEP]; 1 for segment B and the final [SEP]; 0 for padding. */
  tokenTypes: Int32Array;
  /** 1 for real tokens, 0 for padding. */
  paddingMask: Int32Array;
  /** Original id at masked positions, {@link MLM_IGNORE_INDEX} elsewhere. */
  mlmTargets: Int32Array;
  /** Per row: 1 if the two segments were swapped, 0 if in corpus order. */
  sopLabels: Int32Array;
  /** Rows. */
  batchSize: number;
  /** Tokens per row. */
  seqLength: number;
}

/** Options of {@link BertBatchSampler}. */
export interface BertSamplerOptions {
  /** Rows per batch. */
  batchSize: number;
  /** Tokens per row, including [CLS] and two [SEP]; at least 5. */
  seqLength: number;
  /** Seed. */
  seed: number;
  /** Fraction of ordinary tokens to predict (default 0.15). */
  maskProb?: number;
}

/** Serializable state of a {@link BertBatchSampler}. */
export interface BertSamplerState {
  /** Seed the sampler was created with. */
  seed: number;
  /** Generator words. */
  rng: DataRngState;
  /** Batches drawn so far. */
  batches: number;
}

/** A segment pair before masking. */
export interface SopPair {
  /** First segment in the sequence. */
  first: Int32Array;
  /** Second segment in the sequence. */
  second: Int32Array;
  /** 1 if `first` comes after `second` in the corpus. */
  label: number;
}

function concat(parts: Int32Array[]): Int32Array {
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Picks consecutive sentences of one document, splits them at a random point into A and B,
 * trims to `maxTokens` (A from its front, B from its back, so the A|B boundary stays intact)
 * and swaps them with probability 1/2.
 */
export function sampleSopPair(corpus: BertCorpus, maxTokens: number, rng: DataRng): SopPair {
  const docs = corpus.documents;
  // Weight documents by their number of adjacent sentence pairs.
  let total = 0;
  for (const d of docs) total += d.length - 1;
  let k = rng.nextInt(total);
  let doc = 0;
  while (k >= docs[doc].length - 1) k -= docs[doc++].length - 1;
  return spanPair(docs[doc], k, maxTokens, rng).pair;
}

/**
 * The pair that starts at sentence `k` of `sentences` (k + 1 < length): sentences k, k+1 and
 * as many more as fit in `maxTokens`, split at a random sentence boundary into A and B, trimmed
 * (A from its front, B from its back) and swapped with probability 1/2. `end` is the index
 * after the last sentence used.
 */
function spanPair(
  sentences: Int32Array[],
  k: number,
  maxTokens: number,
  rng: DataRng,
): { pair: SopPair; end: number } {
  let end = k + 2;
  let len = sentences[k].length + sentences[k + 1].length;
  while (end < sentences.length && len + sentences[end].length <= maxTokens) {
    len += sentences[end++].length;
  }
  const split = k + 1 + rng.nextInt(end - k - 1);
  let a = concat(sentences.slice(k, split));
  let b = concat(sentences.slice(split, end));
  while (a.length + b.length > maxTokens) {
    if (a.length > b.length) a = a.subarray(1);
    else b = b.subarray(0, b.length - 1);
  }
  const pair = rng.nextFloat() < 0.5
    ? { first: a, second: b, label: 0 }
    : { first: b, second: a, label: 1 };
  return { pair, end };
}

/**
 * Masks a row's tokens `ids` ([CLS] A [SEP] B [SEP], no padding) in place for MLM, counting as
 * Google's BERT and Megatron do: picks max(1, round(p·n)) positions, n the row's tokens with its
 * special ones counted (Python's `round`, halves to even), among those holding ordinary tokens (not
 * `isSpecial`; all of them if fewer), and replaces each with [MASK] (80%), a random ordinary id
 * (10%) or leaves it (10%). Writes the original ids of the picked positions into `targets`. Unlike
 * theirs, it picks single WordPiece tokens (Megatron masks whole words, in n-grams of up to 3), and
 * its random replacements are ordinary ids only (theirs any id of the vocabulary).
 * (Before the forty-fifth session n left the special tokens out: 12.6% of a 32-token row's
 * tokens were masked, not 15%.)
 */
export function maskTokens(
  ids: Int32Array,
  targets: Int32Array,
  vocab: Pick<BertVocab, "special" | "isSpecial" | "ordinaryIds">,
  maskProb: number,
  rng: DataRng,
): void {
  targets.fill(MLM_IGNORE_INDEX);
  const candidates: number[] = [];
  for (let i = 0; i < ids.length; i++) if (!vocab.isSpecial(ids[i])) candidates.push(i);
  if (candidates.length === 0) return;
  const count = Math.min(candidates.length, Math.max(1, roundHalfEven(maskProb * ids.length)));
  for (let j = 0; j < count; j++) {
    const pick = j + rng.nextInt(candidates.length - j);
    [candidates[j], candidates[pick]] = [candidates[pick], candidates[j]];
    const pos = candidates[j];
    targets[pos] = ids[pos];
    const r = rng.nextFloat();
    if (r < 0.8) ids[pos] = vocab.special.mask;
    else if (r < 0.9) {
      ids[pos] = vocab.ordinaryIds[rng.nextInt(vocab.ordinaryIds.length)];
    }
  }
}

/** `x` rounded to the nearest integer, a half to the even one (Python 3's `round`). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function emptyBatch(B: number, S: number, pad: number): BertBatch {
  return {
    inputIds: new Int32Array(B * S).fill(pad),
    tokenTypes: new Int32Array(B * S),
    paddingMask: new Int32Array(B * S),
    mlmTargets: new Int32Array(B * S),
    sopLabels: new Int32Array(B),
    batchSize: B,
    seqLength: S,
  };
}

/** Writes `pair` as row `r` of `batch` ([CLS] A [SEP] B [SEP], segments, padding) and masks it. */
function writeRow(
  batch: BertBatch,
  r: number,
  pair: SopPair,
  vocab: BertVocab,
  maskProb: number,
  rng: DataRng,
): void {
  const S = batch.seqLength, sp = vocab.special;
  const o = r * S;
  const ids = batch.inputIds.subarray(o, o + S);
  const n = pair.first.length + pair.second.length + 3;
  ids[0] = sp.cls;
  ids.set(pair.first, 1);
  ids[1 + pair.first.length] = sp.sep;
  ids.set(pair.second, 2 + pair.first.length);
  ids[n - 1] = sp.sep;
  batch.tokenTypes.fill(1, o + 2 + pair.first.length, o + n);
  batch.paddingMask.fill(1, o, o + n);
  batch.sopLabels[r] = pair.label;
  maskTokens(ids.subarray(0, n), batch.mlmTargets.subarray(o, o + n), vocab, maskProb, rng);
  batch.mlmTargets.fill(MLM_IGNORE_INDEX, o + n, o + S);
}

/** Draws BERT micro-batches (SOP pairs + MLM masking) reproducibly from a seed. */
export class BertBatchSampler {
  readonly #corpus: BertCorpus;
  readonly #vocab: BertVocab;
  readonly #B: number;
  readonly #S: number;
  readonly #p: number;
  readonly #seed: number;
  #rng: DataRng;
  #batches = 0;

  /** Creates a sampler over a prepared corpus. */
  constructor(corpus: BertCorpus, vocab: BertVocab, options: BertSamplerOptions) {
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) {
      throw new RangeError(`batch size must be a positive integer, got ${options.batchSize}`);
    }
    if (!Number.isInteger(options.seqLength) || options.seqLength < 5) {
      throw new RangeError(`BERT sequence length must be an integer ≥ 5, got ${options.seqLength}`);
    }
    const p = options.maskProb ?? 0.15;
    if (!(p > 0 && p < 1)) throw new RangeError(`mask probability must be in (0, 1), got ${p}`);
    this.#corpus = corpus;
    this.#vocab = vocab;
    this.#B = options.batchSize;
    this.#S = options.seqLength;
    this.#p = p;
    this.#seed = options.seed;
    this.#rng = new DataRng(options.seed);
  }

  /** Draws the next micro-batch. */
  next(): BertBatch {
    const batch = emptyBatch(this.#B, this.#S, this.#vocab.special.pad);
    for (let r = 0; r < this.#B; r++) {
      const pair = sampleSopPair(this.#corpus, this.#S - 3, this.#rng);
      writeRow(batch, r, pair, this.#vocab, this.#p, this.#rng);
    }
    this.#batches++;
    return batch;
  }

  /** Batches drawn so far. */
  get batchesDrawn(): number {
    return this.#batches;
  }

  /** The current state, JSON-serializable. */
  state(): BertSamplerState {
    return { seed: this.#seed, rng: this.#rng.state(), batches: this.#batches };
  }

  /** Continues from a saved state (the seed must match). */
  restore(state: BertSamplerState): void {
    if (state.seed !== this.#seed) {
      throw new Error(
        `sampler state was saved with seed ${state.seed}, this sampler uses ${this.#seed}`,
      );
    }
    this.#rng.restore(state.rng);
    this.#batches = state.batches;
  }
}

/** Options of {@link bertEvalBatches}. */
export interface BertEvalOptions {
  /** Rows per batch (the last batch may have fewer). */
  batchSize: number;
  /** Tokens per row, including [CLS] and two [SEP]; at least 5. */
  seqLength: number;
  /** Seed of the split points, the swaps and the masking. */
  seed: number;
  /** Fraction of ordinary tokens to predict (default 0.15). */
  maskProb?: number;
  /** Yield at most this many batches, the first ones (default: all), as `evalBatches` does. */
  maxBatches?: number;
}

/**
 * A fixed evaluation pass over `corpus`: each document is cut, in order, into consecutive
 * spans of sentences that fill a row (two sentences at least; a last lone sentence is left
 * out), and each span becomes one sentence-order pair, masked as in training. Split points,
 * swaps and masks come from `seed` alone, drawn row by row, so the same corpus and seed always
 * give the same rows, whatever the batch size.
 */
export function* bertEvalBatches(
  corpus: BertCorpus,
  vocab: BertVocab,
  options: BertEvalOptions,
): Generator<BertBatch> {
  const { batchSize: B, seqLength: S } = options;
  if (!Number.isInteger(B) || B < 1) {
    throw new RangeError(`batch size must be a positive integer, got ${B}`);
  }
  if (!Number.isInteger(S) || S < 5) {
    throw new RangeError(`BERT sequence length must be an integer ≥ 5, got ${S}`);
  }
  const p = options.maskProb ?? 0.15;
  const rng = new DataRng(options.seed);
  // Each row is masked as soon as its pair is drawn, so the draws, and the numbers an
  // evaluation gives, do not depend on how the rows are grouped into batches.
  const limit = options.maxBatches ?? Infinity;
  if (limit <= 0) return;
  let batch = emptyBatch(B, S, vocab.special.pad);
  let rows = 0, yielded = 0;
  for (const doc of corpus.documents) {
    for (let k = 0; k + 1 < doc.length;) {
      const { pair, end } = spanPair(doc, k, S - 3, rng);
      writeRow(batch, rows++, pair, vocab, p, rng);
      k = end;
      if (rows === B) {
        yield batch;
        if (++yielded >= limit) return;
        batch = emptyBatch(B, S, vocab.special.pad);
        rows = 0;
      }
    }
  }
  if (rows > 0) yield firstRows(batch, rows);
}

/** The first `n` rows of `batch`, as a batch of its own. */
function firstRows(batch: BertBatch, n: number): BertBatch {
  const S = batch.seqLength;
  return {
    inputIds: batch.inputIds.slice(0, n * S),
    tokenTypes: batch.tokenTypes.slice(0, n * S),
    paddingMask: batch.paddingMask.slice(0, n * S),
    mlmTargets: batch.mlmTargets.slice(0, n * S),
    sopLabels: batch.sopLabels.slice(0, n),
    batchSize: n,
    seqLength: S,
  };
}
