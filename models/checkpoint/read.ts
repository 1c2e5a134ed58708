/**
 * Reads a whole sharded checkpoint on one host: every TP rank's model (and,
 * optionally, optimizer) shard, checked against `checkpoint.json`, joined into
 * full tensors, either when asked for one at a time ({@link openCheckpoint}) or
 * all at once ({@link readCheckpointFull}). Needs no GPU (export and resharding
 * use it).
 * @module
 */

import { join } from "node:path";
import {
  type CheckpointMeta,
  iterDirName,
  META_FILE,
  modelFileName,
  momentNames,
  optimizerFileName,
  readMeta,
  resolveIterDir,
} from "./layout.ts";
import { CheckpointError, SafetensorsFile } from "./safetensors.ts";
import {
  type HostTensor,
  joinShards,
  lazySource,
  readTensors,
  sameShape,
  type TensorSource,
} from "./shard.ts";

/** A checkpoint joined into full (unsharded) tensors. */
export interface FullCheckpoint {
  /** Its iteration. */
  iteration: number;
  /** Its iteration directory. */
  path: string;
  /** The parsed `checkpoint.json`. */
  meta: CheckpointMeta;
  /** Full model tensors by parameter name. */
  tensors: Map<string, HostTensor>;
  /** Full AdamW moments by parameter name (when requested and present). */
  moments: Map<string, { m: HostTensor; v: HostTensor }> | null;
  /** The file each tensor came from (rank 0's shard), for messages. */
  fileOf: (name: string) => string;
}

/**
 * A checkpoint opened ({@link openCheckpoint}): every file's size, checksum and
 * header checked, each full tensor read from the ranks' files and joined when asked
 * for, so a reader holds one full tensor at a time.
 */
export interface OpenedCheckpoint {
  /** Its iteration. */
  iteration: number;
  /** Its iteration directory. */
  path: string;
  /** The parsed `checkpoint.json`. */
  meta: CheckpointMeta;
  /**
   * Null: `tensors` and `moments` are full tensors, joined from every saved rank's
   * files. A rank: only that saved rank's files were opened ({@link ReadOptions.ownShards}),
   * and they are its tensors as saved.
   */
  rank: number | null;
  /** Model tensors by parameter name (full, or the rank's as saved: see `rank`). */
  tensors: TensorSource;
  /** AdamW moments by parameter name (when requested and present; full or the rank's). */
  moments: { m: TensorSource; v: TensorSource } | null;
  /** The file each tensor came from (rank 0's shard, or the rank's), for messages. */
  fileOf: (name: string) => string;
}

/** Prints `warning: MSG` on stderr (the default warning sink of checkpoint loading). */
export function warnOnStderr(msg: string): void {
  console.error(`warning: ${msg}`);
}

async function openShards(
  iterPath: string,
  meta: CheckpointMeta,
  fileName: (r: number) => string,
  ranks: readonly number[],
): Promise<SafetensorsFile[]> {
  const files: SafetensorsFile[] = [];
  for (const r of ranks) {
    const name = fileName(r);
    const path = join(iterPath, name);
    let expect = undefined;
    if (meta.files) {
      expect = meta.files[name];
      if (!expect) {
        throw new CheckpointError(
          `${path}: ${join(iterPath, META_FILE)} records no checksum for this file`,
        );
      }
    }
    const f = await SafetensorsFile.open(path, { expect });
    const it = Number(f.metadata.iteration);
    const rank = Number(f.metadata.tp_rank);
    if (it !== meta.iteration || rank !== r) {
      throw new CheckpointError(
        `${f.path}: belongs to iteration ${f.metadata.iteration} rank ${f.metadata.tp_rank}, ` +
          `expected iteration ${meta.iteration} rank ${r} (stale or mixed-up file)`,
      );
    }
    files.push(f);
  }
  return files;
}

type TensorLayout = CheckpointMeta["tensors"][number];

/**
 * The tensors that `layouts` describe, read from `files` when asked for and joined
 * (full tensors from every saved rank's files; one rank's own file gives its tensors
 * as saved); `stored` gives the name a tensor has in the files. Each file's entry is
 * checked against its layout now.
 */
function joinedSource(
  files: SafetensorsFile[],
  layouts: ReadonlyMap<string, TensorLayout>,
  stored: (name: string) => string,
): TensorSource {
  for (const [name, layout] of layouts) {
    const inFile = stored(name);
    for (const f of files) {
      if (!f.has(inFile)) throw new CheckpointError(`${f.path}: tensor "${inFile}" is missing`);
      const shape = f.info(inFile).shape;
      if (!sameShape(shape, layout.shape)) {
        throw new CheckpointError(
          `${f.path}: tensor "${inFile}" has shape [${shape.join(", ")}], ` +
            `checkpoint.json says [${layout.shape.join(", ")}]`,
        );
      }
    }
  }
  const shapes = new Map<string, number[]>();
  for (const [name, layout] of layouts) {
    const shape = [...layout.shape];
    if (layout.partitionDim !== null) shape[layout.partitionDim] *= files.length;
    shapes.set(name, shape);
  }
  return lazySource(shapes, (name) => {
    const layout = layouts.get(name)!;
    const inFile = stored(name);
    if (layout.partitionDim === null || files.length === 1) {
      return { shape: [...layout.shape], data: files[0].floats(inFile) };
    }
    return joinShards(files.map((f) => f.floats(inFile)), layout.shape, {
      dim: layout.partitionDim,
      blocks: layout.partitionBlocks,
    });
  });
}

/** Options of {@link openCheckpoint} and {@link readCheckpointFull}. */
export interface ReadOptions {
  /** Which iteration (default: the one `latest` names). */
  iteration?: number;
  /** Read the optimizer shards too. */
  optimizer?: boolean;
  /** Receives warnings (default {@link warnOnStderr}). */
  warn?: (msg: string) => void;
  /**
   * When the checkpoint was saved at TP size `tp`, open only saved rank `rank`'s files
   * (the rank of a load at the same TP size, which needs nothing else): the opened
   * checkpoint then holds that rank's tensors as saved.
   */
  ownShards?: { tp: number; rank: number };
}

/**
 * Opens iteration `iteration` (default: latest) of `dir`. Each file's size and
 * SHA-256 are checked against `checkpoint.json` and its header against the
 * recorded shapes now (a checkpoint written before checksums existed opens with a
 * warning); the values are read when a tensor is asked for, and non-finite values
 * are refused then, naming the tensor (as is a file changed since it was opened).
 */
export async function openCheckpoint(
  dir: string,
  opts: ReadOptions = {},
): Promise<OpenedCheckpoint> {
  const { iteration, path } = await resolveIterDir(dir, opts.iteration);
  const meta = await readMeta(path);
  if (meta.iteration !== iteration) {
    // A directory renamed or copied over another: loading it under its name
    // would replay iterations and save them under numbers they are not.
    throw new CheckpointError(
      `${join(path, META_FILE)} is the checkpoint of iteration ${meta.iteration}, not ` +
        `${iteration} as its directory's name says (renamed or copied over?): move it back ` +
        `to ${iterDirName(meta.iteration)}, or load the iteration it holds`,
    );
  }
  if (!meta.files) {
    (opts.warn ?? warnOnStderr)(
      `${join(path, META_FILE)} records no checksums (written by an older version): ` +
        `its files are loaded unverified`,
    );
  }
  const byName = new Map(meta.tensors.map((l) => [l.name, l]));
  const asked = opts.ownShards;
  const own = asked && asked.tp === meta.parallel.tp && asked.rank >= 0 && asked.rank < asked.tp
    ? asked.rank
    : null;
  const ranks = own === null ? [...Array(meta.parallel.tp).keys()] : [own];
  const modelFiles = await openShards(path, meta, modelFileName, ranks);
  const tensors = joinedSource(modelFiles, byName, (n) => n);
  let moments: OpenedCheckpoint["moments"] = null;
  if (opts.optimizer && meta.optimizer) {
    const optFiles = await openShards(path, meta, optimizerFileName, ranks);
    const withMoments = new Map<string, TensorLayout>();
    for (const name of meta.optimizer.withMoments) {
      const l = byName.get(name);
      if (!l) {
        throw new CheckpointError(
          `${join(path, META_FILE)}: moments of unknown tensor "${name}"`,
        );
      }
      withMoments.set(name, l);
    }
    moments = {
      m: joinedSource(optFiles, withMoments, (n) => momentNames(n).m),
      v: joinedSource(optFiles, withMoments, (n) => momentNames(n).v),
    };
  }
  return {
    iteration,
    path,
    meta,
    rank: own,
    tensors,
    moments,
    fileOf: (n) => join(path, modelFileName(own ?? 0)) + ` ("${n}")`,
  };
}

/**
 * Reads iteration `iteration` (default: latest) of `dir` into full tensors, all
 * in memory ({@link openCheckpoint}'s checks, then every tensor read; every saved
 * rank's files, whatever `opts.ownShards` says).
 */
export async function readCheckpointFull(
  dir: string,
  opts: ReadOptions = {},
): Promise<FullCheckpoint> {
  const ck = await openCheckpoint(dir, { ...opts, ownShards: undefined });
  let moments: FullCheckpoint["moments"] = null;
  if (ck.moments) {
    const { m, v } = ck.moments;
    moments = new Map([...m.keys()].map((n) => [n, { m: m.get(n)!, v: v.get(n)! }]));
  }
  return { ...ck, tensors: readTensors(ck.tensors), moments };
}
