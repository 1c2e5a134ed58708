/**
 * Reads a whole sharded checkpoint on one host: every TP rank's model (and,
 * optionally, optimizer) shard, checked against `checkpoint.json`, joined into
 * full tensors. Needs no GPU (export and resharding use it).
 * @module
 */

import { join } from "node:path";
import {
  type CheckpointMeta,
  META_FILE,
  modelFileName,
  momentNames,
  optimizerFileName,
  readMeta,
  resolveIterDir,
} from "./layout.ts";
import { CheckpointError, SafetensorsFile } from "./safetensors.ts";
import { type HostTensor, joinShards, sameShape } from "./shard.ts";

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

/** Prints `warning: MSG` on stderr (the default warning sink of checkpoint loading). */
export function warnOnStderr(msg: string): void {
  console.error(`warning: ${msg}`);
}

async function readShards(
  iterPath: string,
  meta: CheckpointMeta,
  fileName: (r: number) => string,
): Promise<SafetensorsFile[]> {
  const files: SafetensorsFile[] = [];
  for (let r = 0; r < meta.parallel.tp; r++) {
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
    const f = await SafetensorsFile.read(path, { expect });
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

function joined(
  files: SafetensorsFile[],
  name: string,
  layout: CheckpointMeta["tensors"][number],
): HostTensor {
  const parts = files.map((f) => {
    if (!f.has(name)) throw new CheckpointError(`${f.path}: tensor "${name}" is missing`);
    const shape = f.info(name).shape;
    if (!sameShape(shape, layout.shape)) {
      throw new CheckpointError(
        `${f.path}: tensor "${name}" has shape [${shape.join(", ")}], ` +
          `checkpoint.json says [${layout.shape.join(", ")}]`,
      );
    }
    return f.floats(name);
  });
  if (layout.partitionDim === null) return { shape: [...layout.shape], data: parts[0] };
  return joinShards(parts, layout.shape, {
    dim: layout.partitionDim,
    blocks: layout.partitionBlocks,
  });
}

/** Options of {@link readCheckpointFull}. */
export interface ReadOptions {
  /** Which iteration (default: the one `latest` names). */
  iteration?: number;
  /** Read the optimizer shards too. */
  optimizer?: boolean;
  /** Receives warnings (default {@link warnOnStderr}). */
  warn?: (msg: string) => void;
}

/**
 * Reads iteration `iteration` (default: latest) of `dir` into full tensors. Each
 * file's size and SHA-256 are checked against `checkpoint.json` before it is
 * parsed (a checkpoint written before checksums existed loads with a warning),
 * and non-finite values are refused naming the tensor.
 */
export async function readCheckpointFull(
  dir: string,
  opts: ReadOptions = {},
): Promise<FullCheckpoint> {
  const { iteration, path } = await resolveIterDir(dir, opts.iteration);
  const meta = await readMeta(path);
  if (!meta.files) {
    (opts.warn ?? warnOnStderr)(
      `${join(path, META_FILE)} records no checksums (written by an older version): ` +
        `its files are loaded unverified`,
    );
  }
  const modelFiles = await readShards(path, meta, modelFileName);
  const tensors = new Map<string, HostTensor>();
  for (const l of meta.tensors) tensors.set(l.name, joined(modelFiles, l.name, l));
  let moments: FullCheckpoint["moments"] = null;
  if (opts.optimizer && meta.optimizer) {
    const optFiles = await readShards(path, meta, optimizerFileName);
    moments = new Map();
    const byName = new Map(meta.tensors.map((l) => [l.name, l]));
    for (const name of meta.optimizer.withMoments) {
      const l = byName.get(name);
      if (!l) {
        throw new CheckpointError(
          `${join(path, META_FILE)}: moments of unknown tensor "${name}"`,
        );
      }
      const n = momentNames(name);
      moments.set(name, { m: joined(optFiles, n.m, l), v: joined(optFiles, n.v, l) });
    }
  }
  return {
    iteration,
    path,
    meta,
    tensors,
    moments,
    fileOf: (n) => join(path, modelFileName(0)) + ` ("${n}")`,
  };
}
