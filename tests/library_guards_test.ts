/**
 * What the library refuses, with a sentence, instead of computing something
 * wrong: token ids from another device or outside the vocabulary, a second
 * pass on a device while one runs (and the device trains correctly after the
 * refusal), a loss that reaches none of the trainer's parameters, `step(0)`, a
 * tensor-parallel trainer without the norm hooks, BERT targets that do not
 * match the ids, a schedule without `decayIters`, a bad vocabulary multiple
 * and out-of-range generation settings. `Trainer.dispose` frees the moments.
 * Float ops handed `i32` tensors, typed arrays of the other dtype, ids that are
 * no int32, bad AdamW hyper-parameters, `minLr` above `lr`, a bad BERT
 * `mlmNormalizer`, an unknown 16-bit format and a checkpoint load whose
 * optimizer does not own the parameters are refused, each naming the value, as
 * is an attention block whose head size is not hidden / heads. A step that
 * fails part-way leaves no gradient behind, and `evaluate` restores the
 * model's mode.
 */

import { deepEqual, equal, rejects, throws } from "node:assert/strict";
import { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import { AdamW, checkLrSchedule } from "../core/optim.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { RngStream } from "../core/rng.ts";
import { Bert, type BertConfig } from "../models/bert.ts";
import { SelfAttention } from "../models/blocks.ts";
import { loadCheckpoint } from "../models/checkpoint/load.ts";
import { generate } from "../models/generate.ts";
import { Gpt, type GptConfig, paddedVocabSize } from "../models/gpt.ts";
import { LossScaler } from "../models/loss_scale.ts";
import { sampleToken } from "../models/sampling.ts";
import {
  ColumnParallelLinear,
  RowParallelLinear,
  TensorParallelLayers,
} from "../models/parallel/tp_layers.ts";
import { Module } from "../core/nn.ts";
import { DEFAULT_CLIP_GRAD, Trainer, type TrainerOptions } from "../models/trainer.ts";
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
  "a step that fails part-way leaves no gradient behind: the next step equals a fresh trainer's",
  gpuTest,
  async () => {
    const x = ids(dev, 3), y = ids(dev, 4);
    const g = Gpt.serial(dev, cfg, 5), fresh = Gpt.serial(dev, cfg, 5);
    let settled = 0;
    // An overlapped reduction started for the last micro-batch is settled, not left running.
    const hooks = {
      beginGradReduce: () => ({
        onLeafGrad() {},
        finish: () => Promise.resolve(),
        settle: () => Promise.resolve(void settled++),
      }),
    };
    const tg = new Trainer(dev, g, { ...opts, hooks });
    const tf = new Trainer(dev, fresh, { ...opts, hooks });
    await rejects(
      () =>
        tg.step(2, (i) => {
          if (i === 1) throw new Error("a bad batch");
          return g.loss(x, y);
        }),
      /a bad batch/,
    );
    equal(settled, 1);
    equal(tg.iteration, 0);
    equal(g.namedParams().filter(([, p]) => p.tensor.grad).length, 0);
    equal(dev.scopes.length, 0);
    // With hooks that reduce over other ranks, they went on into the failed step's collectives:
    // a next step here would pair with theirs (a caught failure on one of two data-parallel
    // ranks trained both on mixed steps). Refused, naming the first failure.
    const outOfStep = /an earlier step failed on this rank \(a bad batch\); .*end the job/;
    await rejects(() => tg.step(1, () => g.loss(x, y)), outOfStep);
    await rejects(() => tg.evaluate(1, () => g.loss(x, y)), outOfStep);
    tg.dispose();
    // Alone (hooks over one rank, as hybridHooks' over groups of one), the next step goes on, as
    // a fresh trainer's. Before the fix the failed step's first micro-batch (half its gradient)
    // was added in: 1.5×.
    const alone = new Trainer(dev, g, { ...opts, hooks: { ...hooks, ranks: 1 } });
    await rejects(
      () =>
        alone.step(2, (i) => {
          if (i === 1) throw new Error("a bad batch");
          return g.loss(x, y);
        }),
      /a bad batch/,
    );
    const rg = await alone.step(1, () => g.loss(x, y));
    const rf = await tf.step(1, () => fresh.loss(x, y));
    equal(rg.loss, rf.loss);
    equal(rg.gradNorm, rf.gradNorm);
    deepEqual(
      await g.namedParams()[0][1].tensor.read(),
      await fresh.namedParams()[0][1].tensor.read(),
    );
    // evaluate leaves the model in the mode the caller had it in.
    g.train(false);
    await alone.evaluate(1, () => g.loss(x, y));
    equal(g.training, false);
    g.train(true);
    await alone.evaluate(1, () => g.loss(x, y));
    equal(g.training, true);
    for (const m of [g, fresh]) m.dispose();
    for (const t of [alone, tf]) t.dispose();
    x.dispose();
    y.dispose();
  },
);

Deno.test(
  "a tensor made while a step runs (a prefetched batch) is freed with the step, and says so",
  gpuTest,
  async () => {
    const g = Gpt.serial(dev, cfg, 6);
    const tg = new Trainer(dev, g, opts);
    const x = ids(dev, 7), y = ids(dev, 8);
    const running = tg.step(1, () => g.loss(x, y));
    const next = ids(dev, 9); // made between the step's start and its await
    const kept = ids(dev, 10).keep();
    await running;
    await rejects(
      () => tg.step(1, () => g.loss(next, next)),
      /use of a disposed tensor of shape \[2, 8\]; it was made while Trainer\.step ran on its device, .*call keep\(\) on it/,
    );
    await tg.step(1, () => g.loss(kept, kept));
    // One made during a step and freed by its owner is not said to be the step's doing.
    kept.dispose();
    await rejects(
      () => tg.step(1, () => g.loss(kept, kept)),
      (e: Error) => /^use of a disposed tensor of shape \[2, 8\]$/.test(e.message),
    );
    throws(() => Tensor.empty(dev, [2], "int64" as "f32"), /empty: dtype must be "f32" or "i32"/);
    // A config key the model does not read is refused (nanoGPT's `dropout` trained at 0.1).
    throws(
      () => Gpt.serial(dev, { ...cfg, dropout: 0 } as GptConfig, 1),
      /unknown config key dropout; the model reads vocabSize, .*hiddenDropout, attentionDropout/,
    );
    g.dispose();
    tg.dispose();
    for (const t of [x, y]) t.dispose();
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
      /batches must be an integer ≥ 1/,
    );
    // Alone, 0 batches gave a loss of 0; a replica of a data-parallel group may have none.
    await rejects(
      () => tg.evaluate(0, () => g.loss(ids(dev, 1), ids(dev, 2))),
      /batches must be an integer ≥ 1 \(a trainer without data-parallel hooks/,
    );
    // Logits for a loss: named, not `axpy: [2, 8, 48] does not tile [1]`.
    await rejects(
      () => tg.step(1, () => g.logits(ids(dev, 1))),
      /Trainer\.step: the loss function must return a scalar loss \(one element\), got a tensor of shape \[2, 8, \d+\]/,
    );
    await rejects(
      () => tg.evaluate(1, () => g.logits(ids(dev, 1))),
      /Trainer\.evaluate: the loss function must return a scalar loss/,
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
  // A model of the user's own, of the library's parallel layers, declares no `parallel`: its
  // parameters say it is split (it trained, each rank clipping by its own norm, its replicas
  // drifting apart).
  class Mine extends Module {
    readonly up: ColumnParallelLinear;
    readonly down: RowParallelLinear;
    constructor() {
      super();
      const init = { rng: new RngStream(1) };
      this.up = this.child("up", new ColumnParallelLinear(dev, group as never, 4, 8, init));
      this.down = this.child("down", new RowParallelLinear(dev, group as never, 8, 4, init));
    }
  }
  const mine = new Mine();
  throws(() => new Trainer(dev, mine, opts), /split over 2 tensor-parallel ranks; pass hooks/);
  mine.dispose();
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
    // It returned NaN for these.
    throws(() => paddedVocabSize(50257, 0), /tensor-parallel size must be an integer ≥ 1, got 0/);
    throws(() => paddedVocabSize(50257, 2, 0), /multiple must be an integer ≥ 1, got 0/);
    // sampleToken, exported, checks its settings itself (topK 2.5 became 2).
    throws(
      () => sampleToken(new Float32Array(4), 4, { topK: 2.5 }, Math.random),
      /sampleToken: topK must be an integer ≥ 0/,
    );
    // Top-k keeps every token tied with the k-th largest, as Hugging Face's and Megatron's do
    // (a stable cut at k always dropped the later of two tied tokens).
    const drawn = new Set<number>();
    for (let i = 0; i < 60; i++) {
      drawn.add(sampleToken(Float32Array.of(3, 3, 3, 0), 4, { topK: 2 }, () => (i + 0.5) / 60));
    }
    deepEqual([...drawn].sort(), [0, 1, 2]);
    // A NaN or +∞ logit has no probability: refused, not drawn (it gave the NaN token, or the
    // last finite one); −∞ is a masked token's.
    for (const bad of [NaN, Infinity]) {
      throws(
        () => sampleToken(Float32Array.of(1, bad, 2), 3, { temperature: 0 }, Math.random),
        new RegExp(`sampleToken: the logit of token 1 is ${bad}: the model's output is not finite`),
      );
    }
    equal(sampleToken(Float32Array.of(-Infinity, 2, -Infinity), 3, {}, () => 0.99), 1);
    throws(
      () => sampleToken(Float32Array.of(-Infinity, -Infinity), 2, {}, Math.random),
      /none of the 2 candidate tokens has a finite logit/,
    );
    // The loss scaler's settings (a fractional window was taken; a minimum above the start too).
    throws(() => new LossScaler({ window: 1.5 }), /window must be an integer ≥ 1, got 1\.5/);
    throws(
      () => new LossScaler({ initial: 4, min: 8 }),
      /minimum loss scale 8 is above the initial scale 4/,
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

Deno.test("ops that read f32 refuse i32 tensors; ops on ids still take them", gpuTest, async () => {
  const i = Tensor.fromArray(dev, new Int32Array([1, 2, 3, 4]), [2, 2], "i32");
  const f = Tensor.fromArray(dev, [1, 0, 0, 1], [2, 2]);
  const f2 = Tensor.fromArray(dev, [1, 2]);
  throws(() => ops.add(i, f), { name: "TypeError", message: "add: expected f32 tensors, got i32" });
  throws(() => ops.add(f, i), /^TypeError: add: expected f32 tensors, got i32$/);
  throws(() => ops.mul(f, i), /^TypeError: mul: expected f32 tensors, got i32$/);
  throws(() => ops.scale(i, 2, 0), /^TypeError: scale: expected f32 tensors, got i32$/);
  throws(() => ops.matmul(i, f), /^TypeError: matmul: expected f32 tensors, got i32$/);
  throws(() => ops.matmul(f, i), /^TypeError: matmul: expected f32 tensors, got i32$/);
  throws(() => ops.linear(f, f, i.view([4])), /matmul: expected f32 tensors, got i32/);
  throws(() => ops.sum(i), /^TypeError: sum: expected f32 tensors, got i32$/);
  throws(() => ops.softmax(i), /^TypeError: softmax: expected f32 tensors, got i32$/);
  throws(() => ops.layerNorm(i, f2, f2), /^TypeError: layerNorm: expected f32 tensors, got i32$/);
  throws(
    () => ops.embedding(i, TokenIds.fromHost(dev, [0, 1])),
    /^TypeError: embedding: expected f32 tensors, got i32$/,
  );
  // The legitimate i32 uses: ids, targets and packed 16-bit words.
  const e = ops.embedding(f, TokenIds.fromHost(dev, [1, 0]));
  deepEqual(Array.from(await e.read()), [0, 1, 1, 0]);
  const words = ops.packHalf(f, "bf16");
  equal(words.dtype, "i32");
  deepEqual(Array.from(await ops.unpackHalf(words, [2, 2], "bf16").read()), [1, 0, 0, 1]);
  const loss = ops.crossEntropy(f, TokenIds.fromHost(dev, [0, 1]));
  equal(Number.isFinite(await loss.item()), true);
  for (const t of [i, f, f2, e, words, loss]) t.dispose();
});

Deno.test(
  "Tensor.fromArray refuses a typed array of the other dtype and non-int32 numbers for i32",
  gpuTest,
  async () => {
    throws(
      () => Tensor.fromArray(dev, new Float32Array([3.5, 4]), [2], "i32"),
      /^TypeError: fromArray: a Float32Array cannot fill an i32 tensor \(its bits would be read as integers\)/,
    );
    throws(
      () => Tensor.fromArray(dev, new Int32Array([3, 4]), [2], "f32"),
      /^TypeError: fromArray: an Int32Array cannot fill an f32 tensor \(its bits would be read as floats\)/,
    );
    throws(
      () => Tensor.fromArray(dev, [1, 3.5], [2], "i32"),
      /^RangeError: fromArray: value 3\.5 at index 1 is not an int32/,
    );
    throws(
      () => Tensor.fromArray(dev, [2 ** 31], [1], "i32"),
      /^RangeError: fromArray: value 2147483648 at index 0 is not an int32/,
    );
    const ok = Tensor.fromArray(dev, [3, -4], [2], "i32");
    deepEqual(Array.from(await ok.readInt()), [3, -4]);
    ok.dispose();
  },
);

Deno.test("TokenIds.fromHost refuses ids that are no int32, naming the first", gpuTest, () => {
  throws(
    () => TokenIds.fromHost(dev, [1, 2.5, NaN]),
    /^RangeError: TokenIds\.fromHost: id 2\.5 at index 1 is not an int32 \(ids must be integers in \[-2\^31, 2\^31\)\)$/,
  );
  throws(() => TokenIds.fromHost(dev, [0, NaN]), /TokenIds\.fromHost: id NaN at index 1 is not/);
  throws(() => TokenIds.fromHost(dev, [2 ** 31]), /id 2147483648 at index 0 is not an int32/);
  throws(() => TokenIds.fromHost(dev, [-(2 ** 31) - 1]), /id -2147483649 at index 0 is not/);
  TokenIds.fromHost(dev, [-1, 0, 2 ** 31 - 1]).dispose(); // ignored targets are −1
});

Deno.test("AdamW refuses bad hyper-parameters when it is made", () => {
  const cases: [Record<string, number>, RegExp][] = [
    [{ beta1: 2 }, /^RangeError: AdamW: beta1 must be in \[0, 1\), got 2$/],
    [{ beta1: -1 }, /^RangeError: AdamW: beta1 must be in \[0, 1\), got -1$/],
    [{ beta2: 1 }, /^RangeError: AdamW: beta2 must be in \[0, 1\), got 1$/],
    [{ beta2: NaN }, /AdamW: beta2 must be in \[0, 1\), got NaN$/],
    [{ eps: -1 }, /^RangeError: AdamW: eps must be a positive number in f32's range .*, got -1$/],
    [{ eps: 0 }, /AdamW: eps must be a positive number in f32's range .*, got 0$/],
    [{ eps: Infinity }, /AdamW: eps must be .*, got Infinity$/],
    [{ weightDecay: NaN }, /^RangeError: AdamW: weightDecay must be a finite number ≥ 0, got NaN$/],
    [{ weightDecay: -0.1 }, /AdamW: weightDecay must be a finite number ≥ 0, got -0\.1$/],
    [{ bucketElements: -4 }, /^RangeError: AdamW: bucketElements must be an integer ≥ 0/],
    [{ bucketElements: 2.5 }, /AdamW: bucketElements must be an integer ≥ 0 .*, got 2\.5$/],
  ];
  for (const [config, message] of cases) throws(() => new AdamW([], config), message);
  equal(new AdamW([], { beta1: 0, beta2: 0.95, weightDecay: 0, bucketElements: 0 }).beta2, 0.95);
});

Deno.test("an LR schedule whose minLr is above lr is refused, by the trainer too", gpuTest, () => {
  throws(
    () => checkLrSchedule({ lr: 1e-4, minLr: 3e-4, decayIters: 10 }),
    /^RangeError: LrSchedule: minLr 0\.0003 is above lr 0\.0001 \(the decay falls from lr to minLr\)$/,
  );
  checkLrSchedule({ lr: 1e-4, minLr: 1e-4, decayIters: 10 });
  const m = Gpt.serial(dev, cfg, 1);
  throws(
    () => new Trainer(dev, m, { ...opts, schedule: { lr: 1e-3, minLr: 1, decayIters: 10 } }),
    /LrSchedule: minLr 1 is above lr 0\.001/,
  );
  m.dispose();
});

Deno.test(
  "BERT refuses an mlmNormalizer that is not a positive finite number",
  gpuTest,
  async () => {
    const bert = Bert.serial(dev, { ...cfg, vocabSize: 40 }, 1);
    for (const bad of [0, -2, NaN, Infinity]) {
      const inputs = {
        ids: ids(dev, 1),
        tokenTypes: TokenIds.fromHost(dev, new Int32Array(B * T), [B, T]),
        keep: ops.full(dev, [B, T], 1),
        mlmTargets: ids(dev, 2),
        sopLabels: TokenIds.fromHost(dev, [0, 1]),
        mlmNormalizer: bad,
      };
      await rejects(
        () => tidy(dev, () => bert.losses(inputs)),
        new RegExp(
          `^RangeError: BERT: mlmNormalizer must be a positive finite number, got ${bad}$`,
        ),
      );
    }
    bert.dispose();
  },
);

Deno.test("a trainer refuses a 16-bit format other than fp16 and bf16", gpuTest, () => {
  const m = Gpt.serial(dev, cfg, 1);
  throws(
    // @ts-expect-error: the type allows only "fp16" | "bf16"; untyped callers pass anything
    () => new Trainer(dev, m, { ...opts, precision: { half: "fp8" } }),
    /^TypeError: Trainer: precision\.half must be "fp16" or "bf16", got "fp8"$/,
  );
  new Trainer(dev, m, { ...opts, precision: { half: "bf16" } }).dispose();
  m.dispose();
});

Deno.test(
  "loading a checkpoint with an optimizer that does not own the parameters is refused",
  gpuTest,
  async () => {
    const trained = Gpt.serial(dev, cfg, 1);
    const stale = Gpt.serial(dev, cfg, 2);
    const t = new Trainer(dev, trained, opts);
    const [name, first] = stale.namedParams()[0];
    // Refused before any file is read: the directory need not exist.
    await rejects(
      () => loadCheckpoint("/nonexistent", { params: stale.namedParams(), optimizer: t.optimizer }),
      {
        name: "TypeError",
        message: `loadCheckpoint: the optimizer does not own parameter "${name}" of params ` +
          "(pass the optimizer made for these parameters, e.g. the Trainer's of the same model)",
      },
    );
    const zero = new Float32Array(first.tensor.size);
    throws(
      () => t.optimizer.setMoments(first.tensor, zero, zero),
      /^TypeError: setMoments: ".*" is not a parameter of this optimizer$/,
    );
    t.dispose();
    trained.dispose();
    stale.dispose();
  },
);

Deno.test(
  "reductions and softmax of a tensor with no elements are refused by name",
  gpuTest,
  () => {
    const empty = Tensor.empty(dev, [2, 0]);
    // Before: softmax failed inside dispatchWorkgroups, max gave -3.4e38 and mean 0.
    throws(() => ops.softmax(empty), { message: "softmax: [2, 0] has no elements" });
    throws(() => ops.max(empty), { message: "max: the tensor has no elements" });
    throws(() => ops.mean(empty), { message: "mean: the tensor has no elements" });
    empty.dispose();
  },
);

Deno.test("SelfAttention refuses a shape whose kvChannels is not hidden / heads", gpuTest, () => {
  const layers = TensorParallelLayers.single(dev);
  const names = { input: "c_attn", output: "c_proj" };
  const shape = { hiddenSize: 16, numHeads: 2, ffnHiddenSize: 64, numLayers: 1 };
  for (const kvChannels of [undefined, 4]) {
    throws(
      () =>
        new SelfAttention(
          layers,
          { ...shape, kvChannels } as never,
          { rng: new RngStream(1) },
          0,
          new RngStream(2),
          names,
        ),
      /SelfAttention: kvChannels .* × numHeads 2 is not hiddenSize 16 \(pass the model's resolved shape/,
    );
  }
  const ok = new SelfAttention(
    layers,
    { ...shape, kvChannels: 8 },
    { rng: new RngStream(1) },
    0,
    new RngStream(2),
    names,
  );
  equal(ok.headDim, 8);
  ok.dispose();
});

Deno.test("an op handed a disposed tensor is refused before it makes its output", gpuTest, () => {
  const x = Tensor.fromArray(dev, new Float32Array(64).fill(1), [8, 8]);
  const w = Tensor.fromArray(dev, new Float32Array(64).fill(1), [8, 8]);
  x.dispose();
  const before = dev.pool.liveBytes;
  const calls: [string, () => unknown][] = [
    ["add", () => ops.add(x, w)],
    ["gelu", () => ops.gelu(x)],
    ["matmul", () => ops.matmul(x, w)],
    ["matmul (B)", () => ops.matmul(w, x)],
    ["sum", () => ops.sum(x)],
    ["mean", () => ops.mean(x)],
    ["max", () => ops.max(x)],
  ];
  for (const [what, call] of calls) {
    throws(call, /use of a disposed tensor of shape \[8, 8\]/, what);
  }
  // Outside any scope: a refused op that had made its output first left it behind.
  equal(dev.pool.liveBytes, before);
  w.dispose();
});

Deno.test("Trainer without clipGrad clips at Megatron's default, 1", gpuTest, async () => {
  const tokens = ids(dev, 5);
  const run = async (clipGrad?: number) => {
    const model = Gpt.serial(dev, cfg, 3);
    const trainer = new Trainer(dev, model, {
      schedule: opts.schedule,
      ...(clipGrad === undefined ? {} : { clipGrad }),
    });
    // A loss scaled up so that its gradient norm is well past 1.
    const r = await trainer.step(1, async () => ops.scale(await model.loss(tokens, tokens), 1000));
    if (!(r.gradNorm > 10)) throw new Error(`gradient norm ${r.gradNorm}`);
    const w = await model.namedParams()[0][1].tensor.read();
    trainer.dispose();
    model.dispose();
    return w;
  };
  const byDefault = await run();
  deepEqual(byDefault, await run(DEFAULT_CLIP_GRAD));
  equal(DEFAULT_CLIP_GRAD, 1);
  // Not the same as no clipping.
  equal(JSON.stringify(byDefault) === JSON.stringify(await run(0)), false);
});
