/**
 * Activations saved for backward in 16 bits (mixed precision with
 * `--recompute-activations`): a recompute block's input that is the previous
 * block's output is kept packed and its f32 storage freed; gradients equal those
 * of f32 recomputation from the rounded input; a GPT trained with recompute and
 * --bf16 follows the same run without recompute. A recompute that throws
 * leaves its random streams where the forward left them.
 */

import { ok, rejects, strictEqual } from "node:assert/strict";
import { roundToHalf } from "../core/half.ts";
import { backward } from "../core/autograd.ts";
import { mul, sum } from "../core/ops/mod.ts";
import { recompute } from "../core/recompute.ts";
import { RngStream } from "../core/rng.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { Trainer } from "../models/trainer.ts";
import { gpuTest, prng, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();

Deno.test(
  "a chained recompute input is stored 16-bit: f32 freed, gradients from the rounded copy",
  gpuTest,
  async () => {
    const x0v = randomArray(40, 1, -2, 2);
    const w = Tensor.fromArray(dev, randomArray(40, 2, -2, 2)).keep();
    w.requiresGrad = true;
    const block = (x: Tensor) => mul(mul(x, w), x); // x²·w: the input gradient needs x itself
    await tidy(dev, async () => {
      dev.saveActivationsAs = "bf16";
      try {
        const x0 = Tensor.fromArray(dev, x0v);
        x0.requiresGrad = true;
        const x1 = await recompute(block, x0, [w]);
        const x2 = await recompute(block, x1, [w]);
        await rejects(x1.read(), /disposed/, "x1's f32 storage is freed");
        await x0.read(); // a leaf input is kept as it is
        await backward(sum(x2));
        // d/dx0 sum((x1²w)) with x1 = x0²w: 2·x1·w · 2·x0·w, x1 taken from its bf16 copy
        const wv = await w.read();
        const x1v = Float32Array.from(x0v, (x, i) => x * x * wv[i]);
        const x1r = roundToHalf(x1v, "bf16");
        const g = await x0.grad!.read();
        for (let i = 0; i < 40; i++) {
          const want = 2 * x1r[i] * wv[i] * 2 * x0v[i] * wv[i];
          ok(Math.abs(g[i] - want) <= 1e-4 * (1 + Math.abs(want)), `[${i}] ${g[i]} vs ${want}`);
        }
      } finally {
        dev.saveActivationsAs = null;
      }
    });
    w.dispose();
  },
);

Deno.test(
  "a recompute that throws in backward leaves its dropout streams where the forward left them",
  gpuTest,
  async () => {
    const rng = new RngStream(7);
    let calls = 0;
    const block = (x: Tensor) => {
      if (calls++ === 1) throw new Error("the recompute failed");
      rng.next(); // one mask's draw
      return mul(x, x);
    };
    await tidy(dev, async () => {
      const x = Tensor.fromArray(dev, randomArray(8, 3));
      x.requiresGrad = true;
      const y = await recompute(block, x, [], [rng]);
      strictEqual(rng.offset, 1);
      await rejects(backward(sum(y)), /the recompute failed/);
      // It stayed rewound to 0: the next layer's masks would have repeated this one's.
      strictEqual(rng.offset, 1);
    });
  },
);

Deno.test(
  "GPT --bf16 with recompute (16-bit saved inputs) follows GPT --bf16 without",
  gpuTest,
  async () => {
    const cfg: GptConfig = {
      vocabSize: 37,
      numLayers: 3,
      hiddenSize: 16,
      numHeads: 2,
      maxPositions: 8,
      hiddenDropout: 0,
      attentionDropout: 0,
    };
    const r = prng(3);
    const ids = Int32Array.from({ length: 16 }, () => Math.floor(r() * 37));
    const tg = Int32Array.from({ length: 16 }, () => Math.floor(r() * 37));
    const losses: number[][] = [];
    for (const recomputeActivations of [false, true]) {
      const m = Gpt.serial(dev, { ...cfg, recomputeActivations }, 7);
      const t = new Trainer(dev, m, {
        schedule: { lr: 1e-2, decayIters: 10, style: "constant" },
        clipGrad: 1,
        precision: { half: "bf16" },
      });
      const x = TokenIds.fromHost(dev, ids, [2, 8]).keep();
      const y = TokenIds.fromHost(dev, tg, [2, 8]).keep();
      const l: number[] = [];
      for (let i = 0; i < 5; i++) l.push((await t.step(1, () => m.loss(x, y))).loss);
      losses.push(l);
      strictEqual(dev.saveActivationsAs, null, "the trainer restores the device setting");
      m.dispose();
    }
    strictEqual(losses[1][0], losses[0][0], "the forward pass is the same");
    for (let i = 1; i < 5; i++) {
      ok(
        Math.abs(losses[1][i] - losses[0][i]) < 1e-2 * losses[0][i],
        `step ${i}: ${losses[1][i]} vs ${losses[0][i]}`,
      );
    }
    ok(losses[1][4] < losses[1][0]);
  },
);

Deno.test(
  "weights written after a --bf16 step (a checkpoint loaded, an edit) are what the model then computes with",
  gpuTest,
  async () => {
    const cfg: GptConfig = {
      vocabSize: 37,
      numLayers: 1,
      hiddenSize: 16,
      numHeads: 2,
      maxPositions: 8,
      hiddenDropout: 0,
      attentionDropout: 0,
    };
    const r = prng(4);
    const ids = TokenIds.fromHost(
      dev,
      Int32Array.from({ length: 16 }, () => Math.floor(r() * 37)),
      [
        2,
        8,
      ],
    ).keep();
    const trained = Gpt.serial(dev, cfg, 1);
    const t = new Trainer(dev, trained, {
      schedule: { lr: 1e-2, decayIters: 10, style: "constant" },
      clipGrad: 1,
      precision: { half: "bf16" },
    });
    await t.step(1, () => trained.loss(ids, ids));
    // Another model's weights written into the trained one's parameters, as loadCheckpoint does.
    const other = Gpt.serial(dev, cfg, 2);
    const mine = trained.namedParams(), theirs = new Map(other.namedParams());
    for (const [name, p] of mine) p.tensor.write(await theirs.get(name)!.tensor.read());
    const logits = async (m: Gpt) =>
      await tidy(dev, async () => Array.from(await (await m.logits(ids)).read()));
    const [got, want] = [await logits(trained), await logits(other)];
    // Computed with the written f32 weights (before, the 16-bit copies of the old ones: 2.7 apart).
    strictEqual(JSON.stringify(got), JSON.stringify(want));
    t.dispose();
    trained.dispose();
    other.dispose();
  },
);
