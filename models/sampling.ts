/**
 * Choosing the next token from logits: temperature, top-k and top-p (nucleus)
 * filtering, greedy at temperature 0. Host-side, on one row of logits.
 * @module
 */

/** Sampling settings. */
export interface SamplingOptions {
  /** Softmax temperature; 0 = greedy (argmax). Default 1. */
  temperature?: number;
  /**
   * Keep only the k most likely tokens, and any tied with the k-th, as Hugging
   * Face's and Megatron's top-k do (0 = off, the default).
   */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = off, the default). */
  topP?: number;
}

/** What {@link SamplingOptions} left out mean: the model's own distribution, unfiltered. */
const UNFILTERED = { temperature: 1, topK: 0, topP: 1 } as const;

/**
 * The settings `deno task generate`, `train`'s final sample and the browser
 * page use where not told otherwise (nanoGPT's temperature, with a nucleus
 * that drops the unlikely tail): text that reads better than the unfiltered
 * distribution's.
 */
export const SAMPLE_DEFAULTS = { temperature: 0.8, topK: 0, topP: 0.95 } as const;

/**
 * Throws a clear error for settings {@link sampleToken} cannot honour: a
 * negative or non-finite temperature, a top-k that is not an integer ≥ 0, a
 * top-p outside (0, 1]. `op` names the caller.
 */
export function checkSamplingOptions(op: string, opts: SamplingOptions): void {
  const {
    temperature = UNFILTERED.temperature,
    topK = UNFILTERED.topK,
    topP = UNFILTERED.topP,
  } = opts;
  if (!(Number.isFinite(temperature) && temperature >= 0)) {
    throw new Error(`${op}: temperature must be a finite number ≥ 0, got ${temperature}`);
  }
  if (!(Number.isInteger(topK) && topK >= 0)) {
    throw new Error(`${op}: topK must be an integer ≥ 0 (0 = off), got ${topK}`);
  }
  if (!(topP > 0 && topP <= 1)) throw new Error(`${op}: topP must be in (0, 1], got ${topP}`);
}

/**
 * Picks a token id from `logits` (only the first `valid` entries are candidates)
 * using `uniform()` in [0, 1) as the random source. Settings it cannot honour
 * are refused ({@link checkSamplingOptions}).
 */
export function sampleToken(
  logits: Float32Array,
  valid: number,
  opts: SamplingOptions,
  uniform: () => number,
): number {
  checkSamplingOptions("sampleToken", opts);
  const temperature = opts.temperature ?? UNFILTERED.temperature;
  const n = Math.min(valid, logits.length);
  // A NaN or +∞ logit has no probability to draw by (−∞ is a masked token's, probability 0).
  let finite = false;
  for (let i = 0; i < n; i++) {
    const v = logits[i];
    if (Number.isNaN(v) || v === Infinity) {
      throw new RangeError(
        `sampleToken: the logit of token ${i} is ${v}: the model's output is not finite`,
      );
    }
    if (v !== -Infinity) finite = true;
  }
  if (!finite) {
    throw new RangeError(`sampleToken: none of the ${n} candidate tokens has a finite logit`);
  }
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b] - logits[a]);
  const topK = opts.topK ?? UNFILTERED.topK;
  if (topK > 0 && topK < n) {
    // the k-th largest and every token tied with it stay
    let keep = topK;
    while (keep < n && logits[order[keep]] === logits[order[topK - 1]]) keep++;
    order = order.slice(0, keep);
  }
  const max = logits[order[0]];
  let probs = order.map((i) => Math.exp((logits[i] - max) / temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  const topP = opts.topP ?? UNFILTERED.topP;
  if (topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < topP * total) acc += probs[keep++];
    order = order.slice(0, Math.max(1, keep));
    probs = probs.slice(0, Math.max(1, keep));
    total = probs.reduce((a, b) => a + b, 0);
  }
  const u = uniform();
  if (!(u >= 0 && u < 1)) {
    throw new RangeError(`sampling: uniform() must give numbers in [0, 1), gave ${u}`);
  }
  let r = u * total;
  for (let i = 0; i < order.length; i++) {
    r -= probs[i];
    if (r < 0) return order[i];
  }
  return order[order.length - 1];
}
