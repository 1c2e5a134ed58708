/**
 * Every flag of `deno task train`: Megatron's long names, their types, defaults and help.
 * @module
 */

import { AUTOTUNE_FLAGS } from "./autotune.ts";
import { DIST_FLAG_SPECS } from "./dist.ts";
import { DEFAULT_INIT_STD } from "../core/nn.ts";
import { ADAMW_DEFAULTS, LR_DECAY_STYLES, WSD_DECAY_STYLES } from "../core/optim.ts";
import { LOSS_SCALER_DEFAULTS } from "../models/loss_scale.ts";
import { DEFAULT_CLIP_GRAD } from "../models/trainer.ts";
import { defaultBackendFor } from "../core/gpu.ts";
import { DEFAULT_DROPOUT } from "../models/shape.ts";
import type { TokenizerName } from "../data/tokenizer.ts";
import { DATA_PATH_FORM } from "./data_source.ts";
import { DEBUG_FLAG } from "./errors.ts";
import { samplingFlags } from "./sampling_flags.ts";
import { backendFlag, type FlagSpec } from "./flags.ts";
import { MEGATRON_UNIMPLEMENTED, VOCAB_FILE_FLAGS } from "./megatron_flags.ts";
import { SCHEDULE_FLAGS } from "./resume_flags.ts";
import { MIN_LR_DIVISOR } from "./train_args.ts";

/** fp16's loss-scaling flags (refused without `--fp16`). */
export const LOSS_SCALE_FLAGS: readonly string[] = [
  "loss-scale",
  "initial-loss-scale",
  "min-loss-scale",
  "loss-scale-window",
  "hysteresis",
];

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
