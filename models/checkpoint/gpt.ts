/**
 * Model checkpoint glue: the arch/config/padded-row description to save with a
 * GPT, and the dropout RNG offsets of a GPT or BERT (the streams are seed + counter, so
 * saving the counters restores them on any TP rank and any TP size).
 * @module
 */

import type { GptConfig } from "../gpt.ts";
import type { RngOffsets, RngTracker } from "../parallel/random.ts";

export type { RngOffsets };

/** A model with the two dropout streams (GPT and BERT both have them). */
export interface HasRngStreams {
  /** The TP-group and per-TP-rank streams, whose offsets make the saved state. */
  readonly rng: Pick<RngTracker, "state" | "restore">;
}

/** The `model` and `paddedRows` fields of a save/load for a GPT. */
export function gptCheckpointInfo(config: GptConfig): {
  model: { arch: "gpt"; config: GptConfig };
  paddedRows: Record<string, number>;
} {
  return { model: { arch: "gpt", config }, paddedRows: { "wte.weight": config.vocabSize } };
}

/** The current dropout stream counters of `model` (a GPT or a BERT). */
export function rngOffsets(model: HasRngStreams): RngOffsets {
  return model.rng.state();
}

/** Restores counters saved by {@link rngOffsets}, checked first (they come from a file). */
export function restoreRngOffsets(model: HasRngStreams, s: RngOffsets): void {
  if (!Number.isInteger(s?.group) || !Number.isInteger(s?.rank)) {
    throw new Error(`invalid RNG state ${JSON.stringify(s)}`);
  }
  model.rng.restore(s);
}
