/**
 * Tensor-parallel resharding on host arrays: join the shards of every rank into
 * the full tensor along the partitioned dimension (respecting fused blocks such as
 * q|k|v), split a full tensor into one rank's shard, and resize padded rows (the
 * padded vocabulary depends on the TP size).
 * @module
 */

import { CheckpointError } from "./safetensors.ts";

/** A host tensor: values and shape. */
export interface HostTensor {
  /** Dimensions, outermost first. */
  shape: number[];
  /** Row-major values. */
  data: Float32Array;
}

/**
 * Host tensors by name whose values are read when asked for: names and shapes
 * cost nothing, and a reader holds one tensor at a time instead of a whole
 * file (a Hugging Face directory opened by `readHfDir`). A `Map` of host
 * tensors serves through {@link tensorSourceOf}.
 */
export interface TensorSource {
  /** Every tensor's name. */
  keys(): Iterable<string>;
  /** Whether `name` is there. */
  has(name: string): boolean;
  /** The shape of `name` (its values unread), or undefined when absent. */
  shapeOf(name: string): readonly number[] | undefined;
  /** The tensor `name`, its values read (and converted) now, or undefined when absent. */
  get(name: string): HostTensor | undefined;
}

/** `tensors` held in memory, as a {@link TensorSource}. */
export function tensorSourceOf(tensors: ReadonlyMap<string, HostTensor>): TensorSource {
  return {
    keys: () => tensors.keys(),
    has: (name) => tensors.has(name),
    shapeOf: (name) => tensors.get(name)?.shape,
    get: (name) => tensors.get(name),
  };
}

/**
 * The tensors whose shapes `shapes` holds, as a {@link TensorSource}: `read(name)`
 * gives one's values when asked for (only for a name in `shapes`).
 */
export function lazySource(
  shapes: ReadonlyMap<string, readonly number[]>,
  read: (name: string) => HostTensor,
): TensorSource {
  return {
    keys: () => shapes.keys(),
    has: (name) => shapes.has(name),
    shapeOf: (name) => shapes.get(name),
    get: (name) => shapes.has(name) ? read(name) : undefined,
  };
}

/** Every tensor of `source`, read into memory. */
export function readTensors(source: TensorSource): Map<string, HostTensor> {
  return new Map([...source.keys()].map((name) => [name, source.get(name)!]));
}

/** How a full tensor is split across TP ranks (see `ParamInfo`). */
export interface Partition {
  /** The split dimension, or null when replicated. */
  dim: number | null;
  /** Fused blocks along `dim`, each split separately (1 = plain split). */
  blocks: number;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function geometry(
  shape: readonly number[],
  dim: number,
): { outer: number; d: number; inner: number } {
  if (!Number.isInteger(dim) || dim < 0 || dim >= shape.length) {
    throw new CheckpointError(
      `partition dim ${dim} is out of range for shape [${shape.join(", ")}]`,
    );
  }
  return {
    outer: numel(shape.slice(0, dim)),
    d: shape[dim],
    inner: numel(shape.slice(dim + 1)),
  };
}

/**
 * Joins `shards` (rank order, all of `shardShape`) into the full tensor. A shard
 * holds, for each of `blocks` blocks, its contiguous part of that block.
 */
export function joinShards(
  shards: readonly Float32Array[],
  shardShape: readonly number[],
  part: Partition,
): HostTensor {
  if (part.dim === null || shards.length === 1) {
    return { shape: [...shardShape], data: shards[0] };
  }
  const tp = shards.length;
  const { outer, d, inner } = geometry(shardShape, part.dim);
  if (d % part.blocks !== 0) {
    throw new CheckpointError(
      `shard dimension ${part.dim} of size ${d} does not divide into ${part.blocks} blocks`,
    );
  }
  const bs = d / part.blocks; // rows of one block in one shard
  const fullD = d * tp;
  const out = new Float32Array(outer * fullD * inner);
  for (let r = 0; r < tp; r++) {
    const src = shards[r];
    for (let o = 0; o < outer; o++) {
      for (let k = 0; k < part.blocks; k++) {
        const s = (o * d + k * bs) * inner;
        const t = (o * fullD + k * bs * tp + r * bs) * inner;
        out.set(src.subarray(s, s + bs * inner), t);
      }
    }
  }
  const shape = [...shardShape];
  shape[part.dim] = fullD;
  return { shape, data: out };
}

/** The shard of rank `rank` of `tp` of a full tensor (the inverse of {@link joinShards}). */
export function splitShard(
  full: HostTensor,
  part: Partition,
  tp: number,
  rank: number,
): HostTensor {
  if (part.dim === null || tp === 1) return { shape: [...full.shape], data: full.data };
  const { outer, d, inner } = geometry(full.shape, part.dim);
  if (d % (part.blocks * tp) !== 0) {
    throw new CheckpointError(
      `dimension ${part.dim} of size ${d} (shape [${full.shape.join(", ")}]) does not split into ` +
        `${part.blocks} block(s) × ${tp} ranks`,
    );
  }
  const bs = d / (part.blocks * tp);
  const shardD = bs * part.blocks;
  const out = new Float32Array(outer * shardD * inner);
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < part.blocks; k++) {
      const s = (o * d + k * bs * tp + rank * bs) * inner;
      const t = (o * shardD + k * bs) * inner;
      out.set(full.data.subarray(s, s + bs * inner), t);
    }
  }
  const shape = [...full.shape];
  shape[part.dim] = shardD;
  return { shape, data: out };
}

/**
 * Changes the number of rows (dim 0) of a padded table: keeps the first
 * `min(old, rows)` rows and fills new rows with zeros.
 */
export function resizeRows(t: HostTensor, rows: number): HostTensor {
  if (t.shape[0] === rows) return t;
  const inner = numel(t.shape.slice(1));
  const out = new Float32Array(rows * inner);
  out.set(t.data.subarray(0, Math.min(rows, t.shape[0]) * inner));
  return { shape: [rows, ...t.shape.slice(1)], data: out };
}

/** Whether two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
