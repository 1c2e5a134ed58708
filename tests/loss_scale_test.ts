/**
 * Loss scaling: the dynamic scaler's state machine against a hand-computed
 * sequence of overflowing and clean steps (Megatron's DynamicGradScaler), an
 * injected inf in one gradient skips the step and leaves the weights and AdamW
 * moments bit-identical, and an fp16 trainer starting at 2^32 skips steps while
 * the scale finds its level, then trains.
 */

import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { LossScaler, MAX_LOSS_SCALE } from "../models/loss_scale.ts";
import { precisionArgs, resumePrecision, savedPrecision } from "../cli/precision_resume.ts";
import { Trainer } from "../models/trainer.ts";
import { TokenIds } from "../core/token_ids.ts";
import { gpuTest, prng, testDevice } from "./helpers.ts";

Deno.test("dynamic loss scaler follows Megatron's state machine", () => {
  const s = new LossScaler({ initial: 8, min: 1, window: 3, hysteresis: 2 });
  // [found inf?, scale after, growth tracker after, hysteresis tracker after]
  const seq: [boolean, number, number, number][] = [
    [true, 8, 0, 1], // first overflow: hysteresis absorbs it
    [true, 4, 0, 0], // hysteresis spent: halve
    [true, 2, 0, -1], // and every overflow after that halves again
    [false, 2, 1, -1],
    [false, 2, 2, -1],
    [false, 4, 0, 2], // window clean steps: double, hysteresis restored
    [true, 4, 0, 1],
    [false, 4, 1, 1],
    [false, 4, 2, 1],
    [true, 2, 0, 0], // an overflow resets the growth count
    [true, 1, 0, -1],
    [true, 1, 0, -2], // never below the minimum
    [false, 1, 1, -2],
  ];
  for (const [i, [inf, scale, growth, hyst]] of seq.entries()) {
    s.update(inf);
    deepStrictEqual(
      s.state(),
      { scale, growthTracker: growth, hysteresisTracker: hyst },
      `after step ${i}`,
    );
  }
});

Deno.test("Megatron's defaults; fixed scale; state round trip", () => {
  const d = new LossScaler();
  deepStrictEqual([d.scale, d.min, d.window, d.hysteresis, d.dynamic], [2 ** 32, 1, 1000, 2, true]);
  for (let i = 0; i < 999; i++) d.update(false);
  strictEqual(d.scale, 2 ** 32);
  d.update(false);
  strictEqual(d.scale, 2 ** 33);
  const f = new LossScaler({ fixed: 128 });
  for (const inf of [true, true, true, false]) f.update(inf);
  strictEqual(f.scale, 128);
  const a = new LossScaler({ initial: 64, window: 2 });
  a.update(true);
  a.update(false);
  const b = new LossScaler({ initial: 1024, window: 2 });
  b.restore(a.state());
  deepStrictEqual(b.state(), a.state());
  for (const inf of [false, false, true, true, false]) {
    a.update(inf);
    b.update(inf);
  }
  deepStrictEqual(b.state(), a.state());
  throws(() => new LossScaler({ initial: 0 }), /must be in \[2\^-126, 2\^126\], got 0/);
  throws(() => new LossScaler({ initial: 2 ** 127 }), /loss scale must be in/);
  // The scale and its reciprocal are f32s on the GPU: growth stops at 2^126.
  const top = new LossScaler({ initial: 2 ** 125, window: 1 });
  for (let i = 0; i < 3; i++) top.update(false);
  strictEqual(top.scale, MAX_LOSS_SCALE);
  top.restore({ scale: 2 ** 200, growthTracker: 0, hysteresisTracker: 2 });
  strictEqual(top.scale, MAX_LOSS_SCALE);
  // A fixed scale's state says so; a dynamic scaler does not go on from it (a fixed 1e30
  // became a dynamic scale halving from 1e30, unsaid).
  deepStrictEqual(new LossScaler({ fixed: 1e30 }).state().fixed, true);
  strictEqual(a.state().fixed, undefined);
  const fresh = new LossScaler({ initial: 4096 });
  fresh.restore(new LossScaler({ fixed: 1e30 }).state());
  strictEqual(fresh.scale, 4096);
  // A resume with other settings follows them from its next step: a saved growth count past
  // the new window doubles at the next clean step (an equality test never fired again), a
  // saved hysteresis count over the new hysteresis is cut to it, a scale under the new
  // minimum is raised to it.
  const saved = { scale: 1024, growthTracker: 5, hysteresisTracker: 2 };
  const shorter = new LossScaler({ window: 2, hysteresis: 1, min: 2048 });
  shorter.restore(saved);
  deepStrictEqual(shorter.state(), { scale: 2048, growthTracker: 5, hysteresisTracker: 1 });
  shorter.update(false);
  deepStrictEqual(shorter.state(), { scale: 4096, growthTracker: 0, hysteresisTracker: 1 });
  shorter.update(false);
  shorter.update(false);
  strictEqual(shorter.scale, 8192, "then every 2 clean steps");
  shorter.update(true);
  strictEqual(shorter.scale, 4096, "hysteresis 1: the first overflow halves");
  throws(
    () => b.restore({ scale: -1, growthTracker: 0, hysteresisTracker: 0 }),
    /not a loss-scaler/,
  );
});

Deno.test("a resume in another precision or scale keeps what goes on and says what it drops", () => {
  const dynamicState = { scale: 512, growthTracker: 3, hysteresisTracker: 1 };
  const fixedState = { scale: 128, growthTracker: 0, hysteresisTracker: 2, fixed: true };
  const dynamic = () => new LossScaler({ initial: 2 ** 20 });
  // the same kind: the dynamic scale goes on, nothing said
  const same = dynamic();
  deepStrictEqual(
    resumePrecision({ precision: "fp16", lossScaler: dynamicState }, {
      precision: "fp16",
      scaler: same,
    }),
    [],
  );
  deepStrictEqual(same.state(), dynamicState);
  deepStrictEqual(resumePrecision({ precision: "bf16" }, { precision: "bf16" }), []);
  // fp16 → bf16: the scaler is dropped, in words
  deepStrictEqual(
    resumePrecision({ precision: "fp16", lossScaler: dynamicState }, { precision: "bf16" }),
    [
      "precision: the checkpoint trained in fp16, this run in bf16 (its f32 weights and AdamW moments go on)",
      "loss scale: the checkpoint's dynamic scale, 512, is not used: this bf16 run scales no loss",
    ],
  );
  // bf16 (or a checkpoint that predates the record) → fp16: a fresh scale
  const fresh = dynamic();
  deepStrictEqual(resumePrecision({ precision: "bf16" }, { precision: "fp16", scaler: fresh }), [
    "precision: the checkpoint trained in bf16, this run in fp16 (its f32 weights and AdamW moments go on)",
    "loss scale: the checkpoint has none (it was a bf16 run); this run's dynamic scale starts at --initial-loss-scale 1048576",
  ]);
  strictEqual(fresh.scale, 2 ** 20);
  deepStrictEqual(resumePrecision({}, { precision: "fp16", scaler: dynamic() }), [
    "loss scale: the checkpoint has none (it was not an fp16 run); this run's dynamic scale starts at --initial-loss-scale 1048576",
  ]);
  // dynamic ↔ fixed
  deepStrictEqual(
    resumePrecision({ precision: "fp16", lossScaler: dynamicState }, {
      precision: "fp16",
      scaler: new LossScaler({ fixed: 64 }),
    }),
    ["loss scale: fixed at --loss-scale 64; the checkpoint's dynamic scale, 512, is not used"],
  );
  deepStrictEqual(
    resumePrecision({ precision: "fp16", lossScaler: fixedState }, {
      precision: "fp16",
      scaler: dynamic(),
    }),
    [
      "loss scale: the checkpoint's was fixed (--loss-scale 128); this run's dynamic scale starts at --initial-loss-scale 1048576",
    ],
  );
  // --initial-loss-scale given again does not restart a dynamic scale
  deepStrictEqual(
    resumePrecision({ precision: "fp16", lossScaler: dynamicState }, {
      precision: "fp16",
      scaler: dynamic(),
      initialLossScale: 2 ** 20,
    }),
    [
      "--initial-loss-scale 1048576 starts a fresh run's scale: this one continues the checkpoint's, 512 (--loss-scale S fixes one instead)",
    ],
  );
  deepStrictEqual(savedPrecision({ fp16: false, bf16: true }), "bf16");
  deepStrictEqual(savedPrecision({ ...precisionArgs(undefined) }), "fp32");
  strictEqual(savedPrecision({ lr: 1 }), undefined, "a checkpoint from before the record");
});

const dev = await testDevice();
const tiny: GptConfig = {
  vocabSize: 37,
  numLayers: 1,
  hiddenSize: 16,
  numHeads: 2,
  maxPositions: 8,
  hiddenDropout: 0,
  attentionDropout: 0,
};

function batch(seed: number) {
  const r = prng(seed);
  const ids = Int32Array.from({ length: 16 }, () => Math.floor(r() * tiny.vocabSize));
  const tg = Int32Array.from({ length: 16 }, () => Math.floor(r() * tiny.vocabSize));
  return {
    x: TokenIds.fromHost(dev, ids, [2, 8]).keep(),
    y: TokenIds.fromHost(dev, tg, [2, 8]).keep(),
  };
}

async function stateOf(m: Gpt, t: Trainer): Promise<Uint32Array[]> {
  const ts = m.namedParams().map(([, p]) => p.tensor);
  const weights = await dev.readMany(ts.map((x) => x.binding));
  const moments = await t.optimizer.readMoments(ts.filter((x) => t.optimizer.hasMoments(x)));
  return [...weights, ...moments.flatMap((mo) => [mo.m.buffer, mo.v.buffer])].map((b) =>
    new Uint32Array(b)
  );
}

Deno.test("an injected inf in one gradient skips the step, bit for bit", gpuTest, async () => {
  const m = Gpt.serial(dev, tiny, 3);
  const scaler = new LossScaler({ initial: 1024, hysteresis: 1 });
  let inject = false;
  const trainer = new Trainer(dev, m, {
    schedule: { lr: 1e-2, decayIters: 10, style: "constant" },
    clipGrad: 1,
    precision: { scaler },
    hooks: {
      allReduceGradients(params) {
        const g = params.find((p) => p.grad)!.grad!;
        if (inject) dev.upload(g.buffer, Float32Array.of(Infinity), 4 * 3);
        return Promise.resolve();
      },
    },
  });
  const { x, y } = batch(1);
  const r1 = await trainer.step(1, () => m.loss(x, y));
  strictEqual(r1.skipped, false);
  strictEqual(trainer.optimizer.step, 1);
  const before = await stateOf(m, trainer);
  inject = true;
  const r2 = await trainer.step(1, () => m.loss(x, y));
  strictEqual(r2.skipped, true);
  // No norm, whether the overflow made it Infinity or NaN (it differed by layout).
  strictEqual(Number.isNaN(r2.gradNorm), true, `${r2.gradNorm}`);
  strictEqual(Number.isFinite(r1.gradNorm), true);
  strictEqual(r2.lossScale, 512, "hysteresis 1: the first overflow halves the scale");
  strictEqual(trainer.optimizer.step, 1, "a skipped step is not an optimizer step");
  deepStrictEqual(await stateOf(m, trainer), before);
  inject = false;
  const r3 = await trainer.step(1, () => m.loss(x, y));
  strictEqual(r3.skipped, false);
  strictEqual(trainer.optimizer.step, 2);
  ok(r3.loss < r1.loss, `${r3.loss} < ${r1.loss}`);
  m.dispose();
});

Deno.test("a scaled loss gives the unscaled update (scale divided out)", gpuTest, async () => {
  const runs: Uint32Array[][] = [];
  const norms: number[] = [];
  // At 2^100 every scaled gradient is a finite f32 but their squares are not: the
  // norm squares the unscaled gradients, so the step is not taken for an overflow.
  for (const scale of [1, 2 ** 20, 2 ** 100]) {
    const m = Gpt.serial(dev, tiny, 4);
    const trainer = new Trainer(dev, m, {
      schedule: { lr: 1e-2, decayIters: 10, style: "constant" },
      clipGrad: 0.5,
      precision: { scaler: new LossScaler({ fixed: scale }) },
    });
    const { x, y } = batch(2);
    const r = await trainer.step(1, () => m.loss(x, y));
    strictEqual(r.skipped, false, `scale ${scale}`);
    norms.push(r.gradNorm);
    runs.push(await stateOf(m, trainer));
    m.dispose();
  }
  // A power-of-two scale is exact in f32: same norm, same weights, same moments.
  deepStrictEqual(norms.slice(1), [norms[0], norms[0]]);
  deepStrictEqual(runs.slice(1), [runs[0], runs[0]]);
});

Deno.test(
  "fp16 from a 2^32 scale skips steps until the scale fits, then trains",
  gpuTest,
  async () => {
    const m = Gpt.serial(dev, tiny, 5);
    const scaler = new LossScaler(); // Megatron's defaults: 2^32, hysteresis 2
    const trainer = new Trainer(dev, m, {
      schedule: { lr: 1e-2, decayIters: 100, style: "constant" },
      clipGrad: 1,
      precision: { half: "fp16", scaler },
    });
    const { x, y } = batch(3);
    const res = [];
    for (let i = 0; i < 40; i++) res.push(await trainer.step(1, () => m.loss(x, y)));
    const skipped = res.filter((r) => r.skipped).length;
    ok(skipped >= 2 && skipped < 30, `skipped ${skipped}`);
    ok(res[0].skipped && res[1].skipped, "2^32 overflows fp16 gradients");
    strictEqual(res[0].lossScale, 2 ** 32, "hysteresis 2 absorbs the first overflow");
    strictEqual(res[1].lossScale, 2 ** 31);
    strictEqual(trainer.optimizer.step, 40 - skipped);
    const firstClean = res.findIndex((r) => !r.skipped);
    ok(res.slice(firstClean).every((r) => !r.skipped), "once it fits, no more overflows here");
    ok(res[39].loss < res[firstClean].loss - 0.5, `${res[firstClean].loss} → ${res[39].loss}`);
    m.dispose();
  },
);
