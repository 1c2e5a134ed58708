/**
 * Hugging Face GPT-2 ⇄ this project's GPT: config mapping, the name/layout table
 * (Conv1D weights are [in, out] in HF, [out, in] here; q|k|v are fused in both),
 * import into a model at any TP size, and export of full tensors.
 * @module
 */

import { DEFAULT_INIT_STD, type ParamInfo } from "../../core/nn.ts";
import { GPT2_EOS_ID, GPT2_VOCAB_SIZE } from "../../data/gpt2_vocab.ts";
import type { TpPlace } from "../checkpoint/assign.ts";
import { CheckpointError } from "../checkpoint/safetensors.ts";
import { type HostTensor, readTensors, type TensorSource } from "../checkpoint/shard.ts";
import { GPT_LAYER_NORM_EPS, type GptConfig } from "../gpt.ts";
import { type HfDir, type HfDType, hfInitializerRange, readHfDir, writeHfDir } from "./io.ts";
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

/** Our GPT names ⇄ HF GPT-2 names (without the `transformer.` prefix). */
export const GPT2_TABLE: readonly MapEntry[] = [
  { ours: "wte.weight", hf: ["wte.weight"] },
  { ours: "wpe.weight", hf: ["wpe.weight"] },
  { ours: "h.{N}.ln_1.weight", hf: ["h.{N}.ln_1.weight"] },
  { ours: "h.{N}.ln_1.bias", hf: ["h.{N}.ln_1.bias"] },
  { ours: "h.{N}.attn.c_attn.weight", hf: ["h.{N}.attn.c_attn.weight"], transpose: true },
  { ours: "h.{N}.attn.c_attn.bias", hf: ["h.{N}.attn.c_attn.bias"] },
  { ours: "h.{N}.attn.c_proj.weight", hf: ["h.{N}.attn.c_proj.weight"], transpose: true },
  { ours: "h.{N}.attn.c_proj.bias", hf: ["h.{N}.attn.c_proj.bias"] },
  { ours: "h.{N}.ln_2.weight", hf: ["h.{N}.ln_2.weight"] },
  { ours: "h.{N}.ln_2.bias", hf: ["h.{N}.ln_2.bias"] },
  { ours: "h.{N}.mlp.c_fc.weight", hf: ["h.{N}.mlp.c_fc.weight"], transpose: true },
  { ours: "h.{N}.mlp.c_fc.bias", hf: ["h.{N}.mlp.c_fc.bias"] },
  { ours: "h.{N}.mlp.c_proj.weight", hf: ["h.{N}.mlp.c_proj.weight"], transpose: true },
  { ours: "h.{N}.mlp.c_proj.bias", hf: ["h.{N}.mlp.c_proj.bias"] },
  { ours: "ln_f.weight", hf: ["ln_f.weight"] },
  { ours: "ln_f.bias", hf: ["ln_f.bias"] },
];

/** HF buffers and tied copies that are not parameters here. */
function ignoredGpt2(name: string): boolean {
  return /^h\.\d+\.attn\.(masked_)?bias$/.test(name) || name === "lm_head.weight";
}

const TANH_GELUS = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"];

/** A {@link GptConfig} from an HF GPT-2 `config.json` (dropouts taken from it). */
export function gpt2ConfigFromHf(cfg: Record<string, unknown>, file = "config.json"): GptConfig {
  const s = { cfg, file };
  requireFamily(s, "gpt");
  const act = (cfg.activation_function ?? "gelu_new") as string;
  if (!TANH_GELUS.includes(act)) {
    throw new CheckpointError(
      `${file}: activation_function "${act}" is not supported (this GPT uses the tanh GeLU)`,
    );
  }
  const scaling = "attention scores here are scaled by 1/√(head size) alone, as GPT-2's";
  refuseSetting(s, "scale_attn_by_inverse_layer_idx", true, scaling);
  refuseSetting(s, "scale_attn_weights", false, scaling);
  refuseSetting(s, "tie_word_embeddings", false, "this GPT's output layer is its token embedding");
  refuseSetting(s, "add_cross_attention", true, "this GPT is a decoder without cross-attention");
  const f = HF_SHAPE_FIELDS.gpt;
  const h = positiveIntField(s, f.hiddenSize);
  return {
    vocabSize: positiveIntField(s, "vocab_size"),
    numLayers: positiveIntField(s, f.numLayers),
    hiddenSize: h,
    numHeads: positiveIntField(s, f.numHeads),
    maxPositions: positiveIntField(s, f.maxPositions),
    ffnHiddenSize: cfg[f.ffnHiddenSize] == null
      ? defaultFfnHiddenSize(h)
      : positiveIntField(s, f.ffnHiddenSize),
    layerNormEps: numberField(s, "layer_norm_epsilon", GPT_LAYER_NORM_EPS, 0),
    hiddenDropout: numberField(s, "resid_pdrop", DEFAULT_DROPOUT, 0, 1),
    attentionDropout: numberField(s, "attn_pdrop", DEFAULT_DROPOUT, 0, 1),
  };
}

/**
 * An HF GPT-2 `config.json` for `c`. Its end-of-text id (`bos_token_id` and
 * `eos_token_id`, as GPT-2's) is `endId` where given (the id where the model's
 * own generation stops: WordPiece's `[SEP]` for a GPT trained on it), else
 * GPT-2's 50256 at GPT-2's vocabulary and null otherwise: the byte-level
 * tokenizer has no such token, and naming one (its last byte, 0xFF) would stop
 * generation there. `initializerRange` is the std the weights were drawn with
 * (HF uses it for weights it adds, e.g. a new head).
 */
export function gpt2ConfigToHf(
  c: GptConfig,
  initializerRange = DEFAULT_INIT_STD,
  endId?: number | null,
): Record<string, unknown> {
  const eos = endId !== undefined ? endId : c.vocabSize === GPT2_VOCAB_SIZE ? GPT2_EOS_ID : null;
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    activation_function: "gelu_new",
    vocab_size: c.vocabSize,
    n_positions: c.maxPositions,
    n_ctx: c.maxPositions,
    n_embd: c.hiddenSize,
    n_layer: c.numLayers,
    n_head: c.numHeads,
    n_inner: c.ffnHiddenSize === undefined || c.ffnHiddenSize === defaultFfnHiddenSize(c.hiddenSize)
      ? null
      : c.ffnHiddenSize,
    layer_norm_epsilon: c.layerNormEps ?? GPT_LAYER_NORM_EPS,
    resid_pdrop: c.hiddenDropout ?? DEFAULT_DROPOUT,
    embd_pdrop: c.hiddenDropout ?? DEFAULT_DROPOUT,
    attn_pdrop: c.attentionDropout ?? DEFAULT_DROPOUT,
    initializer_range: initializerRange,
    scale_attn_weights: true,
    tie_word_embeddings: true,
    bos_token_id: eos,
    eos_token_id: eos,
  };
}

/**
 * Our full GPT tensors (wte unpadded) from HF GPT-2 tensors (with or without
 * `transformer.`), checked by name and shape now and read from the files when
 * asked for (an untied `lm_head.weight` is read now, to compare with `wte`).
 */
export function gpt2TensorsFromHf(hf: HfDir, config: GptConfig): TensorSource {
  const strip = (n: string) => n.startsWith("transformer.") ? n.slice("transformer.".length) : n;
  const byName = new Map(hf.names.map((n) => [strip(n), n]));
  const source = hf.fileOf(hf.names[0] ?? "");
  const out = importTensors(
    expandTable(GPT2_TABLE, config.numLayers),
    renamedSource(hf, byName),
    ignoredGpt2,
    source,
  );
  const rows = out.shapeOf("wte.weight")![0];
  if (rows !== config.vocabSize) {
    throw new CheckpointError(
      `${source}: wte.weight has ${rows} rows but config.json says vocab_size ${config.vocabSize}`,
    );
  }
  const head = byName.get("lm_head.weight");
  if (head) {
    checkTiedCopy(hf.get(head), "lm_head.weight", out.get("wte.weight")!, "wte.weight", source);
  }
  return out;
}

/** A GPT-2 HF directory opened: its config read, its weights checked and read when needed. */
export interface HfGpt2 {
  /** The model's shape and dropouts, from `config.json`. */
  config: GptConfig;
  /** Our full tensors (vocabulary unpadded), each read from the file when asked for. */
  tensors: TensorSource;
  /** The weights file, for messages. */
  source: string;
  /** The std its weights were initialized with, where `config.json` says (`initializer_range`). */
  initializerRange?: number;
}

/**
 * Opens an HF GPT-2 directory: reads its config and checks its weights' names and
 * shapes; their values are read when {@link assignGpt2} (or `tensors.get`) needs them.
 */
export async function readHfGpt2(
  dir: string,
  progress?: (done: number, total: number) => void,
): Promise<HfGpt2> {
  const hf = await readHfDir(dir, progress);
  const config = gpt2ConfigFromHf(hf.config, `${dir}/config.json`);
  return {
    config,
    tensors: gpt2TensorsFromHf(hf, config),
    source: hf.fileOf(hf.names[0] ?? ""),
    initializerRange: hfInitializerRange(hf.config),
  };
}

/**
 * Writes HF tensors into a GPT's parameters (this rank's shards at `place`),
 * validating everything before writing anything.
 */
export function assignGpt2(
  params: readonly [string, ParamInfo][],
  tensors: TensorSource | ReadonlyMap<string, HostTensor>,
  config: GptConfig,
  place: TpPlace,
  source: string,
): void {
  const sizes = "n_embd, n_inner, n_positions, vocab_size";
  assignHfTensors(GPT2_TABLE, params, tensors, place, source, sizes, {
    "wte.weight": config.vocabSize,
  });
}

/**
 * HF GPT-2 tensors (prefixed `transformer.`, Conv1D layout, vocabulary unpadded)
 * from our full tensors, each computed when asked for.
 */
export function gpt2TensorSourceToHf(full: FullTensors, config: GptConfig): TensorSource {
  const hf = exportTensorSource(expandTable(GPT2_TABLE, config.numLayers), full, {
    "wte.weight": config.vocabSize,
  });
  return renamedSource(hf, new Map([...hf.keys()].map((n) => [`transformer.${n}`, n])));
}

/** HF GPT-2 tensors (prefixed `transformer.`, Conv1D layout, vocabulary unpadded) from our full tensors. */
export function gpt2TensorsToHf(full: FullTensors, config: GptConfig): [string, HostTensor][] {
  return [...readTensors(gpt2TensorSourceToHf(full, config))];
}

/**
 * Writes an HF GPT-2 directory (config.json + model.safetensors) from our full
 * tensors; `initializerRange` and `endId` as {@link gpt2ConfigToHf} takes them.
 */
export async function writeHfGpt2(
  dir: string,
  config: GptConfig,
  full: FullTensors,
  progress?: (done: number, total: number) => void,
  dtype: HfDType = "F32",
  initializerRange = DEFAULT_INIT_STD,
  endId?: number | null,
): Promise<void> {
  const hf = gpt2ConfigToHf(config, initializerRange, endId);
  await writeHfDir(dir, hf, gpt2TensorSourceToHf(full, config), progress, dtype);
}
