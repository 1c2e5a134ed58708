/**
 * The flags of `deno task train`, parsed once into a typed {@link TrainArgs}:
 * what the training loop and its tasks read, with no flag names left in them.
 * @module
 */

import { type AutotuneArgs, autotuneArgs } from "./autotune.ts";
import {
  LR_DECAY_STYLES,
  type LrDecayStyle,
  type LrSchedule,
  WSD_DECAY_STYLES,
  type WsdDecayStyle,
} from "../core/optim.ts";
import type { BertConfig } from "../models/bert.ts";
import type { GptConfig } from "../models/gpt.ts";
import { type DataSource, dataSourceOf } from "./data_source.ts";
import { type FlagValues, UsageError, wasGiven } from "./flags.ts";

/** Train / validation / test weights (`--split 949,50,1`), normalized to sum 1. */
export interface DataSplit {
  /** Share of the corpus for training. */
  train: number;
  /** Share for validation. */
  valid: number;
  /** Share for test (held out and not used by `train`). */
  test: number;
}

/**
 * Where the training and validation data come from. Each source is one corpus
 * or a blend of several (GPT only), as Megatron's data-path flags take them.
 */
export interface DataArgs {
  /**
   * The corpus (or blend) split by {@link DataArgs.split} (`--data-path`;
   * default Moby Dick): each corpus is split on its own, then each part blended.
   */
  source?: DataSource;
  /** Separate training data (`--train-data-path`, e.g. nanoGPT's train.bin). */
  train?: DataSource;
  /** Separate validation data (`--valid-data-path`, e.g. val.bin). */
  valid?: DataSource;
  /** GPT tokenizer name (`--tokenizer`). */
  tokenizer: string;
  /** How one corpus is split (from `--split`, else `--val-fraction`). */
  split: DataSplit;
}

/** Model flags: the shape and regularisation of the model to build. */
export interface ModelArgs {
  /** Model family. */
  family: "gpt" | "bert";
  /** Transformer layers. */
  numLayers: number;
  /** Hidden size. */
  hiddenSize: number;
  /** Attention heads. */
  numHeads: number;
  /** MLP inner size (default 4·hidden, resolved by `resolveShape`). */
  ffnHiddenSize?: number;
  /** Position table size. */
  maxPositions: number;
  /** Dropout on embeddings and residual branches. */
  hiddenDropout: number;
  /** Dropout on attention probabilities. */
  attentionDropout: number;
  /** BERT: post-LN ordering. */
  postLayerNorm: boolean;
  /** Recompute activations in backward. */
  recomputeActivations: boolean;
  /** Fused attention kernels (`--use-flash-attn`, the default; off with `--no-flash-attn`). */
  fusedAttention: boolean;
  /** Std of a fresh model's normal init (`--init-method-std`; models/blocks.ts `ModelOptions`). */
  initStd: number;
}

/** Communication overlapped with backward (models/parallel/overlap.ts). */
export interface OverlapArgs {
  /** `--overlap-grad-reduce`: data-parallel buckets all-reduced during the last backward. */
  gradReduce: boolean;
  /** `--ddp-bucket-size`: elements per bucket (undefined: the default, one bucket). */
  bucketSize?: number;
  /** `--overlap-tp-comm`: `f`'s backward all-reduce overlapped with the weight gradient. */
  tpComm: boolean;
}

/** Sampling at the end of a GPT run. */
export interface SampleArgs {
  /** Tokens to generate (0 = none). */
  tokens: number;
  /** The prompt. */
  prompt: string;
  /** Temperature (0 = greedy). */
  temperature: number;
  /** Top-k (0 = all). */
  topK: number;
  /** Nucleus mass. */
  topP: number;
}

/** Mixed-precision settings. */
export interface PrecisionArgs {
  /** The 16-bit format (undefined: fp32 throughout). */
  half?: "fp16" | "bf16";
  /** A fixed loss scale (fp16). */
  lossScale?: number;
  /** The dynamic scale's start (fp16). */
  initialLossScale: number;
  /** Whether `--initial-loss-scale` was given (a resumed run says it continues the saved scale). */
  initialLossScaleGiven: boolean;
  /** The dynamic scale's floor (fp16). */
  minLossScale: number;
  /** Clean steps before the scale doubles (fp16). */
  lossScaleWindow: number;
  /** Overflowing steps tolerated before it halves (fp16). */
  hysteresis: number;
  /** Data-parallel gradient all-reduce in fp32 (else 16-bit on the wire). */
  accumulateFp32: boolean;
  /** fp16 matmuls in native f16 arithmetic (`Device.f16Arithmetic`). */
  f16Arithmetic: boolean;
}

/** Everything one rank of `deno task train` needs, typed. */
export interface TrainArgs {
  /** The model to build. */
  model: ModelArgs;
  /** Tokens per sequence. */
  seqLength: number;
  /** Sequences per micro-batch per rank. */
  microBatch: number;
  /** Sequences per step over all ranks (default micro-batch × DP). */
  globalBatch?: number;
  /** Optimizer steps (unused when {@link TrainArgs.trainSamples} is given). */
  trainIters: number;
  /**
   * `--train-samples`: the training length in samples, Megatron's sample-based
   * training; {@link trainItersOf} makes it ⌊samples / global batch⌋ steps, and
   * the schedule is counted in samples too ({@link lrScheduleOf}).
   */
  trainSamples?: number;
  /** Learning-rate schedule (Megatron's flags; {@link lrScheduleOf} resolves it). */
  lr: {
    /** `--lr`. */
    peak: number;
    /** `--min-lr` (default `peak` / {@link MIN_LR_DIVISOR}). */
    min: number;
    /** `--lr-warmup-iters` (unused when `warmupFraction` or `trainSamples` is given). */
    warmupIters: number;
    /** `--lr-warmup-fraction`: the warm-up as a share of the decay length. */
    warmupFraction?: number;
    /** `--lr-warmup-samples` (with `trainSamples`; default 0, Megatron's). */
    warmupSamples?: number;
    /** `--lr-warmup-init`: where the warm-up starts. */
    warmupInit: number;
    /** `--lr-decay-iters` (default: the training length). */
    decayIters?: number;
    /** `--lr-decay-samples` (with `trainSamples`; default: `trainSamples`). */
    decaySamples?: number;
    /** `--lr-decay-style`. */
    style: LrDecayStyle;
    /** `--lr-wsd-decay-style` (with style "WSD"). */
    wsdStyle: WsdDecayStyle;
    /** `--lr-wsd-decay-iters` (with style "WSD", counted in iterations). */
    wsdDecayIters?: number;
    /** `--lr-wsd-decay-samples` (with style "WSD" and `trainSamples`). */
    wsdDecaySamples?: number;
  };
  /** Gradient-norm clip (0 = off). */
  clipGrad: number;
  /** AdamW. */
  adam: { beta1: number; beta2: number; eps: number; weightDecay: number };
  /** Seed for init, dropout and data order. */
  seed: number;
  /** Mixed precision (`--fp16`/`--bf16` and the loss-scale flags). */
  precision: PrecisionArgs;
  /** Data. */
  data: DataArgs;
  /** Checkpoint directory to write. */
  save?: string;
  /** Steps between checkpoints (Infinity: only at the end). */
  saveInterval: number;
  /**
   * `--exit-interval`: stop (saved, with `--save`) after an iteration that is a
   * multiple of it, counted from iteration 0 as a resumed run's iterations are.
   */
  exitInterval?: number;
  /**
   * `--exit-duration-in-mins`: stop (saved, with `--save`) after the first step
   * that ends this many minutes after the earliest rank started.
   */
  exitDurationMins?: number;
  /** Checkpoint directory to resume from. */
  load?: string;
  /** The iteration of {@link TrainArgs.load} to resume from (default: its latest). */
  loadIteration?: number;
  /** Hugging Face directory to start from. */
  initFromHf?: string;
  /** Steps between log lines. */
  logInterval: number;
  /** Steps between validation runs. */
  evalInterval: number;
  /** Validation batches per run (split over the data-parallel ranks). */
  evalIters: number;
  /** JSON log file. */
  logJson?: string;
  /** Time collectives separately. */
  measureComm: boolean;
  /** Communication overlapped with backward (models/parallel/overlap.ts). */
  overlap: OverlapArgs;
  /** Matmul autotuning (cli/autotune.ts). */
  autotune: AutotuneArgs;
  /** The final GPT sample. */
  sample: SampleArgs;
  /** WebGPU implementation name, when given. */
  backend?: string;
  /** Tensor-parallel size. */
  tp: number;
  /** The flag values these were parsed from (kebab-case), for the `--log-json` header. */
  flags: Record<string, unknown>;
}

/**
 * Parses `--split` ("949,50,1", "98,2", "1"): up to three non-negative weights,
 * normalized; a missing validation or test weight is 0.
 */
export function parseSplit(s: string): DataSplit {
  const parts = s.split(/[,/]/).map((p) => p.trim());
  const w = parts.map(Number);
  if (
    parts.length === 0 || parts.length > 3 || parts.some((p) => p === "") ||
    w.some((x) => !Number.isFinite(x) || x < 0)
  ) {
    throw new UsageError(
      `--split expects up to three non-negative weights (train,valid,test), e.g. 949,50,1; got "${s}"`,
    );
  }
  const [train, valid = 0, test = 0] = w;
  const sum = train + valid + test;
  if (!(train > 0)) throw new UsageError(`--split "${s}" leaves nothing for training`);
  return { train: train / sum, valid: valid / sum, test: test / sum };
}

/** `s` where it is one of `values` (flag parsing has checked it), else `fallback`. */
function oneOf<T extends string>(values: readonly T[], s: string | undefined, fallback: T): T {
  return values.includes(s as T) ? s as T : fallback;
}

/**
 * `--lr` over the final learning rate when `--min-lr` is not given: nanoGPT's
 * tenth (its `min_lr` "~= learning_rate/10 per Chinchilla"), so that any
 * `--lr` has a decay to follow. Megatron's default is 0.
 */
export const MIN_LR_DIVISOR = 10;

/**
 * `--min-lr` for `--lr` when not given: `lr` / {@link MIN_LR_DIVISOR}, to 15
 * significant digits, so that it reads as written (3e-3 gives 3e-4, not
 * 0.00030000000000000003) in messages and saved arguments.
 */
export function defaultMinLr(lr: number): number {
  return Number((lr / MIN_LR_DIVISOR).toPrecision(15));
}

const num = (f: FlagValues, k: string): number => f[k] as number;
const opt = (f: FlagValues, k: string): number | undefined => f[k] as number | undefined;
const str = (f: FlagValues, k: string): string | undefined => f[k] as string | undefined;

/**
 * The typed arguments of flags parsed with `TRAIN_FLAGS` (and checked by
 * `validateTrainFlags`). The one place that reads flag names.
 */
export function trainArgsFromFlags(f: FlagValues): TrainArgs {
  const seqLength = num(f, "seq-length");
  const valFraction = num(f, "val-fraction");
  const splitFlag = str(f, "split");
  return {
    model: {
      family: f.model === "bert" ? "bert" : "gpt",
      numLayers: num(f, "num-layers"),
      hiddenSize: num(f, "hidden-size"),
      numHeads: num(f, "num-attention-heads"),
      ffnHiddenSize: opt(f, "ffn-hidden-size"),
      maxPositions: opt(f, "max-position-embeddings") ?? seqLength,
      hiddenDropout: num(f, "hidden-dropout"),
      attentionDropout: num(f, "attention-dropout"),
      postLayerNorm: !!f["apply-residual-connection-post-layernorm"],
      recomputeActivations: !!f["recompute-activations"],
      fusedAttention: !f["no-flash-attn"],
      initStd: num(f, "init-method-std"),
    },
    seqLength,
    microBatch: num(f, "micro-batch-size"),
    globalBatch: opt(f, "global-batch-size"),
    trainIters: num(f, "train-iters"),
    trainSamples: opt(f, "train-samples"),
    lr: {
      peak: num(f, "lr"),
      min: opt(f, "min-lr") ?? defaultMinLr(num(f, "lr")),
      warmupIters: num(f, "lr-warmup-iters"),
      warmupFraction: opt(f, "lr-warmup-fraction"),
      warmupSamples: opt(f, "lr-warmup-samples"),
      warmupInit: num(f, "lr-warmup-init"),
      decayIters: opt(f, "lr-decay-iters"),
      decaySamples: opt(f, "lr-decay-samples"),
      style: oneOf(LR_DECAY_STYLES, str(f, "lr-decay-style"), "cosine"),
      wsdStyle: oneOf(WSD_DECAY_STYLES, str(f, "lr-wsd-decay-style"), "exponential"),
      wsdDecayIters: opt(f, "lr-wsd-decay-iters"),
      wsdDecaySamples: opt(f, "lr-wsd-decay-samples"),
    },
    clipGrad: num(f, "clip-grad"),
    adam: {
      beta1: num(f, "adam-beta1"),
      beta2: num(f, "adam-beta2"),
      eps: num(f, "adam-eps"),
      weightDecay: num(f, "weight-decay"),
    },
    seed: num(f, "seed"),
    precision: {
      half: f.fp16 ? "fp16" : f.bf16 ? "bf16" : undefined,
      lossScale: opt(f, "loss-scale"),
      initialLossScale: num(f, "initial-loss-scale"),
      initialLossScaleGiven: wasGiven(f, "initial-loss-scale"),
      minLossScale: num(f, "min-loss-scale"),
      lossScaleWindow: num(f, "loss-scale-window"),
      hysteresis: num(f, "hysteresis"),
      accumulateFp32: !!f["accumulate-allreduce-grads-in-fp32"],
      f16Arithmetic: !!f["f16-arithmetic"],
    },
    data: {
      source: dataSourceOf(f, "data-path"),
      train: dataSourceOf(f, "train-data-path"),
      valid: dataSourceOf(f, "valid-data-path"),
      tokenizer: str(f, "tokenizer") ?? "byte",
      split: splitFlag !== undefined
        ? parseSplit(splitFlag)
        : { train: 1 - valFraction, valid: valFraction, test: 0 },
    },
    save: str(f, "save"),
    saveInterval: opt(f, "save-interval") ?? Infinity,
    exitInterval: opt(f, "exit-interval"),
    exitDurationMins: opt(f, "exit-duration-in-mins"),
    load: str(f, "load"),
    loadIteration: f.iteration as number | undefined,
    initFromHf: str(f, "init-from-hf"),
    logInterval: num(f, "log-interval"),
    evalInterval: num(f, "eval-interval"),
    evalIters: num(f, "eval-iters"),
    logJson: str(f, "log-json"),
    measureComm: !!f["measure-comm"],
    overlap: {
      gradReduce: !!f["overlap-grad-reduce"],
      bucketSize: opt(f, "ddp-bucket-size"),
      tpComm: !!f["overlap-tp-comm"],
    },
    autotune: autotuneArgs(f),
    sample: {
      tokens: num(f, "sample-tokens"),
      prompt: str(f, "prompt") ?? "",
      temperature: num(f, "temperature"),
      topK: num(f, "top-k"),
      topP: num(f, "top-p"),
    },
    backend: str(f, "backend"),
    tp: num(f, "tensor-model-parallel-size"),
    flags: Object.fromEntries(
      Object.entries(f).filter(([k, v]) => v !== undefined && k !== "help"),
    ),
  };
}

/**
 * The optimizer steps of a run at a global batch of `globalBatch` sequences:
 * `--train-iters`, or with `--train-samples S` ⌊S / global batch⌋, as
 * Megatron's `update_train_iters` counts them without a batch ramp-up.
 */
export function trainItersOf(a: TrainArgs, globalBatch: number): number {
  return a.trainSamples !== undefined ? Math.floor(a.trainSamples / globalBatch) : a.trainIters;
}

/**
 * The learning-rate schedule of a run, as Megatron builds its scheduler
 * (`get_optimizer_param_scheduler`): the decay over `--lr-decay-iters`
 * (default the training length), the warm-up over `--lr-warmup-fraction` ×
 * that length when given (fractional lengths included), else
 * `--lr-warmup-iters`, from `--lr-warmup-init`. A run counted in samples
 * (`--train-samples`) decays over `--lr-decay-samples` (default
 * `--train-samples`) and warms up over `--lr-warmup-fraction` × that or
 * `--lr-warmup-samples` (default 0): Megatron's scheduler counts those in
 * samples, `globalBatch` per update, so here they are those lengths divided by
 * `globalBatch`, in updates (core/optim.ts `learningRate` says how exactly that
 * follows Megatron's). WSD's annealing, `--lr-wsd-decay-iters` (or samples), is
 * converted the same way. `globalBatch` (default `--global-batch-size`) is needed
 * for a run counted in samples; given, it also sets the schedule's `stepIters`
 * (one sample, in updates), which only the inverse square root without a
 * warm-up reads.
 */
export function lrScheduleOf(
  a: TrainArgs,
  globalBatch: number | undefined = a.globalBatch,
): LrSchedule {
  const common = {
    lr: a.lr.peak,
    minLr: a.lr.min,
    initLr: a.lr.warmupInit,
    style: a.lr.style,
    ...(a.lr.style === "WSD" ? { wsdStyle: a.lr.wsdStyle } : {}),
    // Megatron's scheduler counts samples, a global batch an update.
    ...(globalBatch !== undefined ? { stepIters: 1 / globalBatch } : {}),
  };
  const fraction = a.lr.warmupFraction;
  if (a.trainSamples !== undefined) {
    if (globalBatch === undefined) {
      throw new Error(
        "lrScheduleOf: a run counted in samples (--train-samples) needs its global batch",
      );
    }
    const decaySamples = a.lr.decaySamples ?? a.trainSamples;
    // Megatron's order: the warm-up in samples (a fraction of the decay's samples), then per update.
    const warmupSamples = fraction !== undefined
      ? fraction * decaySamples
      : a.lr.warmupSamples ?? 0;
    return {
      ...common,
      warmupIters: warmupSamples / globalBatch,
      decayIters: decaySamples / globalBatch,
      ...(a.lr.wsdDecaySamples !== undefined
        ? { wsdDecayIters: a.lr.wsdDecaySamples / globalBatch }
        : {}),
    };
  }
  const decayIters = a.lr.decayIters ?? a.trainIters;
  return {
    ...common,
    warmupIters: fraction !== undefined ? fraction * decayIters : a.lr.warmupIters,
    decayIters,
    ...(a.lr.wsdDecayIters !== undefined ? { wsdDecayIters: a.lr.wsdDecayIters } : {}),
  };
}

function commonConfig(m: ModelArgs) {
  return {
    numLayers: m.numLayers,
    hiddenSize: m.hiddenSize,
    numHeads: m.numHeads,
    ffnHiddenSize: m.ffnHiddenSize,
    maxPositions: m.maxPositions,
    hiddenDropout: m.hiddenDropout,
    attentionDropout: m.attentionDropout,
    fusedAttention: m.fusedAttention,
    recomputeActivations: m.recomputeActivations,
  };
}

/** The GPT config of `m` for a tokenizer of `vocabSize` ids. */
export function gptConfigOf(m: ModelArgs, vocabSize: number): GptConfig {
  return { ...commonConfig(m), vocabSize };
}

/** The BERT config of `m` for a vocabulary of `vocabSize` ids. */
export function bertConfigOf(m: ModelArgs, vocabSize: number): BertConfig {
  return { ...commonConfig(m), vocabSize, postLayerNorm: m.postLayerNorm };
}
