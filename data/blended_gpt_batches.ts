/**
 * GPT batches from a blend of corpora: each row's corpus follows the blend
 * order of data/blend.ts (Megatron's), its window start is drawn at random in
 * that corpus, reproducibly from the seed; validation takes each corpus's
 * non-overlapping windows in order, in the same blend order.
 * @module
 */

import { BlendSchedule, type BlendScheduleState } from "./blend.ts";
import {
  checkOneWindow,
  checkPositive,
  checkSamplerOptions,
  emptyBatch,
  evalWindowCount,
  fillRow,
  type GptSamplerOptions,
  type GptSamplerState,
  type LmBatch,
} from "./gpt_batches.ts";
import { DataRng, type DataRngState } from "./rng.ts";
import { asTokenStream, type TokenStream, type TokenStreamLike } from "./token_stream.ts";

/** Serializable state of a {@link BlendedGptBatchSampler} for checkpoint resume. */
export interface BlendedSamplerState {
  /** Seed the sampler was created with. */
  seed: number;
  /** Generator words. */
  rng: DataRngState;
  /** Batches drawn so far. */
  batches: number;
  /** Where the blend order stands: the weights and the samples taken from each corpus. */
  blend: BlendScheduleState;
}

/** `names[k]`, or "corpus k" (for messages). */
function nameOf(names: readonly string[] | undefined, k: number): string {
  return names?.[k] ?? `corpus ${k}`;
}

function checkCorpora(
  corpora: readonly TokenStreamLike[],
  weights: readonly number[],
  names: readonly string[] | undefined,
): void {
  if (corpora.length === 0) throw new RangeError("a blend needs at least one corpus");
  if (corpora.length !== weights.length) {
    throw new RangeError(`${corpora.length} corpora but ${weights.length} weights`);
  }
  if (names && names.length !== corpora.length) {
    throw new RangeError(`${corpora.length} corpora but ${names.length} names`);
  }
}

/**
 * Draws training batches from a blend: row by row, the corpus comes from the
 * blend order of `weights` ({@link BlendSchedule}), the window start uniformly
 * from that corpus's [0, n − T − 1]. One corpus draws exactly the windows a
 * `GptBatchSampler` of the same seed draws. `state()`/`restore()` let a resumed
 * run continue the same sequence.
 */
export class BlendedGptBatchSampler {
  readonly #corpora: readonly TokenStream[];
  readonly #B: number;
  readonly #T: number;
  readonly #seed: number;
  #rng: DataRng;
  #schedule: BlendSchedule;
  #batches = 0;

  /**
   * A sampler over `corpora` blended by `weights` (positive, normalized here);
   * `names` name the corpora in errors. Throws a `DataError` naming a
   * corpus shorter than one window (T+1 tokens).
   */
  constructor(
    corpora: readonly TokenStreamLike[],
    weights: readonly number[],
    options: GptSamplerOptions,
    names?: readonly string[],
  ) {
    checkCorpora(corpora, weights, names);
    checkSamplerOptions(options);
    corpora.forEach((ids, k) => checkOneWindow(nameOf(names, k), ids, options.seqLength));
    this.#corpora = corpora.map(asTokenStream);
    this.#B = options.batchSize;
    this.#T = options.seqLength;
    this.#seed = options.seed;
    this.#rng = new DataRng(options.seed);
    this.#schedule = new BlendSchedule(weights);
  }

  /** The normalized weights. */
  get weights(): readonly number[] {
    return this.#schedule.weights;
  }

  /** Batches drawn so far. */
  get batchesDrawn(): number {
    return this.#batches;
  }

  /** Rows drawn so far from each corpus. */
  get counts(): number[] {
    return this.#schedule.counts;
  }

  /** Draws the next batch; its `sources` say which corpus each row came from. */
  next(): LmBatch {
    const B = this.#B, T = this.#T;
    const batch = emptyBatch(B, T, [], []);
    for (let r = 0; r < B; r++) {
      const k = this.#schedule.next();
      const ids = this.#corpora[k];
      const start = this.#rng.nextInt(ids.length - T);
      batch.starts.push(start);
      batch.sources!.push(k);
      fillRow(ids, start, T, r, batch);
    }
    this.#batches++;
    return batch;
  }

  /** The current state, JSON-serializable. */
  state(): BlendedSamplerState {
    return {
      seed: this.#seed,
      rng: this.#rng.state(),
      batches: this.#batches,
      blend: this.#schedule.state(),
    };
  }

  /**
   * Continues from a saved state. The seed must match. Saved with other
   * weights, or by a sampler of one corpus (`GptSamplerState`, no blend), the
   * blend goes on at the same sample position of this sampler's blend order
   * ({@link BlendSchedule.restore}).
   */
  restore(state: BlendedSamplerState | GptSamplerState): void {
    if (state.seed !== this.#seed) {
      throw new Error(
        `sampler state was saved with seed ${state.seed}, this sampler uses ${this.#seed}`,
      );
    }
    // A one-corpus run's state (Megatron lets a run change its data): the blend
    // starts at the sample that run had reached, as with other weights.
    const blend = "blend" in state && state.blend !== undefined
      ? state.blend
      : { weights: [], counts: [state.batches * this.#B] };
    this.#schedule.restore(blend);
    this.#rng.restore(state.rng);
    this.#batches = state.batches;
  }
}

/**
 * Validation batches of a blend: up to `maxBatches` batches of `batchSize`
 * rows (the last may be smaller), as many rows as the corpora have
 * non-overlapping windows of `seqLength` (0, T, 2T, …) in all. Each row's
 * corpus follows the blend order of `weights`; each corpus gives its windows
 * in order, from its first again when a corpus with a large weight runs out
 * before the others (as Megatron repeats a dataset for its share). Every
 * corpus needs one window (T+1 tokens); `names` name them in errors.
 */
export function blendedEvalBatches(
  corpora: readonly TokenStreamLike[],
  weights: readonly number[],
  batchSize: number,
  seqLength: number,
  options: { maxBatches?: number; names?: readonly string[] } = {},
): LmBatch[] {
  checkCorpora(corpora, weights, options.names);
  checkPositive("batch size", batchSize);
  corpora.forEach((ids, k) => checkOneWindow(nameOf(options.names, k), ids, seqLength));
  const streams = corpora.map(asTokenStream);
  const windows = streams.map((ids) => evalWindowCount(ids.length, seqLength));
  const available = windows.reduce((n, w) => n + w, 0);
  const rows = Math.min(available, (options.maxBatches ?? Infinity) * batchSize);
  const schedule = new BlendSchedule(weights);
  const taken = corpora.map(() => 0);
  const out: LmBatch[] = [];
  for (let lo = 0; lo < rows; lo += batchSize) {
    const B = Math.min(batchSize, rows - lo);
    const batch = emptyBatch(B, seqLength, [], []);
    for (let r = 0; r < B; r++) {
      const k = schedule.next();
      const start = (taken[k]++ % windows[k]) * seqLength;
      batch.starts.push(start);
      batch.sources!.push(k);
      fillRow(streams[k], start, seqLength, r, batch);
    }
    out.push(batch);
  }
  return out;
}
