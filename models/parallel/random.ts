/**
 * The RNG tracker of tensor parallelism: two dropout streams per rank.
 * - `group`: seeded by (seed, dp rank), identical on every rank of a TP group,
 *   for dropout outside parallel regions (activations that are replicated).
 * - `rank`: seeded by (seed, dp rank, tp rank), different on every TP rank, for
 *   dropout inside parallel regions (attention probabilities of local heads).
 * Data-parallel replicas draw different masks.
 * @module
 */

import { deriveSeed, RngStream } from "../../core/rng.ts";

/** The offsets of a rank's two dropout streams: what a checkpoint saves of them. */
export interface RngOffsets {
  /** Offset of the TP-group stream. */
  group: number;
  /** Offset of the per-TP-rank stream. */
  rank: number;
}

/** Dropout streams of one rank. */
export class RngTracker {
  /** Stream for replicated activations (same on every TP rank). */
  readonly group: RngStream;
  /** Stream for sharded activations (distinct per TP rank). */
  readonly rank: RngStream;

  /** The streams for `seed` at position (`tpRank`, `dpRank`). */
  constructor(readonly seed: number, readonly tpRank = 0, readonly dpRank = 0) {
    this.group = new RngStream(deriveSeed(seed, 1, dpRank));
    this.rank = new RngStream(deriveSeed(seed, 2, dpRank, tpRank));
  }

  /** Both streams' offsets, for checkpoints. */
  state(): RngOffsets {
    return { group: this.group.offset, rank: this.rank.offset };
  }

  /** Restores offsets saved by {@link RngTracker.state}. */
  restore(s: RngOffsets): void {
    this.group.offset = s.group;
    this.rank.offset = s.rank;
  }
}
