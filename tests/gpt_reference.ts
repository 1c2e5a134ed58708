/**
 * A plain TypeScript GPT forward (float64, no dropout) for checking the GPU
 * model on the same weights. Test-only.
 * @module
 */

import { geluTanh } from "./reference.ts";

/** Weights by the model's parameter names, as host arrays. */
export type Weights = Map<string, Float32Array>;

function linear(
  x: Float64Array,
  rows: number,
  inF: number,
  w: Float32Array,
  b: Float32Array | undefined,
  outF: number,
) {
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

function layerNorm(
  x: Float64Array,
  rows: number,
  h: number,
  g: Float32Array,
  b: Float32Array,
  eps: number,
) {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = 0; i < h; i++) m += x[r * h + i];
    m /= h;
    let v = 0;
    for (let i = 0; i < h; i++) v += (x[r * h + i] - m) ** 2;
    const rs = 1 / Math.sqrt(v / h + eps);
    for (let i = 0; i < h; i++) y[r * h + i] = (x[r * h + i] - m) * rs * g[i] + b[i];
  }
  return y;
}

/** Mean next-token loss of a pre-LN GPT over `ids`/`targets` ([B, T] row-major). */
export function gptLossRef(
  w: Weights,
  cfg: {
    numLayers: number;
    hiddenSize: number;
    numHeads: number;
    vocabSize: number;
    paddedVocab: number;
  },
  ids: Int32Array,
  targets: Int32Array,
  B: number,
  T: number,
): number {
  const h = cfg.hiddenSize;
  const nh = cfg.numHeads;
  const hd = h / nh;
  const N = B * T;
  const get = (n: string) => {
    const v = w.get(n);
    if (!v) throw new Error(`missing weight ${n}`);
    return v;
  };
  const wte = get("wte.weight");
  const wpe = get("wpe.weight");
  let x = new Float64Array(N * h);
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < h; i++) x[n * h + i] = wte[ids[n] * h + i] + wpe[(n % T) * h + i];
  }
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `h.${l}.`;
    const a = layerNorm(x, N, h, get(p + "ln_1.weight"), get(p + "ln_1.bias"), 1e-5);
    const qkv = linear(a, N, h, get(p + "attn.c_attn.weight"), get(p + "attn.c_attn.bias"), 3 * h);
    const ctx = new Float64Array(N * h);
    for (let b = 0; b < B; b++) {
      for (let head = 0; head < nh; head++) {
        for (let i = 0; i < T; i++) {
          const q = (b * T + i) * 3 * h + head * hd;
          const scores: number[] = [];
          for (let j = 0; j <= i; j++) {
            const k = (b * T + j) * 3 * h + h + head * hd;
            let s = 0;
            for (let d = 0; d < hd; d++) s += qkv[q + d] * qkv[k + d];
            scores.push(s / Math.sqrt(hd));
          }
          const m = Math.max(...scores);
          const e = scores.map((s) => Math.exp(s - m));
          const z = e.reduce((u, v) => u + v, 0);
          for (let j = 0; j <= i; j++) {
            const v = (b * T + j) * 3 * h + 2 * h + head * hd;
            for (let d = 0; d < hd; d++) {
              ctx[(b * T + i) * h + head * hd + d] += (e[j] / z) * qkv[v + d];
            }
          }
        }
      }
    }
    const attn = linear(ctx, N, h, get(p + "attn.c_proj.weight"), get(p + "attn.c_proj.bias"), h);
    for (let i = 0; i < x.length; i++) x[i] += attn[i];
    const c = layerNorm(x, N, h, get(p + "ln_2.weight"), get(p + "ln_2.bias"), 1e-5);
    const ffn = get(p + "mlp.c_fc.bias").length;
    const f1 = linear(c, N, h, get(p + "mlp.c_fc.weight"), get(p + "mlp.c_fc.bias"), ffn).map(
      geluTanh,
    );
    const f2 = linear(f1, N, ffn, get(p + "mlp.c_proj.weight"), get(p + "mlp.c_proj.bias"), h);
    x = x.map((v, i) => v + f2[i]);
  }
  const y = layerNorm(x, N, h, get("ln_f.weight"), get("ln_f.bias"), 1e-5);
  const logits = linear(y, N, h, wte, undefined, cfg.paddedVocab);
  let total = 0;
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let v = 0; v < cfg.vocabSize; v++) m = Math.max(m, logits[n * cfg.paddedVocab + v]);
    let z = 0;
    for (let v = 0; v < cfg.vocabSize; v++) z += Math.exp(logits[n * cfg.paddedVocab + v] - m);
    total += m + Math.log(z) - logits[n * cfg.paddedVocab + targets[n]];
  }
  return total / N;
}
