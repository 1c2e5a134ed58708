/**
 * What the library refuses, with a sentence, instead of computing something
 * wrong: token ids from another device or outside the vocabulary, a second
 * pass on a device while one runs (and the device trains correctly after the
 * refusal), a loss that reaches none of the trainer's parameters, `step(0)`, a
 * tensor-parallel trainer without the norm hooks, BERT targets that do not
 * match the ids, a schedule without `decayIters`, a bad vocabulary multiple
 * and out-of-range generation settings. `Trainer.dispose` frees the moments.
 */

import { equal, rejects, throws } from "node:assert/strict";
import { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Bert, type BertConfig } from "../models/bert.ts";
import { generate } from "../models/generate.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer, type TrainerOptions } from "../models/trainer.ts";
import { gpuTest, prng, testBackend, testDevice } from "./helpers.ts";

const dev = await testDevice();

const cfg: GptConfig = {
  vocabSize: 37,
  numLayers: 1,
  hiddenSize: 16,
  numHeads: 2,
  maxPositions: 8,
  hiddenDropout: 0,
  attentionDropout: 0,
};
const B = 2, T = 8;
const opts: TrainerOptions = { schedule: { lr: 1e-2, decayIters: 10 }, clipGrad: 1 };

function ids(device: Device, seed: number, vocab = cfg.vocabSize): TokenIds {
  const r = prng(seed);
  return TokenIds.fromHost(
    device,
    Int32Array.from({ length: B * T }, () => Math.floor(r() * vocab)),
    [B, T],
  );
}

Deno.test(
  "token ids made on another device are refused, not read as stale data",
  gpuTest,
  async () => {
    const other = await Device.create({ backend: testBackend() });
    try {
      const m = Gpt.serial(dev, cfg, 1);
      const foreign = ids(other, 1);
      await rejects(
        () => tidy(dev, () => m.loss(foreign, ids(dev, 2))),
        /ids are on another device/,
      );
      await rejects(
        () => tidy(dev, () => m.loss(ids(dev, 1), foreign)),
        /targets are on another device/,
      );
      m.dispose();
    } finally {
      await other.close();
    }
  },
);

Deno.test("ids past the vocabulary are refused, the padded rows included", gpuTest, async () => {
  const m = Gpt.serial(dev, cfg, 1);
  equal(m.paddedVocab > 40, true);
  const past = TokenIds.fromHost(dev, new Int32Array(B * T).fill(40), [B, T]);
  await rejects(
    () => tidy(dev, () => m.loss(past, ids(dev, 2))),
    /token id 40 is outside the vocabulary of 37/,
  );
  m.dispose();
});

Deno.test(
  "a second pass on a busy device is refused, and the device trains right afterwards",
  gpuTest,
  async () => {
    const a = Gpt.serial(dev, cfg, 1), b = Gpt.serial(dev, cfg, 2), fresh = Gpt.serial(dev, cfg, 2);
    const ta = new Trainer(dev, a, opts),
      tb = new Trainer(dev, b, opts),
      tf = new Trainer(dev, fresh, opts);
    const x = ids(dev, 3).keep(), y = ids(dev, 4).keep();
    const first = ta.step(1, () => a.loss(x, y));
    await rejects(
      () => tb.step(1, () => b.loss(x, y)),
      /Trainer\.step: this device is still running Trainer\.step/,
    );
    await rejects(() => tb.evaluate(1, () => b.loss(x, y)), /still running Trainer\.step/);
    await first;
    equal(dev.gradEnabled, true);
    equal(dev.scopes.length, 0);
    // b's step now equals a fresh copy's (same seed, same batch): the refusal left nothing behind.
    const rb = await tb.step(1, () => b.loss(x, y));
    const rf = await tf.step(1, () => fresh.loss(x, y));
    equal(rb.loss, rf.loss);
    equal(rb.gradNorm, rf.gradNorm);
    for (const m of [a, b, fresh]) m.dispose();
    for (const t of [ta, tb, tf]) t.dispose();
    x.dispose();
    y.dispose();
  },
);

Deno.test(
  "a loss that reaches none of the trainer's parameters, and step(0), are refused",
  gpuTest,
  async () => {
    const g = Gpt.serial(dev, cfg, 1), h = Gpt.serial(dev, cfg, 2);
    const tg = new Trainer(dev, g, opts);
    await rejects(
      () => tg.step(1, () => h.loss(ids(dev, 1), ids(dev, 2))),
      /reached none of this trainer's parameters/,
    );
    equal(tg.iteration, 0);
    await rejects(
      () => tg.step(0, () => g.loss(ids(dev, 1), ids(dev, 2))),
      /micro-batches must be an integer ≥ 1, got 0/,
    );
    await rejects(
      () => tg.evaluate(-1, () => g.loss(ids(dev, 1), ids(dev, 2))),
      /batches must be an integer ≥ 0/,
    );
    g.dispose();
    h.dispose();
  },
);

Deno.test("a trainer of a model split over 2 ranks needs the norm hooks", gpuTest, () => {
  // Building the layers talks to no peer; a stand-in group of two is enough to reach the check.
  const group = {
    size: 2,
    rank: 0,
    allReduce: () => Promise.resolve(),
    allGather: () => Promise.resolve(),
  };
  const m = new Gpt(new TensorParallelLayers(dev, group as never), cfg, { seed: 1 });
  throws(
    () => new Trainer(dev, m, opts),
    /split over 2 tensor-parallel ranks; pass hooks: hybridHooks/,
  );
  m.dispose();
});

Deno.test(
  "schedules, vocabulary multiples and sampling settings are checked",
  gpuTest,
  async () => {
    const m = Gpt.serial(dev, cfg, 1);
    throws(
      () => new Trainer(dev, m, { schedule: { lr: 1e-2 } as never, clipGrad: 1 }),
      /LrSchedule: decayIters must be a finite number ≥ 0, got undefined/,
    );
    throws(
      () => Gpt.serial(dev, { ...cfg, vocabMultiple: 0 }, 1),
      /vocabMultiple must be a positive integer, got 0/,
    );
    const run = async (o: object) => {
      for await (
        const _ of generate(m, [1, 2], { uniform: Math.random, ...o } as never)
      ) { /* drain */ }
    };
    await rejects(() => run({}), /maxNewTokens must be an integer ≥ 0, got undefined/);
    await rejects(() => run({ maxNewTokens: 2, topP: 0 }), /topP must be in \(0, 1\], got 0/);
    await rejects(
      () => run({ maxNewTokens: 2, temperature: -1 }),
      /temperature must be a finite number ≥ 0/,
    );
    await rejects(() => run({ maxNewTokens: 2, topK: 1.5 }), /topK must be an integer ≥ 0/);
    await rejects(() => run({ maxNewTokens: 2, uniform: undefined }), /uniform must be a function/);
    await rejects(
      async () => {
        for await (const _ of generate(m, [1, 2.5], { maxNewTokens: 2, uniform: Math.random })) {
          /* drain */
        }
      },
      /prompt ids must be integers, got 2\.5/,
    );
    m.dispose();
  },
);

Deno.test("BERT refuses MLM targets that do not match the ids", gpuTest, async () => {
  const bc: BertConfig = { ...cfg, vocabSize: 40 };
  const bert = Bert.serial(dev, bc, 1);
  const x = ids(dev, 1);
  const inputs = {
    ids: x,
    tokenTypes: TokenIds.fromHost(dev, new Int32Array(B * T), [B, T]),
    keep: ops.full(dev, [B, T], 1),
    mlmTargets: TokenIds.fromHost(dev, [3]),
    sopLabels: TokenIds.fromHost(dev, [0, 1]),
  };
  await rejects(
    () => tidy(dev, () => bert.losses(inputs)),
    /mlmTargets \[1\] must hold one target per token of the ids \[2, 8\]/,
  );
  bert.dispose();
});

Deno.test(
  "Trainer.dispose frees the AdamW moments, and a later step starts them anew",
  gpuTest,
  async () => {
    const m = Gpt.serial(dev, cfg, 1);
    const t = new Trainer(dev, m, opts);
    await t.step(1, () => m.loss(ids(dev, 1), ids(dev, 2)));
    const w = m.namedParams()[0][1].tensor;
    equal(t.optimizer.hasMoments(w), true);
    t.dispose();
    equal(t.optimizer.hasMoments(w), false);
    equal(t.iteration, 1);
    const r = await t.step(1, () => m.loss(ids(dev, 1), ids(dev, 2)));
    equal(Number.isFinite(r.loss), true);
    m.dispose();
    t.dispose();
  },
);

Deno.test(
  "a model and its trainer, disposed, give back every buffer (the flat gradient scratch too)",
  gpuTest,
  async () => {
    const before = dev.pool.liveBytes;
    for (let c = 0; c < 3; c++) {
      const m = Gpt.serial(dev, cfg, 1);
      const t = new Trainer(dev, m, opts);
      await t.step(1, () => m.loss(ids(dev, 1), ids(dev, 2)));
      t.dispose();
      m.dispose();
      equal(dev.pool.liveBytes, before, `cycle ${c}`);
    }
  },
);

Deno.test(
  "generate leaves the model's training mode as it was, between its tokens and after interleaved runs",
  gpuTest,
  async () => {
    const m = Gpt.serial(dev, cfg, 1);
    equal(m.training, true);
    const o = { maxNewTokens: 3, temperature: 0, uniform: () => 0.5 };
    const g1 = generate(m, [0, 5], o);
    const g2 = generate(m, [1, 6], o);
    for (let i = 0; i < 3; i++) {
      await g1.next();
      equal(m.training, true, "between tokens");
      await g2.next();
    }
    await g1.next();
    await g2.next();
    equal(m.training, true);
    m.dispose();
  },
);
