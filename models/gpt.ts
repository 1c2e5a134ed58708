/**
 * A pre-LN GPT (GPT-2 layout): learned positions, tied input/output embeddings,
 * vocabulary padded to a multiple of 128·tp, init N(0, 0.02) (or `initStd`) with
 * the residual output projections scaled by 1/sqrt(2·layers), dropout, optional
 * activation recomputation per layer. Parallelism enters only through {@link ParallelLayers}.
 * @module
 */

import type { Device } from "../core/device.ts";
import { Dropout, Embedding, type InitSpec, LayerNorm, Module } from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import { type Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import {
  FUSED_ATTENTION_DEFAULT,
  modelInit,
  type ModelOptions,
  ParallelMlp,
  SelfAttention,
  throughLayers,
} from "./blocks.ts";
import { KvCache, type LayerCache } from "./kv_cache.ts";
import { RngTracker } from "./parallel/random.ts";
import {
  DEFAULT_DROPOUT,
  DEFAULT_VOCAB_MULTIPLE,
  type TransformerConfig,
  type TransformerShape,
  validateTransformerConfig,
} from "./shape.ts";
import type { ParallelLayers, VocabEmbedding } from "./parallel/layers.ts";
import { TensorParallelLayers } from "./parallel/tp_layers.ts";

/** Layer-norm epsilon of a GPT config that does not set one (GPT-2's). */
export const GPT_LAYER_NORM_EPS: number = ops.DEFAULT_LAYER_NORM_EPS;

/** GPT shape and regularisation. */
export interface GptConfig extends TransformerConfig {
  /** Layer-norm epsilon (default {@link GPT_LAYER_NORM_EPS}). */
  layerNormEps?: number;
}

/**
 * Rows of the vocabulary table for a tokenizer's `vocabSize` ids: rounded up to
 * a multiple of `multiple·tp`, so that every tensor-parallel rank holds the same
 * aligned share.
 */
export function paddedVocabSize(
  vocabSize: number,
  tp = 1,
  multiple = DEFAULT_VOCAB_MULTIPLE,
): number {
  for (const [what, v] of [["tensor-parallel size", tp], ["multiple", multiple]] as const) {
    if (!(Number.isInteger(v) && v >= 1)) {
      throw new RangeError(`paddedVocabSize: the ${what} must be an integer ≥ 1, got ${v}`);
    }
  }
  const m = multiple * tp;
  return Math.ceil(vocabSize / m) * m;
}

/** One pre-LN transformer layer: x + Drop(Attn(LN(x))), then + Drop(MLP(LN(·))). */
export class GptLayer extends Module {
  /** Layer norm before attention. */
  readonly ln1: LayerNorm;
  /** Causal self-attention. */
  readonly attn: SelfAttention;
  /** Layer norm before the MLP. */
  readonly ln2: LayerNorm;
  /** The MLP. */
  readonly mlp: ParallelMlp;
  /** Residual-branch dropout. */
  readonly drop: Dropout;

  /**
   * A layer of `shape` built by `parallel`, drawing its weights as `init` says
   * and dropout from `rng`.
   */
  constructor(
    readonly parallel: ParallelLayers,
    c: GptConfig,
    shape: TransformerShape,
    init: InitSpec,
    readonly rng: RngTracker,
  ) {
    super();
    const eps = c.layerNormEps ?? GPT_LAYER_NORM_EPS;
    this.ln1 = this.child("ln_1", new LayerNorm(parallel.device, c.hiddenSize, eps));
    this.attn = this.child(
      "attn",
      new SelfAttention(parallel, shape, init, c.attentionDropout ?? DEFAULT_DROPOUT, rng.rank, {
        input: "c_attn",
        output: "c_proj",
      }, c.fusedAttention ?? FUSED_ATTENTION_DEFAULT),
    );
    this.ln2 = this.child("ln_2", new LayerNorm(parallel.device, c.hiddenSize, eps));
    this.mlp = this.child(
      "mlp",
      new ParallelMlp(parallel, shape, init, { input: "c_fc", output: "c_proj" }, "tanh"),
    );
    this.drop = this.child("drop", new Dropout(c.hiddenDropout ?? DEFAULT_DROPOUT, rng.group));
  }

  /**
   * Applies the layer to `[B, T, h]`. The residual add, its dropout and `ln2`
   * run as one fused kernel (`ops.residualLayerNorm`), the second residual add
   * and its dropout as another (`ops.residualDropout`); the dropout masks are
   * those `drop.forward` would draw, in the same order.
   */
  async forward(x: Tensor): Promise<Tensor> {
    const a = await this.attn.forward(this.ln1.forward(x));
    const ln2 = this.ln2;
    const r = ops.residualLayerNorm(x, a, this.drop.spec(), ln2.weight, ln2.bias, ln2.eps);
    const m = await this.mlp.forward(r.normed);
    return ops.residualDropout(r.sum, m, this.drop.spec());
  }

  /** Inference on `n` new positions `[B, n, h]` after `start` cached ones (no dropout). */
  async forwardCached(x: Tensor, cache: LayerCache, start: number): Promise<Tensor> {
    const a = await this.attn.forwardCached(this.ln1.forward(x), cache, start);
    const ln2 = this.ln2;
    const r = ops.residualLayerNorm(x, a, null, ln2.weight, ln2.bias, ln2.eps);
    return ops.add(r.sum, await this.mlp.forward(r.normed));
  }
}

/** Options of {@link Gpt.forwardCached}. */
export interface CachedForwardOptions {
  /** Return the logits of the last new position only (`[B, 1, V]`), as sampling needs. */
  lastOnly?: boolean;
}

/** The GPT language model. */
export class Gpt extends Module {
  /** The config it was built with. */
  readonly config: GptConfig;
  /** Vocabulary after padding. */
  readonly paddedVocab: number;
  /** Token embeddings (vocabulary-parallel), tied to the LM head. */
  readonly wte: VocabEmbedding;
  /** Learned positions. */
  readonly wpe: Embedding;
  /** The resolved shape (defaults filled in). */
  readonly shape: TransformerShape;
  /** The transformer blocks (parameters named `h.<i>.…`, as GPT-2's). */
  readonly blocks: GptLayer[];
  /** Final layer norm. */
  readonly lnF: LayerNorm;
  /** Embedding dropout. */
  readonly drop: Dropout;
  /** Dropout streams. */
  readonly rng: RngTracker;

  /**
   * Builds the model. All ranks of a TP group pass the same `seed` (and
   * `initStd`); weights are drawn as slices of the full, unsharded weights, so
   * any TP size gives the same model.
   */
  constructor(
    readonly parallel: ParallelLayers,
    config: GptConfig,
    opts: ModelOptions,
  ) {
    super();
    this.shape = validateTransformerConfig(config, parallel.tpSize, ["layerNormEps"]);
    this.config = config;
    this.paddedVocab = paddedVocabSize(
      config.vocabSize,
      parallel.tpSize,
      config.vocabMultiple ?? DEFAULT_VOCAB_MULTIPLE,
    );
    const init = modelInit(opts.seed, opts.initStd);
    this.rng = opts.rng ?? new RngTracker(opts.seed, parallel.tpRank);
    const dev = parallel.device;
    this.wte = this.child(
      "wte",
      parallel.vocabEmbedding(this.paddedVocab, config.hiddenSize, init),
    );
    this.wpe = this.child(
      "wpe",
      new Embedding(dev, config.maxPositions, config.hiddenSize, init),
    );
    this.drop = this.child(
      "drop",
      new Dropout(config.hiddenDropout ?? DEFAULT_DROPOUT, this.rng.group),
    );
    this.blocks = [];
    for (let i = 0; i < config.numLayers; i++) {
      this.blocks.push(
        this.child(`h.${i}`, new GptLayer(parallel, config, this.shape, init, this.rng)),
      );
    }
    this.lnF = this.child(
      "ln_f",
      new LayerNorm(dev, config.hiddenSize, config.layerNormEps ?? GPT_LAYER_NORM_EPS),
    );
  }

  /** A GPT on one device. */
  static serial(device: Device, config: GptConfig, seed: number): Gpt {
    return new Gpt(TensorParallelLayers.single(device), config, { seed });
  }

  /** Throws a clear error unless `ids` are `[batch, seq]` token ids of this model's vocabulary on its device. */
  #checkIds(ids: TokenIds): void {
    TokenIds.check("GPT", ids, "ids", this.parallel.device);
    if (ids.rank !== 2) throw new Error(`GPT input must be [batch, seq], got [${ids.shape}]`);
    ids.checkInVocab("GPT", this.config.vocabSize);
  }

  /** Final hidden states `[B, T, h]` for token ids `[B, T]`. */
  async hidden(ids: TokenIds): Promise<Tensor> {
    this.#checkIds(ids);
    const T = ids.shape[1];
    if (T > this.config.maxPositions) {
      throw new Error(
        `sequence length ${T} exceeds the position table (${this.config.maxPositions})`,
      );
    }
    // token lookup, position add and embedding dropout fused
    let x = await this.wte.forwardWithPositions(ids, this.wpe.weight, this.drop.spec());
    const recomputeWith = this.config.recomputeActivations && this.training ? this.rng : null;
    x = await throughLayers(x, this.blocks, (layer, y) => layer.forward(y), recomputeWith);
    return this.lnF.forward(x);
  }

  /**
   * Mean next-token cross-entropy for inputs and targets `[B, T]`, over the
   * positions whose target is not negative: a target of −1 (as BERT's
   * `MLM_IGNORE_INDEX`, or PyTorch's `ignore_index=-100`) leaves its position
   * out of the loss and of the mean.
   */
  async loss(ids: TokenIds, targets: TokenIds): Promise<Tensor> {
    TokenIds.check("GPT", targets, "targets", this.parallel.device);
    if (
      targets.shape.length !== ids.shape.length || targets.shape.some((d, i) => d !== ids.shape[i])
    ) {
      throw new Error(
        `GPT: targets [${targets.shape}] must have the inputs' shape [${ids.shape}] (one per token)`,
      );
    }
    const h = await this.hidden(ids);
    return await this.parallel.lmLoss(h, this.wte.weight, targets, this.config.vocabSize);
  }

  /** Logits `[B, T, paddedVocab]` (padding columns included). */
  async logits(ids: TokenIds): Promise<Tensor> {
    return await this.parallel.lmLogits(await this.hidden(ids), this.wte.weight);
  }

  /**
   * An empty key-value cache for {@link Gpt.forwardCached}: `batch` sequences of
   * up to `capacity` positions (default and maximum: the position table), this
   * rank's heads only.
   */
  createCache(batch = 1, capacity = this.config.maxPositions): KvCache {
    if (capacity > this.config.maxPositions) {
      throw new Error(
        `cache capacity ${capacity} exceeds the position table (${this.config.maxPositions})`,
      );
    }
    const a = this.blocks[0]?.attn;
    return new KvCache(this.parallel.device, {
      numLayers: this.config.numLayers,
      batch,
      localHeads: a?.localHeads ?? 1,
      headDim: this.shape.kvChannels,
      capacity,
    });
  }

  /**
   * Incremental inference: runs only the new token ids `[B, n]` at positions
   * `[start, start + n)`, appends their keys and values to `cache`, attends over
   * positions `[0, start + n)` and returns the full-vocabulary logits of the new
   * positions, `[B, n, paddedVocab]` (or of the last one with `lastOnly`). A prompt
   * is one call at `start = 0`, each further token one call with `n = 1`. No
   * dropout and no autograd. Positions past the cache's capacity (at most the
   * position table) are refused with an error; {@link generate} restarts from a
   * shorter context instead.
   */
  async forwardCached(
    ids: TokenIds,
    cache: KvCache,
    start: number,
    opts: CachedForwardOptions = {},
  ): Promise<Tensor> {
    this.#checkIds(ids);
    const [B, n] = ids.shape;
    if (B !== cache.shape.batch) {
      throw new Error(`forwardCached: batch ${B} but the cache holds ${cache.shape.batch}`);
    }
    if (cache.layers.length !== this.blocks.length) {
      throw new Error(
        `forwardCached: the cache has ${cache.layers.length} layers, the model ${this.blocks.length}`,
      );
    }
    cache.checkWrite(start, n);
    const device = this.parallel.device;
    // Intermediates are freed here; only the logits escape to the caller's scope.
    const out = await tidy(device, () =>
      device.noGrad(async () => {
        let x = await this.wte.forwardWithPositions(ids, this.wpe.weight, null, start);
        for (let i = 0; i < this.blocks.length; i++) {
          x = await this.blocks[i].forwardCached(x, cache.layers[i], start);
        }
        if (opts.lastOnly && n > 1) x = ops.slice(x, 1, n - 1, n);
        return await this.parallel.lmLogits(this.lnF.forward(x), this.wte.weight);
      }));
    cache.advance(start, n);
    return out;
  }
}
