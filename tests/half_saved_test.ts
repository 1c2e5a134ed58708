/**
 * Activations saved for backward in 16 bits without recomputation (mixed
 * precision): `packSaved` packs what autograd recorded and frees the f32
 * buffers, a read unpacks, the backward pass frees the unpacked copy again after
 * the node that read it; a tiny GPT's gradients under bf16/fp16 saved activations
 * equal the f32-activation gradients within the formats' rounding, and at large
 * logits fused attention's equal those of its own (rounded-qkv) forward.
 */

import { ok, strictEqual } from "node:assert/strict";
import { roundToHalf } from "../core/half.ts";
import { backward, zeroGrad } from "../core/autograd.ts";
import { attention, attentionUnfused, mul, scale, sum } from "../core/ops/mod.ts";
import { packSaved, Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Bert } from "../models/bert.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { gpuTest, prng, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();

Deno.test(
  "packSaved: f32 freed, values read back 16-bit, gradients from them",
  gpuTest,
  async () => {
    const xv = randomArray(1000, 1, -2, 2);
    const wv = randomArray(1000, 2, -2, 2);
    const w = Tensor.fromArray(dev, wv).keep().requireGrad();
    await tidy(dev, async () => {
      dev.saveActivationsAs = "bf16";
      try {
        const x = Tensor.fromArray(dev, xv);
        const y = mul(x, w); // saved: y (an op's output)
        const z = mul(y, y); // the backward reads y
        const before = dev.pool.liveBytes;
        packSaved(dev, [z]);
        ok(y.packedNow, "y is packed");
        ok(!z.packedNow, "a kept tensor stays f32");
        ok(dev.pool.liveBytes < before, `${dev.pool.liveBytes} < ${before}`);
        const yr = roundToHalf(Float32Array.from(xv, (v, i) => v * wv[i]), "bf16");
        const read = await y.read(); // unpacks
        for (let i = 0; i < 1000; i++) strictEqual(read[i], yr[i]);
        packSaved(dev, []);
        ok(y.packedNow, "the unpacked copy is freed again");
        await backward(sum(z));
        ok(y.packedNow, "freed after the backward node that read it");
        const g = await w.grad!.read();
        for (let i = 0; i < 1000; i++) {
          const want = 2 * yr[i] * xv[i]; // d/dw (x·w)² with x·w taken from its bf16 copy
          ok(Math.abs(g[i] - want) <= 1e-5 * (1 + Math.abs(want)), `[${i}] ${g[i]} vs ${want}`);
        }
      } finally {
        dev.saveActivationsAs = null;
      }
    });
    zeroGrad([w]);
    w.dispose();
  },
);

/** Relative 2-norm distance |a − b| / |b|. */
function relErr(a: Float32Array, b: Float32Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / Math.max(n, 1e-30));
}

for (const format of ["bf16", "fp16"] as const) {
  Deno.test(`tiny GPT: gradients with ${format} saved activations ≈ f32`, gpuTest, async () => {
    const cfg: GptConfig = {
      vocabSize: 37,
      numLayers: 3,
      hiddenSize: 32,
      numHeads: 4,
      maxPositions: 16,
      hiddenDropout: 0.1,
      attentionDropout: 0.1,
    };
    const r = prng(5);
    const ids = TokenIds.fromHost(
      dev,
      Int32Array.from({ length: 32 }, () => Math.floor(r() * 37)),
      [2, 16],
    ).keep();
    const tg = TokenIds.fromHost(dev, Int32Array.from({ length: 32 }, () => Math.floor(r() * 37)), [
      2,
      16,
    ]).keep();
    const runs: { loss: number; grads: Float32Array[]; peak: number }[] = [];
    for (const as of [null, format]) {
      const m = Gpt.serial(dev, cfg, 11);
      m.train(true);
      const params = m.namedParams().map(([, p]) => p.tensor);
      dev.saveActivationsAs = as;
      let loss = 0;
      try {
        dev.pool.resetPeak();
        const base = dev.pool.liveBytes;
        await tidy(dev, async () => {
          const l = await m.loss(ids, tg);
          packSaved(dev, [l]);
          await backward(l);
          loss = await l.item();
        });
        runs.push({
          loss,
          grads: await Promise.all(params.map((p) => p.grad!.read())),
          peak: dev.pool.peakBytes - base,
        });
      } finally {
        dev.saveActivationsAs = null;
      }
      zeroGrad(params);
      m.dispose();
    }
    const [f32, half] = runs;
    // The forward is f32 but for fused attention, which reads qkv rounded as it keeps
    // it for backward (as FlashAttention reads 16-bit inputs): the loss moves by
    // about u times the small logits here.
    const uLoss = format === "bf16" ? 2 ** -8 : 2 ** -11;
    ok(
      Math.abs(half.loss - f32.loss) <= uLoss * 1e-2 * Math.abs(f32.loss),
      `loss ${half.loss} against f32's ${f32.loss}`,
    );
    // Each saved activation carries a relative rounding error ≤ u, the unit roundoff
    // (bf16 2^-8, fp16 2^-11 for values in fp16's normal range); a parameter gradient is
    // a sum of products of a few saved factors (one per op on the path: at most ~6 per
    // layer here), so the error is bounded by ~6u per layer and, summing independent
    // roundings, far less in norm: we allow 4u in the relative 2-norm per parameter
    // (bf16 1.6 %, fp16 0.2 %).
    const u = format === "bf16" ? 2 ** -8 : 2 ** -11;
    let worst = 0;
    half.grads.forEach((g, k) => {
      const e = relErr(g, f32.grads[k]);
      worst = Math.max(worst, e);
      ok(e <= 4 * u, `parameter ${k}: relative gradient error ${e} > ${4 * u}`);
    });
    console.log(
      `${format}: worst relative gradient error ${worst.toExponential(2)} (u = ${
        u.toExponential(2)
      }); peak ${f32.peak} vs ${half.peak} bytes`,
    );
    ok(half.peak < f32.peak, `peak ${half.peak} < ${f32.peak}`);
  });
}

for (const post of [false, true]) {
  Deno.test(
    `BERT (${post ? "post" : "pre"}-LN): gradients with bf16 saved activations ≈ f32`,
    gpuTest,
    async () => {
      const B = 2, T = 7, V = 37;

      const i32 = (a: number[], shape: number[]) => TokenIds.fromHost(dev, a, shape);
      const runs: { loss: number; grads: Float32Array[] }[] = [];
      for (const as of [null, "bf16"] as const) {
        const m = new Bert(TensorParallelLayers.single(dev), {
          vocabSize: V,
          numLayers: 2,
          hiddenSize: 24,
          numHeads: 3,
          maxPositions: 9,
          hiddenDropout: 0.1,
          attentionDropout: 0.1,
          postLayerNorm: post,
        }, { seed: 12 });
        m.train(true);
        const params = m.namedParams().map(([, p]) => p.tensor);
        dev.saveActivationsAs = as;
        let loss = 0;
        try {
          await tidy(dev, async () => {
            const rr = prng(post ? 8 : 9);
            const mlm = Array.from(
              { length: B * T },
              (_, i) => (i % 3 === 1 ? Math.floor(rr() * V) : -1),
            );
            const l = await m.loss({
              ids: i32(Array.from({ length: B * T }, () => Math.floor(rr() * V)), [B, T]),
              tokenTypes: i32(Array.from({ length: B * T }, (_, i) => (i % T >= 4 ? 1 : 0)), [
                B,
                T,
              ]),
              keep: Tensor.fromArray(
                dev,
                Float32Array.from({ length: B * T }, (_, i) => (i >= 12 ? 0 : 1)),
                [B, T],
              ),
              mlmTargets: i32(mlm, [B, T]),
              sopLabels: i32([1, 0], [B]),
            });
            packSaved(dev, [l]);
            await backward(l);
            loss = await l.item();
          });
          runs.push({ loss, grads: await Promise.all(params.map((p) => p.grad!.read())) });
        } finally {
          dev.saveActivationsAs = null;
        }
        zeroGrad(params);
        m.dispose();
      }

      const u = 2 ** -8; // bf16's unit roundoff
      // Fused attention reads qkv rounded as it keeps it (see the GPT test above).
      ok(
        Math.abs(runs[1].loss - runs[0].loss) <= u * 1e-2 * Math.abs(runs[0].loss),
        `loss ${runs[1].loss} against f32's ${runs[0].loss}`,
      );
      runs[1].grads.forEach((g, k) => {
        const e = relErr(g, runs[0].grads[k]);
        ok(e <= 4 * u, `parameter ${k}: relative gradient error ${e} > ${4 * u}`);
      });
    },
  );
}

for (const format of ["bf16", "fp16"] as const) {
  Deno.test(
    `fused attention with ${format} saved activations: the gradient of its own forward, at large logits`,
    gpuTest,
    async () => {
      // Backward rebuilds the probabilities from the saved 16-bit qkv against the forward's
      // log-sum-exp, which came from the f32 qkv: a row's rebuilt probabilities did not sum
      // to 1, an error growing with the logits (a GPT's bf16 gradients 13.5% off at init
      // std 1, NaN at 300). The forward now reads the rounded qkv, so its gradient is that
      // of attention on the rounded qkv: here the unfused ops in f32 on it, the reference.
      const B = 2, T = 16, nh = 2, hd = 16;
      const values = randomArray(B * T * 3 * nh * hd, 21, -4, 4); // logits up to ~±60
      const w = randomArray(B * T * nh * hd, 22, -1, 1);
      const attnOpts = { numHeads: nh, headDim: hd, mask: "causal" as const };
      const run = async (input: Float32Array, half: "bf16" | "fp16" | null) =>
        await tidy(dev, async () => {
          const x = Tensor.fromArray(dev, input, [B, T, 3 * nh * hd]).requireGrad();
          dev.saveActivationsAs = half;
          try {
            // qkv an op's output, as a model's is (a leaf is neither rounded nor packed).
            const qkv = scale(x, 1);
            const out = half ? attention(qkv, attnOpts) : attentionUnfused(qkv, attnOpts);
            const loss = sum(mul(out, Tensor.fromArray(dev, w, out.shape)));
            const forward = await out.read(); // before packing rounds it
            packSaved(dev, [loss]);
            await backward(loss);
            return { out: forward, grad: await x.grad!.read() };
          } finally {
            dev.saveActivationsAs = null;
          }
        });
      const mixed = await run(values, format);
      const ref = await run(roundToHalf(values, format), null);
      const u = format === "bf16" ? 2 ** -8 : 2 ** -11;
      ok(mixed.grad.every(Number.isFinite), "non-finite gradients");
      const eOut = relErr(mixed.out, ref.out), eGrad = relErr(mixed.grad, ref.grad);
      ok(eOut <= 1e-5, `forward: relative error ${eOut}`);
      // What is left: the saved output's rounding in backward's rowsum(dO∘O).
      ok(eGrad <= 4 * u, `relative gradient error ${eGrad} > ${4 * u}`);
    },
  );
}
