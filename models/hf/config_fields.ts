/**
 * Reading the fields of a Hugging Face `config.json`: each one checked by name
 * (a count that is no positive integer, a rate or epsilon that is no number, a
 * setting this project does not build), so a bad config is refused where it is
 * read and never reaches a kernel as a value it cannot use.
 * @module
 */

import { CheckpointError } from "../checkpoint/safetensors.ts";

/** A config object and the file it was read from (named in every refusal). */
export interface ConfigSource {
  /** The parsed `config.json`. */
  cfg: Record<string, unknown>;
  /** Its path, as the user named it. */
  file: string;
}

/** `key` as a positive integer (`fallback` where the config leaves it out). */
export function positiveIntField(s: ConfigSource, key: string, fallback?: number): number {
  const v = s.cfg[key] ?? fallback;
  if (!Number.isInteger(v) || (v as number) <= 0) {
    throw new CheckpointError(
      `${s.file}: "${key}" must be a positive integer, got ${JSON.stringify(s.cfg[key])}`,
    );
  }
  return v as number;
}

/**
 * `key` as a finite number in [`min`, `below`) (`fallback` where the config
 * leaves it out): an epsilon (`below` Infinity) or a dropout rate (below 1).
 */
export function numberField(
  s: ConfigSource,
  key: string,
  fallback: number,
  min: number,
  below = Infinity,
): number {
  const v = s.cfg[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v >= below) {
    const range = below === Infinity ? `≥ ${min}` : `in [${min}, ${below})`;
    throw new CheckpointError(
      `${s.file}: "${key}" must be a number ${range}, got ${JSON.stringify(s.cfg[key])}`,
    );
  }
  return v;
}

/**
 * Refuses a config that sets `key` to `unsupported` (e.g. `tie_word_embeddings:
 * false`), saying what this project's model does instead (`why`).
 */
export function refuseSetting(s: ConfigSource, key: string, unsupported: unknown, why: string) {
  if (s.cfg[key] === unsupported) {
    throw new CheckpointError(
      `${s.file}: "${key}" is ${JSON.stringify(unsupported)}, which is not supported: ${why}`,
    );
  }
}
