/**
 * GPT at GPT-2's vocabulary (50,257, padded to 50,304) and at 65,535 (padded
 * to 65,536: rows at and past 32,768 and the last row of a 16-bit id space),
 * plus a control at 32,640 (the largest multiple of 128 whose two passes over
 * a row stay under Mesa's 65,535-iteration loop cap, see kernels/rowreduce.ts):
 * the forward loss and every parameter's gradient against float64 references
 * on the same weights. 1 layer, hidden 16, 2 heads, batch 2 × seq 16; weights
 * redrawn at O(1) scale (model_grad_helpers.ts) so that the softmax over the
 * vocabulary is far from uniform.
 *
 * References (float64):
 * - loss: the final hidden states from a float64 GPT body (the pieces of
 *   bert_reference.ts), then the tied head and cross-entropy over the first
 *   `vocab` columns; it must equal gptLossRef to 1e-12, tying it to the
 *   independent reference of gpt_test.ts.
 * - the tied table: the head's part analytically, dW[v] = Σₙ dₙᵥ·yₙ with
 *   d = (softmax − onehot)/N, plus the lookup part of the rows in the batch by
 *   central differences of Φ = Σ dy·y(θ), where dy = d·W is the head's
 *   gradient of the hidden states;
 * - every other parameter (all elements): central differences of Φ, i.e. the
 *   chain rule with the head done analytically and the body numerically (the
 *   full loss costs N·vocab·h per evaluation; Φ does not touch the head);
 * - a spot check of 16 elements (rows ≥ 32,768, the last row, target and
 *   input rows, an unused row, body weights) against central differences of
 *   the full float64 loss confirms the split (to 1e-6 relative).
 * Step 1e-4 on float64 weights; the numeric error (~1e-10) is negligible.
 *
 * GPU vs reference: loss to 1e-5 relative (float32 log-sum-exp over up to 65k
 * columns). Gradients: |g − ref| ≤ 1e-5·G + 1e-3·|ref|, G = the largest |ref|
 * of the set compared. Sets: all parameters (G ~ 0.2; the float32 head sums
 * dy over the whole vocabulary, so errors reach ~8e-7, about 0.2 of the
 * tolerance), then the table's rows outside the batch alone (only the head's
 * part, p·y/N with p ~ 1/vocab, G ~ 3e-4, errors ~1e-10), so that these small
 * values are checked to their own scale: dropping or mis-scaling the softmax
 * of columns past 2^15 fails there. Padding rows must get exactly zero.
 *
 * Measured on Dawn/llvmpipe: all three pass with the row kernels of eef8c66;
 * with the kernels before it, 50,257 and 65,535 fail (loss 10.47 for 11.66
 * and 0.64 for 11.73: the cap cut the sums short), and so do their gradients.
 */

import { TokenIds } from "../core/token_ids.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { layer64, weight, type Weights64 } from "./bert_reference.ts";
import { gptLossRef } from "./gpt_reference.ts";
import { assertClose, gpuTest, testDevice } from "./helpers.ts";
import {
  assertGrads,
  assertZeroRows,
  centralDifference,
  gpuGrads,
  type GradTolerance,
  randomizeWeights,
  tokens,
} from "./model_grad_helpers.ts";
import { geluTanh, layerNormRef } from "./reference.ts";

const dev = await testDevice();

const TOL: GradTolerance = { atolOfMax: 1e-5, rtol: 1e-3 };
const EPS = 1e-4;
const B = 2, T = 16;

/** Final hidden states `[B·T, h]` of the pre-LN GPT in float64. */
function gptHidden64(w: Weights64, cfg: GptConfig, ids: Int32Array): Float64Array {
  const h = cfg.hiddenSize;
  const wte = weight(w, "wte.weight");
  const wpe = weight(w, "wpe.weight");
  let x: Float64Array = new Float64Array(B * T * h);
  for (let n = 0; n < B * T; n++) {
    for (let i = 0; i < h; i++) x[n * h + i] = wte[ids[n] * h + i] + wpe[(n % T) * h + i];
  }
  const eps = cfg.layerNormEps ?? 1e-5;
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `h.${l}.`;
    x = layer64(w, {
      qkv: p + "attn.c_attn",
      attnOut: p + "attn.c_proj",
      lnAttn: p + "ln_1",
      fc: p + "mlp.c_fc",
      fcOut: p + "mlp.c_proj",
      lnMlp: p + "ln_2",
    }, {
      B,
      T,
      h,
      numHeads: cfg.numHeads,
      eps,
      post: false,
      allowed: (_b, i, j) => j <= i,
      gelu: geluTanh,
    }, x);
  }
  return layerNormRef(x, weight(w, "ln_f.weight"), weight(w, "ln_f.bias"), h, eps);
}

/**
 * Mean cross-entropy of the tied head `y·Wᵀ` over the first `vocab` columns;
 * with `grads`, also dW (`[rows of W, h]`, zero past `vocab`) and dy.
 */
function headRef(
  y: Float64Array,
  W: ArrayLike<number>,
  h: number,
  vocab: number,
  targets: Int32Array,
  grads: boolean,
): { loss: number; dW: Float64Array; dy: Float64Array } {
  const N = targets.length;
  const dW = new Float64Array(grads ? W.length : 0);
  const dy = new Float64Array(grads ? N * h : 0);
  const z = new Float64Array(vocab);
  let loss = 0;
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let v = 0; v < vocab; v++) {
      let s = 0;
      for (let i = 0; i < h; i++) s += y[n * h + i] * W[v * h + i];
      z[v] = s;
      if (s > m) m = s;
    }
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(z[v] - m);
    const lse = m + Math.log(sum);
    loss += lse - z[targets[n]];
    if (!grads) continue;
    for (let v = 0; v < vocab; v++) {
      const d = (Math.exp(z[v] - lse) - (v === targets[n] ? 1 : 0)) / N;
      for (let i = 0; i < h; i++) {
        dW[v * h + i] += d * y[n * h + i];
        dy[n * h + i] += d * W[v * h + i];
      }
    }
  }
  return { loss: loss / N, dW, dy };
}

for (const vocab of [32640, 50257, 65535]) {
  Deno.test(
    `GPT at vocabulary ${vocab}: loss and every gradient equal the float64 reference`,
    gpuTest,
    async () => {
      const cfg: GptConfig = {
        vocabSize: vocab,
        numLayers: 1,
        hiddenSize: 16,
        numHeads: 2,
        maxPositions: T,
        hiddenDropout: 0,
        attentionDropout: 0,
      };
      const h = cfg.hiddenSize;
      const m = Gpt.serial(dev, cfg, 3);
      const Vp = m.paddedVocab;
      const ids = tokens(B * T, 51, vocab);
      const tg = tokens(B * T, 52, vocab);
      // Rows around 2^15 (below the top for the control) and the last row, as
      // inputs and as targets; a repeated input and a repeated target.
      const [lo, hi] = vocab > 32768 ? [32767, 32768] : [vocab - 3, vocab - 2];
      [ids[0], ids[5], ids[6], ids[9]] = [vocab - 1, lo, hi, ids[8]];
      [tg[1], tg[2], tg[3], tg[20]] = [vocab - 1, hi, lo, hi];
      const w32 = randomizeWeights(m, 61);
      const { loss, grads } = await gpuGrads(
        dev,
        m,
        () => m.loss(TokenIds.fromHost(dev, ids, [B, T]), TokenIds.fromHost(dev, tg, [B, T])),
      );
      m.dispose();

      const w = new Map([...w32].map(([n, a]) => [n, Float64Array.from(a)]));
      const wte = w.get("wte.weight")!;
      const y = gptHidden64(w, cfg, ids);
      const head = headRef(y, wte, h, vocab, tg, true);
      const independent = gptLossRef(w32, { ...cfg, paddedVocab: Vp }, ids, tg, B, T);
      assertClose([head.loss], [independent], { rtol: 1e-12, what: "float64 references' loss" });
      assertClose([loss], [head.loss], { rtol: 1e-5, what: `GPT loss at vocabulary ${vocab}` });

      // Φ = Σ dy·y(θ): its derivative is the body's part of the gradient.
      const phi = () => {
        const yy = gptHidden64(w, cfg, ids);
        let s = 0;
        for (let i = 0; i < yy.length; i++) s += head.dy[i] * yy[i];
        return s;
      };
      const ref = new Map<string, Float64Array>();
      for (const [name, arr] of w) {
        if (name === "wte.weight") {
          const g = head.dW.slice();
          for (const row of new Set(ids)) {
            for (let i = row * h; i < (row + 1) * h; i++) {
              g[i] += centralDifference(arr, i, phi, EPS);
            }
          }
          ref.set(name, g);
        } else {
          const g = new Float64Array(arr.length);
          for (let i = 0; i < arr.length; i++) g[i] = centralDifference(arr, i, phi, EPS);
          ref.set(name, g);
        }
      }

      // Spot check of the split against central differences of the full loss.
      const inBatch = new Set([...ids, ...tg]);
      let unused = hi; // a row in neither (past 2^15 for the large vocabularies)
      while (inBatch.has(unused)) unused += vocab > 32768 ? 1 : -1;
      const picks: [string, number][] = [
        ...[vocab - 1, hi, lo, unused, ids[3], tg[7], 0].flatMap(
          (r, k): [string, number][] => [["wte.weight", r * h + (k * 5) % h]],
        ),
        ["wte.weight", hi * h + 11],
        ["wpe.weight", 7 * h + 3],
        ["h.0.ln_1.weight", 2],
        ["h.0.attn.c_attn.weight", 17 * h + 4],
        ["h.0.attn.c_attn.bias", 40],
        ["h.0.attn.c_proj.weight", 100],
        ["h.0.mlp.c_fc.weight", 555],
        ["h.0.mlp.c_proj.bias", 9],
        ["ln_f.bias", 15],
      ];
      const fullLoss = () => headRef(gptHidden64(w, cfg, ids), wte, h, vocab, tg, false).loss;
      const full = picks.map(([n, i]) => centralDifference(w.get(n)!, i, fullLoss, EPS));
      assertClose(picks.map(([n, i]) => ref.get(n)![i]), full, {
        rtol: 1e-6,
        atol: 1e-10,
        what: `reference gradient split (${picks.map(([n, i]) => `${n}[${i}]`).join(", ")})`,
      });

      assertGrads(`GPT at vocabulary ${vocab}`, grads, ref, TOL);
      // The table's rows outside the batch (the head's part only, ~p·y/N, far
      // below G) against their own largest value.
      const outside = (a: ArrayLike<number>) => {
        const o = Float64Array.from(a);
        for (const r of inBatch) o.fill(0, r * h, (r + 1) * h);
        return new Map([["wte.weight (rows outside the batch)", o]]);
      };
      assertGrads(
        `GPT at vocabulary ${vocab}`,
        outside(grads.get("wte.weight")!),
        outside(ref.get("wte.weight")!),
        TOL,
      );
      assertZeroRows("wte.weight", grads.get("wte.weight")!, h, vocab);
    },
  );
}
