/**
 * The single-device GPT: its loss equals a plain TypeScript reference on the same
 * weights, a tiny model overfits one batch, gradient accumulation over k
 * micro-batches equals one batch of k·b, activation recomputation changes
 * neither losses nor weights, and the init std (`--init-method-std`) sets every
 * drawn weight's, GPT's and BERT's.
 */

import { throws } from "node:assert/strict";
import { Bert } from "../models/bert.ts";
import { modelInit } from "../models/blocks.ts";
import { Gpt, type GptConfig, paddedVocabSize } from "../models/gpt.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import type { Module } from "../core/nn.ts";
import { Trainer } from "../models/trainer.ts";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { assertClose, gpuTest, prng, testDevice } from "./helpers.ts";
import { gptLossRef } from "./gpt_reference.ts";

const dev = await testDevice();

const tiny: GptConfig = {
  vocabSize: 37,
  numLayers: 2,
  hiddenSize: 12,
  numHeads: 3,
  maxPositions: 9,
  hiddenDropout: 0,
  attentionDropout: 0,
};

function tokens(n: number, seed: number, vocab: number): Int32Array {
  const r = prng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(r() * vocab));
}

async function weightsOf(m: Module): Promise<Map<string, Float32Array>> {
  const named = m.namedParams();
  const vals = await dev.readMany(named.map(([, p]) => p.tensor.binding));
  return new Map(named.map(([n], i) => [n, new Float32Array(vals[i])]));
}

Deno.test("GPT loss equals the TypeScript reference on the same weights", gpuTest, async () => {
  const m = Gpt.serial(dev, tiny, 5);
  const B = 2, T = 7;
  const ids = tokens(B * T, 1, tiny.vocabSize);
  const tg = tokens(B * T, 2, tiny.vocabSize);
  m.train(false);
  const loss = await tidy(
    dev,
    async () =>
      (await m.loss(TokenIds.fromHost(dev, ids, [B, T]), TokenIds.fromHost(dev, tg, [B, T])))
        .item(),
  );
  const ref = gptLossRef(
    await weightsOf(m),
    { ...tiny, paddedVocab: paddedVocabSize(37) },
    ids,
    tg,
    B,
    T,
  );
  assertClose([loss], [ref], { rtol: 1e-5, what: "GPT loss" });
  m.dispose();
});

Deno.test("a tiny GPT overfits one batch", gpuTest, async () => {
  const m = Gpt.serial(dev, tiny, 6);
  const B = 4, T = 8;
  const ids = tokens(B * T, 3, tiny.vocabSize);
  const tg = tokens(B * T, 4, tiny.vocabSize);
  const trainer = new Trainer(dev, m, {
    schedule: { lr: 1e-2, decayIters: 150, style: "constant" },
    clipGrad: 1,
    adam: { weightDecay: 0 },
  });
  const x = TokenIds.fromHost(dev, ids, [B, T]).keep();
  const y = TokenIds.fromHost(dev, tg, [B, T]).keep();
  let loss = Infinity;
  for (let i = 0; i < 150 && loss > 0.05; i++) {
    loss = (await trainer.step(1, () => m.loss(x, y))).loss;
  }
  if (!(loss < 0.05)) throw new Error(`did not overfit: loss ${loss}`);
  m.dispose();
});

async function trainRun(
  cfg: GptConfig,
  micro: number,
  steps: number,
): Promise<{ losses: number[]; w: Map<string, Float32Array> }> {
  const m = Gpt.serial(dev, cfg, 7);
  const trainer = new Trainer(dev, m, {
    schedule: { lr: 3e-3, warmupIters: 1, decayIters: steps },
    clipGrad: 1,
  });
  const B = 6, T = 8;
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const ids = tokens(B * T, 10 + s, cfg.vocabSize);
    const tg = tokens(B * T, 20 + s, cfg.vocabSize);
    const per = B / micro;
    const r = await trainer.step(micro, (i) =>
      m.loss(
        TokenIds.fromHost(dev, ids.slice(i * per * T, (i + 1) * per * T), [per, T]),
        TokenIds.fromHost(dev, tg.slice(i * per * T, (i + 1) * per * T), [per, T]),
      ));
    losses.push(r.loss);
  }
  const w = await weightsOf(m);
  m.dispose();
  return { losses, w };
}

Deno.test(
  "gradient accumulation over k micro-batches equals one batch of k·b",
  gpuTest,
  async () => {
    const one = await trainRun(tiny, 1, 3);
    const three = await trainRun(tiny, 3, 3);
    assertClose(three.losses, one.losses, { rtol: 1e-5, what: "losses" });
    for (const [n, w] of one.w) {
      assertClose(three.w.get(n)!, w, {
        rtol: 1e-4,
        atol: 1e-6,
        what: n,
      });
    }
  },
);

Deno.test(
  "activation recomputation gives the same losses and weights (dropout on)",
  gpuTest,
  async () => {
    const cfg = { ...tiny, hiddenDropout: 0.1, attentionDropout: 0.1 };
    const plain = await trainRun(cfg, 2, 3);
    const rec = await trainRun({ ...cfg, recomputeActivations: true }, 2, 3);
    assertClose(rec.losses, plain.losses, { rtol: 1e-6, what: "losses" });
    for (const [n, w] of plain.w) {
      assertClose(rec.w.get(n)!, w, {
        rtol: 1e-5,
        atol: 1e-7,
        what: n,
      });
    }
  },
);

/** The standard deviation of `x` about 0 (the init's mean). */
function rms(x: Float32Array): number {
  return Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
}

Deno.test(
  "init: weight matrices and embeddings N(0, std), residual output projections std/√(2·layers); --init-method-std scales the same draws (GPT and BERT)",
  gpuTest,
  async () => {
    const layers = 3;
    const cfg: GptConfig = {
      vocabSize: 256,
      numLayers: layers,
      hiddenSize: 64,
      numHeads: 4,
      maxPositions: 64,
    };
    const single = TensorParallelLayers.single(dev);
    const plain = Gpt.serial(dev, cfg, 3);
    const w = await weightsOf(plain);
    plain.dispose();
    // Megatron's init_method_normal(0.02) and scaled_init_method_normal(0.02, layers); 4096 and
    // more draws a tensor: the sample std is within ~2% of the std.
    const scaled = 0.02 / Math.sqrt(2 * layers);
    let checked = 0;
    for (const [name, x] of w) {
      const want = /\.c_proj\.weight$/.test(name)
        ? scaled
        : /(wte|wpe|c_attn|c_fc)\.weight$/.test(name)
        ? 0.02
        : null;
      if (want === null) continue; // biases 0, layer-norm gains 1
      const got = rms(x);
      if (Math.abs(got - want) > 0.05 * want) {
        throw new Error(`${name}: sample std ${got}, expected ${want}`);
      }
      checked++;
    }
    if (checked !== 2 + 4 * layers) throw new Error(`checked ${checked} tensors`);
    const drawn = (a: Map<string, Float32Array>, b: Map<string, Float32Array>, k: number) => {
      for (const [name, x] of a) {
        const y = b.get(name)!;
        const constant = x.every((v) => v === x[0]); // biases and layer-norm parameters
        assertClose(y, constant ? x : x.map((v) => v * k), { rtol: 1e-5, atol: 1e-9, what: name });
      }
    };
    // --init-method-std 0.006 (GPT-3 175B's): the same normal draws, times 0.3, every drawn
    // tensor (the scaled projections included); biases and layer norms as before.
    const g = new Gpt(single, cfg, { seed: 3, initStd: 0.006 });
    drawn(w, await weightsOf(g), 0.3);
    g.dispose();
    const bertCfg = { ...cfg, vocabSize: 300 };
    const b0 = new Bert(single, bertCfg, { seed: 4 });
    const wb = await weightsOf(b0);
    b0.dispose();
    const b1 = new Bert(single, bertCfg, { seed: 4, initStd: 0.05 });
    drawn(wb, await weightsOf(b1), 2.5);
    b1.dispose();
    throws(() => modelInit(1, 0), /init std must be a positive finite number, got 0/);
    throws(() => new Gpt(single, cfg, { seed: 1, initStd: NaN }), /init std/);
  },
);
