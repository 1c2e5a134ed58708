/**
 * Messages between the page (web/app.ts) and its rank Workers (web/worker.ts).
 * @module
 */

import type { GptConfig } from "../models/gpt.ts";

/** A training run as the page configures it. */
export interface RunConfig {
  /** Transformer layers. */
  numLayers: number;
  /** Hidden size. */
  hiddenSize: number;
  /** Attention heads. */
  numHeads: number;
  /** Tokens per sequence. */
  seqLength: number;
  /** Sequences per step. */
  batch: number;
  /** Optimizer steps. */
  steps: number;
  /** Peak learning rate (linear warm-up, cosine decay to a tenth). */
  lr: number;
  /** Tensor-parallel size (one Worker per rank). */
  tp: number;
  /** Validate every this many steps (and at the end). */
  evalInterval: number;
  /** Validation batches. */
  evalIters: number;
  /** Sample every this many steps and after the last (0: after the last only; none after a Stop). */
  sampleInterval: number;
  /** Tokens per sample. */
  sampleTokens: number;
  /** Prompt of the samples. */
  prompt: string;
  /** Hidden dropout (attention dropout is 0, so every TP size draws the same masks). */
  dropout: number;
  /** Seed of weights, data order and dropout. */
  seed: number;
}

/** The first message to each Worker. */
export interface InitMessage {
  type: "init";
  /** This rank. */
  rank: number;
  /** The run. */
  config: RunConfig;
  /** The collectives' shared memory (the page's {@link Arena}). */
  memory: WebAssembly.Memory;
  /** URL of the corpus (bytes; the last tenth is validation). */
  corpusUrl: string;
  /** Stop word: the page sets element 0 to 1 to stop after the current step. */
  stop: Int32Array;
}

/** One parameter shard, as a Worker returns it for the checkpoint. */
export interface ShardMessage {
  /** Parameter name. */
  name: string;
  /** Split dimension, or null when replicated. */
  partitionDim: number | null;
  /** Fused blocks along it. */
  blocks: number;
  /** This rank's shape. */
  shape: number[];
  /** Values. */
  data: Float32Array;
}

/** What Workers post to the page (rank 0 posts all but `error`/`params`, which every rank may). */
export type WorkerEvent =
  | { type: "ready"; rank: number; adapter: string; params: number; msSetup: number }
  | {
    type: "step";
    step: number;
    loss: number;
    lr: number;
    gradNorm: number;
    ms: number;
    tokens: number;
  }
  | { type: "val"; step: number; loss: number }
  | { type: "sample-start"; step: number; prompt: string }
  | { type: "sample-token"; text: string }
  | { type: "sample-end" }
  | { type: "done"; rank: number; stopped: boolean; shards: ShardMessage[] }
  | { type: "error"; rank: number; message: string };

/** The GPT of a run (byte tokens: vocabulary 256; attention dropout 0). */
export function gptConfigOf(c: RunConfig): GptConfig {
  return {
    vocabSize: 256,
    numLayers: c.numLayers,
    hiddenSize: c.hiddenSize,
    numHeads: c.numHeads,
    maxPositions: c.seqLength,
    hiddenDropout: c.dropout,
    attentionDropout: 0,
  };
}

/**
 * What the page exposes about the current run, as `globalThis.megatron`
 * (read by the browser test, tests/browser/harness.ts).
 */
export interface RunState {
  config: RunConfig | null;
  adapter: string;
  params: number;
  losses: number[];
  val: { step: number; loss: number }[];
  msPerStep: number[];
  /** When (ms since the page was opened) the page's script ran, Train was pressed, the run's first step ended. */
  scriptAt: number;
  trainPressedAt: number;
  firstStepAt: number;
  /** The first run's first step, in ms since the page was opened. */
  pageToFirstStep: number;
  samples: string[];
  done: boolean;
  stopped: boolean;
  error: string | null;
}
