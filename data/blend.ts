/**
 * Megatron's dataset blending: which of several corpora each next sample comes
 * from. Sample `i` goes to the corpus whose count lags its share furthest:
 * the largest `w_k · max(i, 1) − count_k` (the first such corpus on a tie), as
 * Megatron-LM's `build_blending_indices` (megatron/core/datasets/helpers.cpp)
 * orders a blended dataset. The order depends only on the weights, so any prefix
 * holds each corpus within one sample of its share, and a run resumed at sample
 * `i` continues it exactly.
 * @module
 */

import { DataError } from "./errors.ts";

/**
 * `weights` scaled to sum 1; each must be a positive finite number. Each is
 * divided by their sum as `numpy.sum` takes it ({@link numpySum}), as
 * Megatron's `normalize` does, so a tie in the blend order falls as it does
 * there (dividing by the largest first changed 0.33 to 0.32999999999999996 and
 * swapped corpora at 62 of 5,000 samples); weights whose sum overflows (1e308
 * twice) are scaled by the largest first. A weight so small beside the largest
 * that it scales to 0 (5e-324 beside 1e300) is refused.
 */
export function normalizeWeights(weights: readonly number[]): number[] {
  if (weights.length === 0) throw new RangeError("a blend needs at least one weight");
  for (const w of weights) {
    if (!(w > 0 && Number.isFinite(w))) {
      throw new RangeError(`blend weights must be positive finite numbers, got ${w}`);
    }
  }
  const max = Math.max(...weights);
  const total = numpySum(weights);
  const scaled = Number.isFinite(total) ? weights : weights.map((w) => w / max);
  const sum = Number.isFinite(total) ? total : numpySum(scaled);
  const out = scaled.map((w) => w / sum);
  const lost = out.findIndex((w) => !(w > 0));
  if (lost >= 0) {
    throw new RangeError(
      `blend weight ${weights[lost]} is too small beside ${max} to be a share (it rounds to 0)`,
    );
  }
  return out;
}

/**
 * The sum of `a` in `numpy.sum`'s order for float64, bit for bit: in order
 * under 8 values; up to 128, eight running sums combined pairwise, then the
 * rest in order; past that, each half (cut at a multiple of 8) summed so.
 * (numpy's pairwise summation; in order, a blend of 8 or more weights can
 * differ from Megatron's in the last bit.)
 */
export function numpySum(a: readonly number[]): number {
  const n = a.length;
  if (n < 8) {
    let r = 0;
    for (const x of a) r += x;
    return r;
  }
  if (n <= 128) {
    const r = a.slice(0, 8);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  }
  let half = Math.floor(n / 2);
  half -= half % 8;
  return numpySum(a.slice(0, half)) + numpySum(a.slice(half));
}

/** Serializable state of a {@link BlendSchedule}. */
export interface BlendScheduleState {
  /** The normalized weights the counts were made with. */
  weights: number[];
  /** Samples taken from each corpus so far. */
  counts: number[];
}

/** The corpus sample `i` goes to, given the counts of samples `0 .. i−1` (updated). */
function pick(weights: readonly number[], counts: number[], i: number): number {
  const x = Math.max(i, 1);
  let best = 0, bestErr = weights[0] * x - counts[0];
  for (let k = 1; k < weights.length; k++) {
    const err = weights[k] * x - counts[k];
    if (err > bestErr) [best, bestErr] = [k, err];
  }
  counts[best]++;
  return best;
}

/**
 * The blend order, one sample at a time: {@link BlendSchedule.next} says which
 * corpus the next sample comes from. Weights are normalized here.
 */
export class BlendSchedule {
  /** The normalized weights. */
  readonly weights: readonly number[];
  #counts: number[];
  #samples = 0;

  /** A schedule over corpora of `weights` (positive; scaled to sum 1). */
  constructor(weights: readonly number[]) {
    this.weights = normalizeWeights(weights);
    this.#counts = this.weights.map(() => 0);
  }

  /** Samples scheduled so far. */
  get samples(): number {
    return this.#samples;
  }

  /** Samples given to each corpus so far (a copy). */
  get counts(): number[] {
    return [...this.#counts];
  }

  /** The corpus of the next sample. */
  next(): number {
    return pick(this.weights, this.#counts, this.#samples++);
  }

  /** The current state, JSON-serializable. */
  state(): BlendScheduleState {
    return { weights: [...this.weights], counts: [...this.#counts] };
  }

  /**
   * Continues from a saved state. Saved with other weights (or another number
   * of corpora), the schedule goes on at the same sample position of this
   * blend's order, as Megatron's blend rebuilt with new weights does.
   */
  restore(state: BlendScheduleState): void {
    const c = state?.counts;
    if (!Array.isArray(c) || c.some((n) => !Number.isSafeInteger(n) || n < 0)) {
      throw new DataError("the saved blend state has no valid per-corpus counts");
    }
    const samples = c.reduce((s, n) => s + n, 0);
    const same = Array.isArray(state.weights) && state.weights.length === this.weights.length &&
      state.weights.every((w, k) => w === this.weights[k]);
    this.#counts = same ? [...c] : blendCounts(this.weights, samples);
    this.#samples = samples;
  }
}

/** The corpus of each of the first `n` samples of the blend of `weights`. */
export function blendOrder(weights: readonly number[], n: number): Uint32Array {
  const s = new BlendSchedule(weights);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = s.next();
  return out;
}

/** Samples each corpus holds among the first `n` of the blend of `weights`. */
export function blendCounts(weights: readonly number[], n: number): number[] {
  const w = normalizeWeights(weights);
  const counts = w.map(() => 0);
  for (let i = 0; i < n; i++) pick(w, counts, i);
  return counts;
}
