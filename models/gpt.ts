/**
 * A pre-LN GPT (GPT-2 layout): learned positions, tied input/output embeddings,
 * vocabulary padded to a multiple of 128·tp, init N(0, 0.02) with the residual
 * output projections scaled by 1/sqrt(2·layers), dropout, optional activation
 * recomputation per layer. Parallelism enters only through {@link ParallelLayers}.
 * @module
 */

import type { Device } from "../core/device.ts";
import { Dropout, Embedding, LayerNorm, Module } from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import { recompute } from "../core/recompute.ts";
import { deriveSeed, RngStream } from "../core/rng.ts";
import { type Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { type BlockShape, ParallelMlp, SelfAttention } from "./blocks.ts";
import { KvCache, type LayerCache } from "./kv_cache.ts";
import { RngTracker } from "./parallel/random.ts";
import { PositionIds } from "./positions.ts";
import type { ParallelLayers, VocabEmbedding } from "./parallel/layers.ts";
import { TensorParallelLayers } from "./parallel/tp_layers.ts";

/** Model shape and regularisation. */
export interface GptConfig {
  /** Tokenizer vocabulary (before padding). */
  vocabSize: number;
  /** Transformer layers. */
  numLayers: number;
  /** Hidden size h. */
  hiddenSize: number;
  /** Attention heads (h must divide by it; heads by tp). */
  numHeads: number;
  /** Maximum sequence length (position table size). */
  maxPositions: number;
  /** MLP inner size (default 4h). */
  ffnHiddenSize?: number;
  /** Dropout on embeddings and residual branches (default 0.1). */
  hiddenDropout?: number;
  /** Dropout on attention probabilities (default 0.1). */
  attentionDropout?: number;
  /** Layer-norm epsilon (default 1e-5). */
  layerNormEps?: number;
  /** Recompute each layer's activations in the backward pass. */
  recomputeActivations?: boolean;
  /** Round the vocabulary up to a multiple of this times tp (default 128). */
  vocabMultiple?: number;
}

/** The padded vocabulary size: a multiple of `multiple·tp`. */
export function paddedVocabSize(vocab: number, tp = 1, multiple = 128): number {
  const m = multiple * tp;
  return Math.ceil(vocab / m) * m;
}

/** Checks a config, throwing a message that names the bad field. */
export function validateGptConfig(c: GptConfig, tp = 1): void {
  const pos = (name: string, v: number) => {
    if (!Number.isInteger(v) || v <= 0) {
      throw new Error(`${name} must be a positive integer, got ${v}`);
    }
  };
  pos("vocab size", c.vocabSize);
  pos("--num-layers", c.numLayers);
  pos("--hidden-size", c.hiddenSize);
  pos("--num-attention-heads", c.numHeads);
  pos("--seq-length", c.maxPositions);
  if (c.hiddenSize % c.numHeads !== 0) {
    throw new Error(
      `--hidden-size ${c.hiddenSize} is not divisible by --num-attention-heads ${c.numHeads}`,
    );
  }
  if (c.numHeads % tp !== 0) {
    throw new Error(
      `--num-attention-heads ${c.numHeads} is not divisible by the tensor-parallel size ${tp}`,
    );
  }
  const ffn = c.ffnHiddenSize ?? 4 * c.hiddenSize;
  if (ffn % tp !== 0) {
    throw new Error(`the MLP size ${ffn} is not divisible by the tensor-parallel size ${tp}`);
  }
  for (
    const [n, p] of [["--hidden-dropout", c.hiddenDropout], [
      "--attention-dropout",
      c.attentionDropout,
    ]] as const
  ) {
    if (p !== undefined && !(p >= 0 && p < 1)) throw new Error(`${n} must be in [0, 1), got ${p}`);
  }
}

function blockShape(c: GptConfig): BlockShape {
  return {
    hiddenSize: c.hiddenSize,
    numHeads: c.numHeads,
    ffnHiddenSize: c.ffnHiddenSize ?? 4 * c.hiddenSize,
    numLayers: c.numLayers,
  };
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

  /** A layer built by `layers`, drawing init from `init` and dropout from `rng`. */
  constructor(
    readonly layers: ParallelLayers,
    c: GptConfig,
    init: RngStream,
    readonly rng: RngTracker,
  ) {
    super();
    const eps = c.layerNormEps ?? 1e-5;
    this.ln1 = this.child("ln_1", new LayerNorm(layers.device, c.hiddenSize, eps));
    const shape = blockShape(c);
    this.attn = this.child(
      "attn",
      new SelfAttention(layers, shape, init, c.attentionDropout ?? 0.1, rng.rank, {
        input: "c_attn",
        output: "c_proj",
      }),
    );
    this.ln2 = this.child("ln_2", new LayerNorm(layers.device, c.hiddenSize, eps));
    this.mlp = this.child(
      "mlp",
      new ParallelMlp(layers, shape, init, { input: "c_fc", output: "c_proj" }, "tanh"),
    );
    this.drop = this.child("drop", new Dropout(c.hiddenDropout ?? 0.1, rng.group));
  }

  /** Applies the layer to `[B, T, h]`. */
  async forward(x: Tensor): Promise<Tensor> {
    const a = await this.attn.forward(this.ln1.forward(x));
    const h = ops.add(x, this.drop.forward(a));
    const m = await this.mlp.forward(this.ln2.forward(h));
    return ops.add(h, this.drop.forward(m));
  }

  /** Inference on `n` new positions `[B, n, h]` after `start` cached ones (no dropout). */
  async forwardCached(x: Tensor, cache: LayerCache, start: number): Promise<Tensor> {
    const h = ops.add(x, await this.attn.forwardCached(this.ln1.forward(x), cache, start));
    return ops.add(h, await this.mlp.forward(this.ln2.forward(h)));
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
  /** The transformer layers. */
  readonly h: GptLayer[];
  /** Final layer norm. */
  readonly lnF: LayerNorm;
  /** Embedding dropout. */
  readonly drop: Dropout;
  /** Dropout streams. */
  readonly rng: RngTracker;

  /**
   * Builds the model. All ranks of a TP group pass the same `seed`; weights are
   * drawn as slices of the full, unsharded weights, so any TP size gives the same
   * model.
   */
  constructor(
    readonly layers: ParallelLayers,
    config: GptConfig,
    opts: { seed: number; rng?: RngTracker },
  ) {
    super();
    validateGptConfig(config, layers.tpSize);
    this.config = config;
    this.paddedVocab = paddedVocabSize(
      config.vocabSize,
      layers.tpSize,
      config.vocabMultiple ?? 128,
    );
    const init = new RngStream(deriveSeed(opts.seed, 0));
    this.rng = opts.rng ?? new RngTracker(opts.seed, layers.tpRank);
    const dev = layers.device;
    this.wte = this.child(
      "wte",
      layers.vocabEmbedding(this.paddedVocab, config.hiddenSize, { rng: init }),
    );
    this.wpe = this.child(
      "wpe",
      new Embedding(dev, config.maxPositions, config.hiddenSize, { rng: init }),
    );
    this.drop = this.child("drop", new Dropout(config.hiddenDropout ?? 0.1, this.rng.group));
    this.h = [];
    for (let i = 0; i < config.numLayers; i++) {
      this.h.push(this.child(`h.${i}`, new GptLayer(layers, config, init, this.rng)));
    }
    this.lnF = this.child(
      "ln_f",
      new LayerNorm(dev, config.hiddenSize, config.layerNormEps ?? 1e-5),
    );
  }

  /** A GPT on one device. */
  static serial(device: Device, config: GptConfig, seed: number): Gpt {
    return new Gpt(TensorParallelLayers.single(device), config, { seed });
  }

  #positions?: PositionIds;

  #positionIds(B: number, T: number): TokenIds {
    this.#positions ??= new PositionIds(this.layers.device);
    return this.#positions.get(B, T);
  }

  /** Final hidden states `[B, T, h]` for token ids `[B, T]`. */
  async hidden(ids: TokenIds): Promise<Tensor> {
    if (ids.rank !== 2) throw new Error(`GPT input must be [batch, seq], got [${ids.shape}]`);
    const [B, T] = ids.shape;
    if (T > this.config.maxPositions) {
      throw new Error(
        `sequence length ${T} exceeds the position table (${this.config.maxPositions})`,
      );
    }
    let x = ops.add(await this.wte.forward(ids), this.wpe.forward(this.#positionIds(B, T)));
    x = this.drop.forward(x);
    for (const layer of this.h) {
      if (this.config.recomputeActivations && this.training) {
        x = await recompute((y) => layer.forward(y), x, layer.parameters(), [
          this.rng.group,
          this.rng.rank,
        ]);
      } else {
        x = await layer.forward(x);
      }
    }
    return this.lnF.forward(x);
  }

  /** Mean next-token cross-entropy for inputs and targets `[B, T]`. */
  async loss(ids: TokenIds, targets: TokenIds): Promise<Tensor> {
    const h = await this.hidden(ids);
    return await this.layers.lmLoss(h, this.wte.weight, targets, this.config.vocabSize);
  }

  /** Logits `[B, T, paddedVocab]` (padding columns included). */
  async logits(ids: TokenIds): Promise<Tensor> {
    return await this.layers.lmLogits(await this.hidden(ids), this.wte.weight);
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
    const a = this.h[0]?.attn;
    return new KvCache(this.layers.device, {
      numLayers: this.config.numLayers,
      batch,
      localHeads: a?.localHeads ?? 1,
      headDim: a?.headDim ?? this.config.hiddenSize / this.config.numHeads,
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
    if (ids.rank !== 2) throw new Error(`GPT input must be [batch, seq], got [${ids.shape}]`);
    const [B, n] = ids.shape;
    if (B !== cache.shape.batch) {
      throw new Error(`forwardCached: batch ${B} but the cache holds ${cache.shape.batch}`);
    }
    if (cache.layers.length !== this.h.length) {
      throw new Error(
        `forwardCached: the cache has ${cache.layers.length} layers, the model ${this.h.length}`,
      );
    }
    cache.checkWrite(start, n);
    const device = this.layers.device;
    // Intermediates are freed here; only the logits escape to the caller's scope.
    const out = await tidy(device, () =>
      device.noGrad(async () => {
        const pos = new Int32Array(B * n);
        for (let i = 0; i < pos.length; i++) pos[i] = start + (i % n);
        const posIds = TokenIds.fromHost(device, pos, [B, n]);
        let x = ops.add(await this.wte.forward(ids), this.wpe.forward(posIds));
        for (let i = 0; i < this.h.length; i++) {
          x = await this.h[i].forwardCached(x, cache.layers[i], start);
        }
        if (opts.lastOnly && n > 1) x = ops.slice(x, 1, n - 1, n);
        return await this.layers.lmLogits(this.lnF.forward(x), this.wte.weight);
      }));
    cache.advance(start, n);
    return out;
  }

  /** Frees parameters and cached position ids. */
  override dispose(): void {
    super.dispose();
    this.#positions?.dispose();
  }
}
