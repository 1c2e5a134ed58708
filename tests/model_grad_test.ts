/**
 * Whole-model gradients: on tiny GPTs and BERTs (pre-LN and post-LN), the GPU
 * loss and the gradient of every element of every parameter against central
 * differences of a float64 TypeScript reference on the same weights
 * (tests/gpt_reference.ts, tests/bert_reference.ts), so that a backward bug
 * anywhere (attention, masks, layer norms, tied head, heads of BERT) fails.
 *
 * Weights are redrawn at O(1) scale before the check (randomizeWeights in
 * model_grad_helpers.ts) so that every path carries a gradient of the same
 * order instead of the 0.02 init's vanishing ones, and zero biases or unit
 * gains cannot hide a bug.
 *
 * Numeric side: float64 reference, step ±1e-4 (for the float32 GPT reference
 * the step actually taken, fround(w + 1e-4) − fround(w − 1e-4), is the
 * divisor), so its own error (truncation ~1e-9, rounding ~1e-12) is far below
 * the tolerance. The GPU side is float32 throughout; its gradients carry
 * rounding of ~1e-7 relative to the largest terms summed, so each element
 * must satisfy
 *   |g − ref| ≤ 5e-6·G + 1e-4·|ref|,
 * G being the largest |ref| of the whole model (0.2–1 here): an absolute floor
 * for elements whose true gradient is ~0 (e.g. the key bias, which softmax
 * ignores). Measured on Dawn/llvmpipe and on Deno's wgpu, the largest error
 * is ~6e-7 and the worst element uses 6% of its tolerance; a backward bug
 * that moves any element by a few 1e-6 fails (MODEL_GRAD_VERBOSE=1 prints the
 * per-parameter margins). Checked by mutation: dropping the 1/sqrt(d) scale
 * from the softmax backward fails all four cases, letting padded vocabulary
 * columns into the cross-entropy backward fails the three padded ones.
 *
 * Vocabulary-padding rows of the tied table and of the MLM bias, and position
 * rows past the sequence, must have a gradient of exactly zero. Cases: GPT
 * with vocabulary 37 (padded to 128) and 48 (unpadded, multiple 16); BERT
 * pre-LN and post-LN (vocabulary 37 padded to 128, padding in the batch, two
 * segments, 5 MLM targets, an explicit MLM normaliser under post-LN). Each BERT
 * case runs again with activation recomputation: the same loss (1e-6 relative)
 * and gradients (1e-5 relative + 1e-7), and fewer bytes held after the forward
 * pass.
 */

import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Bert, type BertConfig } from "../models/bert.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { bertLossRef, type BertRefBatch } from "./bert_reference.ts";
import { gptLossRef } from "./gpt_reference.ts";
import { assertClose, gpuTest, testDevice } from "./helpers.ts";
import {
  assertGrads,
  assertZeroRows,
  centralDifferences,
  gpuGrads,
  type GradTolerance,
  randomizeWeights,
  tokens,
} from "./model_grad_helpers.ts";

const dev = await testDevice();

/** Tolerance of the gradient comparison (see the module comment). */
const TOL: GradTolerance = { atolOfMax: 5e-6, rtol: 1e-4 };
/** Central-difference step. */
const EPS = 1e-4;

const gptBase: GptConfig = {
  vocabSize: 37,
  numLayers: 2,
  hiddenSize: 12,
  numHeads: 3,
  maxPositions: 9,
  hiddenDropout: 0,
  attentionDropout: 0,
};

for (
  const [label, cfg] of [
    ["vocabulary 37 padded to 128", gptBase],
    ["vocabulary 48, no padding", { ...gptBase, vocabSize: 48, vocabMultiple: 16 }],
  ] as const
) {
  Deno.test(
    `GPT (${label}): every parameter's gradient equals float64 central differences`,
    gpuTest,
    async () => {
      const m = Gpt.serial(dev, cfg, 11);
      const B = 2, T = 7, V = cfg.vocabSize;
      const ids = tokens(B * T, 21, V);
      const tg = tokens(B * T, 22, V);
      ids[3] = V - 1; // the last real row of the table is looked up …
      tg[5] = V - 1; // … and is a target
      const w = randomizeWeights(m, 31);
      const { loss, grads } = await gpuGrads(
        dev,
        m,
        () => m.loss(TokenIds.fromHost(dev, ids, [B, T]), TokenIds.fromHost(dev, tg, [B, T])),
      );
      const refCfg = { ...cfg, paddedVocab: m.paddedVocab };
      const lossOf = () => gptLossRef(w, refCfg, ids, tg, B, T);
      assertClose([loss], [lossOf()], { rtol: 1e-5, what: "GPT loss" });
      const ref = centralDifferences(w, lossOf, EPS);
      assertGrads(`GPT (${label})`, grads, ref, TOL);
      const h = cfg.hiddenSize;
      assertZeroRows("wte.weight", grads.get("wte.weight")!, h, V);
      assertZeroRows("wpe.weight", grads.get("wpe.weight")!, h, T);
      m.dispose();
    },
  );
}

const bertBase: BertConfig = {
  vocabSize: 37,
  numLayers: 2,
  hiddenSize: 12,
  numHeads: 3,
  maxPositions: 9,
  hiddenDropout: 0,
  attentionDropout: 0,
};

/** Two sequences of 7: the second ends in 2 padding tokens; segments, MLM targets, SOP labels. */
function bertBatch(V: number): BertRefBatch {
  const B = 2, T = 7;
  const ids = tokens(B * T, 41, V);
  const tokenTypes = Int32Array.from([0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0]);
  const keep = Float32Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
  const mlmTargets = new Int32Array(B * T).fill(-1);
  // Targets at real tokens only (not [CLS]), one of them the last real vocabulary row.
  for (const [n, t] of [[2, V - 1], [5, 4], [6, 17], [8, 30], [11, 0]]) mlmTargets[n] = t;
  return { B, T, ids, tokenTypes, keep, mlmTargets, sopLabels: Int32Array.from([1, 0]) };
}

for (const post of [false, true]) {
  Deno.test(
    `BERT (${
      post ? "post" : "pre"
    }-LN): every parameter's gradient equals float64 central differences`,
    gpuTest,
    async () => {
      const cfg: BertConfig = { ...bertBase, postLayerNorm: post };
      const m = new Bert(TensorParallelLayers.single(dev), cfg, { seed: 12 });
      const batch: BertRefBatch = {
        ...bertBatch(cfg.vocabSize),
        mlmNormalizer: post ? 3.5 : undefined,
      };
      const { B, T } = batch;
      const w32 = randomizeWeights(m, post ? 32 : 33);
      const i32 = (a: ArrayLike<number>, shape: number[]) =>
        TokenIds.fromHost(dev, Array.from(a), shape);
      /** The model's loss on the batch, noting the bytes its forward pass left allocated. */
      const lossOn = (model: Bert, held: number[]) => async () => {
        const before = dev.pool.liveBytes;
        const loss = await model.loss({
          ids: i32(batch.ids, [B, T]),
          tokenTypes: i32(batch.tokenTypes, [B, T]),
          keep: Tensor.fromArray(dev, Float32Array.from(batch.keep), [B, T]),
          mlmTargets: i32(batch.mlmTargets, [B, T]),
          sopLabels: i32(batch.sopLabels, [B]),
          mlmNormalizer: batch.mlmNormalizer,
        });
        held.push(dev.pool.liveBytes - before);
        return loss;
      };
      const plainHeld: number[] = [];
      const { loss, grads } = await gpuGrads(dev, m, lossOn(m, plainHeld));
      // float64 copies of the float32 weights: the steps below are exact.
      const w = new Map([...w32].map(([n, a]) => [n, Float64Array.from(a)]));
      const refCfg = { ...cfg, paddedVocab: m.paddedVocab };
      const lossOf = () => bertLossRef(w, refCfg, batch).total;
      assertClose([loss], [lossOf()], { rtol: 1e-5, what: "BERT loss" });
      const ref = centralDifferences(w, lossOf, EPS);
      assertGrads(`BERT (${post ? "post" : "pre"}-LN)`, grads, ref, TOL);
      const h = cfg.hiddenSize;
      assertZeroRows(
        "word embeddings",
        grads.get("bert.embeddings.word_embeddings.weight")!,
        h,
        cfg.vocabSize,
      );
      assertZeroRows("MLM bias", grads.get("cls.predictions.bias")!, 1, cfg.vocabSize);
      assertZeroRows(
        "position embeddings",
        grads.get("bert.embeddings.position_embeddings.weight")!,
        h,
        T,
      );
      // With each layer recomputed in backward: the same gradients, fewer bytes
      // held between the passes (only each layer's input).
      const rec = new Bert(TensorParallelLayers.single(dev), {
        ...cfg,
        recomputeActivations: true,
      }, { seed: 12 });
      randomizeWeights(rec, post ? 32 : 33);
      const recHeld: number[] = [];
      const recomputed = await gpuGrads(dev, rec, lossOn(rec, recHeld));
      assertClose([recomputed.loss], [loss], { rtol: 1e-6, what: "BERT loss, recomputed" });
      for (const [n, g] of grads) {
        assertClose(recomputed.grads.get(n)!, g, {
          rtol: 1e-5,
          atol: 1e-7,
          what: `${n}, recomputed`,
        });
      }
      if (!(recHeld[0] < plainHeld[0])) {
        throw new Error(
          `recomputation held ${recHeld[0]} bytes after the forward pass, without ${plainHeld[0]}`,
        );
      }
      rec.dispose();
      m.dispose();
    },
  );
}
