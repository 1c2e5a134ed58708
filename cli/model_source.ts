/**
 * What a run takes from the model it starts from: with `--load`, the
 * checkpoint's shape, tokenizer, seed and schedule (flags given must agree);
 * with `--init-from-hf`, the Hugging Face `config.json`'s shape; for a fresh
 * GPT, the tokenizer its `.bin` data names. Also the flags saved in a
 * checkpoint for `--use-checkpoint-args`.
 * @module
 */

import { type CheckpointMeta, readMeta, resolveIterDir } from "../models/checkpoint/layout.ts";
import {
  defaultFfnHiddenSize,
  resolveShape,
  type ShapeConfig,
  ShapeError,
} from "../models/shape.ts";
import { bertConfigFromHf, requireSentencePairs } from "../models/hf/bert.ts";
import { gpt2ConfigFromHf } from "../models/hf/gpt2.ts";
import { readHfConfig } from "../models/hf/io.ts";
import {
  describeUntypedConfig,
  HF_SHAPE_FIELDS,
  hfModelFamily,
  inConfigWords,
} from "../models/hf/config_fields.ts";
import type { TokenizerName } from "../data/tokenizer.ts";
import { BYTE_VOCAB_SIZE } from "../data/byte_tokenizer.ts";
import { tokenizerNameFor } from "./model_tokenizer.ts";
import { sidecarTokenizers, tokenizerFlagFor } from "../data/token_bin.ts";
import { GPT2_VOCAB_SIZE } from "../data/gpt2_vocab.ts";
import { DATA_PATH_FLAGS, dataSourceOf } from "./data_source.ts";
import { splitMisfit } from "./errors.ts";
import { type FlagValues, UsageError, wasGiven } from "./flags.ts";
import {
  agreeInitStd,
  agreeSampleCount,
  agreeWarmup,
  firstRunOfRestartableJob,
  INIT_STD_FLAG,
  type Refuse,
  SAMPLE_RUN_FLAGS,
  SCHEDULE_FLAGS,
  WARMUP_FLAGS,
} from "./resume_flags.ts";
import type { TrainArgs } from "./train_args.ts";
import { precisionArgs } from "./precision_resume.ts";
import { GPT_TOKENIZERS } from "./train_flags.ts";

/**
 * The flags saved with a checkpoint (its trainer state's `args`) that
 * `--use-checkpoint-args` takes back besides the model's shape.
 */
export const CHECKPOINT_ARG_FLAGS: readonly string[] = [
  "seq-length",
  "tokenizer",
  "hidden-dropout",
  "attention-dropout",
  "recompute-activations",
];

/**
 * The values of {@link CHECKPOINT_ARG_FLAGS} and {@link SCHEDULE_FLAGS} of a
 * run (the decay length resolved; the warm-up as the run gave it, iterations or
 * a fraction), to save in its checkpoints; and `--init-method-std`, the std the
 * weights were drawn with, where known (`initStd`: not for weights from Hugging
 * Face, nor from a checkpoint that does not record it). A run counted in
 * samples (`--train-samples`) saves its schedule in samples
 * (`--lr-decay-samples`, `--lr-warmup-samples` or the fraction) and
 * {@link SAMPLE_RUN_FLAGS}: its length and its global batch, `globalBatch`.
 */
export function checkpointArgs(
  a: TrainArgs,
  initStd?: number,
  globalBatch: number | undefined = a.globalBatch,
): Record<string, unknown> {
  const samples = a.trainSamples !== undefined;
  if (samples && globalBatch === undefined) {
    throw new Error("checkpointArgs: a run counted in samples (--train-samples) saves its batch");
  }
  return {
    "seq-length": a.seqLength,
    ...(a.model.family === "gpt" ? { "tokenizer": a.data.tokenizer } : {}),
    "hidden-dropout": a.model.hiddenDropout,
    "attention-dropout": a.model.attentionDropout,
    "recompute-activations": a.model.recomputeActivations,
    "lr": a.lr.peak,
    "min-lr": a.lr.min,
    ...(a.lr.warmupFraction !== undefined
      ? { "lr-warmup-fraction": a.lr.warmupFraction }
      : samples
      ? { "lr-warmup-samples": a.lr.warmupSamples ?? 0 }
      : { "lr-warmup-iters": a.lr.warmupIters }),
    "lr-warmup-init": a.lr.warmupInit,
    ...(samples
      ? { "lr-decay-samples": a.lr.decaySamples ?? a.trainSamples }
      : { "lr-decay-iters": a.lr.decayIters ?? a.trainIters }),
    "lr-decay-style": a.lr.style,
    ...(a.lr.style === "WSD"
      ? {
        "lr-wsd-decay-style": a.lr.wsdStyle,
        ...(samples
          ? { "lr-wsd-decay-samples": a.lr.wsdDecaySamples }
          : { "lr-wsd-decay-iters": a.lr.wsdDecayIters }),
      }
      : {}),
    ...(samples ? { "train-samples": a.trainSamples, "global-batch-size": globalBatch } : {}),
    ...(initStd !== undefined ? { [INIT_STD_FLAG]: initStd } : {}),
    ...precisionArgs(a.precision.half),
  };
}

/** AdamW's flags and the checkpoint's `optimizer` keys that record them. */
const OPTIMIZER_FLAGS: readonly { flag: string; key: "beta1" | "beta2" | "eps" | "weightDecay" }[] =
  [
    { flag: "adam-beta1", key: "beta1" },
    { flag: "adam-beta2", key: "beta2" },
    { flag: "adam-eps", key: "eps" },
    { flag: "weight-decay", key: "weightDecay" },
  ];

/** The shape flags and the config keys they set. */
const SHAPE_FLAGS: readonly [flag: string, key: string][] = [
  ["num-layers", "numLayers"],
  ["hidden-size", "hiddenSize"],
  ["num-attention-heads", "numHeads"],
  ["ffn-hidden-size", "ffnHiddenSize"],
  ["max-position-embeddings", "maxPositions"],
];

/** The tokenizers the sidecars of a run's `.bin` data name ({@link sidecarTokenizers}). */
async function dataTokenizers(f: FlagValues) {
  const paths = DATA_PATH_FLAGS.flatMap((flag) => dataSourceOf(f, flag)?.paths ?? []);
  return await sidecarTokenizers(paths);
}

/**
 * A fresh GPT model given no `--tokenizer` takes the one the sidecars of its
 * `.bin` data name (`OUT.bin.json`, as `preprocess` writes), when they all name
 * the same one of {@link GPT_TOKENIZERS}: the ids were made by it, so no other
 * would read them. Sidecars that disagree, or name another, are left to the
 * data's own checks, which refuse them with both names.
 */
async function adoptDataTokenizer(
  f: FlagValues,
  adopt: (flag: string, value: string) => void,
  say: (line: string) => void,
): Promise<void> {
  if (f.model !== "gpt" || wasGiven(f, "tokenizer")) return;
  const named = new Map<string, string>();
  for (const d of await dataTokenizers(f)) {
    if (!named.has(d.tokenizer)) named.set(d.tokenizer, d.sidecar);
  }
  if (named.size !== 1) return;
  const [[name, side]] = named;
  if (name === f.tokenizer || !(GPT_TOKENIZERS as readonly string[]).includes(name)) return;
  say(`tokenizer ${name}, as ${side} names it (--tokenizer chooses another)`);
  adopt("tokenizer", name);
}

/**
 * Refuses `.bin` data whose sidecar names another tokenizer than the one the
 * model a GPT run starts from reads (`f.tokenizer`, settled from `model`, a
 * checkpoint or a Hugging Face directory), before any work, saying the two
 * ways out: the data made anew with the model's tokenizer, or a fresh model
 * (without `drop`). The data's own check would ask for the data's tokenizer,
 * which the model refuses.
 */
async function checkDataFitsModel(f: FlagValues, model: string, drop: string): Promise<void> {
  if (f.model !== "gpt") return;
  const tokenizer = f.tokenizer as string;
  const other = (await dataTokenizers(f)).find((d) => d.tokenizer !== tokenizer);
  if (!other) return;
  throw new UsageError(
    `${other.path} was tokenized with the ${other.tokenizer} tokenizer (per ${other.sidecar}), ` +
      `but ${model} reads ${tokenizer} ids: to go on with this model, run deno task preprocess ` +
      `on the text with ${tokenizerFlagFor(tokenizer)}; to train on this data, start a fresh ` +
      `model (without ${drop})`,
  );
}

/**
 * A shape value as `config.json` gives it, named by its field there: "n_embd
 * 32", or for a field left out or null, "n_inner null (4·n_embd = 128)".
 */
function hfShapeValue(family: "gpt" | "bert", key: string, cfg: Record<string, unknown>): string {
  const fields: Record<string, string> = HF_SHAPE_FIELDS[family];
  const field = fields[key], hidden = fields.hiddenSize;
  const v = cfg[field];
  if (typeof v === "number") return `${field} ${v}`;
  const h = cfg[hidden] as number;
  return `${field} ${v === undefined ? "left out" : "null"} (4·${hidden} = ${
    defaultFfnHiddenSize(h)
  })`;
}

/**
 * Reconciles the model flags with the model a run starts from, before any
 * work: with `--init-from-hf DIR` the shape comes from `DIR/config.json`, and
 * with `--load DIR` from the checkpoint, so a shape flag (or `--model`, or
 * `--apply-residual-connection-post-layernorm`) given on the command line that
 * disagrees is refused ({@link UsageError}, naming the flag and the file), not
 * ignored. Flags not given take the checkpoint's values (in `f`); the returned
 * arguments carry them to ranks that parse the command line again. Its notes
 * (a tokenizer adopted, a restartable job's first run) go to `say` (default
 * stderr): a process that does not speak for its node passes one that drops them.
 */
export async function agreeWithModelSource(
  f: FlagValues,
  say: (line: string) => void = (line) => console.error(line),
): Promise<string[]> {
  const extra: string[] = [];
  const adopt = (flag: string, value: number | string | boolean) => {
    f[flag] = value;
    if (typeof value === "boolean") {
      if (value) extra.push(`--${flag}`);
    } else extra.push(`--${flag}`, String(value));
  };
  const refuse: Refuse = (flag, given, where, saved, how) => {
    throw new UsageError(
      `--${flag}${given === "" ? "" : ` ${given}`} disagrees with ${where} (${saved}); ${how}`,
    );
  };
  const hfDir = f["init-from-hf"] as string | undefined;
  if (hfDir) {
    if (wasGiven(f, INIT_STD_FLAG)) {
      throw new UsageError(
        `--${INIT_STD_FLAG} sets the init of a fresh model; with --init-from-hf the weights come ` +
          `from ${hfDir}: drop it`,
      );
    }
    const cfg = await readHfConfig(hfDir);
    const file = `${hfDir}/config.json`;
    const family = hfModelFamily(cfg);
    if (family !== f.model) {
      if (wasGiven(f, "model")) {
        const saying = cfg.model_type !== undefined
          ? `model_type "${cfg.model_type}"`
          : describeUntypedConfig(cfg);
        refuse("model", f.model, file, saying, "drop --model");
      }
      adopt("model", family);
    }
    const c = (family === "bert"
      ? requireSentencePairs(bertConfigFromHf(cfg, file), file)
      : gpt2ConfigFromHf(cfg, file)) as unknown as Record<string, unknown>;
    for (const [flag, key] of SHAPE_FLAGS) {
      if (wasGiven(f, flag) && c[key] !== undefined && f[flag] !== c[key]) {
        refuse(
          flag,
          f[flag],
          file,
          hfShapeValue(family, key, cfg),
          "with --init-from-hf the shape comes from config.json: drop the flag",
        );
      }
    }
    fitSequence(f, c.maxPositions, file, adopt);
    // Its vocabulary names its tokenizer (GPT-2's, padded or not), as `generate` and `eval` read it.
    if (family === "gpt") {
      const name = await tokenizerNameFor(c.vocabSize as number);
      if (
        !wasGiven(f, "tokenizer") && name !== undefined && name !== f.tokenizer &&
        GPT_TOKENIZERS.includes(name as TokenizerName)
      ) {
        adopt("tokenizer", name);
      }
      if (name === f.tokenizer) {
        await checkDataFitsModel(f, `the model in ${hfDir}`, "--init-from-hf");
      }
    }
    const tp = f["tensor-model-parallel-size"] as number;
    const misfit = splitMisfit(c as unknown as ShapeConfig, tp);
    if (misfit) {
      throw new UsageError(`${file}: ${misfit}`);
    }
    try {
      resolveShape(c as unknown as ShapeConfig, tp);
    } catch (e) {
      if (!(e instanceof ShapeError)) {
        throw e;
      }
      throw new UsageError(`${file}: ${inConfigWords(e.message, HF_SHAPE_FIELDS[family])}`);
    }
    return extra;
  }
  const loadDir = f.load as string | undefined;
  if (!loadDir) {
    await adoptDataTokenizer(f, adopt, say);
    return extra;
  }
  if (
    !f["use-checkpoint-args"] &&
    await firstRunOfRestartableJob(
      loadDir,
      f.save as string | undefined,
      f.iteration as number | undefined,
    )
  ) {
    say(
      `warning: no checkpoint in ${loadDir} yet: training from scratch, saving there ` +
        `(--load and --save name the same directory, as a restartable job's do)`,
    );
    await adoptDataTokenizer(f, adopt, say);
    return extra;
  }
  const { path, iteration } = await resolveIterDir(loadDir, f.iteration as number | undefined);
  const meta = await readMeta(path);
  const where = `the checkpoint ${path} (iteration ${iteration})`;
  const savedArgs = savedCheckpointArgs(meta);
  // A training setting the run continues from the checkpoint (the schedule's, AdamW's): not given,
  // it takes the saved value; given otherwise, it is refused unless overridden.
  const goOn = (flag: string, v: unknown, what: string, replaced: string) => {
    if (v === undefined || v === f[flag] || typeof v === "object") return;
    if (wasGiven(f, flag)) {
      refuse(
        flag,
        f[flag],
        where,
        `${flag} ${v}`,
        `drop the flag to continue ${what}, or add --override-opt-param-scheduler to replace ` +
          replaced,
      );
    }
    adopt(flag, v as number | string | boolean);
  };
  const arch = meta.model?.arch;
  if (arch === "gpt" || arch === "bert") {
    if (arch !== f.model) {
      if (wasGiven(f, "model")) refuse("model", f.model, where, `a ${arch}`, "drop --model");
      adopt("model", arch);
    }
  }
  // The resolved shape, where the checkpoint has one (defaults filled in).
  const c: Record<string, unknown> = { ...meta.model?.config, ...meta.model?.shape };
  for (const [flag, key] of SHAPE_FLAGS) {
    const raw = c[key];
    // A config saved without ffnHiddenSize has the default, 4·hidden.
    const saved = typeof raw === "number"
      ? raw
      : key === "ffnHiddenSize" && typeof c.hiddenSize === "number"
      ? defaultFfnHiddenSize(c.hiddenSize)
      : undefined;
    if (saved === undefined) continue;
    if (wasGiven(f, flag)) {
      if (f[flag] !== saved) {
        refuse(flag, f[flag], where, `${key} ${saved}`, "drop the flag to resume its model");
      }
    } else if (
      typeof raw === "number" && f[flag] !== raw && flag !== "max-position-embeddings" &&
      // the default FFN width stays unset, as the saving run had it: its checkpoints'
      // config (and so their checkpoint.json) are then the same as that run's
      !(key === "ffnHiddenSize" && typeof c.hiddenSize === "number" &&
        raw === defaultFfnHiddenSize(c.hiddenSize))
    ) {
      adopt(flag, raw);
    }
  }
  // The saved shape (a flag given beside it was refused above unless equal to it).
  const misfit = splitMisfit(
    c as unknown as ShapeConfig,
    f["tensor-model-parallel-size"] as number,
  );
  if (misfit) throw new UsageError(`${where}: ${misfit}`);
  if (typeof c.maxPositions === "number") fitSequence(f, c.maxPositions, where, adopt);
  // The data order and the dropout streams continue from the saved seed.
  const seed = meta.state?.seed;
  if (typeof seed === "number" && seed !== f.seed) {
    if (wasGiven(f, "seed")) {
      refuse("seed", f.seed, where, `seed ${seed}`, "drop --seed to resume its data order");
    }
    adopt("seed", seed);
  }
  // The vocabulary is part of the model: its tokenizer comes along, as the shape does.
  const tokenizer = savedArgs.tokenizer;
  if (typeof tokenizer === "string" && tokenizer !== f.tokenizer) {
    if (wasGiven(f, "tokenizer")) {
      refuse("tokenizer", f.tokenizer, where, `tokenizer ${tokenizer}`, "drop --tokenizer");
    }
    adopt("tokenizer", tokenizer);
  }
  if (typeof tokenizer === "string") await checkDataFitsModel(f, `the model in ${where}`, "--load");
  agreeInitStd(f, savedArgs[INIT_STD_FLAG], where, refuse, adopt);
  // Counted in samples or in iterations as the checkpoint is (unless overridden); a run counted
  // in samples keeps the global batch its updates were counted at.
  const consumed = meta.state?.consumedSamples;
  agreeSampleCount(
    f,
    savedArgs,
    { iteration, samples: typeof consumed === "number" ? consumed : undefined },
    !!f["override-opt-param-scheduler"],
    where,
    refuse,
    adopt,
  );
  // The learning-rate schedule goes on from the saved one, as Megatron's does: a flag not given
  // takes the saved value (so a longer --train-iters keeps the decay length), one that
  // disagrees is refused, unless --override-opt-param-scheduler puts the command line's in.
  if (savedArgs.lr === undefined && !f["override-opt-param-scheduler"]) {
    // Written before checkpoints kept their schedule (2026-12-05): nothing to go on from.
    say(
      `warning: ${where} records no learning-rate schedule (written by an older version): ` +
        "this run uses the command line's; give the schedule flags its run had (--lr, " +
        "--lr-warmup-iters, --lr-decay-iters, …) to go on with that one",
    );
  }
  if (!f["override-opt-param-scheduler"]) {
    const saved = { ...savedArgs };
    // Saved before --lr-warmup-init existed: the warm-up started at 0.
    if (saved.lr !== undefined) saved["lr-warmup-init"] ??= 0;
    agreeWarmup(f, saved, where, refuse, adopt);
    for (const flag of SCHEDULE_FLAGS) {
      if (WARMUP_FLAGS.includes(flag)) continue;
      goOn(flag, saved[flag], "its learning-rate schedule", "the schedule");
    }
  }
  // AdamW's settings go on from the checkpoint's optimizer, as Megatron's do (its optimizer
  // state brings its parameter groups back): a flag not given takes the saved value, one that
  // disagrees is refused unless --override-opt-param-scheduler.
  const o = meta.optimizer;
  if (o && !f["override-opt-param-scheduler"]) {
    for (const { flag, key } of OPTIMIZER_FLAGS) {
      goOn(flag, o[key], "its optimizer", "its settings");
    }
  }
  const post = "apply-residual-connection-post-layernorm";
  if (arch === "bert" && typeof c.postLayerNorm === "boolean" && c.postLayerNorm !== !!f[post]) {
    if (wasGiven(f, post)) {
      refuse(post, "", where, c.postLayerNorm ? "post-LN" : "pre-LN", "drop the flag");
    }
    adopt(post, c.postLayerNorm);
  }
  if (f["use-checkpoint-args"]) {
    for (const flag of CHECKPOINT_ARG_FLAGS) {
      const v = savedArgs[flag];
      if (v === undefined || v === f[flag]) continue;
      if (!wasGiven(f, flag)) adopt(flag, v);
      else if (flag === "tokenizer") {
        refuse(flag, f[flag], where, `tokenizer ${v}`, "drop the flag to resume its model");
      }
      // Other given flags (dropout, --seq-length within the position table) override.
    }
  }
  // Dropout not given goes on as saved (a resume is exact): the flags' default would turn a run
  // trained without dropout into one with it, silently. Given, it applies.
  for (const flag of ["hidden-dropout", "attention-dropout"]) {
    const v = savedArgs[flag];
    if (typeof v === "number" && v !== f[flag] && !wasGiven(f, flag)) adopt(flag, v);
  }
  // An unset position table defaults to --seq-length, settled only now (--use-checkpoint-args
  // may have taken the saved one): adopt the saved table where the two differ.
  const table = c.maxPositions;
  if (
    typeof table === "number" && !wasGiven(f, "max-position-embeddings") &&
    table !== f["seq-length"]
  ) adopt("max-position-embeddings", table);
  return extra;
}

/**
 * The {@link CHECKPOINT_ARG_FLAGS}, {@link SCHEDULE_FLAGS}, {@link SAMPLE_RUN_FLAGS}
 * and {@link INIT_STD_FLAG} values saved in a checkpoint's state (by flag name);
 * for checkpoints saved without them, the tokenizer the vocabulary size
 * implies. What `--use-checkpoint-args` takes (`eval` can take them too).
 */
export function savedCheckpointArgs(
  meta: CheckpointMeta,
): Record<string, number | string | boolean> {
  const out: Record<string, number | string | boolean> = {};
  const args = meta.state?.args;
  if (args !== null && typeof args === "object") {
    for (const [k, v] of Object.entries(args)) {
      if (
        (CHECKPOINT_ARG_FLAGS.includes(k) || SCHEDULE_FLAGS.includes(k) ||
          SAMPLE_RUN_FLAGS.includes(k) || k === INIT_STD_FLAG) &&
        (typeof v === "number" || typeof v === "string" || typeof v === "boolean")
      ) out[k] = v;
    }
  }
  const vocabSize = meta.model?.shape?.vocabSize ?? meta.model?.config?.vocabSize;
  if (out.tokenizer === undefined && meta.model?.arch === "gpt") {
    const byVocab: Record<number, string> = {
      [BYTE_VOCAB_SIZE]: "byte",
      [GPT2_VOCAB_SIZE]: "gpt2",
    };
    if (typeof vocabSize === "number" && byVocab[vocabSize]) out.tokenizer = byVocab[vocabSize];
  }
  return out;
}

/**
 * `--seq-length` against the position table of the model a run starts from
 * (`where`): an unset one longer than the table becomes the table's length; a
 * given one longer than it is refused.
 */
function fitSequence(
  f: FlagValues,
  positions: unknown,
  where: string,
  adopt: (flag: string, value: number) => void,
): void {
  if (typeof positions !== "number" || (f["seq-length"] as number) <= positions) return;
  if (!wasGiven(f, "seq-length")) return adopt("seq-length", positions);
  throw new UsageError(
    `--seq-length ${f["seq-length"]} is longer than the position table of ${where} (${positions})`,
  );
}
