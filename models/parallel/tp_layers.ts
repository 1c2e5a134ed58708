/**
 * Tensor-parallel layers (Megatron-style intra-layer model parallelism):
 * column-parallel and row-parallel linears, the vocabulary-parallel embedding
 * and the vocabulary-parallel LM loss. Weights are initialised as slices of the
 * full, unsharded weight drawn from the same stream, so any TP size builds the
 * same model as TP=1.
 * @module
 */

import { record } from "../../core/autograd.ts";
import type { Device } from "../../core/device.ts";
import { DEFAULT_INIT_STD, type InitSpec, Module } from "../../core/nn.ts";
import * as ops from "../../core/ops/mod.ts";
import type { Tensor } from "../../core/tensor.ts";
import type { TokenIds } from "../../core/token_ids.ts";
import type { LinearLike, ParallelLayers, VocabEmbedding } from "./layers.ts";
import {
  copyToRegion,
  gatherLastDim,
  halfWireGroup,
  reduceFromRegion,
  type TpGroup,
  type WireCounter,
} from "./mappings.ts";
import type { HalfFormat } from "../../core/ops/mod.ts";
import { overlappedColumnLinear, overlappedColumnParallel } from "./overlap.ts";

function checkDivisible(what: string, n: number, t: number): number {
  if (n % t !== 0) {
    throw new Error(`${what} ${n} is not divisible by the tensor-parallel size ${t}`);
  }
  return n / t;
}

/**
 * `Y = X·Aᵀ + b` with `A` (`[out, in]`) split by output rows: rank `r` holds rows
 * `[r·out/t, (r+1)·out/t)` of every one of `blocks` fused blocks. The input
 * passes through `f`; the output stays split unless `gatherOutput`.
 */
export class ColumnParallelLinear extends Module implements LinearLike {
  /** Local weight `[out/t, in]`. */
  readonly weight: Tensor;
  /** Local bias `[out/t]`. */
  readonly bias?: Tensor;

  /** Builds this rank's shard. */
  constructor(
    device: Device,
    readonly group: TpGroup,
    readonly inFeatures: number,
    readonly outFeatures: number,
    init: InitSpec,
    opts: { blocks?: number; gatherOutput?: boolean; bias?: boolean; overlapComm?: boolean } = {},
  ) {
    super();
    this.overlapComm = opts.overlapComm ?? false;
    const t = group.size;
    const blocks = opts.blocks ?? 1;
    this.#blocks = blocks;
    const blockRows = checkDivisible("fused block size", outFeatures, blocks);
    const per = checkDivisible("output size", blockRows, t);
    const draw = init.rng.next();
    const std = init.std ?? DEFAULT_INIT_STD;
    const pieces: Tensor[] = [];
    for (let b = 0; b < blocks; b++) {
      const row0 = b * blockRows + group.rank * per;
      pieces.push(ops.randn(device, [per, inFeatures], draw, std, 0, row0 * inFeatures));
    }
    const w = pieces.length === 1 ? pieces[0] : device.noGrad(() => ops.concat(pieces, 0));
    if (w !== pieces[0]) { for (const p of pieces) p.dispose(); }
    this.weight = this.param("weight", w, {
      partitionDim: 0,
      partitionBlocks: blocks,
      tpSize: group.size,
    });
    if (opts.bias ?? true) {
      this.bias = this.param("bias", ops.full(device, [per * blocks], 0), {
        decay: false,
        partitionDim: 0,
        partitionBlocks: blocks,
        tpSize: group.size,
      });
    }
    this.gatherOutput = opts.gatherOutput ?? false;
  }

  /** Whether the forward all-gathers the output. */
  readonly gatherOutput: boolean;
  /**
   * Whether backward overlaps `f`'s all-reduce of the input gradient with the
   * weight-gradient kernels ({@link overlappedColumnLinear}; same values).
   */
  readonly overlapComm: boolean;
  readonly #blocks: number;

  /**
   * The local output `pre` (not gathered) and `gelu(pre)` from one kernel, for
   * a row-parallel layer's {@link RowParallelLinear.forwardFromGelu}.
   */
  forwardGelu(x: Tensor, kind: ops.GeluKind): Promise<ops.PreAndActivation> {
    if (this.gatherOutput) {
      return Promise.reject(new Error("forwardGelu: only for a layer that keeps its output split"));
    }
    if (this.overlapComm) {
      return Promise.resolve(overlappedColumnParallel(
        x,
        this.weight,
        this.bias,
        this.group,
        (a, w, b) => ops.linearGelu(a, w, b, kind),
        (r) => r.pre,
      ));
    }
    return Promise.resolve(
      ops.linearGelu(copyToRegion(x, this.group), this.weight, this.bias, kind),
    );
  }

  /** Applies the layer; the input is complete on every rank. */
  async forward(x: Tensor): Promise<Tensor> {
    const y = this.overlapComm
      ? overlappedColumnLinear(x, this.weight, this.bias, this.group)
      : ops.linear(copyToRegion(x, this.group), this.weight, this.bias);
    if (!this.gatherOutput) return y;
    const gathered = await gatherLastDim(y, this.group);
    const blocks = this.#blocks;
    if (blocks === 1 || this.group.size === 1) return gathered;
    // The gather is rank-major ([r0: b0 b1 …| r1: …]); the full layer is block-major.
    const pieces = ops.split(gathered, this.group.size * blocks, -1);
    const order: Tensor[] = [];
    for (let b = 0; b < blocks; b++) {
      for (let r = 0; r < this.group.size; r++) order.push(pieces[r * blocks + b]);
    }
    return ops.concat(order, -1);
  }
}

/**
 * `Y = X·Aᵀ + b` with `A` split by input columns: rank `r` holds columns
 * `[r·in/t, (r+1)·in/t)`. The input is already split (the output of a
 * column-parallel layer); partial products are summed by `g`, then the
 * replicated bias is added.
 */
export class RowParallelLinear extends Module implements LinearLike {
  /** Local weight `[out, in/t]`. */
  readonly weight: Tensor;
  /** Bias `[out]`, replicated on every rank. */
  readonly bias?: Tensor;

  /**
   * Whether rank 0 adds the bias in its partial product's epilogue, before the
   * sum over ranks (see {@link RowParallelLinear.forward}); otherwise it is
   * added to the sum, in a dispatch of its own.
   */
  readonly biasInPartial: boolean;

  /**
   * Builds this rank's shard. `opts.biasInPartial` (default true) puts the
   * bias into rank 0's partial product; turn it off when the sum is rounded
   * (a 16-bit wire), which would round the bias with it.
   */
  constructor(
    device: Device,
    readonly group: TpGroup,
    readonly inFeatures: number,
    readonly outFeatures: number,
    init: InitSpec,
    opts: { bias?: boolean; biasInPartial?: boolean } = {},
  ) {
    super();
    const per = checkDivisible("input size", inFeatures, group.size);
    const draw = init.rng.next();
    const full = ops.randn(device, [outFeatures, inFeatures], draw, init.std ?? DEFAULT_INIT_STD);
    const w = group.size === 1
      ? full
      : device.noGrad(() => ops.slice(full, 1, group.rank * per, (group.rank + 1) * per));
    if (w !== full) full.dispose();
    this.weight = this.param("weight", w, { partitionDim: 1, tpSize: group.size });
    if (opts.bias ?? true) {
      this.bias = this.param("bias", ops.full(device, [outFeatures], 0), { decay: false });
    }
    this.biasInPartial = opts.biasInPartial ?? true;
  }

  /**
   * Applies the layer to a split input; the output is complete on every rank.
   * The bias is added once: by rank 0's matmul epilogue, into its partial
   * product before the sum over ranks (no dispatch of its own), as with one
   * rank; every other rank takes the bias's gradient from the output's.
   */
  async forward(x: Tensor): Promise<Tensor> {
    return await this.#finish((b) => ops.linear(x, this.weight, b));
  }

  /** {@link forward} of `act = gelu(pre)`, the GeLU's gradient fused into backward's product. */
  async forwardFromGelu(pre: Tensor, act: Tensor, kind: ops.GeluKind): Promise<Tensor> {
    return await this.#finish((b) => ops.geluLinear(pre, act, this.weight, kind, b));
  }

  /** Sums the ranks' partial products (`g`), the bias in one of them or added after. */
  async #finish(product: (bias?: Tensor) => Tensor): Promise<Tensor> {
    const bias = this.bias;
    if (this.group.size === 1) return product(bias);
    if (!bias) return await reduceFromRegion(product(), this.group);
    if (!this.biasInPartial) return ops.add(await reduceFromRegion(product(), this.group), bias);
    const partial = this.group.rank === 0 ? product(bias) : withBiasGradient(product(), bias);
    return await reduceFromRegion(partial, this.group);
  }
}

/**
 * `x` unchanged, with `bias` taking the column sums of `x`'s gradient as its
 * own: what a rank whose partial product leaves out the bias (added by rank 0)
 * owes the replicated bias, the same sum rank 0's matmul computes from the
 * same gradient (`g` passes it unchanged to every rank).
 */
function withBiasGradient(x: Tensor, bias: Tensor): Tensor {
  return record(x.view(), "biasGradient", [x, bias], (g) => [
    g.view(),
    bias.requiresGrad ? ops.sumToSize(g, bias.shape) : null,
  ]);
}

/**
 * The embedding split by vocabulary rows: rank `r` holds rows
 * `[r·V/t, (r+1)·V/t)`; ids outside the range give zeros and `g` sums the
 * ranks' lookups.
 */
export class VocabParallelEmbedding extends Module implements VocabEmbedding {
  /** Local table `[V/t, h]`. */
  readonly weight: Tensor;
  /** First global row held here. */
  readonly start: number;

  /** Builds this rank's shard of a `[paddedVocab, dim]` table. */
  constructor(
    device: Device,
    readonly group: TpGroup,
    readonly paddedVocab: number,
    readonly dim: number,
    init: InitSpec,
  ) {
    super();
    const per = checkDivisible("padded vocabulary", paddedVocab, group.size);
    this.start = group.rank * per;
    const draw = init.rng.next();
    this.weight = this.param(
      "weight",
      ops.randn(device, [per, dim], draw, init.std ?? DEFAULT_INIT_STD, 0, this.start * dim),
      { partitionDim: 0, tpSize: group.size },
    );
  }

  /** Lookup of global token ids. */
  async forward(ids: TokenIds): Promise<Tensor> {
    return await reduceFromRegion(
      ops.embedding(this.weight, ids, this.start, this.paddedVocab),
      this.group,
    );
  }

  /**
   * `dropout(lookup(ids) + positions[start + t])` for ids `[B, T]`: one fused
   * kernel on a single rank (table within one binding), else the all-reduced
   * lookup and then one fused position-add-and-dropout kernel (the position
   * table is replicated, so the add follows the all-reduce on every rank).
   */
  async forwardWithPositions(
    ids: TokenIds,
    positions: Tensor,
    drop: ops.DropoutSpec | null,
    start = 0,
  ): Promise<Tensor> {
    const whole = this.group.size === 1 && this.weight.shape[0] === this.paddedVocab &&
      this.weight.byteLength <= this.weight.device.maxBindingBytes &&
      ids.size * this.dim * 4 <= this.weight.device.maxBindingBytes;
    const tokens = whole ? { table: this.weight, ids } : await this.forward(ids);
    return ops.embedPositions(tokens, positions, drop, start);
  }
}

/** A group of one: every collective is the identity (private to {@link TensorParallelLayers.single}). */
const SINGLE_RANK: TpGroup = {
  size: 1,
  rank: 0,
  allReduce: () => Promise.resolve(),
  allGather: <T>(part: T) => Promise.resolve(part),
} as unknown as TpGroup;

/** Layers split over a tensor-parallel group. */
export class TensorParallelLayers implements ParallelLayers {
  /** Group size. */
  readonly tpSize: number;
  /** This rank's position in the group. */
  readonly tpRank: number;

  /** The group the f/g operators all-reduce over (16-bit on the wire with `opts.wire`). */
  readonly fgGroup: TpGroup;

  /**
   * Whether column-parallel linears overlap `f`'s backward all-reduce with their
   * weight gradients (`opts.overlapComm`, the CLI's `--overlap-tp-comm`).
   */
  readonly overlapComm: boolean;

  /**
   * Layers on `device` sharded over `group`. `opts.wire` (mixed precision) sends
   * the f/g all-reduces of activations and their gradients as 16-bit values
   * ({@link halfWireGroup}); the cross-entropy's reductions stay fp32.
   * `opts.overlapComm` overlaps the column-parallel linears' backward `f`
   * all-reduce with their weight gradients (models/parallel/overlap.ts).
   */
  constructor(
    readonly device: Device,
    readonly group: TpGroup,
    opts: { wire?: HalfFormat; wireCounter?: WireCounter; overlapComm?: boolean } = {},
  ) {
    this.overlapComm = opts.overlapComm ?? false;
    this.tpSize = group.size;
    this.tpRank = group.rank;
    this.fgGroup = opts.wire && group.size > 1
      ? halfWireGroup(group, opts.wire, opts.wireCounter)
      : group;
  }

  /**
   * Single-device layers: the tensor-parallel layers over a group of one (so
   * parameters carry the same sharding declarations and checkpoints reshard to
   * any TP size, and the loss is the same chunked LM-head cross-entropy).
   */
  static single(device: Device): TensorParallelLayers {
    return new TensorParallelLayers(device, SINGLE_RANK);
  }

  /** A {@link ColumnParallelLinear} (output stays split). */
  columnLinear(inF: number, outF: number, init: InitSpec, blocks = 1): LinearLike {
    return new ColumnParallelLinear(this.device, this.fgGroup, inF, outF, init, {
      blocks,
      overlapComm: this.overlapComm,
    });
  }

  /** A {@link RowParallelLinear}. */
  rowLinear(inF: number, outF: number, init: InitSpec): LinearLike {
    return new RowParallelLinear(this.device, this.fgGroup, inF, outF, init, {
      biasInPartial: this.fgGroup === this.group,
    });
  }

  /** A {@link VocabParallelEmbedding}. */
  vocabEmbedding(paddedVocab: number, hidden: number, init: InitSpec): VocabEmbedding {
    return new VocabParallelEmbedding(this.device, this.fgGroup, paddedVocab, hidden, init);
  }

  /**
   * Vocabulary-parallel cross-entropy of the tied head; logits never gathered
   * (and computed in binding-sized vocabulary chunks, see `lmHeadCrossEntropy`).
   */
  async lmLoss(
    hidden: Tensor,
    table: Tensor,
    targets: TokenIds,
    validVocab: number,
    bias?: Tensor,
    normalizer?: number,
  ): Promise<Tensor> {
    return await ops.lmHeadCrossEntropy(copyToRegion(hidden, this.fgGroup), table, targets, {
      start: this.tpRank * table.shape[0],
      validVocab,
      normalizer,
      bias,
      group: this.group.size > 1 ? this.group : undefined,
    });
  }

  /** Full logits (gathered over the group), for generation and evaluation. */
  async lmLogits(hidden: Tensor, table: Tensor, bias?: Tensor): Promise<Tensor> {
    const local = ops.lmHeadLogits(copyToRegion(hidden, this.group), table, bias);
    return await gatherLastDim(local, this.group);
  }
}
