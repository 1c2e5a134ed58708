/**
 * The flags of `deno task train` (Megatron's long names), their validation, and
 * the model configs built from them.
 * @module
 */

import { AUTOTUNE_FLAGS } from "./autotune.ts";
import { DIST_FLAG_SPECS } from "./dist.ts";
import { DEFAULT_INIT_STD } from "../core/nn.ts";
import { ADAMW_DEFAULTS, LR_DECAY_STYLES, WSD_DECAY_STYLES } from "../core/optim.ts";
import { LOSS_SCALER_DEFAULTS, MAX_LOSS_SCALE } from "../models/loss_scale.ts";
import { DEFAULT_CLIP_GRAD } from "../models/trainer.ts";
import { defaultBackendFor } from "../core/gpu.ts";
import type { GptConfig } from "../models/gpt.ts";
import { type CheckpointMeta, readMeta, resolveIterDir } from "../models/checkpoint/layout.ts";
import {
  DEFAULT_DROPOUT,
  defaultFfnHiddenSize,
  resolveShape,
  type ShapeConfig,
  ShapeError,
  validateTransformerConfig,
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
import { isTokenBinPath, readTokenBinMeta, tokenBinMetaPath } from "../data/token_bin.ts";
import { GPT2_VOCAB_SIZE } from "../data/gpt2_vocab.ts";
import { DATA_PATH_FLAGS, DATA_PATH_FORM, dataSourceOf, isBlend } from "./data_source.ts";
import { DEBUG_FLAG, splitMisfit } from "./errors.ts";
import { checkTopP, samplingFlags } from "./sampling_flags.ts";
import { backendFlag, type FlagSpec, type FlagValues, UsageError, wasGiven } from "./flags.ts";
import { MEGATRON_UNIMPLEMENTED, VOCAB_FILE_FLAGS } from "./megatron_flags.ts";
import {
  agreeInitStd,
  agreeSampleCount,
  agreeWarmup,
  checkSampleSchedule,
  checkWarmup,
  checkWsd,
  firstRunOfRestartableJob,
  INIT_STD_FLAG,
  type Refuse,
  SAMPLE_RUN_FLAGS,
  SCHEDULE_FLAGS,
  WARMUP_FLAGS,
} from "./resume_flags.ts";
import {
  gptConfigOf,
  MIN_LR_DIVISOR,
  parseSplit,
  type TrainArgs,
  trainArgsFromFlags,
} from "./train_args.ts";
import { precisionArgs } from "./precision_resume.ts";

/** fp16's loss-scaling flags (refused without `--fp16`). */
export const LOSS_SCALE_FLAGS: readonly string[] = [
  "loss-scale",
  "initial-loss-scale",
  "min-loss-scale",
  "loss-scale-window",
  "hysteresis",
];

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

/** The smallest normal and the largest finite f32: the range a loss scale must lie in. */
const F32_MIN_NORMAL = 2 ** -126, F32_MAX = (2 - 2 ** -23) * 2 ** 127;

/** The tokenizers a GPT run takes (`--tokenizer`; BERT reads WordPiece). */
export const GPT_TOKENIZERS: readonly TokenizerName[] = ["byte", "gpt2"];

/** Every flag of `deno task train`. */
export const TRAIN_FLAGS: Record<string, FlagSpec> = {
  "model": {
    type: "string",
    default: "gpt",
    choices: ["gpt", "bert"],
    help: "model family",
    group: "Model",
  },
  "num-layers": { type: "int", default: 2, min: 1, help: "transformer layers" },
  "hidden-size": { type: "int", default: 128, min: 1, help: "hidden size" },
  "num-attention-heads": { type: "int", default: 4, min: 1, help: "attention heads" },
  "ffn-hidden-size": { type: "int", min: 1, help: "MLP inner size (default 4·hidden)" },
  "seq-length": { type: "int", default: 64, min: 1, help: "tokens per sequence" },
  "max-position-embeddings": {
    type: "int",
    min: 1,
    help: "position table size (default seq-length)",
  },
  "hidden-dropout": {
    type: "float",
    default: DEFAULT_DROPOUT,
    min: 0,
    help: "dropout on embeddings and residual branches",
  },
  "attention-dropout": {
    type: "float",
    default: DEFAULT_DROPOUT,
    min: 0,
    help: "dropout on attention probabilities",
  },
  "apply-residual-connection-post-layernorm": {
    type: "boolean",
    help: "BERT: the original (Hugging Face's) post-LN layer, LN(x + f(x)) with no final layer " +
      "norm (default pre-LN; Megatron's flag only takes residuals from the layer norm's output)",
  },
  "recompute-activations": {
    type: "boolean",
    help: "recompute each layer's activations in backward (less memory)",
  },
  "use-flash-attn": {
    type: "boolean",
    help:
      "fused FlashAttention-style attention kernels, O(seq·head size) memory per head (the default)",
  },
  "no-flash-attn": {
    type: "boolean",
    help: "unfused attention ops instead (they hold the [batch, heads, seq, seq] probabilities)",
  },
  "init-method-std": {
    type: "float",
    default: DEFAULT_INIT_STD,
    help: "std of the normal init of weight matrices and embeddings; the residual output " +
      "projections take it / sqrt(2·layers) (a fresh model's: with --load it must be the " +
      "checkpoint's, with --init-from-hf it is refused)",
  },
  "micro-batch-size": {
    type: "int",
    default: 8,
    min: 1,
    help: "sequences per micro-batch per rank",
    group: "Training",
  },
  "global-batch-size": {
    type: "int",
    min: 1,
    help:
      "sequences per step over all ranks; more than micro-batch × DP accumulates (default micro-batch × DP)",
  },
  "train-iters": {
    type: "int",
    default: 1000,
    min: 1,
    help: "optimizer steps (or --train-samples)",
  },
  "train-samples": {
    type: "int",
    min: 1,
    help: "the training length in samples (sequences), Megatron's: ⌊samples / global batch⌋ " +
      "steps; the schedule is then counted in samples too (--lr-decay-samples, " +
      "--lr-warmup-samples or --lr-warmup-fraction; not --train-iters or the --lr-*-iters)",
  },
  "lr": { type: "float", default: 3e-3, min: 0, help: "peak learning rate" },
  "min-lr": {
    type: "float",
    min: 0,
    help: `final learning rate (default --lr / ${MIN_LR_DIVISOR}; Megatron's is 0)`,
  },
  "lr-warmup-iters": {
    type: "int",
    default: 30,
    min: 0,
    help: "linear warm-up steps (or --lr-warmup-fraction)",
  },
  "lr-warmup-fraction": {
    type: "float",
    min: 0,
    help: "warm-up as a fraction of --lr-decay-iters, or of --lr-decay-samples with " +
      "--train-samples (Megatron's; instead of --lr-warmup-iters or --lr-warmup-samples, which " +
      "it replaces; the warm-up may end between steps)",
  },
  "lr-warmup-samples": {
    type: "int",
    min: 0,
    help: "with --train-samples: linear warm-up over this many samples (Megatron's; default 0; " +
      "or --lr-warmup-fraction)",
  },
  "lr-warmup-init": {
    type: "float",
    default: 0,
    min: 0,
    help: "learning rate the warm-up starts from, at the first step (Megatron's)",
  },
  "lr-decay-iters": { type: "int", min: 1, help: "decay length (default train-iters)" },
  "lr-decay-samples": {
    type: "int",
    min: 1,
    help: "with --train-samples: the decay length in samples, warm-up included (Megatron's; " +
      "default --train-samples)",
  },
  "lr-decay-style": {
    type: "string",
    default: "cosine",
    choices: LR_DECAY_STYLES,
    help: "decay after warm-up (Megatron's styles; WSD: --lr until the last " +
      "--lr-wsd-decay-iters of the decay, which anneal to --min-lr)",
  },
  "lr-wsd-decay-style": {
    type: "string",
    default: "exponential",
    choices: WSD_DECAY_STYLES,
    help: "with --lr-decay-style WSD: the shape of the annealing (Megatron's)",
  },
  "lr-wsd-decay-iters": {
    type: "int",
    min: 1,
    help: "with --lr-decay-style WSD: the annealing's length, the decay's last iterations " +
      "(Megatron's; needed by WSD)",
  },
  "lr-wsd-decay-samples": {
    type: "int",
    min: 1,
    help: "with --lr-decay-style WSD and --train-samples: the annealing's length in samples " +
      "(Megatron's)",
  },
  "override-opt-param-scheduler": {
    type: "boolean",
    aliases: ["override-opt_param-scheduler"],
    help: `with --load, the schedule flags (${
      SCHEDULE_FLAGS.map((n) => `--${n}`).join(", ")
    }) replace the checkpoint's instead of continuing it`,
  },
  "clip-grad": {
    type: "float",
    default: DEFAULT_CLIP_GRAD,
    min: 0,
    help: "global gradient-norm clip (0 = off)",
  },
  "weight-decay": {
    type: "float",
    default: ADAMW_DEFAULTS.weightDecay,
    min: 0,
    help: "AdamW decoupled weight decay",
  },
  "adam-beta1": { type: "float", default: ADAMW_DEFAULTS.beta1, min: 0, help: "AdamW β1" },
  "adam-beta2": {
    type: "float",
    default: ADAMW_DEFAULTS.beta2,
    min: 0,
    help: "AdamW β2 (Megatron's and PyTorch's default; Megatron's GPT recipes use 0.95)",
  },
  "adam-eps": {
    type: "float",
    default: ADAMW_DEFAULTS.eps,
    help: "AdamW's denominator epsilon: the update is m̂/(√v̂ + eps)",
  },
  "seed": { type: "int", default: 1234, min: 0, help: "seed for init, dropout and data order" },
  "fp16": {
    type: "boolean",
    help:
      "mixed precision: fp16 weight copies, saved activations and TP traffic, gradients rounded to fp16; fp32 master weights; dynamic loss scaling",
    group: "Mixed precision",
  },
  "bf16": {
    type: "boolean",
    help:
      "mixed precision: bf16 weight copies, saved activations and TP traffic, gradients rounded to bf16; fp32 master weights (no loss scaling)",
  },
  "loss-scale": {
    type: "float",
    help: "fp16: a fixed loss scale (default: dynamic)",
  },
  "initial-loss-scale": {
    type: "float",
    default: LOSS_SCALER_DEFAULTS.initial,
    help: "fp16: the dynamic scale's starting value",
  },
  "min-loss-scale": {
    type: "float",
    default: LOSS_SCALER_DEFAULTS.min,
    help: "fp16: the dynamic scale never halves below this",
  },
  "loss-scale-window": {
    type: "int",
    default: LOSS_SCALER_DEFAULTS.window,
    min: 1,
    help: "fp16: clean steps after which the dynamic scale doubles",
  },
  "accumulate-allreduce-grads-in-fp32": {
    type: "boolean",
    help:
      "with --fp16/--bf16: gradients kept in fp32 (not rounded to 16 bits) and all-reduced in fp32 (default: rounded, 16-bit on the wire); Megatron forces this for bf16",
  },
  "f16-arithmetic": {
    type: "boolean",
    help:
      "with --fp16, where the adapter has shader-f16: the matmuls reading fp16 weights compute in native f16 (f32 accumulation per 4 products)",
  },
  "hysteresis": {
    type: "int",
    default: LOSS_SCALER_DEFAULTS.hysteresis,
    min: 1,
    help: "fp16: overflowing steps tolerated before the dynamic scale halves",
  },
  "data-path": {
    type: "string",
    list: true,
    valueName: DATA_PATH_FORM,
    help: 'text file, .jsonl (its "text" fields), folder of .txt/.md, .bin of uint16 ids, or ' +
      "Megatron dataset prefix (read as PREFIX.bin; default: Moby Dick); GPT: a blend, " +
      "as Megatron's: weight-path pairs (weights normalized) or several paths (weighted by " +
      "size), each corpus split by --split, each part blended",
    group: "Data",
  },
  "tokenizer": {
    type: "string",
    default: "byte",
    choices: [...GPT_TOKENIZERS],
    help:
      "GPT tokenizer (BERT uses WordPiece); not given: a checkpoint's or Hugging Face model's, else the one a .bin's sidecar names, else the default",
  },
  ...VOCAB_FILE_FLAGS,
  "val-fraction": {
    type: "float",
    default: 0.1,
    min: 0,
    help: "trailing share of the corpus held out for validation (or give --split)",
  },
  "split": {
    type: "string",
    help:
      "train,valid,test weights of the corpus, as Megatron's (e.g. 949,50,1; the test part is held out, unused)",
  },
  "train-data-path": {
    type: "string",
    list: true,
    valueName: DATA_PATH_FORM,
    help:
      "training data on its own (e.g. nanoGPT's train.bin), with --valid-data-path (alone, it is " +
      "split as --data-path is: --val-fraction of it validates); GPT: a blend as --data-path's",
  },
  "valid-data-path": {
    type: "string",
    list: true,
    valueName: DATA_PATH_FORM,
    help:
      "validation data on its own (e.g. val.bin), with --train-data-path; GPT: a blend as --data-path's",
  },
  "save": { type: "string", help: "checkpoint directory to write", group: "Checkpoints" },
  "save-interval": {
    type: "int",
    min: 1,
    help: "steps between checkpoints (default: only at the end)",
  },
  "exit-interval": {
    type: "int",
    min: 1,
    valueName: "N",
    help: "stop after the first iteration that is a multiple of N, saving a checkpoint there " +
      "with --save (nothing without), and exit 0, as Megatron's; a resumed run counts on from " +
      "its checkpoint (40, resumed at 40, stops at 80); at or past --train-iters the run ends " +
      "as usual",
  },
  "exit-duration-in-mins": {
    type: "float",
    valueName: "MINUTES",
    help: "stop after the first step that ends MINUTES after the program started (each " +
      "rank's process, or Worker, start: the earliest rank's clock decides, agreed by all " +
      "ranks; a resumed run counts from its own start), saving a checkpoint there with " +
      "--save (nothing without), and exit 0, as Megatron's",
  },
  "load": { type: "string", help: "resume from this checkpoint directory (any TP size)" },
  "iteration": {
    type: "int",
    min: 0,
    help: "with --load, resume from this saved iteration (default: latest)",
  },
  "use-checkpoint-args": {
    type: "boolean",
    help:
      "with --load: take the model flags, --seq-length, the tokenizer, dropout and --recompute-activations from the checkpoint (given shape flags and tokenizer must agree; the others override)",
  },
  "init-from-hf": {
    type: "string",
    help:
      "start from a Hugging Face GPT-2 (--model gpt) or BERT (--model bert) directory; its config.json sets the shape, BERT's vocab.txt the tokenizer",
  },
  "log-interval": {
    type: "int",
    default: 10,
    min: 1,
    help: "steps between log lines",
    group: "Logging",
  },
  "eval-interval": { type: "int", default: 200, min: 1, help: "steps between validation runs" },
  "eval-iters": {
    type: "int",
    default: 10,
    min: 0,
    help: "validation iterations per evaluation, each a global batch of sequences, as Megatron's " +
      "(0: no validation; the held-out part stays unused, --split 100,0,0 trains on every token)",
  },
  "log-json": { type: "string", help: "write one JSON object per iteration to this file" },
  "measure-comm": {
    type: "boolean",
    help: "time collectives separately (adds a device sync before each)",
  },
  "sample-tokens": {
    type: "int",
    default: 300,
    min: 0,
    help: "GPT: tokens of text generated at the end",
  },
  "prompt": {
    type: "string",
    default: "Call me",
    allowEmpty: true, // refused with its own reason: see validateTrainFlags
    help: "GPT: prompt for the final sample",
  },
  ...samplingFlags(),
  ...backendFlag("Devices and parallelism", defaultBackendFor(2)),
  "tensor-model-parallel-size": {
    type: "int",
    default: 1,
    min: 1,
    aliases: ["tp"],
    help: "tensor-parallel size",
  },
  "overlap-grad-reduce": {
    type: "boolean",
    help:
      "data parallelism: all-reduce gradient buckets during the last backward, as each bucket's gradients become final (same values)",
  },
  "ddp-bucket-size": {
    type: "int",
    min: 1,
    help:
      "elements per data-parallel gradient all-reduce bucket (default 40000000: one bucket here)",
  },
  "overlap-tp-comm": {
    type: "boolean",
    help:
      "tensor parallelism: start f's backward all-reduce of the input gradient before the weight gradient is computed (same values)",
  },
  ...DIST_FLAG_SPECS,
  ...AUTOTUNE_FLAGS,
  ...DEBUG_FLAG,
  ...MEGATRON_UNIMPLEMENTED,
};

/** The GPT config from flags. */
export function gptConfigFromFlags(f: FlagValues, vocabSize: number): GptConfig {
  return gptConfigOf(trainArgsFromFlags(f).model, vocabSize);
}

/**
 * Checks everything that needs no data or device, for `world` ranks; throws
 * UsageError with a message naming the flags.
 */
export function validateTrainFlags(f: FlagValues, world: number): void {
  const tp = f["tensor-model-parallel-size"] as number;
  if (world % tp !== 0) {
    throw new UsageError(
      `the world size ${world} (--nproc-per-node × --nnodes) is not divisible by --tensor-model-parallel-size ${tp}` +
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

/**
 * A shape value as `config.json` gives it, named by its field there: "n_embd
 * 32", or for a field left out or null, "n_inner null (4·n_embd = 128)".
 */
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
): Promise<void> {
  if (f.model !== "gpt" || wasGiven(f, "tokenizer")) return;
  const named = new Map<string, string>();
  for (const flag of DATA_PATH_FLAGS) {
    for (const path of dataSourceOf(f, flag)?.paths ?? []) {
      if (!isTokenBinPath(path)) continue;
      const meta = await readTokenBinMeta(path).catch(() => undefined);
      if (meta && !named.has(meta.tokenizer)) named.set(meta.tokenizer, tokenBinMetaPath(path));
    }
  }
  if (named.size !== 1) return;
  const [[name, side]] = named;
  if (name === f.tokenizer || !(GPT_TOKENIZERS as readonly string[]).includes(name)) return;
  console.error(`tokenizer ${name}, as ${side} names it (--tokenizer chooses another)`);
  adopt("tokenizer", name);
}

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
 * arguments carry them to ranks that parse the command line again.
 */
export async function agreeWithModelSource(f: FlagValues): Promise<string[]> {
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
    if (family === "gpt" && !wasGiven(f, "tokenizer")) {
      const name = await tokenizerNameFor(c.vocabSize as number);
      if (
        name !== undefined && name !== f.tokenizer && GPT_TOKENIZERS.includes(name as TokenizerName)
      ) {
        adopt("tokenizer", name);
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
    await adoptDataTokenizer(f, adopt);
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
    console.error(
      `warning: no checkpoint in ${loadDir} yet: training from scratch, saving there ` +
        `(--load and --save name the same directory, as a restartable job's do)`,
    );
    await adoptDataTokenizer(f, adopt);
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
