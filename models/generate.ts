/**
 * Autoregressive generation from a GPT. With the key-value cache (the default)
 * the prompt is run once (prefill) and every further token costs one position's
 * work; without it the whole context is recomputed for each token (the
 * reference the cache is tested against).
 *
 * Context window: the model sees at most `maxPositions` tokens. When the
 * context outgrows it, the window restarts from the last ⌈maxPositions/2⌉
 * tokens (one re-prefill, then cheap steps again), so the cache is rebuilt once
 * every ⌊maxPositions/2⌋ tokens instead of on every token. Both modes follow the
 * same window, so they produce the same tokens.
 * @module
 */

import type { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import type { Gpt } from "./gpt.ts";
import type { KvCache } from "./kv_cache.ts";
import { checkSamplingOptions, sampleToken, type SamplingOptions } from "./sampling.ts";

/** Options of {@link generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** How many tokens to produce. */
  maxNewTokens: number;
  /** Random source in [0, 1) (e.g. a seeded generator). */
  uniform: () => number;
  /** Stops early when this token is produced. */
  stopToken?: number;
  /**
   * Samples only ids below this (default: the model's vocabulary): a tokenizer
   * smaller than a padded vocabulary cannot spell the ids past its own.
   */
  vocabLimit?: number;
  /**
   * Use the key-value cache (default true). `false` recomputes the whole context
   * window for every token: slower, same tokens.
   */
  cache?: boolean;
}

/** Tokens kept when the window slides: the last ⌈maxPositions/2⌉. */
export function slideKeep(maxPositions: number): number {
  return Math.ceil(maxPositions / 2);
}

function ids(device: Device, tokens: readonly number[]): TokenIds {
  return TokenIds.fromHost(device, tokens, [1, tokens.length]);
}

/** Next-token logits of the last position of `window`, recomputing all of it. */
async function fullLogits(model: Gpt, window: readonly number[]): Promise<Float32Array> {
  const device = model.parallel.device;
  return await device.exclusive(
    "generate",
    () =>
      inEvalMode(model, () =>
        tidy(device, () =>
          device.noGrad(async () => {
            const h = await model.hidden(ids(device, window));
            const last = ops.slice(h, 1, window.length - 1, window.length);
            return await (await model.parallel.lmLogits(last, model.wte.weight)).read();
          }))),
  );
}

/**
 * Runs `fn` with `model` in evaluation mode (no dropout) and restores its mode
 * after: between tokens the model is as the caller left it, so a training step
 * taken while a generation is suspended keeps its dropout.
 */
async function inEvalMode<T>(model: Gpt, fn: () => Promise<T>): Promise<T> {
  const was = model.training;
  model.train(false);
  try {
    return await fn();
  } finally {
    model.train(was);
  }
}

/** Logits of the last of `tokens`, run at positions `[start, start + n)` through the cache. */
async function cachedLogits(
  model: Gpt,
  cache: KvCache,
  tokens: readonly number[],
  start: number,
): Promise<Float32Array> {
  const device = model.parallel.device;
  return await device.exclusive("generate", () =>
    inEvalMode(model, () =>
      tidy(device, async () => {
        const logits = await model.forwardCached(ids(device, tokens), cache, start, {
          lastOnly: true,
        });
        return await logits.read();
      })));
}

/** Where a generator's key-value cache is, while it has one. */
interface HeldCache {
  cache: KvCache | null;
}

/**
 * The key-value caches of generators dropped unfinished (neither run to their
 * end nor `return()`ed, as `for await … break` does): freed when the generator
 * is collected, as its `finally` never runs.
 */
const dropped = new FinalizationRegistry<HeldCache>((held) => {
  try {
    held.cache?.dispose();
  } catch {
    // Its device was closed: the buffers went with it.
  }
});

/**
 * Yields new token ids one by one, continuing `prompt`. Its key-value cache is
 * freed when the generator ends or is returned, and by the garbage collector
 * for one dropped unfinished.
 */
export function generate(
  model: Gpt,
  prompt: readonly number[],
  opts: GenerateOptions,
): AsyncGenerator<number> {
  const held: HeldCache = { cache: null };
  const tokens = generateTokens(model, prompt, opts, held);
  dropped.register(tokens, held, held);
  return tokens;
}

async function* generateTokens(
  model: Gpt,
  prompt: readonly number[],
  opts: GenerateOptions,
  held: HeldCache,
): AsyncGenerator<number> {
  if (prompt.length === 0) throw new Error("generate: the prompt must have at least one token");
  const odd = prompt.find((t) => !Number.isInteger(t));
  if (odd !== undefined) throw new Error(`generate: prompt ids must be integers, got ${odd}`);
  if (typeof opts.uniform !== "function") {
    throw new Error("generate: uniform must be a function giving numbers in [0, 1) (a seeded one)");
  }
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 0)) {
    throw new Error(`generate: maxNewTokens must be an integer ≥ 0, got ${opts.maxNewTokens}`);
  }
  checkSamplingOptions("generate", opts);
  const vocab = model.config.vocabSize;
  const limit = opts.vocabLimit ?? vocab;
  if (!(Number.isInteger(limit) && limit >= 1 && limit <= vocab)) {
    throw new Error(`generate: vocabLimit must be an integer in [1, ${vocab}], got ${limit}`);
  }
  const stop = opts.stopToken;
  if (stop !== undefined && !(Number.isInteger(stop) && stop >= 0 && stop < vocab)) {
    throw new Error(`generate: stopToken must be a token id in [0, ${vocab}), got ${stop}`);
  }
  if (opts.maxNewTokens === 0) return;
  const Tmax = model.config.maxPositions;
  const useCache = opts.cache ?? true;
  const ctx = [...prompt];
  let start = Math.max(0, ctx.length - Tmax); // first token of the window
  const cache = useCache ? model.createCache(1) : null;
  held.cache = cache;
  // The logits after a (re)started window: a prefill, or a full recompute.
  const restart = (): Promise<Float32Array> => {
    const window = ctx.slice(start);
    return cache ? cachedLogits(model, cache, window, 0) : fullLogits(model, window);
  };
  try {
    let row = await restart();
    for (let i = 0;; i++) {
      const next = sampleToken(row, limit, opts, opts.uniform);
      ctx.push(next);
      yield next;
      if (next === opts.stopToken || i + 1 >= opts.maxNewTokens) return;
      if (ctx.length - start > Tmax) {
        start = ctx.length - slideKeep(Tmax);
        row = await restart();
      } else if (cache) {
        row = await cachedLogits(model, cache, [next], ctx.length - 1 - start);
      } else {
        row = await fullLogits(model, ctx.slice(start));
      }
    }
  } finally {
    cache?.dispose();
    held.cache = null;
    dropped.unregister(held);
  }
}
