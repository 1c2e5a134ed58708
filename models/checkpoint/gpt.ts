/**
 * GPT-specific checkpoint glue: the arch/config/padded-row description to save
 * with a GPT, and its dropout RNG offsets (the streams are seed + counter, so
 * saving the counters restores them on any TP rank and any TP size).
 * @module
 */

import type { Gpt, GptConfig } from "../gpt.ts";

/** The `model` and `paddedRows` fields of a save/load for a GPT. */
export function gptCheckpointInfo(config: GptConfig): {
  model: { arch: "gpt"; config: GptConfig };
  paddedRows: Record<string, number>;
} {
  return { model: { arch: "gpt", config }, paddedRows: { "wte.weight": config.vocabSize } };
}

/** Dropout stream counters of a GPT, for the trainer state. */
export interface GptRngOffsets {
  /** Offset of the TP-group stream. */
  group: number;
  /** Offset of the per-TP-rank stream. */
  rank: number;
}

/** The current dropout stream counters of `model`. */
export function gptRngOffsets(model: Gpt): GptRngOffsets {
  return { group: model.rng.group.offset, rank: model.rng.rank.offset };
}

/** Restores counters saved by {@link gptRngOffsets}. */
export function restoreGptRngOffsets(model: Gpt, s: GptRngOffsets): void {
  if (!Number.isInteger(s?.group) || !Number.isInteger(s?.rank)) {
    throw new Error(`invalid GPT RNG state ${JSON.stringify(s)}`);
  }
  model.rng.group.offset = s.group;
  model.rng.rank.offset = s.rank;
}
