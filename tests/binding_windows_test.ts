/**
 * Tensors larger than one storage binding. A second device binds at most
 * 64 KiB per binding (`maxBindingBytes`; WebGPU will not lower the adapter's
 * own 128 MiB limit), so a small GPT's embedding table, its logits and its
 * optimizer state all lie past "one binding" there and every op that touches
 * them runs in windows. Everything must equal the same model on an uncapped
 * device: initial weights bitwise, loss, every gradient and the weights after
 * AdamW steps (rtol 1e-5: only the grouping of a few f32 sums differs).
 */

import { Device } from "../core/device.ts";
import { mapRaw, sumToSize } from "../core/ops/raw.ts";
import { sumSquares } from "../core/ops/reduce.ts";
import { lmHeadLogits } from "../core/ops/lm_head.ts";
import { linear } from "../core/ops/matmul.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { backward } from "../core/autograd.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { Trainer } from "../models/trainer.ts";
import { assertClose, gpuTest, prng, randomArray, testBackend, testDevice } from "./helpers.ts";

const dev = await testDevice();
const CAP = 64 * 1024;
const capped = await Device.create({ backend: testBackend(), maxBindingBytes: CAP });

const cfg: GptConfig = {
  vocabSize: 1000, // padded to 1024: a [1024, 64] table is 256 KiB, four bindings' worth
  numLayers: 1,
  hiddenSize: 64,
  numHeads: 4,
  maxPositions: 16,
  hiddenDropout: 0,
  attentionDropout: 0,
};

async function weights(d: Device, m: Gpt): Promise<Map<string, Float32Array>> {
  const named = m.namedParams();
  const vals = await d.readMany(named.map(([, p]) => p.tensor.binding));
  return new Map(named.map(([n], i) => [n, new Float32Array(vals[i])]));
}

async function grads(d: Device, m: Gpt): Promise<Map<string, Float32Array>> {
  const named = m.namedParams().filter(([, p]) => p.tensor.grad);
  const vals = await d.readMany(named.map(([, p]) => p.tensor.grad!.binding));
  return new Map(named.map(([n], i) => [n, new Float32Array(vals[i])]));
}

function batch(seed: number, b: number, t: number): Int32Array {
  const r = prng(seed);
  return Int32Array.from({ length: b * t }, () => Math.floor(r() * cfg.vocabSize));
}

Deno.test("the capped device really splits: the table is past one binding", gpuTest, () => {
  if (capped.maxBindingBytes !== CAP) throw new Error(`cap not applied: ${capped.maxBindingBytes}`);
  const tableBytes = 1024 * cfg.hiddenSize * 4;
  if (!(tableBytes > CAP)) throw new Error("the test table fits one binding");
});

Deno.test(
  "GPT over windows equals the GPT in one binding: init, loss, gradients, AdamW",
  gpuTest,
  async () => {
    const B = 2, T = 16;
    const a = Gpt.serial(dev, cfg, 3);
    const b = Gpt.serial(capped, cfg, 3);
    const wa = await weights(dev, a), wb = await weights(capped, b);
    for (const [n, v] of wa) assertClose(wb.get(n)!, v, { rtol: 0, atol: 0, what: `init ${n}` });

    const ta = new Trainer(dev, a, { schedule: { lr: 1e-2, decayIters: 10 }, clipGrad: 0.5 });
    const tb = new Trainer(capped, b, { schedule: { lr: 1e-2, decayIters: 10 }, clipGrad: 0.5 });
    for (let step = 0; step < 2; step++) {
      const ids = batch(10 + step, B, T), tg = batch(20 + step, B, T);
      const ra = await ta.step(
        1,
        () => a.loss(TokenIds.fromHost(dev, ids, [B, T]), TokenIds.fromHost(dev, tg, [B, T])),
      );
      const rb = await tb.step(
        1,
        () => b.loss(TokenIds.fromHost(capped, ids, [B, T]), TokenIds.fromHost(capped, tg, [B, T])),
      );
      assertClose([rb.loss, rb.gradNorm], [ra.loss, ra.gradNorm], {
        rtol: 1e-5,
        what: `step ${step} loss and gradient norm`,
      });
    }
    // AdamW's early steps move each weight by about ±lr whatever the gradient's
    // size, so a gradient near zero can turn a last-bit difference into a visible
    // one: compare the weights to 1% of one step (lr·1e-2), not relatively.
    const fa = await weights(dev, a), fb = await weights(capped, b);
    for (const [n, v] of fa) {
      assertClose(fb.get(n)!, v, { rtol: 0, atol: 1e-4, what: `after 2 steps: ${n}` });
    }
    a.dispose();
    b.dispose();
  },
);

Deno.test("every gradient over windows equals the one-binding gradient", gpuTest, async () => {
  const B = 2, T = 16;
  const a = Gpt.serial(dev, cfg, 4);
  const b = Gpt.serial(capped, cfg, 4);
  const ids = batch(1, B, T), tg = batch(2, B, T);
  for (const [d, m] of [[dev, a], [capped, b]] as const) {
    await tidy(d, async () => {
      const loss = await m.loss(
        TokenIds.fromHost(d, ids, [B, T]),
        TokenIds.fromHost(d, tg, [B, T]),
      );
      await backward(loss);
    });
  }
  const ga = await grads(dev, a), gb = await grads(capped, b);
  if (ga.size !== a.namedParams().length) throw new Error("some parameter has no gradient");
  for (const [n, v] of ga) {
    // The chunked softmax sums its exponentials chunk by chunk: last-bit changes
    // in every probability, which the table's gradient (a sum over tokens of
    // terms of both signs) can cancel down to: hence atol 1e-7 at gradients ~1e-3.
    assertClose(gb.get(n)!, v, { rtol: 1e-5, atol: 1e-7, what: `gradient of ${n}` });
  }
  a.dispose();
  b.dispose();
});

Deno.test("elementwise, broadcast, reductions and logits over windows", gpuTest, async () => {
  const rows = 300, cols = 100; // 120 KB: two windows
  const tokens = 150; // hidden states [150, 100] within one binding; logits chunked
  const x = randomArray(rows * cols, 5), bias = randomArray(cols, 6);
  const table = randomArray(700 * cols, 7);
  const run = (d: Device) =>
    tidy(d, async () => {
      const t = Tensor.fromArray(d, x, [rows, cols]);
      const bt = Tensor.fromArray(d, bias);
      const sum = mapRaw("add", t, bt);
      const colSums = sumToSize(t, [cols]);
      const sq = sumSquares(t);
      const logits = lmHeadLogits(
        Tensor.fromArray(d, x.subarray(0, tokens * cols), [tokens, cols]),
        Tensor.fromArray(d, table, [700, cols]),
        undefined,
      );
      return [
        await sum.read(),
        await colSums.read(),
        await sq.read(),
        await logits.read(),
      ];
    });
  const want = await run(dev);
  const got = await run(capped);
  ["broadcast add", "column sums", "sum of squares", "logits"].forEach((what, i) =>
    assertClose(got[i], want[i], { rtol: 1e-5, atol: 1e-6, what })
  );
  // and the one-binding logits are a plain linear
  const ref = await tidy(dev, async () =>
    await linear(
      Tensor.fromArray(dev, x.subarray(0, tokens * cols), [tokens, cols]),
      Tensor.fromArray(dev, table, [700, cols]),
    ).read());
  assertClose(got[3], ref, { rtol: 1e-5, atol: 1e-6, what: "chunked logits vs linear" });
});

Deno.test("close the capped device", gpuTest, async () => {
  // A second device left open when the test file's worker ends can crash the
  // runtime later (PLATFORM.md: release devices before a Worker goes away).
  await capped.close();
});
