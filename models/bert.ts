/**
 * BERT with Hugging Face parameter names: bidirectional attention with a
 * padding mask, word (vocabulary-parallel), position and token-type embeddings,
 * a masked-language-model head tied to the word embeddings, and a
 * sentence-order-prediction head on the [CLS] token. Layer norm goes after the
 * residual add (original BERT, `postLayerNorm: true`) or before each sub-layer
 * with a final layer norm (pre-LN, the placement the paper found trains larger
 * BERTs stably; the default). Optional activation recomputation per layer, as GPT's.
 * @module
 */

import type { Device } from "../core/device.ts";
import {
  Dropout,
  Embedding,
  type InitSpec,
  LayerNorm,
  Linear,
  Module,
  type ParamInfo,
} from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import { fmtShape, type Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import {
  FUSED_ATTENTION_DEFAULT,
  modelInit,
  type ModelOptions,
  ParallelMlp,
  SelfAttention,
  throughLayers,
} from "./blocks.ts";
import { paddedVocabSize } from "./gpt.ts";
import type { ParallelLayers, VocabEmbedding } from "./parallel/layers.ts";
import { RngTracker } from "./parallel/random.ts";
import { TensorParallelLayers } from "./parallel/tp_layers.ts";
import {
  DEFAULT_DROPOUT,
  DEFAULT_VOCAB_MULTIPLE,
  type TransformerConfig,
  type TransformerShape,
  validateTransformerConfig,
} from "./shape.ts";

/** Layer-norm epsilon of a BERT config that does not set one (BERT's). */
export const BERT_LAYER_NORM_EPS = 1e-12;

/**
 * The MLM head's gathered rows are padded with ignored rows to a multiple of
 * this, so that a run meets a few matmul shapes rather than one per masked count.
 */
const MLM_ROW_MULTIPLE = 16;

/** Token types (segments) of a BERT config that does not set them (BERT's). */
export const BERT_TYPE_VOCAB_SIZE = 2;

/** BERT shape and options (the vocabulary is WordPiece's). */
export interface BertConfig extends TransformerConfig {
  /** Token types (segments), default {@link BERT_TYPE_VOCAB_SIZE}. */
  typeVocabSize?: number;
  /** Layer-norm epsilon (default {@link BERT_LAYER_NORM_EPS}). */
  layerNormEps?: number;
  /** Original BERT ordering: layer norm after the residual add. Default false (pre-LN). */
  postLayerNorm?: boolean;
}

/** One batch of BERT inputs: ids made from host data ({@link TokenIds}), and the padding mask. */
export interface BertInputs {
  /** Token ids `[B, T]`. */
  ids: TokenIds;
  /** Segment ids `[B, T]`. */
  tokenTypes: TokenIds;
  /** `[B, T]` f32: 1 for real tokens, 0 for padding. */
  keep: Tensor;
  /** MLM targets `[B, T]`, −1 where not predicted (their host copy picks the masked rows). */
  mlmTargets: TokenIds;
  /** Sentence-order labels `[B]` (1 = swapped). */
  sopLabels: TokenIds;
  /**
   * Divisor of the summed MLM loss in place of this batch's masked-token count:
   * under data parallelism, (global masked count) / (DP size), so that averaging
   * gradients over replicas gives the gradient of the global-batch mean.
   */
  mlmNormalizer?: number;
}

/** The two losses of a BERT step. */
export interface BertLosses {
  /** MLM + SOP, what is optimized. */
  total: Tensor;
  /** Masked-language-model loss. */
  mlm: Tensor;
  /** Sentence-order-prediction loss. */
  sop: Tensor;
}

/** One BERT layer (post-LN or pre-LN, chosen per call). */
export class BertLayer extends Module {
  /** Self-attention with a padding mask. */
  readonly attention: SelfAttention;
  /** Layer norm around the attention sub-layer. */
  readonly lnAttention: LayerNorm;
  /** The MLP. */
  readonly mlp: ParallelMlp;
  /** Layer norm around the MLP sub-layer. */
  readonly lnOutput: LayerNorm;
  /** Residual-branch dropout. */
  readonly drop: Dropout;

  /** Builds the layer, drawing its weights as `init` says. */
  constructor(
    parallel: ParallelLayers,
    c: BertConfig,
    s: TransformerShape,
    init: InitSpec,
    rng: RngTracker,
  ) {
    super();
    const eps = c.layerNormEps ?? BERT_LAYER_NORM_EPS;
    this.attention = this.child(
      "attention",
      new SelfAttention(parallel, s, init, c.attentionDropout ?? DEFAULT_DROPOUT, rng.rank, {
        input: "self.qkv",
        output: "output.dense",
      }, c.fusedAttention ?? FUSED_ATTENTION_DEFAULT),
    );
    this.lnAttention = this.child(
      "attention.output.LayerNorm",
      new LayerNorm(parallel.device, c.hiddenSize, eps),
    );
    this.mlp = this.child(
      "mlp",
      new ParallelMlp(
        parallel,
        s,
        init,
        { input: "intermediate.dense", output: "output.dense" },
        "erf",
      ),
    );
    this.lnOutput = this.child(
      "output.LayerNorm",
      new LayerNorm(parallel.device, c.hiddenSize, eps),
    );
    this.drop = this.child("drop", new Dropout(c.hiddenDropout ?? DEFAULT_DROPOUT, rng.group));
  }

  /** Renames the MLP's parameters to HF's flat layout (intermediate.* / output.dense.*). */
  override namedParams(prefix = ""): [string, ParamInfo][] {
    return super.namedParams(prefix).map(([n, p]) =>
      [n.replace(`${prefix}mlp.`, prefix), p] as [string, typeof p]
    );
  }

  /**
   * Applies the layer; `post` selects the original post-LN ordering. Each
   * residual add runs fused with its dropout and the layer norm that follows it
   * (`ops.residualLayerNorm`; the last add of a pre-LN layer with its dropout
   * only, `ops.residualDropout`), drawing the masks `drop.forward` would draw.
   */
  async forward(x: Tensor, keep: Tensor, post: boolean): Promise<Tensor> {
    const norm = (x: Tensor, a: Tensor, ln: LayerNorm) =>
      ops.residualLayerNorm(x, a, this.drop.spec(), ln.weight, ln.bias, ln.eps);
    if (post) {
      const a = await this.attention.forward(x, keep);
      const h = norm(x, a, this.lnAttention).normed;
      const m = await this.mlp.forward(h);
      return norm(h, m, this.lnOutput).normed;
    }
    const a = await this.attention.forward(this.lnAttention.forward(x), keep);
    const r = norm(x, a, this.lnOutput);
    const m = await this.mlp.forward(r.normed);
    return ops.residualDropout(r.sum, m, this.drop.spec());
  }
}

/** BERT for pre-training (MLM + SOP). */
export class Bert extends Module {
  /** The config. */
  readonly config: BertConfig;
  /** Vocabulary after padding. */
  readonly paddedVocab: number;
  /** Word embeddings (vocabulary-parallel, tied to the MLM decoder). */
  readonly wordEmbeddings: VocabEmbedding;
  /** Learned positions. */
  readonly positionEmbeddings: Embedding;
  /** Segment (token-type) embeddings. */
  readonly tokenTypeEmbeddings: Embedding;
  /** Layer norm of the summed embeddings. */
  readonly embeddingsLn: LayerNorm;
  /** The resolved shape (defaults filled in). */
  readonly shape: TransformerShape;
  /** The transformer blocks (parameters named `bert.encoder.layer.<i>.…`, as HF's). */
  readonly blocks: BertLayer[];
  /** Final layer norm (pre-LN only). */
  readonly finalLn?: LayerNorm;
  /** Pooler on the [CLS] token. */
  readonly poolerDense: Linear;
  /** MLM head transform. */
  readonly transformDense: Linear;
  /** MLM head layer norm. */
  readonly transformLn: LayerNorm;
  /** MLM output bias (vocabulary-parallel). */
  readonly mlmBias: Tensor;
  /** Sentence-order classifier. */
  readonly sopHead: Linear;
  /** Embedding dropout. */
  readonly drop: Dropout;
  /** Dropout streams. */
  readonly rng: RngTracker;

  /** Builds the model; as GPT, any TP size gives the same model from one seed. */
  constructor(
    readonly parallel: ParallelLayers,
    config: BertConfig,
    opts: ModelOptions,
  ) {
    super();
    this.shape = validateTransformerConfig(config, parallel.tpSize, [
      "typeVocabSize",
      "layerNormEps",
      "postLayerNorm",
    ]);
    this.config = config;
    const tp = parallel.tpSize;
    this.paddedVocab = paddedVocabSize(
      config.vocabSize,
      tp,
      config.vocabMultiple ?? DEFAULT_VOCAB_MULTIPLE,
    );
    const init = modelInit(opts.seed, opts.initStd);
    this.rng = opts.rng ?? new RngTracker(opts.seed, parallel.tpRank);
    const dev = parallel.device;
    const h = config.hiddenSize;
    const eps = config.layerNormEps ?? BERT_LAYER_NORM_EPS;
    const s = this.shape;
    this.wordEmbeddings = this.child(
      "bert.embeddings.word_embeddings",
      parallel.vocabEmbedding(this.paddedVocab, h, init),
    );
    this.positionEmbeddings = this.child(
      "bert.embeddings.position_embeddings",
      new Embedding(dev, config.maxPositions, h, init),
    );
    this.tokenTypeEmbeddings = this.child(
      "bert.embeddings.token_type_embeddings",
      new Embedding(dev, config.typeVocabSize ?? BERT_TYPE_VOCAB_SIZE, h, init),
    );
    this.embeddingsLn = this.child("bert.embeddings.LayerNorm", new LayerNorm(dev, h, eps));
    this.drop = this.child(
      "drop",
      new Dropout(config.hiddenDropout ?? DEFAULT_DROPOUT, this.rng.group),
    );
    this.blocks = [];
    for (let i = 0; i < config.numLayers; i++) {
      this.blocks.push(
        this.child(`bert.encoder.layer.${i}`, new BertLayer(parallel, config, s, init, this.rng)),
      );
    }
    if (!config.postLayerNorm) {
      this.finalLn = this.child("bert.encoder.final_layernorm", new LayerNorm(dev, h, eps));
    }
    this.poolerDense = this.child("bert.pooler.dense", new Linear(dev, h, h, init));
    this.transformDense = this.child(
      "cls.predictions.transform.dense",
      new Linear(dev, h, h, init),
    );
    this.transformLn = this.child(
      "cls.predictions.transform.LayerNorm",
      new LayerNorm(dev, h, eps),
    );
    this.mlmBias = this.child("cls.predictions", new MlmBias(parallel, this.paddedVocab)).bias;
    this.sopHead = this.child("cls.seq_relationship", new Linear(dev, h, 2, init));
  }

  /** Encoder output `[B, T, h]`. */
  async encode(ids: TokenIds, tokenTypes: TokenIds, keep: Tensor): Promise<Tensor> {
    TokenIds.check("BERT", ids, "ids", this.parallel.device);
    if (ids.rank !== 2) throw new Error(`BERT input must be [batch, seq], got [${ids.shape}]`);
    ids.checkInVocab("BERT", this.config.vocabSize);
    const T = ids.shape[1];
    if (T > this.config.maxPositions) {
      throw new Error(
        `sequence length ${T} exceeds the position table (${this.config.maxPositions})`,
      );
    }
    // (word + position) in one kernel, + token type and the layer norm in another
    const ln = this.embeddingsLn;
    let x = ops.residualLayerNorm(
      await this.wordEmbeddings.forwardWithPositions(ids, this.positionEmbeddings.weight, null),
      this.tokenTypeEmbeddings.forward(tokenTypes),
      null,
      ln.weight,
      ln.bias,
      ln.eps,
    ).normed;
    x = this.drop.forward(x);
    const post = !!this.config.postLayerNorm;
    const recomputeWith = this.config.recomputeActivations && this.training ? this.rng : null;
    x = await throughLayers(x, this.blocks, (l, y) => l.forward(y, keep, post), recomputeWith);
    return this.finalLn ? this.finalLn.forward(x) : x;
  }

  /** A BERT on one device. */
  static serial(device: Device, config: BertConfig, seed: number): Bert {
    return new Bert(TensorParallelLayers.single(device), config, { seed });
  }

  /** MLM, SOP and total loss for a batch. */
  async losses(b: BertInputs): Promise<BertLosses> {
    const mlmTargets = TokenIds.check("BERT", b.mlmTargets, "mlmTargets", this.parallel.device);
    const norm = b.mlmNormalizer;
    if (norm !== undefined && !(typeof norm === "number" && Number.isFinite(norm) && norm > 0)) {
      throw new RangeError(`BERT: mlmNormalizer must be a positive finite number, got ${norm}`);
    }
    if (mlmTargets.size !== b.ids.size) {
      throw new Error(
        `BERT: mlmTargets ${fmtShape(mlmTargets.shape)} must hold one target per token of the ` +
          `ids ${fmtShape(b.ids.shape)} (-1 where a token is not predicted)`,
      );
    }
    const hidden = await this.encode(b.ids, b.tokenTypes, b.keep);
    // The MLM head runs only on the masked positions (~15%): gather those rows
    // first (a lookup into the [B·T, h] hidden states, whose gradient scatters
    // back), so the vocabulary-sized matmul is 1/0.15 times smaller.
    const targets = mlmTargets.host;
    const positions: number[] = [];
    const picked: number[] = [];
    targets.forEach((t, i) => {
      if (t >= 0) {
        positions.push(i);
        picked.push(t);
      }
    });
    // Ignored rows (target −1, any position) up to a multiple: a few shapes per run, not one per
    // masked count, for the matmul tuner and the kernel caches; they add exactly 0 to the loss.
    while (positions.length % MLM_ROW_MULTIPLE !== 0) {
      positions.push(0);
      picked.push(-1);
    }
    const device = this.parallel.device;
    let mlm: Tensor;
    if (positions.length === 0) {
      mlm = ops.full(device, [1], 0);
    } else {
      mlm = await this.parallel.lmLoss(
        this.#mlmTransform(hidden, positions),
        this.wordEmbeddings.weight,
        TokenIds.fromHost(device, picked),
        this.config.vocabSize,
        this.mlmBias,
        b.mlmNormalizer,
      );
    }
    const sop = ops.crossEntropy(this.#sopLogits(hidden), b.sopLabels);
    return { total: ops.add(mlm, sop), mlm, sop };
  }

  /**
   * Both heads' logits, for evaluation and prediction: the MLM logits at the flat
   * positions `b·T + t` of `hidden` (`[positions.length, paddedVocab]`, the full
   * vocabulary on every rank under tensor parallelism; columns from `vocabSize` on are
   * padding), or null for no positions, and the sentence-order logits `[B, 2]`.
   */
  async headLogits(
    hidden: Tensor,
    positions: ArrayLike<number>,
  ): Promise<{ mlm: Tensor | null; sop: Tensor }> {
    const mlm = positions.length === 0 ? null : await this.parallel.lmLogits(
      this.#mlmTransform(hidden, positions),
      this.wordEmbeddings.weight,
      this.mlmBias,
    );
    return { mlm, sop: this.#sopLogits(hidden) };
  }

  /** The MLM head's transform (dense → erf GeLU → layer norm) of the rows at `positions`. */
  #mlmTransform(hidden: Tensor, positions: ArrayLike<number>): Tensor {
    const [B, T, h] = hidden.shape;
    const rows = ops.embedding(
      ops.reshape(hidden, [B * T, h]),
      TokenIds.fromHost(this.parallel.device, Array.from(positions)),
    );
    return this.transformLn.forward(ops.gelu(this.transformDense.forward(rows), "erf"));
  }

  /** Sentence-order logits `[B, 2]`: pooler (dense → tanh) on [CLS], then the classifier. */
  #sopLogits(hidden: Tensor): Tensor {
    const [B, , h] = hidden.shape;
    const cls = ops.reshape(ops.slice(hidden, 1, 0, 1), [B, h]);
    return this.sopHead.forward(ops.tanh(this.poolerDense.forward(cls)));
  }

  /** The total pre-training loss (MLM + SOP). */
  async loss(b: BertInputs): Promise<Tensor> {
    return (await this.losses(b)).total;
  }
}

/** The MLM output bias, split by vocabulary like the tied decoder weight. */
class MlmBias extends Module {
  readonly bias: Tensor;
  constructor(parallel: ParallelLayers, paddedVocab: number) {
    super();
    const per = paddedVocab / parallel.tpSize;
    this.bias = this.param("bias", ops.full(parallel.device, [per], 0), {
      decay: false,
      partitionDim: 0,
      tpSize: parallel.tpSize,
    });
  }
}
