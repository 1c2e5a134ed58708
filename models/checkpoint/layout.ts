/**
 * The on-disk layout of a sharded checkpoint, in the spirit of Megatron's:
 *
 * ```
 * DIR/latest                         last complete iteration, as text ("100")
 * DIR/latest_checkpointed_iteration.txt   the same, under Megatron's name (read when
 *                                    `latest` is absent, e.g. in a Megatron-style directory)
 * DIR/iter_0000100/checkpoint.json   config, parallel layout, tensor layout, trainer state,
 *                                    size and SHA-256 of every file
 * DIR/iter_0000100/model_tp00.safetensors       TP rank 0's model shard
 * DIR/iter_0000100/optimizer_tp00.safetensors   TP rank 0's AdamW moments (and step)
 * ```
 * @module
 */

import { basename, dirname, join } from "node:path";
import { readJsonObject, readSmallFile } from "./files.ts";
import { exists } from "./fs.ts";
import { CheckpointError, type FileDigest } from "./safetensors.ts";

/** The format tag written into every checkpoint. */
export const CHECKPOINT_FORMAT = "webgpu-megatron-checkpoint";
/** Layout version. */
export const CHECKPOINT_VERSION = 1;
/** Name of the metadata file inside an iteration directory. */
export const META_FILE = "checkpoint.json";
/** Name of the pointer file. */
export const LATEST_FILE = "latest";
/** Megatron's name of the pointer file ("tracker file"), written beside {@link LATEST_FILE}. */
export const TRACKER_FILE = "latest_checkpointed_iteration.txt";

/** `iter_0000100` for iteration 100. */
export function iterDirName(iteration: number): string {
  return `iter_${String(iteration).padStart(7, "0")}`;
}

/** The iteration an {@link iterDirName} names (100 for `iter_0000100`), or null for other names. */
export function iterationOfDirName(name: string): number | null {
  const m = /^iter_(\d{7,})$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** Suffix of the folder a save writes an iteration into before renaming it into place. */
const STAGING_SUFFIX = ".tmp";
/** Suffix of the folder a re-save sets the iteration's previous copy aside in. */
const ASIDE_SUFFIX = ".old";

/**
 * The folder a save writes iteration `iteration` into before renaming it to its
 * {@link iterDirName} (`iter_0000100.tmp`); one left behind is a killed save's.
 */
export function stagingDirName(iteration: number): string {
  return iterDirName(iteration) + STAGING_SUFFIX;
}

/** Whether `name` is a {@link stagingDirName} (of any iteration). */
export function isStagingDirName(name: string): boolean {
  return name.endsWith(STAGING_SUFFIX) &&
    iterationOfDirName(name.slice(0, -STAGING_SUFFIX.length)) !== null;
}

/**
 * Where re-saving iteration `iteration` sets its previous copy aside until the new
 * one is in place (`iter_0000100.old`); {@link resolveIterDir} falls back to it.
 */
export function asideDirName(iteration: number): string {
  return iterDirName(iteration) + ASIDE_SUFFIX;
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
  /**
   * Model architecture and config, as the trainer passed them, and the resolved
   * shape (every default filled in; absent in checkpoints saved before it was kept).
   */
  model: {
    arch: string;
    config: Record<string, unknown>;
    shape?: Record<string, number>;
  } | null;
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
  /**
   * Size and SHA-256 of every shard file, by file name; checked on load. Absent in
   * checkpoints written before checksums existed (loaded with a warning).
   */
  files?: Record<string, FileDigest>;
}

/**
 * The iteration the pointer file names: `latest`, else Megatron's tracker file
 * `latest_checkpointed_iteration.txt`; null when there is neither (no checkpoint yet).
 */
export async function readLatest(dir: string): Promise<number | null> {
  const info = await Deno.stat(dir).catch((e) => {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  });
  if (info === null) return null;
  if (!info.isDirectory) {
    throw new CheckpointError(
      `${dir} is a file, not a checkpoint directory (one written by --save)`,
    );
  }
  for (const name of [LATEST_FILE, TRACKER_FILE]) {
    const file = join(dir, name);
    if (!await exists(file)) continue;
    const text = new TextDecoder().decode(await readSmallFile(file, file, 4096)).trim();
    const it = Number(text);
    if (text === "" || !Number.isInteger(it) || it < 0) {
      throw new CheckpointError(
        `${file}: expected an iteration number, got ${JSON.stringify(text.slice(0, 40))}` +
          (text === "release" ? " (a Megatron release checkpoint: convert it first)" : ""),
      );
    }
    return it;
  }
  return null;
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
    const trimmed = dir.replace(/\/+$/, "");
    const one = iterationOfDirName(basename(trimmed));
    throw new CheckpointError(
      one !== null && await exists(join(dir, META_FILE))
        ? `${dir} is one iteration of a checkpoint: pass its directory, ` +
          `${dirname(trimmed)}, with --iteration ${one}`
        : `${dir}: no checkpoint (no "${LATEST_FILE}" or "${TRACKER_FILE}" file); ` +
          `pass a directory written by --save`,
    );
  }
  const path = join(dir, iterDirName(it));
  if (await exists(join(path, META_FILE))) return { iteration: it, path };
  const aside = join(dir, asideDirName(it));
  if (await exists(join(aside, META_FILE))) return { iteration: it, path: aside };
  const saved = await savedIterations(dir);
  throw new CheckpointError(
    `${path}: checkpoint of iteration ${it} is missing or incomplete (no ${META_FILE})` +
      (iteration !== undefined && saved.length > 0
        ? `; ${dir} holds iteration${saved.length > 1 ? "s" : ""} ${saved.join(", ")}`
        : ""),
  );
}

/** The iterations of `dir` whose directories are complete (hold their `checkpoint.json`), ascending. */
async function savedIterations(dir: string): Promise<number[]> {
  const out: number[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const it = e.isDirectory ? iterationOfDirName(e.name) : null;
      if (it !== null && await exists(join(dir, e.name, META_FILE))) out.push(it);
    }
  } catch {
    return []; // unreadable: the message names the iteration asked for only
  }
  return out.sort((a, b) => a - b);
}

/** Reads and checks `checkpoint.json` of an iteration directory. */
export async function readMeta(iterPath: string): Promise<CheckpointMeta> {
  const file = join(iterPath, META_FILE);
  const meta = await readJsonObject(file) as unknown as CheckpointMeta;
  if (meta?.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(`${file}: not a ${CHECKPOINT_FORMAT} file`);
  }
  if (meta.files !== undefined) {
    const ok = meta.files !== null && typeof meta.files === "object" &&
      Object.values(meta.files).every((d) =>
        d !== null && typeof d === "object" && Number.isSafeInteger(d.bytes) &&
        typeof d.sha256 === "string" && /^[0-9a-f]{64}$/.test(d.sha256)
      );
    if (!ok) throw new CheckpointError(`${file}: "files" is not a map of {bytes, sha256}`);
  }
  if (meta.version !== CHECKPOINT_VERSION) {
    throw new CheckpointError(
      `${file}: layout version ${meta.version} is not supported (want ${CHECKPOINT_VERSION})`,
    );
  }
  return meta;
}
