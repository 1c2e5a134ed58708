/**
 * `deno task eval`: mean next-token loss and perplexity of a GPT over all full,
 * non-overlapping windows of a token stream (starts 0, T, 2T, … while a window and
 * its next token fit); for a BERT (`--model bert`), masked-LM loss and accuracy and
 * sentence-order loss and accuracy over a fixed pass of sentence pairs, masked from
 * `--mask-seed`. The model comes from a checkpoint (`--load`) or a Hugging Face
 * GPT-2 or BERT directory (`--init-from-hf`). With `--json` stdout holds one JSON
 * object with the numbers and nothing else (the report goes to stderr).
 * @module
 */

import type { Device } from "../core/device.ts";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { loadTokens } from "../data/corpus.ts";
import { megatronPrefix } from "./data_source.ts";
import { DataError } from "../data/errors.ts";
import { bertEvalBatches, prepareBertCorpus } from "../data/bert_batches.ts";
import { loadText } from "../data/corpus.ts";
import { evalBatches, evalWindowCount } from "../data/gpt_batches.ts";
import type { TokenStream, TokenStreamLike } from "../data/token_stream.ts";
import {
  isTokenBinPath,
  openTokenBin,
  readTokenBinMeta,
  tokenizerFlagFor,
} from "../data/token_bin.ts";
import { readMeta, resolveIterDir } from "../models/checkpoint/layout.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import type { ParallelLayers } from "../models/parallel/layers.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { assignGpt2, type HfGpt2, readHfGpt2 } from "../models/hf/gpt2.ts";
import { readHfConfig } from "../models/hf/io.ts";
import { bertConfigFromHf, requireSentencePairs } from "../models/hf/bert.ts";
import { HF_SHAPE_FIELDS, hfModelFamily } from "../models/hf/config_fields.ts";
import { DEBUG_FLAG, handled } from "./errors.ts";
import {
  backendFlag,
  checkModelSource,
  type FlagSpec,
  type FlagValues,
  parseCommandLine,
  resolveTensorOnlyParallel,
  tensorOnlyParallelFlags,
  UsageError,
  wasGiven,
} from "./flags.ts";
import { runTensorParallel } from "./tp_command.ts";
import { counted, formatValidationLines, stderrProgress } from "./log.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import { modelTokenizer } from "./model_tokenizer.ts";
import { savedCheckpointArgs } from "./model_source.ts";
import { type BertEvalResult, evaluateBert, freshHeadsWarning, loadBert } from "./bert_model.ts";
import {
  loadHfModel,
  loadSavedModel,
  type ModelFamily,
  modelSourceFromFlags,
  openSavedModel,
  preferWidthForModel,
} from "./load_model.ts";
import { withinLimits } from "./limits.ts";

/** Every flag of `deno task eval`. */
export const EVAL_FLAGS: Record<string, FlagSpec> = {
  "model": {
    type: "string",
    choices: ["gpt", "bert"],
    help: "model family (default: what the checkpoint or config.json holds)",
    group: "Model",
  },
  "load": { type: "string", help: "checkpoint directory written by --save" },
  "iteration": { type: "int", min: 0, help: "checkpoint iteration (default: latest)" },
  "use-checkpoint-args": {
    type: "boolean",
    help:
      "take --seq-length from the --load checkpoint when not given (the shape and the tokenizer always come from it; a BERT otherwise evaluates at its position table's length)",
  },
  "init-from-hf": {
    type: "string",
    help: "Hugging Face GPT-2 or BERT directory (config.json + model.safetensors)",
  },
  ...tensorOnlyParallelFlags("eval"),
  "data-path": {
    type: "string",
    help: 'text file, .jsonl (its "text" fields), folder of .txt/.md, .bin of uint16 ids, or ' +
      "Megatron dataset prefix (read as PREFIX.bin)",
    group: "Data",
    once: "eval reads one corpus",
    required: true,
  },
  "tokenizer": {
    type: "string",
    choices: ["gpt2", "byte"],
    help:
      "GPT: tokenizer for text data (default: the checkpoint's, else the one the model's vocabulary is; --tokenizer-type BertWordPieceLowerCase for WordPiece; BERT uses its own vocab)",
  },
  "seq-length": {
    type: "int",
    min: 1,
    help:
      "window length T (default: the model's position table; with --use-checkpoint-args the --load checkpoint's)",
  },
  "micro-batch-size": {
    type: "int",
    default: 8,
    min: 1,
    help: "windows (BERT: sentence pairs) per forward pass",
  },
  "eval-iters": {
    type: "int",
    min: 1,
    help:
      "score only the first N batches of --micro-batch-size windows (BERT: sentence pairs), Megatron's name; default: every one",
  },
  "mask-seed": {
    type: "int",
    default: 1234,
    min: 0,
    help: "BERT: seed of the sentence-pair split points, order swaps and the 15% masking",
  },
  "json": {
    type: "boolean",
    help:
      "print only one JSON object on stdout, the report on stderr (GPT: loss, ppl, tokens, windows; BERT: mlm_loss, mlm_accuracy, …)",
    group: "Output",
  },
  ...backendFlag("Device"),
  ...DEBUG_FLAG,
};

const USAGE = `Usage: deno task eval (--load DIR | --init-from-hf DIR) --data-path FILE [flags]

GPT: reports the mean next-token loss and perplexity over every full,
non-overlapping window of the data (over the first --eval-iters batches of them
when given). BERT (--model bert, or found in the
checkpoint or config.json): cuts each document of the text, in order, into
sentence pairs that fill --seq-length, masks 15% of their tokens as in training
(the same pairs and masks for the same --mask-seed), and reports the masked-LM
loss and accuracy and the sentence-order loss and accuracy.`;

/** The result of an evaluation. */
export interface EvalResult {
  /** Mean next-token cross-entropy (nats). */
  loss: number;
  /** exp(loss). */
  ppl: number;
  /** Target tokens scored. */
  tokens: number;
  /** Windows scored. */
  windows: number;
}

/**
 * Mean next-token loss of `model` over the non-overlapping windows of `ids`
 * (batches of `batchSize` windows; every window weighs the same), or over the
 * first `maxBatches` batches of them when given.
 */
export async function evaluateStream(
  model: Gpt,
  ids: TokenStreamLike,
  seqLength: number,
  batchSize: number,
  progress?: (done: number, total: number) => void,
  maxBatches = Infinity,
): Promise<EvalResult> {
  const device = model.parallel.device;
  const windows = Math.min(evalWindowCount(ids.length, seqLength), maxBatches * batchSize);
  if (windows === 0) {
    throw new DataError(
      `the data has ${counted(ids.length, "token")}, fewer than --seq-length + 1 = ${
        seqLength + 1
      }`,
    );
  }
  model.train(false);
  let sum = 0, done = 0;
  await device.noGrad(async () => {
    for (const b of evalBatches(ids, batchSize, seqLength, { maxBatches })) {
      progress?.(done, windows);
      done += b.batchSize;
      const l = await tidy(device, async () => {
        const x = TokenIds.fromHost(device, b.inputs, [b.batchSize, seqLength]);
        const y = TokenIds.fromHost(device, b.targets, [b.batchSize, seqLength]);
        return await (await model.loss(x, y)).item();
      });
      sum += l * b.batchSize;
    }
  });
  progress?.(windows, windows);
  const loss = sum / windows;
  return { loss, ppl: Math.exp(loss), tokens: windows * seqLength, windows };
}

/** How the commands load a GPT (see {@link ModelFamily}). */
const GPT_FAMILY: ModelFamily<GptConfig, Gpt, HfGpt2> = {
  arch: "gpt",
  name: "GPT",
  hfName: "GPT-2",
  hfFields: HF_SHAPE_FIELDS.gpt,
  readHf: readHfGpt2,
  create: (layers, config) => new Gpt(layers, config, { seed: 0 }),
  assignHf: (model, hf, place) =>
    assignGpt2(model.namedParams(), hf.tensors, hf.config, place, hf.source),
};

/**
 * Builds a GPT from `--load` or `--init-from-hf` on `device`, or over `layers`
 * (a tensor-parallel layout: this rank's shards are loaded). `progress` follows
 * the reading (see {@link stderrProgress}).
 */
export async function loadGpt(
  device: Device,
  f: FlagValues,
  layers: ParallelLayers = TensorParallelLayers.single(device),
  progress?: (done: number, total: number) => void,
): Promise<{ model: Gpt; source: string; where: string; tokenizer?: string }> {
  const from = modelSourceFromFlags(f);
  if (from.hfDir) {
    const { model, source } = await loadHfModel(GPT_FAMILY, from.hfDir, layers, progress);
    return { model, source, where: from.hfDir };
  }
  const saved = await openSavedModel(GPT_FAMILY, from);
  const args = savedCheckpointArgs(saved.meta);
  if (f["use-checkpoint-args"]) {
    for (const name of ["seq-length", "tokenizer"]) {
      if (!wasGiven(f, name) && args[name] !== undefined) f[name] = args[name];
    }
  }
  const model = await loadSavedModel(GPT_FAMILY, saved, layers, progress);
  return {
    model,
    source: saved.source,
    where: `iteration ${saved.iteration}`,
    tokenizer: typeof args.tokenizer === "string" ? args.tokenizer : undefined,
  };
}

/** The Hugging Face directory a command loads its model from (`--init-from-hf`), if any. */
function hfDirOf(f: FlagValues): string | undefined {
  return f["init-from-hf"] as string | undefined;
}

/**
 * The evaluation tokens: text tokenized by the model's tokenizer (`--tokenizer`,
 * the checkpoint's `saved` one, or the one its vocabulary implies), a `.bin`
 * its sidecar says that tokenizer made, or a `.bin` without sidecar (a
 * Megatron one) taken as the model's ids, where a `--tokenizer` given is still
 * checked against the model.
 */
async function readIds(
  f: FlagValues,
  vocabSize: number,
  saved?: string,
): Promise<{ ids: TokenStream; source: string }> {
  const path = megatronPrefix(f["data-path"] as string);
  const bin = isTokenBinPath(path);
  const meta = bin ? await readTokenBinMeta(path) : undefined;
  if (bin && !meta) {
    const given = f.tokenizer as string | undefined;
    const name = given !== undefined
      ? (await modelTokenizer(vocabSize, given, saved, hfDirOf(f))).name
      : saved;
    const ids = await openTokenBin(path, meta, vocabSize);
    return { ids, source: `${path} (${name ? `tokenizer ${name}, ` : ""}no sidecar)` };
  }
  if (meta) {
    // Only a sidecar can name an unknown one (the flag takes its choices only).
    await createTokenizer(meta.tokenizer).catch((e) => {
      throw e instanceof RangeError ? new DataError(`${path}.json: ${e.message}`) : e;
    });
  }
  const tok = await modelTokenizer(vocabSize, f.tokenizer as string | undefined, saved, hfDirOf(f));
  if (meta && meta.tokenizer !== tok.name) {
    // Ids of another tokenizer mean other tokens to this model: its loss would mean nothing.
    throw new DataError(
      `${path} holds ids of the ${meta.tokenizer} tokenizer (per ${path}.json), but the model ` +
        `reads the ${tok.name} tokenizer's: tokenize the text with it (deno task preprocess ` +
        `${tokenizerFlagFor(tok.name)}), or pass the text itself`,
    );
  }
  const c = await loadTokens(tok, path);
  return { ids: c.ids, source: `${c.source} (tokenizer ${tok.name})` };
}

/** Validates the flag combination; throws UsageError. */
export function validateEvalFlags(f: FlagValues): void {
  checkModelSource(f);
  if (!f["data-path"]) throw new UsageError("--data-path is required");
  if (f["use-checkpoint-args"] && !f.load) {
    throw new UsageError("--use-checkpoint-args takes the arguments from --load DIR; pass it");
  }
  resolveTensorOnlyParallel(f, "eval");
}

/** The model family to evaluate: `--model`, else what the checkpoint or config.json holds. */
export async function modelFamily(f: FlagValues): Promise<"gpt" | "bert"> {
  if (f.model) return f.model as "gpt" | "bert";
  if (f["init-from-hf"]) {
    return hfModelFamily(await readHfConfig(f["init-from-hf"] as string));
  }
  const { path } = await resolveIterDir(f.load as string, f.iteration as number | undefined);
  return (await readMeta(path)).model?.arch === "bert" ? "bert" : "gpt";
}

/**
 * BERT evaluation on this rank: loads the model (sharded over `layers` when given),
 * reads the text and prints the report when `print` is set.
 */
export async function evalBertRank(
  device: Device,
  f: FlagValues,
  print: boolean,
  layers?: ParallelLayers,
): Promise<BertEvalResult> {
  const path = f["data-path"] as string;
  if (isTokenBinPath(path)) {
    throw new UsageError(
      "BERT evaluation reads text (documents of sentences), not a .bin of token ids",
    );
  }
  if (f.tokenizer && f.tokenizer !== "bert") {
    throw new UsageError("--tokenizer is for GPT; a BERT uses its own WordPiece vocabulary");
  }
  const hfDir = f["init-from-hf"] as string | undefined;
  if (hfDir) {
    // Before the weights are read: a config that cannot feed sentence pairs.
    const file = `${hfDir}/config.json`;
    requireSentencePairs(bertConfigFromHf(await readHfConfig(hfDir), file), file);
  }
  const { model, tokenizer, source, tokenizerSource, savedArgs, freshHeads } = await loadBert(
    device,
    modelSourceFromFlags(f),
    layers,
    print ? stderrProgress("loading", !!f.json) : undefined,
    requireSentencePairs, // a checkpoint's config, before its weights (an HF one was checked above)
  );
  const c = model.config;
  const savedT = f["use-checkpoint-args"] ? savedArgs?.["seq-length"] : undefined;
  const T = (f["seq-length"] as number | undefined) ??
    (typeof savedT === "number" ? savedT : c.maxPositions);
  if (T > c.maxPositions) {
    throw new UsageError(
      `--seq-length ${T} is longer than the model's position table (${c.maxPositions})`,
    );
  }
  if (T < 5) throw new UsageError(`BERT needs --seq-length ≥ 5 ([CLS] A [SEP] B [SEP]), got ${T}`);
  const corpus = prepareBertCorpus(await loadText(path), tokenizer);
  const seed = f["mask-seed"] as number;
  const tp = layers?.tpSize ?? 1;
  const say = reportLine(f);
  // A BertForMaskedLM's directory has no sentence-order head: its scores would be a fresh head's.
  const sop = freshHeads.length === 0;
  const warning = freshHeadsWarning(
    hfDir ?? source,
    freshHeads,
    "only the masked-LM loss is reported",
  );
  if (print && warning) console.error(warning);
  if (print) {
    say(
      `model: ${source} | BERT (${c.postLayerNorm ? "post-LN" : "pre-LN"}) ` +
        `${counted(c.numLayers, "layer")}, hidden ${c.hiddenSize}, ${counted(c.numHeads, "head")}` +
        (tp > 1 ? ` | tensor parallel ${tp}` : ""),
    );
    say(
      `data: ${path} | ${tokenizerSource} | ${counted(corpus.documents.length, "document")}, ` +
        `seq length ${T}, mask seed ${seed}`,
    );
  }
  const t0 = performance.now();
  const mb = f["micro-batch-size"] as number;
  const r = await withinLimits(
    () =>
      evaluateBert(
        model,
        bertEvalBatches(corpus, tokenizer, {
          batchSize: mb,
          seqLength: T,
          seed,
          maxBatches: evalIters(f),
        }),
      ),
    { microBatch: mb, seqLength: T },
  );
  const s = (performance.now() - t0) / 1000;
  if (print) {
    say(
      `eval: ${counted(r.sequences, "sequence")}, ${counted(r.maskedTokens, "masked token")} | ` +
        `mlm loss ${r.mlmLoss.toFixed(4)} | mlm accuracy ${r.mlmAccuracy.toFixed(4)} | ` +
        (sop
          ? `sop loss ${r.sopLoss.toFixed(4)} | sop accuracy ${r.sopAccuracy.toFixed(4)} | `
          : "no sentence-order head | ") +
        `${(r.sequences / s).toFixed(1)} sequences/s`,
    );
    const lines = formatValidationLines(`${source} on ${path}`, {
      "lm loss": r.mlmLoss,
      ...(sop ? { "sop loss": r.sopLoss } : {}),
    });
    for (const l of lines) say(l);
    if (f.json) {
      console.log(JSON.stringify({
        mlm_loss: r.mlmLoss,
        mlm_accuracy: r.mlmAccuracy,
        sop_loss: sop ? r.sopLoss : null,
        sop_accuracy: sop ? r.sopAccuracy : null,
        loss: r.mlmLoss + (sop ? r.sopLoss : 0),
        masked_tokens: r.maskedTokens,
        sequences: r.sequences,
        seq_length: T,
        mask_seed: seed,
      }));
    }
  }
  model.dispose();
  return r;
}

/** `--eval-iters`: the most batches to score (every one when not given). */
function evalIters(f: FlagValues): number {
  return (f["eval-iters"] as number | undefined) ?? Infinity;
}

/**
 * Where the human-readable report goes: stdout, or stderr under `--json`, so
 * that stdout then holds the JSON object alone (`… --json | jq .loss`).
 */
function reportLine(f: FlagValues): (line: string) => void {
  return f.json ? (l) => console.error(l) : (l) => console.log(l);
}

/**
 * Evaluates on this rank: loads the model (sharded over `layers` when given),
 * reads the data and prints the report when `print` is set.
 */
export async function evalRank(
  device: Device,
  f: FlagValues,
  print: boolean,
  layers?: ParallelLayers,
): Promise<EvalResult | BertEvalResult> {
  if (await modelFamily(f) === "bert") return await evalBertRank(device, f, print, layers);
  const { model, source, where, tokenizer } = await loadGpt(
    device,
    f,
    layers,
    print ? stderrProgress("loading", !!f.json) : undefined,
  );
  if (wasGiven(f, "mask-seed")) {
    model.dispose();
    throw new UsageError("--mask-seed is BERT's (its masking); this model is a GPT: drop it");
  }
  const c = model.config;
  const T = (f["seq-length"] as number | undefined) ?? c.maxPositions;
  if (T > c.maxPositions) {
    throw new UsageError(
      `--seq-length ${T} is longer than the model's position table (${c.maxPositions})`,
    );
  }
  const data = await readIds(f, c.vocabSize, tokenizer);
  const tp = layers?.tpSize ?? 1;
  const say = reportLine(f);
  if (print) {
    say(
      `model: ${source} | GPT ${counted(c.numLayers, "layer")}, hidden ${c.hiddenSize}, ` +
        counted(c.numHeads, "head") +
        (tp > 1 ? ` | tensor parallel ${tp}` : ""),
    );
    say(`data: ${data.source} | ${data.ids.length} tokens, seq length ${T}`);
  }
  const t0 = performance.now();
  const mb = f["micro-batch-size"] as number;
  const r = await withinLimits(
    () =>
      evaluateStream(
        model,
        data.ids,
        T,
        mb,
        print ? stderrProgress("eval", !!f.json) : undefined,
        evalIters(f),
      ),
    { microBatch: mb, seqLength: T },
  );
  const s = (performance.now() - t0) / 1000;
  if (print) {
    const all = evalWindowCount(data.ids.length, T);
    const of = r.windows < all ? ` of ${all} (--eval-iters ${f["eval-iters"]})` : "";
    say(
      `eval: ${r.windows}${of} windows, ${r.tokens} tokens | ${(r.tokens / s).toFixed(0)} tokens/s`,
    );
    for (const l of formatValidationLines(`${where} on ${data.source}`, r.loss)) say(l);
    if (f.json) console.log(JSON.stringify({ ...r, seq_length: T }));
  }
  model.dispose();
  return r;
}

/** Runs the evaluation with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    const f = parseCommandLine(args, EVAL_FLAGS, USAGE, validateEvalFlags);
    if (typeof f === "number") return f;
    await preferWidthForModel(modelSourceFromFlags(f));
    return await runTensorParallel(f, args, new URL("./eval_worker.ts", import.meta.url), evalRank);
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
