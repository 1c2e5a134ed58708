/**
 * The seam between a model and its parallelism: the interfaces only. A model
 * asks a {@link ParallelLayers} factory for its column- and row-parallel linears,
 * its vocabulary embedding and its LM loss; the implementation,
 * `TensorParallelLayers` (`tp_layers.ts`), returns sharded versions with the f/g
 * collectives inside, and `TensorParallelLayers.single(device)` the same layers
 * on one device. Model code is the same.
 * @module
 */

import type { Device } from "../../core/device.ts";
import type { InitSpec, Module } from "../../core/nn.ts";
import type { DropoutSpec } from "../../core/ops/residual.ts";
import type { GeluKind, PreAndActivation } from "../../core/ops/mod.ts";
import type { Tensor } from "../../core/tensor.ts";
import type { TokenIds } from "../../core/token_ids.ts";

/** A linear layer as a model sees it. */
export interface LinearLike extends Module {
  /** Applies the layer (async: parallel versions communicate). */
  forward(x: Tensor): Tensor | Promise<Tensor>;
  /**
   * Column-parallel layers: the layer's output `pre` and `gelu(pre)` from one
   * kernel (core/ops/mlp.ts), for {@link LinearLike.forwardFromGelu}.
   */
  forwardGelu?(x: Tensor, kind: GeluKind): Promise<PreAndActivation>;
  /**
   * Row-parallel layers: the layer applied to `act = gelu(pre)`, the GeLU's
   * gradient fused into the input-gradient product (core/ops/mlp.ts).
   */
  forwardFromGelu?(pre: Tensor, act: Tensor, kind: GeluKind): Promise<Tensor>;
}

/** The embedding that also serves as the tied LM head. */
export interface VocabEmbedding extends Module {
  /** The (local shard of the) table, `[rows, hidden]`. */
  readonly weight: Tensor;
  /** Lookup of token ids. */
  forward(ids: TokenIds): Tensor | Promise<Tensor>;
  /**
   * Lookup of token ids `[B, T]` plus the rows `start + t` of a position table
   * `[P, h]` at sequence position `t`, with `drop` (if any) applied to the sum:
   * `dropout(forward(ids) + positions[start + t])`, fused where the layout allows.
   */
  forwardWithPositions(
    ids: TokenIds,
    positions: Tensor,
    drop: DropoutSpec | null,
    start?: number,
  ): Promise<Tensor>;
}

/** Builds the layers whose shapes depend on the parallel layout. */
export interface ParallelLayers {
  /** The device the layers live on. */
  readonly device: Device;
  /** Tensor-parallel size (1 = serial). */
  readonly tpSize: number;
  /** This rank's index in its tensor-parallel group. */
  readonly tpRank: number;
  /**
   * A linear split by output columns (its input passes through `f`). `blocks` > 1
   * declares fused outputs (e.g. q|k|v) that are each split, so a shard holds its
   * part of every block.
   */
  columnLinear(inF: number, outF: number, init: InitSpec, blocks?: number): LinearLike;
  /** A linear split by input rows; its output is complete (all-reduced) on every rank. */
  rowLinear(inF: number, outF: number, init: InitSpec): LinearLike;
  /** The vocabulary embedding of `paddedVocab` rows (split across ranks under TP). */
  vocabEmbedding(paddedVocab: number, hidden: number, init: InitSpec): VocabEmbedding;
  /**
   * Mean cross-entropy of `hidden·tableᵀ` against targets, with only the first
   * `validVocab` columns counted (vocabulary-parallel under TP, never gathering
   * the full logits). `normalizer` replaces the count of targets as divisor.
   * Returns a one-element tensor, identical on every rank.
   */
  lmLoss(
    hidden: Tensor,
    table: Tensor,
    targets: TokenIds,
    validVocab: number,
    bias?: Tensor,
    normalizer?: number,
  ): Promise<Tensor>;
  /** The full logits of the tied head (gathered under TP), for generation. */
  lmLogits(hidden: Tensor, table: Tensor, bias?: Tensor): Promise<Tensor>;
}
