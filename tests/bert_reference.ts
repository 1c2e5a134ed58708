/**
 * A plain TypeScript BERT forward in float64 (no dropout) for checking the GPU
 * model on the same weights, plus the transformer pieces it is made of
 * (linear, masked multi-head attention, encoder layer), exported for other
 * float64 references. It follows models/bert.ts step by step: word + position +
 * token-type embeddings, embedding layer norm, encoder layers with layer norm
 * after the residual add (post-LN) or before each sub-layer with a final layer
 * norm (pre-LN), a padding mask on the keys, the MLM head (dense → exact GeLU →
 * layer norm → tied decoder + bias over the padded vocabulary, only the first
 * `vocabSize` columns in the cross-entropy) on the positions with a target, and
 * the SOP head (pooler dense → tanh → classifier) on the [CLS] token. Weights
 * are taken by the model's parameter names. Test-only.
 * @module
 */

import { geluErf, layerNormRef } from "./reference.ts";

/** Weights by the model's parameter names (float32 or float64 host arrays). */
export type Weights64 = ReadonlyMap<string, ArrayLike<number>>;

/** Reads a weight, failing with its name when the model does not have it. */
export function weight(w: Weights64, name: string): ArrayLike<number> {
  const v = w.get(name);
  if (!v) throw new Error(`reference: missing weight ${name}`);
  return v;
}

/** `y = x·Wᵀ + b` over `rows` rows, `W` stored `[outF, inF]` as the model stores it. */
export function linear64(
  x: ArrayLike<number>,
  rows: number,
  inF: number,
  w: ArrayLike<number>,
  b: ArrayLike<number> | undefined,
  outF: number,
): Float64Array {
  const y = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i] * w[o * inF + i];
      y[r * outF + o] = s;
    }
  }
  return y;
}

/**
 * Multi-head attention on a fused projection `qkv` (`[B·T, 3h]`, laid out
 * q|k|v with head `n` at columns `n·hd … (n+1)·hd` of each), softmax of
 * `q·k/sqrt(hd)` over the keys `j` that `allowed(b, i, j)` admits. A query that
 * admits no key gets zeros, as the kernel does. Returns the merged heads
 * `[B·T, h]` (before the output projection).
 */
export function attention64(
  qkv: Float64Array,
  B: number,
  T: number,
  h: number,
  numHeads: number,
  allowed: (b: number, i: number, j: number) => boolean,
): Float64Array {
  const hd = h / numHeads;
  const ctx = new Float64Array(B * T * h);
  const scores = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let head = 0; head < numHeads; head++) {
      for (let i = 0; i < T; i++) {
        const q = (b * T + i) * 3 * h + head * hd;
        let m = -Infinity;
        for (let j = 0; j < T; j++) {
          if (!allowed(b, i, j)) continue;
          const k = (b * T + j) * 3 * h + h + head * hd;
          let s = 0;
          for (let d = 0; d < hd; d++) s += qkv[q + d] * qkv[k + d];
          scores[j] = s / Math.sqrt(hd);
          m = Math.max(m, scores[j]);
        }
        if (m === -Infinity) continue;
        let z = 0;
        for (let j = 0; j < T; j++) if (allowed(b, i, j)) z += Math.exp(scores[j] - m);
        for (let j = 0; j < T; j++) {
          if (!allowed(b, i, j)) continue;
          const p = Math.exp(scores[j] - m) / z;
          const v = (b * T + j) * 3 * h + 2 * h + head * hd;
          const out = (b * T + i) * h + head * hd;
          for (let d = 0; d < hd; d++) ctx[out + d] += p * qkv[v + d];
        }
      }
    }
  }
  return ctx;
}

/** Names of the parameters of one transformer layer. */
export interface LayerNames {
  /** Fused q|k|v projection (weight `[3h, h]`, bias `[3h]`). */
  qkv: string;
  /** Attention output projection. */
  attnOut: string;
  /** Layer norm around the attention sub-layer. */
  lnAttn: string;
  /** MLP input projection (h → ffn). */
  fc: string;
  /** MLP output projection (ffn → h). */
  fcOut: string;
  /** Layer norm around the MLP sub-layer. */
  lnMlp: string;
}

/** Shape and options of one transformer layer. */
export interface LayerSpec {
  /** Batch size. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Hidden size. */
  h: number;
  /** Attention heads. */
  numHeads: number;
  /** Layer-norm epsilon. */
  eps: number;
  /** Layer norm after the residual add (original BERT) instead of before each sub-layer. */
  post: boolean;
  /** Which keys each query sees. */
  allowed: (b: number, i: number, j: number) => boolean;
  /** The MLP's GeLU. */
  gelu: (x: number) => number;
}

/**
 * One transformer layer on `x` (`[B·T, h]`). Pre-LN:
 * `x + Attn(LN₁(x))`, then `+ MLP(LN₂(·))`. Post-LN: `LN₁(x + Attn(x))`, then
 * `LN₂(· + MLP(·))`.
 */
export function layer64(
  w: Weights64,
  names: LayerNames,
  s: LayerSpec,
  x: Float64Array,
): Float64Array {
  const N = s.B * s.T;
  const h = s.h;
  const ln = (v: Float64Array, n: string) =>
    layerNormRef(v, weight(w, n + ".weight"), weight(w, n + ".bias"), h, s.eps);
  const lin = (v: Float64Array, n: string, inF: number, outF: number) =>
    linear64(v, N, inF, weight(w, n + ".weight"), weight(w, n + ".bias"), outF);
  const attn = (v: Float64Array) => {
    const qkv = lin(v, names.qkv, h, 3 * h);
    return lin(attention64(qkv, s.B, s.T, h, s.numHeads, s.allowed), names.attnOut, h, h);
  };
  const ffn = weight(w, names.fc + ".bias").length;
  const mlp = (v: Float64Array) => lin(lin(v, names.fc, h, ffn).map(s.gelu), names.fcOut, ffn, h);
  const add = (a: Float64Array, b: Float64Array) => a.map((v, i) => v + b[i]);
  if (s.post) {
    const a = ln(add(x, attn(x)), names.lnAttn);
    return ln(add(a, mlp(a)), names.lnMlp);
  }
  const a = add(x, attn(ln(x, names.lnAttn)));
  return add(a, mlp(ln(a, names.lnMlp)));
}

/** Sum (not mean) of the cross-entropies of the rows of `logits` over the first `valid` columns. */
export function crossEntropySum64(
  logits: ArrayLike<number>,
  cols: number,
  valid: number,
  targets: ArrayLike<number>,
): number {
  let total = 0;
  for (let r = 0; r < targets.length; r++) {
    if (targets[r] < 0) continue;
    let m = -Infinity;
    for (let v = 0; v < valid; v++) m = Math.max(m, logits[r * cols + v]);
    let z = 0;
    for (let v = 0; v < valid; v++) z += Math.exp(logits[r * cols + v] - m);
    total += m + Math.log(z) - logits[r * cols + targets[r]];
  }
  return total;
}

/** The BERT shape the reference needs (a `BertConfig` plus the padded vocabulary). */
export interface BertRefConfig {
  /** Vocabulary before padding (columns that count in the MLM loss). */
  vocabSize: number;
  /** Rows of the word-embedding table (the padded vocabulary). */
  paddedVocab: number;
  /** Transformer layers. */
  numLayers: number;
  /** Hidden size. */
  hiddenSize: number;
  /** Attention heads. */
  numHeads: number;
  /** Layer-norm epsilon (default 1e-12, as the model). */
  layerNormEps?: number;
  /** Post-LN placement (default false: pre-LN). */
  postLayerNorm?: boolean;
}

/** One BERT batch on the host, `[B, T]` row-major. */
export interface BertRefBatch {
  /** Batch size. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Token ids. */
  ids: ArrayLike<number>;
  /** Segment ids. */
  tokenTypes: ArrayLike<number>;
  /** 1 for real tokens, 0 for padding. */
  keep: ArrayLike<number>;
  /** MLM targets, −1 where not predicted. */
  mlmTargets: ArrayLike<number>;
  /** Sentence-order labels `[B]`. */
  sopLabels: ArrayLike<number>;
  /** Divisor of the summed MLM loss (default: the number of targets). */
  mlmNormalizer?: number;
}

/** Encoder output `[B·T, h]` (after the final layer norm under pre-LN). */
export function bertEncode64(w: Weights64, cfg: BertRefConfig, batch: BertRefBatch): Float64Array {
  const { B, T } = batch;
  const h = cfg.hiddenSize;
  const eps = cfg.layerNormEps ?? 1e-12;
  const post = !!cfg.postLayerNorm;
  const word = weight(w, "bert.embeddings.word_embeddings.weight");
  const pos = weight(w, "bert.embeddings.position_embeddings.weight");
  const type = weight(w, "bert.embeddings.token_type_embeddings.weight");
  let x: Float64Array = new Float64Array(B * T * h);
  for (let n = 0; n < B * T; n++) {
    const id = batch.ids[n], t = n % T, s = batch.tokenTypes[n];
    for (let i = 0; i < h; i++) x[n * h + i] = word[id * h + i] + pos[t * h + i] + type[s * h + i];
  }
  x = layerNormRef(
    x,
    weight(w, "bert.embeddings.LayerNorm.weight"),
    weight(w, "bert.embeddings.LayerNorm.bias"),
    h,
    eps,
  );
  const spec: LayerSpec = {
    B,
    T,
    h,
    numHeads: cfg.numHeads,
    eps,
    post,
    allowed: (b, _i, j) => batch.keep[b * T + j] !== 0,
    gelu: geluErf,
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `bert.encoder.layer.${l}.`;
    x = layer64(
      w,
      {
        qkv: p + "attention.self.qkv",
        attnOut: p + "attention.output.dense",
        lnAttn: p + "attention.output.LayerNorm",
        fc: p + "intermediate.dense",
        fcOut: p + "output.dense",
        lnMlp: p + "output.LayerNorm",
      },
      spec,
      x,
    );
  }
  if (!post) {
    x = layerNormRef(
      x,
      weight(w, "bert.encoder.final_layernorm.weight"),
      weight(w, "bert.encoder.final_layernorm.bias"),
      h,
      eps,
    );
  }
  return x;
}

/**
 * The BERT pre-training losses as models/bert.ts computes them: MLM = (sum of
 * the masked positions' cross-entropies) / (`mlmNormalizer` or their count;
 * 0 when there are none), SOP = mean cross-entropy of the [CLS] classifier,
 * total = MLM + SOP.
 */
export function bertLossRef(
  w: Weights64,
  cfg: BertRefConfig,
  batch: BertRefBatch,
): { total: number; mlm: number; sop: number } {
  const { B, T } = batch;
  const h = cfg.hiddenSize;
  const eps = cfg.layerNormEps ?? 1e-12;
  const hidden = bertEncode64(w, cfg, batch);
  // MLM head on the positions with a target.
  const positions: number[] = [];
  const picked: number[] = [];
  for (let n = 0; n < B * T; n++) {
    if (batch.mlmTargets[n] >= 0) {
      positions.push(n);
      picked.push(batch.mlmTargets[n]);
    }
  }
  let mlm = 0;
  if (positions.length > 0) {
    const M = positions.length;
    const rows = new Float64Array(M * h);
    positions.forEach((n, r) => rows.set(hidden.subarray(n * h, (n + 1) * h), r * h));
    const dense = linear64(
      rows,
      M,
      h,
      weight(w, "cls.predictions.transform.dense.weight"),
      weight(w, "cls.predictions.transform.dense.bias"),
      h,
    ).map(geluErf);
    const t = layerNormRef(
      dense,
      weight(w, "cls.predictions.transform.LayerNorm.weight"),
      weight(w, "cls.predictions.transform.LayerNorm.bias"),
      h,
      eps,
    );
    const logits = linear64(
      t,
      M,
      h,
      weight(w, "bert.embeddings.word_embeddings.weight"),
      weight(w, "cls.predictions.bias"),
      cfg.paddedVocab,
    );
    const sum = crossEntropySum64(logits, cfg.paddedVocab, cfg.vocabSize, picked);
    mlm = sum / Math.max(batch.mlmNormalizer ?? M, 1e-30);
  }
  // SOP head on [CLS] (position 0 of each sequence).
  const cls = new Float64Array(B * h);
  for (let b = 0; b < B; b++) cls.set(hidden.subarray(b * T * h, (b * T + 1) * h), b * h);
  const pooled = linear64(
    cls,
    B,
    h,
    weight(w, "bert.pooler.dense.weight"),
    weight(w, "bert.pooler.dense.bias"),
    h,
  ).map(Math.tanh);
  const sopLogits = linear64(
    pooled,
    B,
    h,
    weight(w, "cls.seq_relationship.weight"),
    weight(w, "cls.seq_relationship.bias"),
    2,
  );
  let count = 0;
  for (let b = 0; b < B; b++) if (batch.sopLabels[b] >= 0) count++;
  const sop = crossEntropySum64(sopLogits, 2, 2, batch.sopLabels) / Math.max(count, 1e-30);
  return { total: mlm + sop, mlm, sop };
}
