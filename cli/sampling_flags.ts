/**
 * The sampling flags `train` (its final sample) and `generate` share: one set
 * of defaults ({@link SAMPLE_DEFAULTS}) and one check.
 * @module
 */

import { SAMPLE_DEFAULTS } from "../models/sampling.ts";
import { type FlagSpec, type FlagValues, UsageError } from "./flags.ts";

/** `--temperature`, `--top-k` and `--top-p`, in `group` of the help. */
export function samplingFlags(group?: string): Record<string, FlagSpec> {
  return {
    "temperature": {
      type: "float",
      default: SAMPLE_DEFAULTS.temperature,
      min: 0,
      help: "softmax temperature (0 = greedy; 1 = the model's own distribution)",
      ...(group ? { group } : {}),
    },
    "top-k": {
      type: "int",
      default: SAMPLE_DEFAULTS.topK,
      min: 0,
      help: "sample from the k most likely tokens (0 = all)",
    },
    "top-p": {
      type: "float",
      default: SAMPLE_DEFAULTS.topP,
      min: 0,
      help: "nucleus sampling: the smallest set of tokens whose probability reaches this (1 = off)",
    },
  };
}

/** Refuses a `--top-p` outside (0, 1]. */
export function checkTopP(f: FlagValues): void {
  const p = f["top-p"] as number;
  if (!(p > 0 && p <= 1)) throw new UsageError(`--top-p must be in (0, 1], got ${p}`);
}
