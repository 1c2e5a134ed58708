/**
 * Megatron's hybrid layout: `world = tp · dp`; tensor-parallel groups are runs
 * of `tp` consecutive ranks (same node, fast link), data-parallel groups take
 * the same position across the tensor-parallel groups.
 * @module
 */

import type { ProcessGroup } from "./group.ts";

/** The rank lists of every tensor-parallel and data-parallel group. */
export interface ParallelLayout {
  /** Tensor-parallel group size. */
  tp: number;
  /** Data-parallel group size. */
  dp: number;
  /** `dp` groups of `tp` consecutive ranks. */
  tpGroups: number[][];
  /** `tp` groups of `dp` ranks, stride `tp`. */
  dpGroups: number[][];
}

/** Lays out `world` ranks into TP groups of `tp` consecutive ranks and DP groups across them. */
export function parallelLayout(world: number, tp: number): ParallelLayout {
  if (!Number.isInteger(tp) || tp < 1 || !Number.isInteger(world) || world % tp !== 0) {
    throw new Error(`tensor-parallel size ${tp} must divide the world size ${world}`);
  }
  const dp = world / tp;
  const tpGroups = Array.from(
    { length: dp },
    (_, d) => Array.from({ length: tp }, (_, t) => d * tp + t),
  );
  const dpGroups = Array.from(
    { length: tp },
    (_, t) => Array.from({ length: dp }, (_, d) => d * tp + t),
  );
  return { tp, dp, tpGroups, dpGroups };
}

/** Where one rank sits in the TP × DP grid. */
export interface RankPosition {
  /** Position in its tensor-parallel group. */
  tpRank: number;
  /** Position in its data-parallel group (= which tensor-parallel group). */
  dpRank: number;
}

/** The position of global `rank` in a layout with tensor-parallel size `tp`. */
export function rankPosition(tp: number, rank: number): RankPosition {
  return { tpRank: rank % tp, dpRank: Math.floor(rank / tp) };
}

/** This rank's tensor-parallel and data-parallel groups, made from the world group. */
export function parallelGroups(
  world: ProcessGroup,
  tp: number,
): {
  tpGroup: ProcessGroup;
  dpGroup: ProcessGroup;
  layout: ParallelLayout;
  position: RankPosition;
} {
  const layout = parallelLayout(world.size, tp);
  const r = world.globalRank;
  const position = rankPosition(tp, r);
  const tpRanks = layout.tpGroups[position.dpRank];
  const dpRanks = layout.dpGroups[position.tpRank];
  return { tpGroup: world.newGroup(tpRanks), dpGroup: world.newGroup(dpRanks), layout, position };
}
