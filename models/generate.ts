/**
 * Autoregressive generation from a GPT: each new token runs the model over the
 * (windowed) context and samples from the last position's logits.
 * @module
 */

import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import type { Gpt } from "./gpt.ts";
import { sampleToken, type SamplingOptions } from "./sampling.ts";

/** Options of {@link generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** How many tokens to produce. */
  maxNewTokens: number;
  /** Random source in [0, 1) (e.g. a seeded generator). */
  uniform: () => number;
  /** Stops early when this token is produced. */
  stopToken?: number;
}

/** Yields new token ids one by one, continuing `prompt`. */
export async function* generate(
  model: Gpt,
  prompt: readonly number[],
  opts: GenerateOptions,
): AsyncGenerator<number> {
  if (prompt.length === 0) throw new Error("generate: the prompt must have at least one token");
  const device = model.layers.device;
  const ctx = [...prompt];
  const wasTraining = model.training;
  model.train(false);
  try {
    for (let i = 0; i < opts.maxNewTokens; i++) {
      const window = ctx.slice(-model.config.maxPositions);
      const row = await tidy(device, async () => {
        const ids = Tensor.fromArray(device, Int32Array.from(window), [1, window.length]);
        const logits = await device.noGrad(() => model.logits(ids));
        return await ops.slice(logits, 1, window.length - 1, window.length).read();
      });
      const next = sampleToken(row, model.config.vocabSize, opts, opts.uniform);
      ctx.push(next);
      yield next;
      if (next === opts.stopToken) return;
    }
  } finally {
    model.train(wasTraining);
  }
}
