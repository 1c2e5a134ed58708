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
export function refuseSetting(
  s: ConfigSource,
  key: string,
  unsupported: unknown,
  why: string,
): void {
  if (s.cfg[key] === unsupported) {
    throw new CheckpointError(
      `${s.file}: "${key}" is ${JSON.stringify(unsupported)}, which is not supported: ${why}`,
    );
  }
}

/**
 * Each family's `config.json` field of each shape setting (GPT-2's and BERT's
 * names); a config holding one family's names is that family.
 */
export const HF_SHAPE_FIELDS = {
  gpt: {
    numLayers: "n_layer",
    hiddenSize: "n_embd",
    numHeads: "n_head",
    ffnHiddenSize: "n_inner",
    maxPositions: "n_positions",
    vocabSize: "vocab_size",
  },
  bert: {
    numLayers: "num_hidden_layers",
    hiddenSize: "hidden_size",
    numHeads: "num_attention_heads",
    ffnHiddenSize: "intermediate_size",
    maxPositions: "max_position_embeddings",
    vocabSize: "vocab_size",
  },
} as const;

/**
 * `message` (a shape error's, naming the library's settings: `hiddenSize 30 is
 * not divisible by numHeads 4`) in a `config.json`'s words: its settings
 * renamed as `fields` ({@link HF_SHAPE_FIELDS}) names them.
 */
export function inConfigWords(message: string, fields: Readonly<Record<string, string>>): string {
  return message.replace(/\b\w+\b/g, (w) => (Object.hasOwn(fields, w) ? fields[w] : w));
}

/** Whether `config` holds any of the layer, head or width fields of `family`. */
function hasFieldsOf(config: Record<string, unknown>, family: "gpt" | "bert"): boolean {
  const f = HF_SHAPE_FIELDS[family];
  return [f.numLayers, f.numHeads, f.hiddenSize].some((k) => k in config);
}

/** Whether `config` holds `family`'s shape fields and none of the other family's. */
function onlyFieldsOf(config: Record<string, unknown>, family: "gpt" | "bert"): boolean {
  return hasFieldsOf(config, family) && !hasFieldsOf(config, family === "bert" ? "gpt" : "bert");
}

/**
 * The model family a Hugging Face config describes: its `model_type` ("bert",
 * else GPT-2's reader takes it and names any other type), or where that is
 * left out (configs converted from Google's original BERT lack it) BERT when
 * the config has BERT's field names and none of GPT-2's.
 */
export function hfModelFamily(config: Record<string, unknown>): "gpt" | "bert" {
  if (config.model_type !== undefined) return config.model_type === "bert" ? "bert" : "gpt";
  return onlyFieldsOf(config, "bert") ? "bert" : "gpt";
}

/**
 * What a config without `model_type` looks like, for messages: "BERT's fields",
 * "GPT-2's fields" or neither family's.
 */
export function describeUntypedConfig(config: Record<string, unknown>): string {
  return onlyFieldsOf(config, "bert")
    ? "BERT's fields (no model_type)"
    : hasFieldsOf(config, "gpt")
    ? "GPT-2's fields (no model_type)"
    : "no model_type and neither BERT's nor GPT-2's fields";
}

/**
 * Refuses a config of the other family than `family`'s reader: by
 * `model_type`, else by its fields (a BERT config without `model_type` given
 * where a GPT-2 is read failed on a missing GPT-2 field, `"n_embd" must be a
 * positive integer`). A config of neither family's fields is left to the
 * reader, which names the first field it misses.
 */
export function requireFamily(s: ConfigSource, family: "gpt" | "bert"): void {
  const expected = family === "bert" ? "bert" : "gpt2";
  if (s.cfg.model_type !== undefined) {
    if (s.cfg.model_type !== expected) {
      throw new CheckpointError(
        `${s.file}: model_type is ${JSON.stringify(s.cfg.model_type)}, expected "${expected}"`,
      );
    }
    return;
  }
  const other = family === "bert" ? "gpt" : "bert";
  if (onlyFieldsOf(s.cfg, other)) {
    const [what, read] = other === "bert" ? ["BERT", "GPT-2"] : ["GPT-2", "BERT"];
    throw new CheckpointError(
      `${s.file}: ${what}'s fields and no model_type: a ${what}, where a ${read} is read`,
    );
  }
}
