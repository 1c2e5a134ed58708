/**
 * The validation of `deno task train`'s flags (see cli/train_flags.ts), and the
 * model configs built from them.
 * @module
 */

import { worldSizeOrigin } from "../collectives/env.ts";
import { F32_MAX, F32_MIN_NORMAL } from "../core/optim.ts";
import { MAX_LOSS_SCALE } from "../models/loss_scale.ts";
import type { GptConfig } from "../models/gpt.ts";
import { validateTransformerConfig } from "../models/shape.ts";
import { DATA_PATH_FLAGS, dataSourceOf, isBlend } from "./data_source.ts";
import { checkTopP } from "./sampling_flags.ts";
import { type FlagValues, UsageError, wasGiven } from "./flags.ts";
import { checkSampleSchedule, checkWarmup, checkWsd, INIT_STD_FLAG } from "./resume_flags.ts";
import { gptConfigOf, parseSplit, type TrainArgs, trainArgsFromFlags } from "./train_args.ts";
import { LOSS_SCALE_FLAGS } from "./train_flags.ts";

/**
 * The flags a run's `--log-json` header records: every training flag given or
 * defaulted (`--min-lr` as derived from `--lr` when not given), but for those that do not apply to it (a BERT run's GPT-only
 * flags, whose tokenizer is WordPiece; the loss scaler's without `--fp16`; the
 * init std of weights from Hugging Face; `--lr-warmup-iters` beside a warm-up
 * fraction; `--train-iters` and `--lr-warmup-iters` in a run counted in
 * samples).
 */
export function loggedConfig(a: TrainArgs): Record<string, unknown> {
  // Not given, the final rate is derived from --lr (train_args.ts defaultMinLr).
  const out: Record<string, unknown> = { ...a.flags, "min-lr": a.lr.min };
  if (a.model.family === "bert") {
    for (const n of GPT_ONLY_FLAGS) delete out[n];
    out.tokenizer = "bert";
  }
  if (a.precision.half !== "fp16") { for (const n of LOSS_SCALE_FLAGS) delete out[n]; }
  // Weights from Hugging Face were not drawn here.
  if (a.initFromHf) delete out[INIT_STD_FLAG];
  // --lr-warmup-fraction replaces --lr-warmup-iters.
  if (a.lr.warmupFraction !== undefined) delete out["lr-warmup-iters"];
  // --train-samples replaces --train-iters and the schedule's iteration flags (their defaults).
  if (a.trainSamples !== undefined) {
    delete out["train-iters"];
    delete out["lr-warmup-iters"];
  }
  return out;
}

/** The GPT config from flags. */
export function gptConfigFromFlags(f: FlagValues, vocabSize: number): GptConfig {
  return gptConfigOf(trainArgsFromFlags(f).model, vocabSize);
}

/**
 * Checks everything that needs no data or device, for `world` ranks (read
 * from `worldFrom`, {@link worldSizeOrigin}); throws UsageError with a message
 * naming the flags.
 */
export function validateTrainFlags(
  f: FlagValues,
  world: number,
  worldFrom = worldSizeOrigin("flags"),
): void {
  const tp = f["tensor-model-parallel-size"] as number;
  if (world % tp !== 0) {
    throw new UsageError(
      `the world size ${world} (${worldFrom}) is not divisible by --tensor-model-parallel-size ${tp}` +
        (world === 1 ? `; to run its ${tp} ranks on this machine, add --nproc-per-node ${tp}` : ""),
    );
  }
  const dp = world / tp;
  const mb = f["micro-batch-size"] as number;
  const gb = (f["global-batch-size"] as number | undefined) ?? mb * dp;
  if (gb % (mb * dp) !== 0) {
    // Not given but set: the global batch of a checkpoint counted in samples (agreeSampleCount).
    const whose = f["global-batch-size"] !== undefined && !wasGiven(f, "global-batch-size")
      ? " (the checkpoint's, which a run counted in samples keeps)"
      : "";
    throw new UsageError(
      `--global-batch-size ${gb}${whose} is not a multiple of --micro-batch-size ${mb} × data-parallel size ${dp}`,
    );
  }
  checkSampleSchedule(f, gb);
  checkDataFlags(f);
  checkStepFlags(f, tp);
  const valFraction = f["val-fraction"] as number;
  if (valFraction >= 1) throw new UsageError(`--val-fraction must be below 1, got ${valFraction}`);
  if (f.fp16 && f.bf16) throw new UsageError("give either --fp16 or --bf16, not both");
  if (!f.fp16) {
    // Loss scaling exists for fp16's narrow range only: bf16 and fp32 run without it.
    const scaling = LOSS_SCALE_FLAGS.filter((n) => wasGiven(f, n));
    if (scaling.length) {
      throw new UsageError(
        `--${scaling[0]} sets fp16's loss scaling; give --fp16 (bf16 and fp32 use no loss scale)`,
      );
    }
  }
  if (f["accumulate-allreduce-grads-in-fp32"] && !f.fp16 && !f.bf16) {
    throw new UsageError(
      "--accumulate-allreduce-grads-in-fp32 is for --fp16 or --bf16 (fp32 gradients are all-reduced in fp32)",
    );
  }
  if (f["f16-arithmetic"] && !f.fp16) {
    throw new UsageError(
      `--f16-arithmetic needs --fp16${
        f.bf16 ? " (bf16 has no native WGSL type)" : ": it computes in WGSL's f16"
      }`,
    );
  }
  for (const n of ["loss-scale", "initial-loss-scale", "min-loss-scale"]) {
    const v = f[n] as number | undefined;
    if (v !== undefined && !(v > 0 && Number.isFinite(v))) {
      throw new UsageError(`--${n} must be a positive number, got ${v}`);
    }
    // The scale multiplies the loss in f32 on the GPU, and its reciprocal the gradients:
    // past f32's normal range one of them is 0 or infinite, and every step trains nothing
    // or is skipped.
    if (v !== undefined && !(v >= 1 / MAX_LOSS_SCALE && v <= MAX_LOSS_SCALE)) {
      throw new UsageError(
        `--${n} ${v} is outside f32's range for a loss scale (2^-126 = ` +
          `${(1 / MAX_LOSS_SCALE).toExponential(3)} to 2^126 = ` +
          `${MAX_LOSS_SCALE.toExponential(3)}: the scale and its reciprocal are f32s on the GPU)`,
      );
    }
  }
  if (wasGiven(f, "loss-scale")) {
    // A fixed scale has no dynamics to set.
    const dynamic = LOSS_SCALE_FLAGS.filter((n) => n !== "loss-scale" && wasGiven(f, n));
    if (dynamic.length) {
      throw new UsageError(
        `--${dynamic[0]} sets the dynamic loss scale, and --loss-scale fixes it: give one`,
      );
    }
  }
  if ((f["min-loss-scale"] as number) > (f["initial-loss-scale"] as number)) {
    throw new UsageError(
      `--min-loss-scale ${f["min-loss-scale"]} is above --initial-loss-scale ${
        f["initial-loss-scale"]
      }`,
    );
  }
  for (const n of ["adam-beta1", "adam-beta2"]) {
    const v = f[n] as number;
    // β = 1 never forgets (the moment is the first gradient forever) and β > 1 diverges.
    if (!(v >= 0 && v < 1)) throw new UsageError(`--${n} must be in [0, 1), got ${v}`);
  }
  const eps = f["adam-eps"] as number;
  // Where a gradient is 0 (the vocabulary's padding rows), √v̂ is 0 and eps alone divides: the
  // kernel's f32 eps must not be 0 (or infinite).
  if (!(eps >= F32_MIN_NORMAL && eps <= F32_MAX)) {
    throw new UsageError(
      `--adam-eps must be a positive number in f32's range (${F32_MIN_NORMAL.toExponential(3)} ` +
        `to ${F32_MAX.toExponential(3)}), got ${eps}`,
    );
  }
  const std = f["init-method-std"] as number;
  if (!(std > 0 && Number.isFinite(std))) {
    throw new UsageError(`--init-method-std must be a positive number, got ${std}`);
  }
  const exitMins = f["exit-duration-in-mins"] as number | undefined;
  if (exitMins !== undefined && !(exitMins > 0)) {
    throw new UsageError(
      `--exit-duration-in-mins must be a positive number of minutes, got ${exitMins}`,
    );
  }
  checkWarmup(f);
  if (f.prompt === "" && (f["sample-tokens"] as number) > 0) {
    throw new UsageError(
      "--prompt is empty: give the text the final sample continues, or --sample-tokens 0",
    );
  }
  checkTopP(f);
  // Not given, it is a share of --lr (train_args.ts), never above it.
  if ((f["min-lr"] as number | undefined ?? 0) > (f["lr"] as number)) {
    throw new UsageError(`--min-lr ${f["min-lr"]} is above --lr ${f["lr"]}`);
  }
  checkWsd(f);
  if (f.model === "bert" && (f["seq-length"] as number) < 5) {
    throw new UsageError(
      `BERT needs --seq-length ≥ 5 ([CLS] A [SEP] B [SEP]), got ${f["seq-length"]}`,
    );
  }
  if (f["init-from-hf"] && f.load) {
    throw new UsageError("give either --load or --init-from-hf, not both");
  }
  // With --init-from-hf the shape comes from config.json, checked when the model is built.
  checkModelFlags(f, tp, !f["init-from-hf"]);
}

/** The flag of each config field a shape error may name (models/shape.ts). */
const FLAG_OF_FIELD: Readonly<Record<string, string>> = {
  vocabSize: "the vocabulary size",
  numLayers: "--num-layers",
  hiddenSize: "--hidden-size",
  numHeads: "--num-attention-heads",
  maxPositions: "--max-position-embeddings",
  ffnHiddenSize: "--ffn-hidden-size",
  hiddenDropout: "--hidden-dropout",
  attentionDropout: "--attention-dropout",
};

/** A shape error's message (in the config's field names) in this command line's flags. */
export function inFlagTerms(message: string): string {
  return message.replace(
    new RegExp(`\\b(${Object.keys(FLAG_OF_FIELD).join("|")})\\b`, "g"),
    (field) => FLAG_OF_FIELD[field],
  );
}

/**
 * The model flags' own checks ({@link UsageError}): the sequence within the
 * position table and, with `shape` (not when the shape comes from a file), the
 * shape at `tp` tensor-parallel ranks and the dropouts. `train` and `profile`.
 */
export function checkModelFlags(f: FlagValues, tp: number, shape = true): void {
  const seq = f["seq-length"] as number;
  const maxPos = (f["max-position-embeddings"] as number | undefined) ?? seq;
  if (seq > maxPos) {
    throw new UsageError(
      `--seq-length ${seq} is longer than the position table (--max-position-embeddings ${maxPos})`,
    );
  }
  if (!shape) return;
  try {
    validateTransformerConfig(gptConfigFromFlags(f, 256), tp);
  } catch (e) {
    throw new UsageError(inFlagTerms((e as Error).message));
  }
}

/**
 * The checks of the flags that shape a training step, shared by `train` and
 * `profile`: dropout below 1, one attention choice, and `--overlap-tp-comm`
 * only where there is a tensor-parallel all-reduce to overlap.
 */
export function checkStepFlags(f: FlagValues, tp: number): void {
  if (f["overlap-tp-comm"] && tp === 1) {
    throw new UsageError(
      "--overlap-tp-comm overlaps the tensor-parallel all-reduce, and at " +
        "--tensor-model-parallel-size 1 there is none: drop it",
    );
  }
  for (const n of ["hidden-dropout", "attention-dropout"]) {
    const v = f[n] as number;
    if (v >= 1) throw new UsageError(`--${n} must be below 1, got ${v}`);
  }
  if (f["use-flash-attn"] && f["no-flash-attn"]) {
    throw new UsageError("give either --use-flash-attn or --no-flash-attn, not both");
  }
  if (f["attention-backend"] === "flash" && f["no-flash-attn"]) {
    throw new UsageError(
      "give either --attention-backend flash or --no-flash-attn, not both (the fused kernels " +
        "are FlashAttention-style)",
    );
  }
}

/** The data flags: one corpus (`--data-path`, `--split`) or a train and a validation file. */
function checkDataFlags(f: FlagValues): void {
  for (const flag of DATA_PATH_FLAGS) dataSourceOf(f, flag); // their forms and weights
  if (f["split"] !== undefined) {
    parseSplit(f["split"] as string);
    if (wasGiven(f, "val-fraction")) {
      throw new UsageError("give either --split or --val-fraction, not both");
    }
  }
  const train = f["train-data-path"], valid = f["valid-data-path"];
  if (valid !== undefined && train === undefined) {
    throw new UsageError("--valid-data-path needs --train-data-path");
  }
  if (train !== undefined && f["data-path"] !== undefined) {
    throw new UsageError("give either --data-path or --train-data-path, not both");
  }
  if (train !== undefined && valid !== undefined) {
    const splitting = ["split", "val-fraction"].filter((n) => wasGiven(f, n));
    if (splitting.length) {
      throw new UsageError(
        `--${splitting[0]} splits one corpus; --train-data-path with --valid-data-path ` +
          "are already split: drop it",
      );
    }
  }
  if (f["save-interval"] !== undefined && !f.save) {
    throw new UsageError("--save-interval needs --save DIR (where the checkpoints go)");
  }
  if (f["use-checkpoint-args"] && !f.load) {
    throw new UsageError("--use-checkpoint-args needs --load DIR");
  }
  if (f.iteration !== undefined && !f.load) {
    throw new UsageError("--iteration needs --load DIR (the checkpoint to resume from)");
  }
}

/** Flags that only a GPT run reads: its tokenizer and the text sampled at the end. */
export const GPT_ONLY_FLAGS: readonly string[] = [
  "tokenizer",
  "sample-tokens",
  "prompt",
  "temperature",
  "top-k",
  "top-p",
];

/** The final sample's settings (GPT), which `--sample-tokens 0` leaves unused. */
const SAMPLE_SETTING_FLAGS: readonly string[] = ["prompt", "temperature", "top-k", "top-p"];

/** Flags that only a BERT run reads: the original post-LN placement (GPT here is GPT-2's pre-LN). */
export const BERT_ONLY_FLAGS: readonly string[] = ["apply-residual-connection-post-layernorm"];

/**
 * Refuses a flag of the other model family given to a run, once the family is
 * settled ({@link agreeWithModelSource}), since it would be ignored without a
 * word: a GPT-only flag ({@link GPT_ONLY_FLAGS}) to BERT, which reads WordPiece
 * and samples no text, or a BERT-only one ({@link BERT_ONLY_FLAGS}) to GPT; and
 * a blend of several corpora given to BERT (GPT-only for now).
 */
export function refuseFlagsOfOtherModel(f: FlagValues): void {
  if (f.model === "gpt") {
    const given = BERT_ONLY_FLAGS.filter((n) => wasGiven(f, n));
    if (given.length) {
      throw new UsageError(
        `--${given[0]}: for --model bert only (the GPT here is GPT-2's pre-LN); drop it`,
      );
    }
    // The final sample's settings when no sample is written.
    const sampling = f["sample-tokens"] === 0
      ? SAMPLE_SETTING_FLAGS.filter((n) => wasGiven(f, n))
      : [];
    if (sampling.length) {
      throw new UsageError(
        `${sampling.map((n) => `--${n}`).join(", ")}: --sample-tokens 0 writes no sample, ` +
          "so " +
          (sampling.length > 1 ? "they change nothing; drop them" : "it changes nothing; drop it"),
      );
    }
    return;
  }
  if (f.model !== "bert") return;
  const blended = DATA_PATH_FLAGS.find((n) => isBlend(dataSourceOf(f, n)));
  if (blended) {
    throw new UsageError(
      `--${blended} blends several corpora, which only GPT runs do for now; give a BERT run ` +
        "one text file, .jsonl or folder (a folder's files are all read)",
    );
  }
  // `--sample-tokens 0` and WordPiece (`--tokenizer-type BertWordPieceLowerCase`) ask for what
  // BERT does anyway: Megatron's BERT scripts pass them.
  const given = GPT_ONLY_FLAGS.filter((n) =>
    wasGiven(f, n) && !(n === "sample-tokens" && f[n] === 0) &&
    !(n === "tokenizer" && f[n] === "bert")
  );
  if (given.length) {
    throw new UsageError(
      `${given.map((n) => `--${n}`).join(", ")}: for --model gpt only (BERT uses WordPiece ` +
        "and samples no text); drop " + (given.length > 1 ? "them" : "it"),
    );
  }
}
