/**
 * Megatron's layout of hybrid parallelism: `world = tp · dp`; tensor-parallel
 * groups are consecutive ranks (same node, fastest link), data-parallel groups
 * take the same position across tensor-parallel groups.
 * @module
 */

import type { ProcessGroup } from "./group.ts";

/** Where one rank sits in the TP × DP grid. */
export interface ParallelLayout {
  /** Total ranks. */
  world: number;
  /** Tensor-parallel size. */
  tp: number;
  /** Data-parallel size (world / tp). */
  dp: number;
  /** Position in the tensor-parallel group. */
  tpRank: number;
  /** Position in the data-parallel group (= which TP group). */
  dpRank: number;
  /** Global ranks of this rank's tensor-parallel group. */
  tpRanks: number[];
  /** Global ranks of this rank's data-parallel group. */
  dpRanks: number[];
}

/** The layout for global `rank`; throws when `world` is not divisible by `tp`. */
export function parallelLayout(world: number, tp: number, rank: number): ParallelLayout {
  if (!Number.isInteger(tp) || tp < 1) throw new Error(`tensor-parallel size must be ≥ 1, got ${tp}`);
  if (world % tp !== 0) {
    throw new Error(`world size ${world} is not divisible by the tensor-parallel size ${tp}`);
  }
  if (!(rank >= 0 && rank < world)) throw new Error(`rank ${rank} outside world ${world}`);
  const dp = world / tp;
  const tpRank = rank % tp;
  const dpRank = Math.floor(rank / tp);
  return {
    world,
    tp,
    dp,
    tpRank,
    dpRank,
    tpRanks: Array.from({ length: tp }, (_, i) => dpRank * tp + i),
    dpRanks: Array.from({ length: dp }, (_, i) => i * tp + tpRank),
  };
}

/** Every tensor-parallel and data-parallel group of a world, as lists of ranks. */
export function allParallelGroups(world: number, tp: number): { tp: number[][]; dp: number[][] } {
  const l = parallelLayout(world, tp, 0);
  return {
    tp: Array.from({ length: l.dp }, (_, d) => Array.from({ length: tp }, (_, i) => d * tp + i)),
    dp: Array.from({ length: tp }, (_, i) => Array.from({ length: l.dp }, (_, d) => d * tp + i)),
  };
}

/** The process groups of this rank: its tensor-parallel and its data-parallel group. */
export function parallelGroups(
  world: ProcessGroup,
  tp: number,
): { layout: ParallelLayout; tp: ProcessGroup; dp: ProcessGroup } {
  const layout = parallelLayout(world.size, tp, world.rank);
  return {
    layout,
    tp: world.newGroup(layout.tpRanks.map((r) => world.ranks[r])),
    dp: world.newGroup(layout.dpRanks.map((r) => world.ranks[r])),
  };
}
