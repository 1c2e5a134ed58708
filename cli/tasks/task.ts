/**
 * What the training loop of `deno task train` needs from a model family: a
 * {@link Task}. GPT (cli/tasks/gpt.ts) and BERT (cli/tasks/bert.ts) implement it.
 *
 * A task is made in two steps, so that data errors cost no device: first its
 * data and tokenizer are read ({@link TaskData}), then, once the device and
 * the parallel layers exist, the model is built ({@link TaskData.build}).
 * @module
 */

import type { ParamShape } from "../limits.ts";
import type { Module } from "../../core/nn.ts";
import type { StepLoss } from "../../models/trainer.ts";
import type { HasRngStreams } from "../../models/checkpoint/gpt.ts";
import type { ParallelLayers } from "../../models/parallel/layers.ts";
import type { RngTracker } from "../../models/parallel/random.ts";
import type { TransformerConfig, TransformerShape } from "../../models/shape.ts";
import type { StreamFingerprint } from "../same_data.ts";
import type { TrainArgs } from "../train_args.ts";
import { counted } from "../log.ts";

/**
 * The config of a Hugging Face checkpoint with this run's settings laid over it:
 * the shape comes from the checkpoint; dropout, the attention kernels and
 * activation recomputation from the flags (`run`). `train` checked the shape
 * against --tp and the sequence length against the position table before any
 * rank started (agreeWithModelSource).
 */
export function withRunSettings<C extends TransformerConfig>(hf: C, run: TransformerConfig): C {
  return {
    ...hf,
    hiddenDropout: run.hiddenDropout,
    attentionDropout: run.attentionDropout,
    fusedAttention: run.fusedAttention,
    recomputeActivations: run.recomputeActivations,
  };
}

/** A model the loop trains: a module with dropout streams and a padded vocabulary. */
export type TaskModel = Module & HasRngStreams & { readonly paddedVocab: number };

/** The `model` and `paddedRows` a checkpoint of the task is saved and loaded with. */
export interface TaskCheckpointInfo {
  /** Architecture, config and resolved shape. */
  model: { arch: string; config: object; shape: Record<string, number> };
  /** Tensors whose first dimension is padded past the vocabulary. */
  paddedRows: Record<string, number>;
}

/** What a built task gets from the loop. */
export interface TaskEnv {
  /** The parallel-layer factory (serial or tensor-parallel). */
  parallel: ParallelLayers;
  /** Dropout streams. */
  rng: RngTracker;
  /** Tensor-parallel rank. */
  tpRank: number;
  /** Data-parallel size. */
  dp: number;
  /**
   * Validation micro-batches (of `--micro-batch-size` rows) per evaluation:
   * `--eval-iters` global batches, as Megatron counts them, so that the
   * validation rows do not depend on how the global batch is split.
   */
  validationBatches: number;
}

/** A task's data, read before any device: tokenizer, corpus, splits. */
export interface TaskData<B> {
  /** Attention heads of the model to build (for the adapter-limit check before building). */
  readonly numHeads: number;
  /** Each head's width (for the same check). */
  readonly headDim: number;
  /** The sizes its parameters come from (for the host-memory check before building). */
  readonly paramShape: ParamShape;
  /**
   * With `--init-from-hf`: the std its weights were initialized with, where its
   * `config.json` says (`initializer_range`), which the run's checkpoints record.
   */
  readonly hfInitStd?: number;
  /**
   * Each token stream read, by a name that is the same on every node (not its
   * path), with its fingerprint: the ranks of a job compare them
   * (cli/same_data.ts). Computed when asked (a pass over all the data).
   */
  fingerprints(): Promise<Readonly<Record<string, StreamFingerprint>>>;
  /** Builds the model and samplers on `env`. */
  build(env: TaskEnv): Promise<Task<B>>;
}

/** Which rows of which batches one rank's loss covers (see {@link Task.loss}). */
export interface LossPart<B> {
  /** The first of this rank's rows of the batch. */
  lo: number;
  /** How many rows. */
  rows: number;
  /** Data-parallel ranks sharing the batch (1 for a validation batch one rank evaluates whole). */
  ranks: number;
  /**
   * Every global micro-batch of the step, the batch among them (the batch alone
   * for validation). A loss that averages over a varying count (BERT's masked
   * tokens) divides by the count over all of them, so that any split of the
   * global batch into micro-batches and ranks takes the same step.
   */
  step: readonly B[];
}

/**
 * A model family's training: its model, batches, loss and checkpoint facts.
 * `B` is the host-side batch type.
 */
export interface Task<B> {
  /** `"gpt"` or `"bert"`. */
  readonly name: string;
  /** The model. */
  readonly model: TaskModel;
  /** Its resolved shape. */
  readonly shape: TransformerShape;
  /** Share of tokens the vocabulary head runs on (FLOP count; BERT's MLM ~0.15). */
  readonly headShare: number;
  /**
   * The loss's name in the log lines: `lm loss` (GPT, whose perplexity the
   * validation lines give), `mlm+sop loss` (BERT's sum of both heads' losses,
   * whose parts, Megatron's `lm loss` and `sop loss`, the lines give instead).
   */
  readonly lossName: string;
  /** The next global micro-batch of the training sampler (every rank draws the same). */
  nextTrainBatch(): B;
  /** The validation batches of one evaluation (all of them; the loop splits them over DP). */
  readonly validation: readonly B[];
  /**
   * This rank's loss on `part` of `batch`: what the trainer averages over a
   * step's micro-batches and the data-parallel group averages over ranks.
   */
  loss(batch: B, part: LossPart<B>): Promise<StepLoss>;
  /** Rows of `batch`. */
  rowsOf(batch: B): number;
  /** The training sampler's state, for a checkpoint. */
  samplerState(): unknown;
  /** Restores a state saved by {@link Task.samplerState}. */
  restoreSampler(state: unknown): void;
  /** What checkpoints of this task carry. */
  readonly checkpointInfo: TaskCheckpointInfo;
  /** Lines for the startup log: data, model and where its weights come from. */
  describe(): string[];
  /** Writes files a checkpoint directory needs besides the checkpoint (e.g. BERT's vocabulary). */
  saveExtras(dir: string): Promise<void>;
  /** The report at the end of a completed run (every rank runs it; the logging one prints). */
  report(lastValLoss: number, args: TrainArgs, log: RankLog): Promise<void>;
}

/** Printing from a rank: only the logging rank (rank 0) prints. */
export interface RankLog {
  /** Whether this rank prints. */
  readonly isLogger: boolean;
  /** Prints a line on the logging rank. */
  say(s: string): void;
}

/** The startup line of a model: family, layer-norm placement, shape, parameters. */
export function modelLine(
  family: string,
  ln: string,
  s: TransformerShape,
  seqLength: number,
  params: number,
  recompute: boolean,
): string {
  return `model: ${family} (${ln}) ${counted(s.numLayers, "layer")}, hidden ${s.hiddenSize}, ` +
    `${counted(s.numHeads, "head")}, seq ${seqLength} | ${
      params.toLocaleString("en-US")
    } parameters` +
    (recompute ? " | activation recomputation" : "");
}

/** Parameters of the full model, all tensor-parallel shards together. */
export function fullParamCount(model: Module, tp: number): number {
  return model.namedParams().reduce(
    (s, [, p]) => s + p.tensor.size * (p.partitionDim === null ? 1 : tp),
    0,
  );
}
