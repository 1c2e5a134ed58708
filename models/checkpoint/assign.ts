/**
 * Puts full host tensors into a (possibly sharded) model: computes every rank-local
 * shard, validates all names and shapes first, and only then writes into the GPU
 * tensors, so a mismatch never leaves a partial load.
 * @module
 */

import type { ParamInfo } from "../../core/nn.ts";
import { CheckpointError } from "./safetensors.ts";
import { type HostTensor, resizeRows, sameShape, splitShard } from "./shard.ts";

/** Where the model runs: TP size and this rank. */
export interface TpPlace {
  /** Tensor-parallel size (default 1). */
  tp?: number;
  /** This rank in the TP group (default 0). */
  tpRank?: number;
}

/** The full (unsharded) shape a parameter has across `tp` ranks. */
export function fullShapeOf(info: ParamInfo, tp: number): number[] {
  const shape = [...info.tensor.shape];
  if (info.partitionDim !== null && tp > 1) shape[info.partitionDim] *= tp;
  return shape;
}

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;

/**
 * This rank's shard of `full` for parameter `name`, after checking shapes. Rows of
 * tensors listed in `paddedRows` (padded vocabulary) are cut or zero-padded when
 * the TP size changes the padding; `source` names the file in errors.
 */
export function shardFromFull(
  name: string,
  full: HostTensor,
  info: ParamInfo,
  place: TpPlace,
  source: string,
  paddedRows: Record<string, number> = {},
): Float32Array {
  const tp = place.tp ?? 1;
  const want = fullShapeOf(info, tp);
  let t = full;
  if (!sameShape(t.shape, want)) {
    const valid = paddedRows[name];
    const rowsOnly = t.shape.length === want.length && sameShape(t.shape.slice(1), want.slice(1));
    if (valid !== undefined && rowsOnly && t.shape[0] >= valid && want[0] >= valid) {
      t = resizeRows(t, want[0]);
    } else {
      // Rows alone differing, with no padded-row count known: likely a vocabulary padded for
      // another TP size, in a checkpoint saved without its model's checkpoint info.
      const hint = rowsOnly && valid === undefined
        ? "; if the rows are a vocabulary padded for another TP size, save and load with the " +
          "model's checkpoint info (gptCheckpointInfo(config), or paddedRows)"
        : "";
      throw new CheckpointError(
        `${source}: tensor "${name}" has full shape ${fmt(full.shape)} but the model expects ` +
          `${fmt(want)}${tp > 1 ? ` (${fmt(info.tensor.shape)} on each of ${tp} ranks)` : ""}` +
          hint,
      );
    }
  }
  const part = { dim: info.partitionDim, blocks: info.partitionBlocks };
  return splitShard(t, part, tp, place.tpRank ?? 0).data;
}

/**
 * Computes every parameter's shard from `fullOf(name)` (undefined for a missing
 * tensor), throwing on the first missing or mismatched one. Writes nothing.
 */
export function planShards(
  params: readonly [string, ParamInfo][],
  fullOf: (name: string) => HostTensor | undefined,
  place: TpPlace,
  source: (name: string) => string,
  paddedRows: Record<string, number> = {},
): Float32Array[] {
  return params.map(([name, info]) => {
    const full = fullOf(name);
    if (!full) {
      throw new CheckpointError(
        `${source(name)}: tensor "${name}" is missing (the model expects it)`,
      );
    }
    return shardFromFull(name, full, info, place, source(name), paddedRows);
  });
}

/** Writes planned shards into the parameters (same order as {@link planShards}). */
export function writeShards(
  params: readonly [string, ParamInfo][],
  shards: readonly Float32Array[],
): void {
  params.forEach(([, info], i) => info.tensor.write(shards[i]));
}

/**
 * Validates every shard first ({@link planShards}), then writes them all, so a
 * mismatch never leaves a partial load. Returns the shards written.
 */
export function assignFull(
  params: readonly [string, ParamInfo][],
  fullOf: (name: string) => HostTensor | undefined,
  place: TpPlace,
  source: (name: string) => string,
  paddedRows: Record<string, number> = {},
): Float32Array[] {
  const shards = planShards(params, fullOf, place, source, paddedRows);
  writeShards(params, shards);
  return shards;
}
