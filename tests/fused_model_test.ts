/**
 * GPT and BERT (pre-LN and post-LN) with the fused residual/layer-norm and
 * embedding kernels against the unfused composition the layers used before
 * (written out here with the same modules): the final hidden states and every
 * parameter's gradient of Σ hidden·R, with dropout 0.1 (the same masks drawn
 * from the same streams) and, for GPT, with activation recomputation.
 * Tolerances: hidden |Δ| ≤ 1e-5 + 1e-4·|ref|, gradients |Δ| ≤ 1e-5 + 1e-3·|ref|
 * (float rounding: sums in another order through a few layers).
 */

import { backward, zeroGrad } from "../core/autograd.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Bert, type BertConfig } from "../models/bert.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { assertClose, gpuTest, prng, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();
const [B, T] = [2, 12];

function positions(): TokenIds {
  return TokenIds.fromHost(dev, Int32Array.from({ length: B * T }, (_, i) => i % T), [B, T]);
}

function randomIds(v: number, seed: number): TokenIds {
  const r = prng(seed);
  return TokenIds.fromHost(dev, Int32Array.from({ length: B * T }, () => Math.floor(r() * v)), [
    B,
    T,
  ]);
}

/** Hidden states and parameter gradients of Σ hidden·R, streams rewound first. */
async function gradsOf(
  model: Gpt | Bert,
  hidden: () => Promise<Tensor>,
): Promise<{ h: Float32Array; grads: Map<string, Float32Array | null> }> {
  model.rng.group.offset = 0;
  model.rng.rank.offset = 0;
  const params = model.namedParams();
  zeroGrad(params.map(([, p]) => p.tensor));
  return await tidy(dev, async () => {
    const h = await hidden();
    const R = Tensor.fromArray(dev, randomArray(h.size, 31), h.shape);
    await backward(ops.sum(ops.mul(h, R)));
    const grads = new Map<string, Float32Array | null>();
    for (const [n, p] of params) grads.set(n, p.tensor.grad ? await p.tensor.grad.read() : null);
    return { h: await h.read(), grads };
  });
}

async function compare(
  model: Gpt | Bert,
  fused: () => Promise<Tensor>,
  ref: () => Promise<Tensor>,
) {
  const a = await gradsOf(model, fused);
  const b = await gradsOf(model, ref);
  assertClose(a.h, b.h, { rtol: 1e-4, atol: 1e-5, what: "hidden" });
  let compared = 0;
  for (const [n, g] of b.grads) {
    const f = a.grads.get(n)!;
    if (!g || !f) {
      if (f || g) throw new Error(`grad of ${n}: only one of fused / unfused has one`);
      continue;
    }
    assertClose(f, g, { rtol: 1e-3, atol: 1e-5, what: `grad of ${n}` });
    compared++;
  }
  if (compared < 10) throw new Error(`only ${compared} parameter gradients compared`);
}

const gptConfig: GptConfig = {
  vocabSize: 50,
  numLayers: 2,
  hiddenSize: 32,
  numHeads: 4,
  maxPositions: 16,
  hiddenDropout: 0.1,
  attentionDropout: 0.1,
};

/** GPT's hidden states as the layers computed them before the fused kernels. */
async function unfusedGptHidden(m: Gpt, ids: TokenIds): Promise<Tensor> {
  let x = ops.add(await m.wte.forward(ids), m.wpe.forward(positions()));
  x = m.drop.forward(x);
  for (const l of m.blocks) {
    const a = await l.attn.forward(l.ln1.forward(x));
    const h = ops.add(x, l.drop.forward(a));
    const y = await l.mlp.forward(l.ln2.forward(h));
    x = ops.add(h, l.drop.forward(y));
  }
  return m.lnF.forward(x);
}

for (const recompute of [false, true]) {
  Deno.test(`GPT fused = unfused (dropout 0.1, recompute ${recompute})`, gpuTest, async () => {
    const m = Gpt.serial(dev, { ...gptConfig, recomputeActivations: recompute }, 3);
    const ids = randomIds(gptConfig.vocabSize, 4);
    await compare(m, () => m.hidden(ids), () => unfusedGptHidden(m, ids));
    m.dispose();
  });
}

const bertConfig: BertConfig = {
  vocabSize: 40,
  numLayers: 2,
  hiddenSize: 32,
  numHeads: 4,
  maxPositions: 16,
  hiddenDropout: 0.1,
  attentionDropout: 0.1,
};

/** BERT's encoder output as the layers computed it before the fused kernels. */
async function unfusedBertEncode(
  m: Bert,
  ids: TokenIds,
  types: TokenIds,
  keep: Tensor,
): Promise<Tensor> {
  let x = ops.add(
    ops.add(await m.wordEmbeddings.forward(ids), m.positionEmbeddings.forward(positions())),
    m.tokenTypeEmbeddings.forward(types),
  );
  x = m.drop.forward(m.embeddingsLn.forward(x));
  for (const l of m.blocks) {
    if (m.config.postLayerNorm) {
      const a = await l.attention.forward(x, keep);
      const h = l.lnAttention.forward(ops.add(x, l.drop.forward(a)));
      const y = await l.mlp.forward(h);
      x = l.lnOutput.forward(ops.add(h, l.drop.forward(y)));
    } else {
      const a = await l.attention.forward(l.lnAttention.forward(x), keep);
      const h = ops.add(x, l.drop.forward(a));
      const y = await l.mlp.forward(l.lnOutput.forward(h));
      x = ops.add(h, l.drop.forward(y));
    }
  }
  return m.finalLn ? m.finalLn.forward(x) : x;
}

for (const post of [false, true]) {
  Deno.test(`BERT fused = unfused (dropout 0.1, postLayerNorm ${post})`, gpuTest, async () => {
    const m = new Bert(TensorParallelLayers.single(dev), { ...bertConfig, postLayerNorm: post }, {
      seed: 9,
    });
    const ids = randomIds(bertConfig.vocabSize, 5);
    const types = TokenIds.fromHost(
      dev,
      Int32Array.from({ length: B * T }, (_, i) => +((i % T) >= T / 2)),
      [B, T],
    );
    const keep = Tensor.fromArray(
      dev,
      Float32Array.from({ length: B * T }, (_, i) => +(i < T || (i % T) < T - 3)),
      [B, T],
    );
    await compare(
      m,
      () => m.encode(ids, types, keep),
      () => unfusedBertEncode(m, ids, types, keep),
    );
    m.dispose();
  });
}
