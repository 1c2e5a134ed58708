/**
 * Hugging Face BERT ⇄ this project's BERT names, as an editable table. HF keeps
 * query/key/value separate ([h, h] each); ours fuses them into one `qkv` [3h, h]
 * (q|k|v rows), concatenated on import and split on export. HF BERT Linear
 * weights are already [out, in]. The word embeddings and the MLM output bias are
 * padded to the padded vocabulary by the loader and cut back on export.
 * @module
 */

import { DEFAULT_INIT_STD, type ParamInfo } from "../../core/nn.ts";
import type { TpPlace } from "../checkpoint/assign.ts";
import { CheckpointError } from "../checkpoint/safetensors.ts";
import { type HostTensor, readTensors, type TensorSource } from "../checkpoint/shard.ts";
import type { HfDir } from "./io.ts";
import {
  HF_SHAPE_FIELDS,
  numberField,
  positiveIntField,
  refuseSetting,
  requireFamily,
} from "./config_fields.ts";
import {
  assignHfTensors,
  checkTiedCopy,
  expandTable,
  exportTensorSource,
  type FullTensors,
  importTensors,
  type MapEntry,
  renamedSource,
} from "./mapping.ts";
import { DEFAULT_DROPOUT, defaultFfnHiddenSize } from "../shape.ts";
import { BERT_LAYER_NORM_EPS, BERT_TYPE_VOCAB_SIZE } from "../bert.ts";

const L = "bert.encoder.layer.{N}";

/** Our BERT names ⇄ HF `BertForPreTraining` names. Edit here if the model's names change. */
export const BERT_TABLE: readonly MapEntry[] = [
  {
    ours: "bert.embeddings.word_embeddings.weight",
    hf: ["bert.embeddings.word_embeddings.weight"],
  },
  {
    ours: "bert.embeddings.position_embeddings.weight",
    hf: ["bert.embeddings.position_embeddings.weight"],
  },
  {
    ours: "bert.embeddings.token_type_embeddings.weight",
    hf: ["bert.embeddings.token_type_embeddings.weight"],
  },
  { ours: "bert.embeddings.LayerNorm.weight", hf: ["bert.embeddings.LayerNorm.weight"] },
  { ours: "bert.embeddings.LayerNorm.bias", hf: ["bert.embeddings.LayerNorm.bias"] },
  ...["weight", "bias"].map((p) => ({
    ours: `${L}.attention.self.qkv.${p}`,
    hf: ["query", "key", "value"].map((q) => `${L}.attention.self.${q}.${p}`),
  })),
  ...[
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
  ].flatMap((m) =>
    ["weight", "bias"].map((p) => ({ ours: `${L}.${m}.${p}`, hf: [`${L}.${m}.${p}`] }))
  ),
  ...["bert.pooler.dense", "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm"]
    .flatMap((m) => ["weight", "bias"].map((p) => ({ ours: `${m}.${p}`, hf: [`${m}.${p}`] }))),
  { ours: "cls.predictions.bias", hf: ["cls.predictions.bias"] },
  { ours: "cls.seq_relationship.weight", hf: ["cls.seq_relationship.weight"] },
  { ours: "cls.seq_relationship.bias", hf: ["cls.seq_relationship.bias"] },
];

/**
 * The tensors of HF's `BertForPreTraining` that a `BertForMaskedLM` has not:
 * the pooler and the sentence-order head. A directory with none of them loads
 * with these left at the model's own initialization, as Hugging Face's
 * `from_pretrained` leaves them "newly initialized".
 */
export const BERT_PRETRAINING_HEADS: readonly string[] = [
  "bert.pooler.dense.weight",
  "bert.pooler.dense.bias",
  "cls.seq_relationship.weight",
  "cls.seq_relationship.bias",
];

/** Whether `tensors` has none of {@link BERT_PRETRAINING_HEADS} (a `BertForMaskedLM`'s). */
export function lacksPretrainingHeads(tensors: { has(name: string): boolean }): boolean {
  return BERT_PRETRAINING_HEADS.every((n) => !tensors.has(n));
}

/** Our BERT tensors whose rows are the (padded) vocabulary. */
export const BERT_VOCAB_ROWS: readonly string[] = [
  "bert.embeddings.word_embeddings.weight",
  "cls.predictions.bias",
];

/** The BERT shape fields read from an HF config (field names as in `GptConfig`). */
export interface BertHfConfig {
  /** Vocabulary before padding. */
  vocabSize: number;
  /** Encoder layers. */
  numLayers: number;
  /** Hidden size. */
  hiddenSize: number;
  /** Attention heads. */
  numHeads: number;
  /** MLP inner size. */
  ffnHiddenSize: number;
  /** Position table size. */
  maxPositions: number;
  /** Token-type (segment) vocabulary. */
  typeVocabSize: number;
  /** Layer-norm epsilon. */
  layerNormEps: number;
  /** Hidden dropout. */
  hiddenDropout: number;
  /** Attention-probability dropout. */
  attentionDropout: number;
  /** HF BERT is the original post-LN BERT. */
  postLayerNorm: true;
}

/** Reads the BERT fields of an HF `config.json`. */
export function bertConfigFromHf(cfg: Record<string, unknown>, file = "config.json"): BertHfConfig {
  const s = { cfg, file };
  requireFamily(s, "bert");
  const act = (cfg.hidden_act ?? "gelu") as string;
  if (act !== "gelu") {
    throw new CheckpointError(
      `${file}: hidden_act "${act}" is not supported (BERT uses the erf GeLU)`,
    );
  }
  const positions = cfg.position_embedding_type ?? "absolute";
  if (positions !== "absolute") {
    throw new CheckpointError(
      `${file}: position_embedding_type ${JSON.stringify(positions)} is not supported ` +
        `(this BERT has absolute, learned position embeddings)`,
    );
  }
  const encoder = "this BERT is an encoder (bidirectional attention, no cross-attention)";
  refuseSetting(s, "is_decoder", true, encoder);
  refuseSetting(s, "add_cross_attention", true, encoder);
  refuseSetting(s, "tie_word_embeddings", false, "this BERT's MLM decoder is its word embedding");
  const f = HF_SHAPE_FIELDS.bert;
  const h = positiveIntField(s, f.hiddenSize);
  return {
    vocabSize: positiveIntField(s, "vocab_size"),
    numLayers: positiveIntField(s, f.numLayers),
    hiddenSize: h,
    numHeads: positiveIntField(s, f.numHeads),
    ffnHiddenSize: positiveIntField(s, f.ffnHiddenSize, defaultFfnHiddenSize(h)),
    maxPositions: positiveIntField(s, f.maxPositions),
    typeVocabSize: positiveIntField(s, "type_vocab_size", BERT_TYPE_VOCAB_SIZE),
    layerNormEps: numberField(s, "layer_norm_eps", BERT_LAYER_NORM_EPS, 0),
    hiddenDropout: numberField(s, "hidden_dropout_prob", DEFAULT_DROPOUT, 0, 1),
    attentionDropout: numberField(s, "attention_probs_dropout_prob", DEFAULT_DROPOUT, 0, 1),
    postLayerNorm: true,
  };
}

/**
 * Refuses a BERT with fewer than two token types for work on sentence pairs
 * (training and eval feed segments A and B as token types 0 and 1; fill-mask
 * needs type 0 only). `source` names the model. Returns `c`.
 */
export function requireSentencePairs<C extends { typeVocabSize?: number }>(
  c: C,
  source: string,
): C {
  const types = c.typeVocabSize ?? BERT_TYPE_VOCAB_SIZE;
  if (types < 2) {
    throw new CheckpointError(
      `${source}: type_vocab_size ${types}: training and eval feed sentence pairs, token types ` +
        "0 and 1, so they need 2 (fill-mask runs this model)",
    );
  }
  return c;
}

/**
 * An HF BERT `config.json` for `c`; `initializerRange` is the std the weights
 * were drawn with (HF uses it for weights it adds).
 */
export function bertConfigToHf(
  c: BertHfConfig,
  initializerRange = DEFAULT_INIT_STD,
): Record<string, unknown> {
  return {
    architectures: ["BertForPreTraining"],
    model_type: "bert",
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    intermediate_size: c.ffnHiddenSize,
    hidden_act: "gelu",
    hidden_dropout_prob: c.hiddenDropout,
    attention_probs_dropout_prob: c.attentionDropout,
    max_position_embeddings: c.maxPositions,
    type_vocab_size: c.typeVocabSize,
    layer_norm_eps: c.layerNormEps,
    initializer_range: initializerRange,
    position_embedding_type: "absolute",
    tie_word_embeddings: true,
  };
}

/**
 * Normalises an HF BERT name: old TF-converted `LayerNorm.gamma/beta` become
 * `weight/bias`, and a bare `BertModel`'s names get the `bert.` prefix.
 */
export function normaliseBertName(name: string): string {
  let n = name.replace(/LayerNorm\.gamma$/, "LayerNorm.weight").replace(
    /LayerNorm\.beta$/,
    "LayerNorm.bias",
  );
  if (/^(embeddings|encoder|pooler)\./.test(n)) n = `bert.${n}`;
  return n;
}

function ignoredBert(name: string): boolean {
  return /position_ids$/.test(name) || /^cls\.predictions\.decoder\.(weight|bias)$/.test(name);
}

/**
 * Our full BERT tensors (vocabulary unpadded) from HF tensors (`hf`, by stored
 * name), checked by name and shape now and read when asked for (a stored MLM
 * decoder, tied to the embeddings, is read now to compare). A `BertForMaskedLM`'s
 * tensors give all but {@link BERT_PRETRAINING_HEADS}.
 */
export function bertTensorsFromHf(
  hf: TensorSource,
  config: BertHfConfig,
  source: string,
): TensorSource {
  const byName = new Map([...hf.keys()].map((n) => [normaliseBertName(n), n]));
  const renamed = renamedSource(hf, byName);
  const maskedLm = lacksPretrainingHeads(renamed);
  const out = importTensors(
    expandTable(BERT_TABLE, config.numLayers).filter((e) =>
      !(maskedLm && BERT_PRETRAINING_HEADS.includes(e.ours))
    ),
    renamed,
    ignoredBert,
    source,
  );
  // The MLM decoder is tied to the word embeddings, its bias to cls.predictions.bias.
  for (
    const [copy, tied] of [
      ["cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"],
      ["cls.predictions.decoder.bias", "cls.predictions.bias"],
    ]
  ) {
    if (renamed.has(copy)) checkTiedCopy(renamed.get(copy), copy, out.get(tied)!, tied, source);
  }
  return out;
}

/**
 * A BERT HF directory opened: its config read, its tensors checked and read
 * when needed; `freshHeads` names the {@link BERT_PRETRAINING_HEADS} it has not
 * (all of them for a `BertForMaskedLM`, else none).
 */
export function bertFromHfDir(
  hf: HfDir,
): { config: BertHfConfig; tensors: TensorSource; freshHeads: readonly string[] } {
  const config = bertConfigFromHf(hf.config, `${hf.dir}/config.json`);
  const tensors = bertTensorsFromHf(hf, config, hf.fileOf(hf.names[0] ?? ""));
  return {
    config,
    tensors,
    freshHeads: lacksPretrainingHeads(tensors) ? BERT_PRETRAINING_HEADS : [],
  };
}

/** Padded-row counts for loading BERT tensors into a model with a padded vocabulary. */
export function bertPaddedRows(vocabSize: number): Record<string, number> {
  return Object.fromEntries(BERT_VOCAB_ROWS.map((n) => [n, vocabSize]));
}

/** HF BERT tensors (vocabulary unpadded, q/k/v split) from our full tensors, each computed when asked for. */
export function bertTensorSourceToHf(full: FullTensors, config: BertHfConfig): TensorSource {
  return exportTensorSource(
    expandTable(BERT_TABLE, config.numLayers),
    full,
    bertPaddedRows(config.vocabSize),
  );
}

/** HF BERT tensors (vocabulary unpadded, q/k/v split) from our full tensors. */
export function bertTensorsToHf(full: FullTensors, config: BertHfConfig): [string, HostTensor][] {
  return [...readTensors(bertTensorSourceToHf(full, config))];
}

/**
 * Writes our full BERT tensors into a model's parameters (this rank's shards at
 * `place`), padding the vocabulary rows; validates everything before writing.
 * Tensors with none of {@link BERT_PRETRAINING_HEADS} (a `BertForMaskedLM`'s)
 * leave those parameters as they are.
 */
export function assignBert(
  params: readonly [string, ParamInfo][],
  tensors: TensorSource | ReadonlyMap<string, HostTensor>,
  vocabSize: number,
  place: TpPlace,
  source: string,
): void {
  const sizes =
    "hidden_size, intermediate_size, max_position_embeddings, type_vocab_size, vocab_size";
  const assigned = lacksPretrainingHeads(tensors)
    ? params.filter(([n]) => !BERT_PRETRAINING_HEADS.includes(n))
    : params;
  assignHfTensors(
    BERT_TABLE,
    assigned,
    tensors,
    place,
    source,
    sizes,
    bertPaddedRows(vocabSize),
    (missing) =>
      missing.some((n) => n.includes("final_layernorm"))
        ? " (HF BERT is post-LN: build the model with postLayerNorm)"
        : "",
  );
}
