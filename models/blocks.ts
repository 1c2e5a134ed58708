/**
 * Transformer sub-layers shared by GPT and BERT: multi-head self-attention with
 * a fused, column-parallel q|k|v projection and a row-parallel output
 * projection, and the column-then-row MLP. Each rank computes its local heads
 * (`heads / tp`) with no communication; `g` sums the output projections.
 * @module
 */

import { DEFAULT_INIT_STD, Dropout, type InitSpec, Module } from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import { deriveSeed, RngStream } from "../core/rng.ts";
import { recompute } from "../core/recompute.ts";
import { packSaved, Tensor } from "../core/tensor.ts";
import type { LayerCache } from "./kv_cache.ts";
import type { LinearLike, ParallelLayers } from "./parallel/layers.ts";
import type { RngTracker } from "./parallel/random.ts";
import type { TransformerShape } from "./shape.ts";

/**
 * Shape of an attention or MLP block: the fields of a resolved
 * {@link TransformerShape} it reads (pass the model's shape).
 */
export type BlockShape = Pick<
  TransformerShape,
  "hiddenSize" | "numHeads" | "ffnHiddenSize" | "numLayers" | "kvChannels"
>;

/** Parameter names of the two projections of a block. */
export interface ProjectionNames {
  /** Input projection (column-parallel). */
  input: string;
  /** Output projection (row-parallel). */
  output: string;
}

/** How a GPT or BERT draws what is random: its weights and its dropout masks. */
export interface ModelOptions {
  /**
   * Seed of the weights' init (and of the dropout streams without `rng`); every
   * rank of a tensor-parallel group passes the same.
   */
  seed: number;
  /** Dropout streams (default: a tracker of `seed` at this rank). */
  rng?: RngTracker;
  /**
   * Standard deviation of the normal init of the weight matrices and embeddings
   * (Megatron's `--init-method-std`; default {@link DEFAULT_INIT_STD}); the
   * residual output projections take it divided by sqrt(2·layers)
   * ({@link outputInit}); biases are 0, layer-norm gains 1.
   */
  initStd?: number;
}

/**
 * The init of a model's weights: normal(0, `std`) drawn from `seed`'s init
 * stream (default std {@link DEFAULT_INIT_STD}). Throws for a std that is not
 * a positive finite number.
 */
export function modelInit(seed: number, std: number = DEFAULT_INIT_STD): InitSpec {
  if (typeof std !== "number" || !(std > 0 && Number.isFinite(std))) {
    throw new Error(`the init std must be a positive finite number, got ${std}`);
  }
  return { rng: new RngStream(deriveSeed(seed, 0)), std };
}

/**
 * Init of the residual output projections, Megatron's scaled init: `init`'s
 * std (default {@link DEFAULT_INIT_STD}) divided by sqrt(2·layers), from the
 * same stream.
 */
export function outputInit(init: InitSpec, layers: number): InitSpec {
  return { rng: init.rng, std: (init.std ?? DEFAULT_INIT_STD) / Math.sqrt(2 * layers) };
}

/**
 * Runs `x` through `layers` in order, as GPT's and BERT's encoders do. With
 * `recomputeWith` (training with `recomputeActivations`) each layer keeps only
 * its input and runs again in the backward pass ({@link recompute}), its
 * dropout streams (the tracker's group and rank streams) rewound so it draws
 * the same masks. After each layer the activations saved so far are packed
 * when the device stores them in 16 bits ({@link packSaved}).
 */
export async function throughLayers<L extends Module>(
  x: Tensor,
  layers: readonly L[],
  forward: (layer: L, x: Tensor) => Promise<Tensor>,
  recomputeWith: RngTracker | null,
): Promise<Tensor> {
  const streams = recomputeWith ? [recomputeWith.group, recomputeWith.rank] : [];
  for (const layer of layers) {
    x = recomputeWith
      ? await recompute((y) => forward(layer, y), x, layer.parameters(), streams)
      : await forward(layer, x);
    packSaved(x.device, [x]);
  }
  return x;
}

/** Whether attention uses the fused kernels unless a config says otherwise. */
export const FUSED_ATTENTION_DEFAULT = true;

/** Self-attention over `[B, T, h]` with a causal or padding mask. */
export class SelfAttention extends Module {
  /** Fused q|k|v projection. */
  readonly qkv: LinearLike;
  /** Output projection. */
  readonly proj: LinearLike;
  /** Heads on this rank. */
  readonly localHeads: number;
  /** Size of one head: the shape's `kvChannels`. */
  readonly headDim: number;
  readonly #drop: Dropout;

  /**
   * Builds the block, drawing its weights as `init` says (the output
   * projection scaled by {@link outputInit}); `dropoutRng` should be the
   * per-TP-rank stream. `fused`:
   * the fused attention kernels (`ops.attention`) where they can run
   * (`ops.canFuseAttention`: head size, one binding, loop cap), else the
   * unfused ops (`ops.attentionUnfused`); same results and dropout draws
   * either way.
   */
  constructor(
    layers: ParallelLayers,
    s: BlockShape,
    init: InitSpec,
    dropout: number,
    dropoutRng: RngStream,
    names: ProjectionNames,
    readonly fused: boolean = FUSED_ATTENTION_DEFAULT,
  ) {
    super();
    const h = s.hiddenSize;
    if (!Number.isInteger(s.kvChannels) || s.kvChannels * s.numHeads !== h) {
      throw new Error(
        `SelfAttention: kvChannels ${s.kvChannels} × numHeads ${s.numHeads} is not ` +
          `hiddenSize ${h} (pass the model's resolved shape, resolveShape)`,
      );
    }
    this.headDim = s.kvChannels;
    this.localHeads = s.numHeads / layers.tpSize;
    this.qkv = this.child(names.input, layers.columnLinear(h, 3 * h, init, 3));
    this.proj = this.child(names.output, layers.rowLinear(h, h, outputInit(init, s.numLayers)));
    this.#drop = this.child("drop", new Dropout(dropout, dropoutRng));
  }

  /** Attention of `x`; `keep` (`[B, T]`, 1 = token, 0 = padding) selects the padding mask, else causal. */
  async forward(x: Tensor, keep?: Tensor): Promise<Tensor> {
    const nh = this.localHeads;
    const hd = this.headDim;
    const qkv = await this.qkv.forward(x); // [B, T, 3·hl] laid out q|k|v
    const opts: ops.AttentionOpts = {
      numHeads: nh,
      headDim: hd,
      mask: keep ? "padding" : "causal",
      keep,
      dropout: this.#drop.spec() ?? undefined, // the draw Dropout.forward would take
    };
    const ctx = this.fused && ops.canFuseAttention(qkv, hd)
      ? ops.attention(qkv, opts)
      : ops.attentionUnfused(qkv, opts); // [B, T, hl]
    return await this.proj.forward(ctx);
  }

  /**
   * Causal attention of `n` new positions `x` (`[B, n, h]`) that follow `start`
   * cached ones: writes their keys and values into `cache` at positions
   * `[start, start + n)` and attends over `[0, start + n)`. Inference only: no
   * dropout, and no gradient reaches the cached keys and values (call it under
   * `device.noGrad`). The caller checks the positions against the cache.
   */
  async forwardCached(x: Tensor, cache: LayerCache, start: number): Promise<Tensor> {
    const [B, n] = x.shape;
    const nh = this.localHeads;
    const hd = this.headDim;
    const hl = nh * hd;
    const cap = cache.k.shape[2];
    const expected = [B, nh, cap, hd];
    if (cache.k.shape.some((d, i) => d !== expected[i])) {
      throw new Error(
        `attention cache [${cache.k.shape}] does not fit batch ${B}, ${nh} heads of ${hd}`,
      );
    }
    const qkv = await this.qkv.forward(x); // [B, n, 3·hl] laid out q|k|v
    const src = [n * 3 * hl, hd, 3 * hl, 1];
    const dst = [nh * cap * hd, cap * hd, hd, 1];
    const fresh = [B, nh, n, hd];
    ops.stridedCopy(qkv, cache.k, fresh, src, hl, dst, start * hd);
    ops.stridedCopy(qkv, cache.v, fresh, src, 2 * hl, dst, start * hd);
    const q = ops.asStrided(qkv, fresh, src, 0);
    const L = start + n;
    const k = prefix(cache.k, L);
    const v = prefix(cache.v, L);
    // Queries are the last n of L keys: the causal mask's offset L − n = start.
    const probs = ops.softmax(ops.matmul(q, k, { transB: true }), {
      scale: 1 / Math.sqrt(hd),
      mask: "causal",
    });
    const ctx = ops.matmul(probs, v); // [B, nh, n, hd]
    const merged = ops.asStrided(ctx, [B, n, nh, hd], [nh * n * hd, hd, n * hd, 1]);
    return await this.proj.forward(ops.reshape(merged, [B, n, hl]));
  }
}

/** Positions `[0, L)` of a cache buffer `[B, nh, cap, hd]` as a contiguous `[B, nh, L, hd]`. */
function prefix(buf: Tensor, L: number): Tensor {
  const [B, nh, cap, hd] = buf.shape;
  if (L === cap) return buf.view();
  const out = Tensor.empty(buf.device, [B, nh, L, hd]);
  ops.stridedCopy(buf, out, out.shape, [nh * cap * hd, cap * hd, hd, 1], 0, [
    nh * L * hd,
    L * hd,
    hd,
    1,
  ], 0);
  return out;
}

/** `proj(GeLU(fc(x)))`: column-parallel then row-parallel. */
export class ParallelMlp extends Module {
  /** h → ffn. */
  readonly fc: LinearLike;
  /** ffn → h. */
  readonly proj: LinearLike;

  /** Builds the block, drawing its weights as `init` says (`proj` scaled by {@link outputInit}). */
  constructor(
    layers: ParallelLayers,
    s: BlockShape,
    init: InitSpec,
    names: ProjectionNames,
    readonly gelu: ops.GeluKind = "tanh",
  ) {
    super();
    this.fc = this.child(
      names.input,
      layers.columnLinear(s.hiddenSize, s.ffnHiddenSize, init),
    );
    this.proj = this.child(
      names.output,
      layers.rowLinear(s.ffnHiddenSize, s.hiddenSize, outputInit(init, s.numLayers)),
    );
  }

  /**
   * Applies the MLP: with layers that offer it, the GeLU runs in the epilogues
   * of the two products (core/ops/mlp.ts), else as its own op.
   */
  async forward(x: Tensor): Promise<Tensor> {
    if (this.fc.forwardGelu && this.proj.forwardFromGelu) {
      const { pre, act } = await this.fc.forwardGelu(x, this.gelu);
      return await this.proj.forwardFromGelu(pre, act, this.gelu);
    }
    return await this.proj.forward(ops.gelu(await this.fc.forward(x), this.gelu));
  }
}
