/**
 * GPT language-model batches: a seeded random sampler of training windows (resumable from a
 * saved state) and a sequential enumeration of evaluation windows.
 * @module
 */

import { DataError } from "./errors.ts";
import { DataRng, type DataRngState } from "./rng.ts";
import { asTokenStream, type TokenStream, type TokenStreamLike } from "./token_stream.ts";

/** One micro-batch: `batchSize` rows of `seqLength` ids, row-major. */
export interface LmBatch {
  /** Input ids, length batchSize·seqLength; row r is ids[s_r .. s_r+T). */
  inputs: Int32Array;
  /** Target ids, length batchSize·seqLength; row r is ids[s_r+1 .. s_r+T+1). */
  targets: Int32Array;
  /** Rows in this batch. */
  batchSize: number;
  /** Tokens per row (T). */
  seqLength: number;
  /** Start offset s_r of each row in the token stream. */
  starts: number[];
  /** In a blend of corpora: the corpus (its index) each row's window comes from. */
  sources?: number[];
}

/** Serializable state of a {@link GptBatchSampler} for checkpoint resume. */
export interface GptSamplerState {
  /** Seed the sampler was created with. */
  seed: number;
  /** Generator words. */
  rng: DataRngState;
  /** Batches drawn so far. */
  batches: number;
}

/** Options of {@link GptBatchSampler}. */
export interface GptSamplerOptions {
  /** Rows per batch (B). */
  batchSize: number;
  /** Tokens per row (T); each window reads T+1 tokens. */
  seqLength: number;
  /** Seed for the window starts. */
  seed: number;
}

/** Throws a RangeError naming `name` when `v` is not a positive integer. */
export function checkPositive(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${v}`);
  }
}

/** Throws a RangeError for a batch size or sequence length that is not a positive integer. */
export function checkSamplerOptions(options: GptSamplerOptions): void {
  checkPositive("batch size", options.batchSize);
  checkPositive("sequence length", options.seqLength);
}

/** Throws a {@link DataError} naming `what` when `ids` hold less than one window (T+1 tokens). */
export function checkOneWindow(what: string, ids: TokenStreamLike, seqLength: number): void {
  if (ids.length < seqLength + 1) {
    throw new DataError(
      `${what} has ${ids.length} token${ids.length === 1 ? "" : "s"}, fewer than one window of ` +
        `seq length + 1 = ${seqLength + 1}; use more data or a shorter --seq-length`,
    );
  }
}

/** A batch of `batchSize` rows of `seqLength` zeros, to fill with {@link fillRow}. */
export function emptyBatch(
  batchSize: number,
  seqLength: number,
  starts: number[] = [],
  sources?: number[],
): LmBatch {
  return {
    inputs: new Int32Array(batchSize * seqLength),
    targets: new Int32Array(batchSize * seqLength),
    batchSize,
    seqLength,
    starts,
    ...(sources ? { sources } : {}),
  };
}

/** Fills `inputs`/`targets` row `row` of `b` from the window of `ids` starting at `start`. */
export function fillRow(
  ids: TokenStream,
  start: number,
  T: number,
  row: number,
  b: LmBatch,
): void {
  const window = ids.read(start, start + T + 1);
  const o = row * T;
  for (let j = 0; j < T; j++) {
    b.inputs[o + j] = window[j];
    b.targets[o + j] = window[j + 1];
  }
}

/**
 * Draws training batches of windows at uniformly random starts in [0, n−T−1], reproducibly
 * from the seed. `state()`/`restore()` let a resumed run continue the same sequence.
 */
export class GptBatchSampler {
  readonly #ids: TokenStream;
  readonly #B: number;
  readonly #T: number;
  readonly #seed: number;
  #rng: DataRng;
  #batches = 0;

  /**
   * Creates a sampler over `ids` (an array, or a stream such as a `.bin` file
   * read as needed); throws if the stream is shorter than one window (T+1).
   */
  constructor(ids: TokenStreamLike, options: GptSamplerOptions) {
    checkSamplerOptions(options);
    checkOneWindow("the token stream", ids, options.seqLength);
    this.#ids = asTokenStream(ids);
    this.#B = options.batchSize;
    this.#T = options.seqLength;
    this.#seed = options.seed;
    this.#rng = new DataRng(options.seed);
  }

  /** Number of possible window starts, n − T. */
  get windowCount(): number {
    return this.#ids.length - this.#T;
  }

  /** Batches drawn so far. */
  get batchesDrawn(): number {
    return this.#batches;
  }

  /** Draws the next batch. */
  next(): LmBatch {
    const B = this.#B, T = this.#T;
    const batch = emptyBatch(B, T);
    for (let r = 0; r < B; r++) {
      const start = this.#rng.nextInt(this.windowCount);
      batch.starts.push(start);
      fillRow(this.#ids, start, T, r, batch);
    }
    this.#batches++;
    return batch;
  }

  /** The current state, JSON-serializable. */
  state(): GptSamplerState {
    return { seed: this.#seed, rng: this.#rng.state(), batches: this.#batches };
  }

  /**
   * Continues from a saved state (the seed must match the one this sampler was
   * made with). A blend's state (`BlendedSamplerState`) is taken too, as
   * Megatron lets a run change its data: the random stream and the count of
   * batches go on, and the windows now come from this corpus.
   */
  restore(state: GptSamplerState): void {
    if (state.seed !== this.#seed) {
      throw new Error(
        `sampler state was saved with seed ${state.seed}, this sampler uses ${this.#seed}`,
      );
    }
    this.#rng.restore(state.rng);
    this.#batches = state.batches;
  }
}

/**
 * Number of evaluation windows of length T over a stream of n tokens: windows start at
 * 0, T, 2T, … while the window and its next token fit, i.e. ⌊(n − 1) / T⌋.
 */
export function evalWindowCount(n: number, seqLength: number): number {
  checkPositive("sequence length", seqLength);
  return n < 1 ? 0 : Math.floor((n - 1) / seqLength);
}

/** Start offsets of the non-overlapping evaluation windows (0, T, 2T, …). */
export function evalWindowStarts(n: number, seqLength: number): number[] {
  return Array.from({ length: evalWindowCount(n, seqLength) }, (_, i) => i * seqLength);
}

/**
 * Yields evaluation batches of up to `batchSize` consecutive non-overlapping windows, in order.
 * The last batch may be smaller unless `dropLast`; at most `maxBatches` are yielded when given.
 */
export function* evalBatches(
  ids: TokenStreamLike,
  batchSize: number,
  seqLength: number,
  options: { maxBatches?: number; dropLast?: boolean } = {},
): Generator<LmBatch> {
  checkPositive("batch size", batchSize);
  const stream = asTokenStream(ids);
  // Starts are made as batches need them: a corpus of billions of tokens has
  // hundreds of millions of windows, too many numbers for one array.
  const windows = evalWindowCount(stream.length, seqLength);
  const limit = options.maxBatches ?? Infinity;
  let yielded = 0;
  for (let i = 0; i < windows && yielded < limit; i += batchSize) {
    const B = Math.min(batchSize, windows - i);
    if (B < batchSize && options.dropLast) return;
    const starts = Array.from({ length: B }, (_, r) => (i + r) * seqLength);
    const batch = emptyBatch(B, seqLength, starts);
    batch.starts.forEach((s, r) => fillRow(stream, s, seqLength, r, batch));
    yielded++;
    yield batch;
  }
}

/**
 * Rows [rank·B/parts, (rank+1)·B/parts) of a batch, for data-parallel ranks that all draw the
 * same global batch and each train on their slice. B must be divisible by `parts`.
 */
export function sliceBatch(batch: LmBatch, rank: number, parts: number): LmBatch {
  if (batch.batchSize % parts !== 0) {
    throw new RangeError(
      `batch of ${batch.batchSize} rows cannot be split into ${parts} equal parts`,
    );
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= parts) {
    throw new RangeError(`rank ${rank} is not in [0, ${parts})`);
  }
  const rows = batch.batchSize / parts;
  const T = batch.seqLength;
  return {
    inputs: batch.inputs.slice(rank * rows * T, (rank + 1) * rows * T),
    targets: batch.targets.slice(rank * rows * T, (rank + 1) * rows * T),
    batchSize: rows,
    seqLength: T,
    starts: batch.starts.slice(rank * rows, (rank + 1) * rows),
    ...(batch.sources ? { sources: batch.sources.slice(rank * rows, (rank + 1) * rows) } : {}),
  };
}
