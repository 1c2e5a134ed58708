/**
 * Crash-safe saving of a sharded checkpoint. Every TP rank writes its own model and
 * optimizer shard into a temporary directory (fsynced); after a barrier, rank 0
 * writes `checkpoint.json`, renames the directory into place, and only then
 * replaces `latest` (temporary file + rename). A kill at any moment leaves the
 * previous checkpoint complete and `latest` pointing at it. Each rank leaves the
 * size and SHA-256 of its files in a temporary `digests_tpNN.json`; rank 0 moves
 * them into `checkpoint.json` (`files`), and loading checks them.
 * @module
 */

import { join } from "node:path";
import type { ParamInfo } from "../../core/nn.ts";
import type { AdamW } from "../../core/optim.ts";
import type { Tensor } from "../../core/tensor.ts";
import { exists, replaceFileAtomic, syncDir, writeFileDurable } from "./fs.ts";
import {
  asideDirName,
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  type CheckpointMeta,
  isStagingDirName,
  iterDirName,
  LATEST_FILE,
  META_FILE,
  modelFileName,
  momentNames,
  optimizerFileName,
  readLatest,
  stagingDirName,
  TRACKER_FILE,
} from "./layout.ts";
import {
  CheckpointError,
  type FileDigest,
  type SafeTensorLater,
  writeSafetensorsStreamed,
} from "./safetensors.ts";

/** The temporary file where TP rank `r` leaves its files' digests for rank 0. */
function digestFileName(r: number): string {
  return `digests_tp${String(r).padStart(2, "0")}.json`;
}

/** Points in a save where a test may inject a crash. */
export type SaveStage =
  | "dir-ready"
  | "model-written"
  | "optimizer-written"
  | "shards-done"
  | "meta-written"
  | "renamed"
  | "latest-written";

/** What {@link saveCheckpoint} needs. */
export interface SaveOptions {
  /** Optimizer steps done (names the directory). */
  iteration: number;
  /** This rank's parameters (`Module.namedParams()`); names equal on every rank. */
  params: readonly [string, ParamInfo][];
  /** The optimizer whose moments and step to save (omit to save the model only). */
  optimizer?: AdamW;
  /** Tensor-parallel size (default 1). */
  tp?: number;
  /** This rank in its TP group (default 0). */
  tpRank?: number;
  /** Data-parallel size (default 1); only data-parallel rank 0 writes. */
  dp?: number;
  /** This rank in its data-parallel group (default 0). */
  dpRank?: number;
  /** Architecture and config, checked when loading and used by export/eval. */
  model?: { arch: string; config: object; shape?: Record<string, number> };
  /** Tensors whose dim 0 is padded past a count of meaningful rows (padded vocabulary). */
  paddedRows?: Record<string, number>;
  /**
   * Trainer state (consumed tokens, LR schedule, sampler state, RNG offsets …),
   * any JSON; rank 0's copy is written.
   */
  state?: Record<string, unknown>;
  /** Waits for every rank of the job (required when tp·dp > 1). */
  barrier?: () => Promise<void>;
  /** Called after each stage; tests use it to simulate a crash. */
  faultHook?: (stage: SaveStage) => void | Promise<void>;
  /** Called as the save goes: `(done, total)` stages (for a progress bar). */
  progress?: (done: number, total: number) => void;
  /**
   * Bytes of values read back from the device at once (default
   * {@link SAVE_READ_BATCH_BYTES}; a larger tensor is read alone).
   */
  readBatchBytes?: number;
}

async function readAll(tensors: readonly Tensor[]): Promise<Float32Array[]> {
  if (tensors.length === 0) return [];
  const device = tensors[0].device;
  const bufs = await device.readMany(tensors.map((t) => t.binding));
  return bufs.map((b) => new Float32Array(b));
}

/**
 * Bytes of values a save reads back from the device at once (a larger tensor
 * is read alone). Reading every tensor at once, then encoding the whole file,
 * held the model twice on the host, and its moments twice more: GPT-2 small's
 * training at 4.6 GB peaked at 8.1 GB while it saved.
 */
export const SAVE_READ_BATCH_BYTES = 64 * 2 ** 20;

/**
 * The values of item `i` of `sizes.length` (each `sizes[i]` bytes), read by
 * `read(from, to)` in batches of about `most` bytes as a writer asks for them
 * in order; a batch is let go when the next is read.
 */
function batchedReader<T>(
  sizes: readonly number[],
  read: (from: number, to: number) => Promise<T[]>,
  most: number,
): (i: number) => Promise<T> {
  let batch: T[] = [];
  let start = 0;
  return async (i) => {
    if (i < start || i >= start + batch.length) {
      let end = i + 1, bytes = sizes[i];
      while (end < sizes.length && bytes + sizes[end] <= most) {
        bytes += sizes[end++];
      }
      batch = [];
      batch = await read(i, end);
      start = i;
    }
    return batch[i - start];
  };
}

async function removeStaleTemps(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory && isStagingDirName(e.name)) {
      await Deno.remove(join(dir, e.name), { recursive: true });
    }
  }
}

/**
 * Saves a checkpoint of `opts.iteration` into `dir` (see the module doc for the
 * protocol). Every rank of the job calls it; it returns when the checkpoint is
 * complete and `latest` names it. Returns the iteration directory.
 */
export async function saveCheckpoint(dir: string, opts: SaveOptions): Promise<string> {
  const tp = opts.tp ?? 1, dp = opts.dp ?? 1;
  if (!Number.isInteger(opts.iteration) || opts.iteration < 0) {
    throw new CheckpointError(`checkpoint iteration must be an integer ≥ 0, got ${opts.iteration}`);
  }
  if (tp * dp > 1 && !opts.barrier) {
    throw new CheckpointError(`saving with tp ${tp} × dp ${dp} ranks needs a barrier callback`);
  }
  try {
    return await writeCheckpoint(dir, opts);
  } catch (e) {
    // A failed save (a full disk, a file system gone read-only) leaves no partial
    // directory behind, and says which checkpoint still stands.
    if ((opts.tpRank ?? 0) === 0 && (opts.dpRank ?? 0) === 0) {
      const tmp = join(dir, stagingDirName(opts.iteration));
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
    const last = await readLatest(dir).catch(() => null);
    throw new CheckpointError(
      `saving the checkpoint of iteration ${opts.iteration} in ${dir} failed: ` +
        `${(e as Error).message}; ` +
        (last === null
          ? "no complete checkpoint is there"
          : `the last complete one, iteration ${last}, still stands`),
    );
  }
}

/** {@link saveCheckpoint}'s work, its arguments checked. */
async function writeCheckpoint(dir: string, opts: SaveOptions): Promise<string> {
  const tp = opts.tp ?? 1, tpRank = opts.tpRank ?? 0;
  const dp = opts.dp ?? 1, dpRank = opts.dpRank ?? 0;
  const barrier = opts.barrier ?? (() => Promise.resolve());
  const hook = opts.faultHook ?? (() => {});
  const stages = opts.optimizer ? 4 : 3;
  let stage = 0;
  const step = () => opts.progress?.(++stage, stages);
  opts.progress?.(0, stages);
  const leader = tpRank === 0 && dpRank === 0;
  const writer = dpRank === 0;
  const finalPath = join(dir, iterDirName(opts.iteration));
  const tmpPath = join(dir, stagingDirName(opts.iteration));

  if (leader) {
    await Deno.mkdir(dir, { recursive: true });
    await removeStaleTemps(dir);
    await Deno.mkdir(tmpPath);
    await hook("dir-ready");
  }
  await barrier();

  const opt = opts.optimizer;
  const withMoments = opt
    ? opts.params.filter(([, p]) => opt.hasMoments(p.tensor)).map(([n]) => n)
    : [];
  if (writer) {
    const batchBytes = opts.readBatchBytes ?? SAVE_READ_BATCH_BYTES;
    const fileMeta = {
      format: CHECKPOINT_FORMAT,
      iteration: String(opts.iteration),
      tp: String(tp),
      tp_rank: String(tpRank),
    };
    const tensors = opts.params.map(([, p]) => p.tensor);
    const valuesOf = batchedReader(
      tensors.map((t) => 4 * t.size),
      (from, to) => readAll(tensors.slice(from, to)),
      batchBytes,
    );
    const model: SafeTensorLater[] = opts.params.map(([name, p], i) => ({
      name,
      shape: p.tensor.shape,
      values: () => valuesOf(i),
    }));
    const digests: Record<string, FileDigest> = {};
    step();
    digests[modelFileName(tpRank)] = await writeSafetensorsStreamed(
      join(tmpPath, modelFileName(tpRank)),
      model,
      fileMeta,
    );
    step();
    await hook("model-written");
    if (opt) {
      const byName = new Map(opts.params);
      const owners = withMoments.map((n) => byName.get(n)!.tensor);
      const momentsOf = batchedReader(
        owners.map((t) => 8 * t.size),
        (from, to) => opt.readMoments(owners.slice(from, to)),
        batchBytes,
      );
      const out: SafeTensorLater[] = [];
      withMoments.forEach((n, i) => {
        const shape = owners[i].shape;
        const mn = momentNames(n);
        out.push(
          { name: mn.m, shape, values: async () => (await momentsOf(i)).m },
          { name: mn.v, shape, values: async () => (await momentsOf(i)).v },
        );
      });
      digests[optimizerFileName(tpRank)] = await writeSafetensorsStreamed(
        join(tmpPath, optimizerFileName(tpRank)),
        out,
        { ...fileMeta, step: String(opt.step) },
      );
      step();
      await hook("optimizer-written");
    }
    // Rank 0 gathers every rank's digests into checkpoint.json after the barrier.
    await writeFileDurable(
      join(tmpPath, digestFileName(tpRank)),
      new TextEncoder().encode(JSON.stringify(digests)),
    );
  }
  await barrier();

  if (leader) {
    await syncDir(tmpPath);
    await hook("shards-done");
    const files: Record<string, FileDigest> = {};
    for (let r = 0; r < tp; r++) {
      const p = join(tmpPath, digestFileName(r));
      Object.assign(files, JSON.parse(await Deno.readTextFile(p)));
      await Deno.remove(p);
    }
    const meta: CheckpointMeta = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      iteration: opts.iteration,
      parallel: { tp, dp },
      model: opts.model
        ? {
          arch: opts.model.arch,
          config: { ...opts.model.config },
          ...(opts.model.shape ? { shape: { ...opts.model.shape } } : {}),
        }
        : null,
      paddedRows: opts.paddedRows ?? {},
      tensors: opts.params.map(([name, p]) => ({
        name,
        shape: [...p.tensor.shape],
        partitionDim: p.partitionDim,
        partitionBlocks: p.partitionBlocks,
      })),
      optimizer: opt
        ? {
          step: opt.step,
          beta1: opt.beta1,
          beta2: opt.beta2,
          eps: opt.eps,
          weightDecay: opt.weightDecay,
          withMoments,
        }
        : null,
      state: opts.state ?? {},
      files,
    };
    const json = new TextEncoder().encode(JSON.stringify(meta, null, 1) + "\n");
    await writeFileDurable(join(tmpPath, META_FILE), json);
    await syncDir(tmpPath);
    await hook("meta-written");
    // Re-saving an iteration: set the old copy aside first (the loader falls back to it).
    const aside = join(dir, asideDirName(opts.iteration));
    const hadOld = await exists(finalPath);
    if (hadOld) {
      if (await exists(aside)) await Deno.remove(aside, { recursive: true });
      await Deno.rename(finalPath, aside);
    }
    await Deno.rename(tmpPath, finalPath);
    await syncDir(dir);
    if (hadOld) await Deno.remove(aside, { recursive: true });
    await hook("renamed");
    await replaceFileAtomic(
      join(dir, LATEST_FILE),
      new TextEncoder().encode(`${opts.iteration}\n`),
    );
    // Megatron's tools read the tracker file.
    await replaceFileAtomic(
      join(dir, TRACKER_FILE),
      new TextEncoder().encode(`${opts.iteration}`),
    );
    await hook("latest-written");
  }
  await barrier();
  opts.progress?.(stages, stages);
  return finalPath;
}
