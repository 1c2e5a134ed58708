/**
 * Adapter limits named as flags. Most tensors are bound in windows past
 * `maxStorageBufferBindingSize` (core/windows.ts), but unfused attention's
 * scores of a micro-batch (`micro-batch × heads per rank × seq²` floats; with
 * `--no-flash-attn`, or where the fused kernels cannot run) are one binding: a
 * `--seq-length` too long for the adapter is refused before the first step,
 * with the flags and the limit named, instead of failing inside a kernel.
 * @module
 */

import type { Device } from "../core/device.ts";
import { readEnv } from "../core/env.ts";
import { RunError } from "./errors.ts";
import { UsageError } from "./flags.ts";
import { defaultFfnHiddenSize } from "../models/shape.ts";

/** `n` bytes, in MiB or GiB. */
function size(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(0)} MiB` : `${(n / 2 ** 10).toFixed(0)} KiB`;
}

/** The shape of the attention a micro-batch computes on one rank. */
export interface AttentionShape {
  /** Sequences per micro-batch on this rank. */
  microBatch: number;
  /** Attention heads on this rank (heads / tensor-parallel size). */
  headsPerRank: number;
  /** Tokens per sequence. */
  seqLength: number;
}

/**
 * Throws a {@link RunError} naming `--seq-length`, `--micro-batch-size` and the
 * adapter's binding limit when the unfused attention scores of one micro-batch
 * do not fit one storage binding of `device` (the fused kernels hold none). It leads with the sequence length when
 * even one sequence is too long, else with the micro-batch size.
 */
export function checkAttentionFits(device: Device, s: AttentionShape): void {
  const limit = device.maxBindingBytes;
  const perSequence = 4 * s.headsPerRank * s.seqLength ** 2;
  const bytes = s.microBatch * perSequence;
  if (bytes <= limit) return;
  const scores = `the attention scores of a micro-batch (--micro-batch-size ${s.microBatch} × ` +
    `${s.headsPerRank} heads per rank × ${s.seqLength}² floats) take ${size(bytes)}, over its ` +
    `${size(limit)} per binding (maxStorageBufferBindingSize)`;
  const largestBatch = Math.floor(limit / perSequence);
  if (largestBatch >= 1) {
    throw new RunError(
      `--micro-batch-size ${s.microBatch} is too large for this adapter at --seq-length ` +
        `${s.seqLength}: ${scores}; use --micro-batch-size ≤ ${largestBatch} (reach a larger ` +
        "batch with --global-batch-size, which accumulates micro-batches)",
    );
  }
  const longest = Math.floor(Math.sqrt(limit / (4 * s.microBatch * s.headsPerRank)));
  throw new RunError(
    `--seq-length ${s.seqLength} is too long for this adapter: ${scores}; use ` +
      `--seq-length ≤ ${longest} at this batch, a smaller --micro-batch-size, or more ` +
      "--tensor-model-parallel-size",
  );
}

const LIMIT_MESSAGES =
  /maxStorageBufferBindingSize|maxBufferSize|maxComputeWorkgroupsPerDimension|past what a software adapter computes/;

/**
 * A {@link RunError} naming the size flags for an adapter limit hit inside a
 * kernel (`e`'s message says which limit), or null for any other error.
 */
export function limitError(
  e: unknown,
  s: { microBatch: number; seqLength: number },
): RunError | null {
  if (!(e instanceof Error) || !LIMIT_MESSAGES.test(e.message)) return null;
  return new RunError(
    `a tensor of this model is past an adapter limit at --seq-length ${s.seqLength} and ` +
      `--micro-batch-size ${s.microBatch}; lower them (or --hidden-size, or raise ` +
      `--tensor-model-parallel-size). The kernel said: ${e.message.replace(/\s*\n\s*/g, " ")}`,
  );
}

/** `run()`, with an adapter limit hit inside a kernel reported as the size flags to lower ({@link limitError}). */
export async function withinLimits<T>(
  run: () => Promise<T>,
  sizes: { microBatch: number; seqLength: number },
): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw limitError(e, sizes) ?? e;
  }
}

/**
 * `build()` (making the model and its optimizer state), with an adapter limit
 * hit by a parameter reported as the shape flags to lower, instead of as a bug.
 */
export async function modelWithinLimits<T>(build: () => Promise<T>): Promise<T> {
  try {
    return await build();
  } catch (e) {
    if (!(e instanceof Error) || !LIMIT_MESSAGES.test(e.message)) throw e;
    throw new RunError(
      "a parameter of this model is past an adapter limit; lower --hidden-size, " +
        "--ffn-hidden-size, --max-position-embeddings or the vocabulary, or raise " +
        "--tensor-model-parallel-size. " +
        `The device said: ${e.message.replace(/\s*\n\s*/g, " ")}`,
    );
  }
}

/**
 * Host memory one rank takes besides its model on a software adapter: a Worker
 * with its device, measured at about 140 MB a rank (293 MB for a one-rank
 * training process of a tiny model, 435 MB for two ranks, 721 MB for four).
 */
export const RANK_HOST_BYTES = 128 * 2 ** 20;

/** Bytes a parameter takes in training at the least: its f32 weight and gradient, AdamW's two moments. */
export const TRAINING_BYTES_PER_PARAM = 16;

/** The sizes that make up a transformer's parameters. */
export interface ParamShape {
  /** Vocabulary rows (the tokenizer's, before padding). */
  vocab: number;
  /** Hidden size. */
  hidden: number;
  /** Layers. */
  layers: number;
  /** MLP inner size. */
  ffn: number;
  /** Position-table rows. */
  positions: number;
}

/**
 * At least the parameters one of `tp` ranks holds: each layer's attention and
 * MLP weights (4·h² + 2·h·ffn) and the vocabulary table split `tp` ways, the
 * position table whole; biases and norms left out (a lower bound).
 */
export function paramsPerRankAtLeast(s: ParamShape, tp: number): number {
  const split = s.layers * (4 * s.hidden ** 2 + 2 * s.hidden * s.ffn) + s.vocab * s.hidden;
  return split / tp + s.positions * s.hidden;
}

/**
 * Why `ranks` ranks of a model of shape `s` split `tp` ways cannot train on a
 * host with `availableBytes` of memory available whose adapter is a software
 * one (device memory is host memory), in terms of the flags (`ranksFlag` sets
 * the count of ranks); null when they may. A lower bound: a run refused would
 * have been killed for memory, mid-build, after minutes.
 */
export function hostMemoryMisfit(
  s: ParamShape,
  tp: number,
  ranks: number,
  availableBytes: number,
  ranksFlag = "--nproc-per-node",
): string | null {
  const model = TRAINING_BYTES_PER_PARAM * paramsPerRankAtLeast(s, tp);
  const need = ranks * (model + RANK_HOST_BYTES);
  if (need <= availableBytes) return null;
  const each = `${size(model)} of weights, gradients and AdamW moments + ${
    size(RANK_HOST_BYTES)
  } for its device`;
  return `this run needs at least ${size(need)} of memory (${ranks} rank${
    ranks === 1 ? "" : "s"
  } × (${each})), more than the ${size(availableBytes)} available on this machine, where the ` +
    `adapter is a software one whose device memory is host memory: use a smaller model ` +
    `(--num-layers, --hidden-size)${ranks > 1 ? ` or fewer ranks (${ranksFlag})` : ""}`;
}

/**
 * Why `ranks` ranks cannot start on a host with `availableBytes` of memory
 * available, their devices alone ({@link RANK_HOST_BYTES} each) passing it; null
 * when they may.
 */
export function rankCountMisfit(
  ranks: number,
  availableBytes: number,
  ranksFlag = "--nproc-per-node",
): string | null {
  const need = ranks * RANK_HOST_BYTES;
  if (need <= availableBytes) return null;
  return `${ranks} ranks need at least ${size(need)} of memory for their devices alone ` +
    `(${size(RANK_HOST_BYTES)} each), more than the ${
      size(availableBytes)
    } available on this machine: use fewer (${ranksFlag})`;
}

/**
 * The memory this host has available now (Linux's MemAvailable: free, and
 * caches it can drop), or undefined where the program may not read it (no
 * --allow-sys). Not its total: what the kernel and other processes hold is not
 * the run's (GPT-2 XL's 25.04 GB lower bound passed a 25.28 GB total and was
 * killed for memory).
 */
export function hostMemoryBytes(): number | undefined {
  // Asked first: run by URL with only --allow-sys=hostname it stopped at a prompt on a terminal.
  if (
    Deno.permissions.querySync({ name: "sys", kind: "systemMemoryInfo" }).state !== "granted"
  ) return undefined;
  try {
    return Deno.systemMemoryInfo().available;
  } catch {
    return undefined;
  }
}

/**
 * The tasks Slurm runs on this node: the entry of `SLURM_STEP_TASKS_PER_NODE`
 * (else `SLURM_TASKS_PER_NODE`) for `SLURM_NODEID`, a list such as `2(x3),1`
 * (2 tasks on each of 3 nodes, then 1); undefined outside Slurm or unreadable.
 */
export function slurmTasksOnNode(env: Record<string, string | undefined>): number | undefined {
  const list = env.SLURM_STEP_TASKS_PER_NODE ?? env.SLURM_TASKS_PER_NODE;
  if (list === undefined) return undefined;
  const node = Number(env.SLURM_NODEID ?? 0);
  if (!Number.isInteger(node) || node < 0) return undefined;
  let at = 0;
  for (const entry of list.split(",")) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(entry.trim());
    if (!m) return undefined;
    at += m[2] === undefined ? 1 : Number(m[2]);
    if (node < at) return Number(m[1]);
  }
  return undefined;
}

/**
 * The ranks sharing this host's memory: `inProcess` (this process's Workers),
 * or more where a launcher says how many run on the host (torchrun's and this
 * project's `--launcher procs`' `LOCAL_WORLD_SIZE`, Open MPI's
 * `OMPI_COMM_WORLD_LOCAL_SIZE`, Slurm's tasks on this node,
 * {@link slurmTasksOnNode}), each rank process holding one.
 */
export function ranksSharingHost(inProcess: number): number {
  const names = [
    "LOCAL_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_TASKS_PER_NODE",
    "SLURM_NODEID",
  ];
  // Unreadable (a library program without --allow-env): as if unset, this process's count.
  const env = Object.fromEntries(names.map((name) => [name, readEnv(name)]));
  const counts = [
    Number(env.LOCAL_WORLD_SIZE),
    Number(env.OMPI_COMM_WORLD_LOCAL_SIZE),
    slurmTasksOnNode(env) ?? NaN,
  ];
  return Math.max(inProcess, ...counts.filter((v) => Number.isInteger(v)));
}

/** The {@link ParamShape} of a model config (its vocabulary as configured, before padding). */
export function paramShapeOf(c: {
  vocabSize: number;
  numLayers: number;
  hiddenSize: number;
  ffnHiddenSize?: number;
  maxPositions: number;
}): ParamShape {
  return {
    vocab: c.vocabSize,
    hidden: c.hiddenSize,
    layers: c.numLayers,
    ffn: c.ffnHiddenSize ?? defaultFfnHiddenSize(c.hiddenSize),
    positions: c.maxPositions,
  };
}

/**
 * Refuses ({@link UsageError}), before the model is built, `ranks` ranks of a
 * model of shape `s` split `tp` ways on a software adapter (`device`'s), whose
 * device memory is host memory, when they cannot fit it
 * ({@link hostMemoryMisfit}). A GPU's own memory is not known here: nothing is
 * checked on one, nor where the program may not read the host's memory.
 */
export function checkModelFitsHost(
  device: Device,
  s: ParamShape,
  tp: number,
  ranks: number,
  ranksFlag?: string,
): void {
  if (!device.isSoftware) return;
  const available = hostMemoryBytes();
  if (available === undefined) return;
  const misfit = hostMemoryMisfit(s, tp, ranks, available, ranksFlag);
  if (misfit) throw new UsageError(misfit);
}

/**
 * Refuses ({@link UsageError}) `ranks` ranks on this host whose devices alone
 * (a Worker with its device, {@link RANK_HOST_BYTES} each) pass its memory, before
 * any starts; the model is checked once each rank has its adapter
 * ({@link checkModelFitsHost}).
 */
export function checkRankCount(ranks: number, ranksFlag?: string): void {
  const available = hostMemoryBytes();
  if (available === undefined) return;
  const misfit = rankCountMisfit(ranks, available, ranksFlag);
  if (misfit) throw new UsageError(misfit);
}
