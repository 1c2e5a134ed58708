/**
 * The on-disk layout of a sharded checkpoint, in the spirit of Megatron's:
 *
 * ```
 * DIR/latest                         last complete iteration, as text ("100")
 * DIR/iter_0000100/checkpoint.json   config, parallel layout, tensor layout, trainer state
 * DIR/iter_0000100/model_tp00.safetensors       TP rank 0's model shard
 * DIR/iter_0000100/optimizer_tp00.safetensors   TP rank 0's AdamW moments (and step)
 * ```
 * @module
 */

import { join } from "node:path";
import { exists } from "./fs.ts";
import { CheckpointError } from "./safetensors.ts";

/** The format tag written into every checkpoint. */
export const CHECKPOINT_FORMAT = "webgpu-megatron-checkpoint";
/** Layout version. */
export const CHECKPOINT_VERSION = 1;
/** Name of the metadata file inside an iteration directory. */
export const META_FILE = "checkpoint.json";
/** Name of the pointer file. */
export const LATEST_FILE = "latest";

/** `iter_0000100` for iteration 100. */
export function iterDirName(iteration: number): string {
  return `iter_${String(iteration).padStart(7, "0")}`;
}

/** The model shard of TP rank `r`. */
export function modelFileName(r: number): string {
  return `model_tp${String(r).padStart(2, "0")}.safetensors`;
}

/** The optimizer shard of TP rank `r`. */
export function optimizerFileName(r: number): string {
  return `optimizer_tp${String(r).padStart(2, "0")}.safetensors`;
}

/** Optimizer tensor names: first and second moments of parameter `name`. */
export function momentNames(name: string): { m: string; v: string } {
  return { m: `${name}.exp_avg`, v: `${name}.exp_avg_sq` };
}

/** Per-tensor layout entry in `checkpoint.json`. */
export interface TensorLayout {
  /** Parameter name. */
  name: string;
  /** Shard shape (identical on every rank). */
  shape: number[];
  /** Split dimension, or null when replicated. */
  partitionDim: number | null;
  /** Fused blocks along the split dimension. */
  partitionBlocks: number;
}

/** The contents of `checkpoint.json`. */
export interface CheckpointMeta {
  /** Always {@link CHECKPOINT_FORMAT}. */
  format: string;
  /** Layout version. */
  version: number;
  /** Optimizer steps done when saved. */
  iteration: number;
  /** Parallel layout of the run that saved it. */
  parallel: { tp: number; dp: number };
  /** Model architecture and config, as the trainer passed them. */
  model: { arch: string; config: Record<string, unknown> } | null;
  /** Tensors whose dim 0 is padded past a number of meaningful rows (padded vocabulary). */
  paddedRows: Record<string, number>;
  /** Every model tensor, in parameter order. */
  tensors: TensorLayout[];
  /** AdamW state summary, or null when no optimizer state was saved. */
  optimizer: {
    step: number;
    beta1: number;
    beta2: number;
    eps: number;
    weightDecay: number;
    /** Parameters that have moments. */
    withMoments: string[];
  } | null;
  /** Trainer state passed by the caller (consumed tokens, schedule, sampler, RNG …). */
  state: Record<string, unknown>;
}

/**
 * The iteration `latest` points at, or null when there is none (no checkpoint yet).
 */
export async function readLatest(dir: string): Promise<number | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, LATEST_FILE));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const it = Number(text.trim());
  if (!Number.isInteger(it) || it < 0) {
    throw new CheckpointError(
      `${join(dir, LATEST_FILE)}: expected an iteration number, got "${text.trim()}"`,
    );
  }
  return it;
}

/**
 * The directory of `iteration` (default: `latest`). A directory set aside while the
 * same iteration was being re-saved (`.old`) is used if the new one never landed.
 */
export async function resolveIterDir(
  dir: string,
  iteration?: number,
): Promise<{ iteration: number; path: string }> {
  const it = iteration ?? await readLatest(dir);
  if (it === null) {
    throw new CheckpointError(
      `${dir}: no checkpoint (no "${LATEST_FILE}" file); pass a directory written by --save`,
    );
  }
  const path = join(dir, iterDirName(it));
  if (await exists(join(path, META_FILE))) return { iteration: it, path };
  if (await exists(join(`${path}.old`, META_FILE))) return { iteration: it, path: `${path}.old` };
  throw new CheckpointError(
    `${path}: checkpoint of iteration ${it} is missing or incomplete (no ${META_FILE})`,
  );
}

/** Reads and checks `checkpoint.json` of an iteration directory. */
export async function readMeta(iterPath: string): Promise<CheckpointMeta> {
  const file = join(iterPath, META_FILE);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CheckpointError(`${file}: no such file`);
    throw new CheckpointError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (meta?.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(`${file}: not a ${CHECKPOINT_FORMAT} file`);
  }
  if (meta.version !== CHECKPOINT_VERSION) {
    throw new CheckpointError(
      `${file}: layout version ${meta.version} is not supported (want ${CHECKPOINT_VERSION})`,
    );
  }
  return meta;
}
