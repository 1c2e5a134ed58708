/**
 * AdamW (its eps too), gradient clipping and learning-rate schedules (Megatron's
 * warm-up fraction and start among them) against hand-computed values and
 * Megatron's formula, and a two-layer MLP that learns a small task.
 */

import { strictEqual, throws } from "node:assert/strict";
import { backward, zeroGrad } from "../core/autograd.ts";
import { Linear, Module } from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import {
  AdamW,
  checkLrSchedule,
  clipCoefficient,
  gradSumSquares,
  learningRate,
} from "../core/optim.ts";
import { RngStream } from "../core/rng.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { assertClose, gpuTest, randomArray, testDevice } from "./helpers.ts";
import { megatronGetLr, type MegatronLrOptions } from "./megatron_lr.ts";

const dev = await testDevice();

class Two extends Module {
  readonly w: Tensor;
  readonly b: Tensor;
  constructor(w: Float32Array, b: Float32Array) {
    super();
    this.w = this.param("w", Tensor.fromArray(dev, w, [w.length]));
    this.b = this.param("b", Tensor.fromArray(dev, b, [b.length]), { decay: false });
  }
}

/**
 * Three AdamW steps with clipping against a hand computation in float64, AdamW's
 * eps `eps` (torch.optim.AdamW's: the update is m̂/(√v̂ + eps)), on a weight of
 * `wSize` and a bias of `bSize` elements. With `skipAt`, that step's gradients
 * hold an inf and the norm flags it (`skipNonFinite`): the kernels must change
 * nothing, and the optimizer's `unstep` undoes the count. `bucketElements` as
 * {@link AdamW}'s (0: every tensor updated by a dispatch of its own).
 */
async function adamwAgainstHand(
  eps: number,
  { wSize = 5, bSize = 3, skipAt = 0, bucketElements }: {
    wSize?: number;
    bSize?: number;
    skipAt?: number;
    bucketElements?: number;
  } = {},
): Promise<void> {
  const w0 = randomArray(wSize, 1);
  const b0 = randomArray(bSize, 2);
  const m = new Two(w0, b0);
  const opt = new AdamW(m.namedParams().map(([, p]) => p), {
    beta1: 0.9,
    beta2: 0.95,
    eps,
    weightDecay: 0.1,
    ...(bucketElements === undefined ? {} : { bucketElements }),
  });
  strictEqual(opt.eps, eps);
  // Other gradients at every call: with the same ones each step, m̂/√v̂ would be ±1 whatever
  // their values (for a small eps), and a kernel that misread them could pass.
  const gradsAt = (call: number) => [
    randomArray(wSize, 10 * call + 3, -2, 2),
    randomArray(bSize, 10 * call + 4, -2, 2),
  ];
  const ref = [Float64Array.from(w0), Float64Array.from(b0)];
  const mo = [new Float64Array(wSize), new Float64Array(bSize)];
  const vo = [new Float64Array(wSize), new Float64Array(bSize)];
  const maxNorm = 1.0;
  for (let call = 1, step = 1; call <= 3 + (skipAt ? 1 : 0); call++) {
    const skip = call === skipAt;
    const lr = 0.01 * step;
    const grads = gradsAt(call);
    const wGrad = skip ? grads[0].map((g, i) => (i === 1 ? Infinity : g)) : grads[0];
    m.w.grad = Tensor.fromArray(dev, wGrad).keep();
    m.b.grad = Tensor.fromArray(dev, grads[1]).keep();
    const sq = gradSumSquares(dev, m.parameters());
    const coef = clipCoefficient(sq, maxNorm, { skipNonFinite: skipAt > 0 });
    opt.update(lr, coef);
    const [gotCoef, gotNorm, found] = await coef.read();
    zeroGrad(m.parameters());
    sq.dispose();
    coef.dispose();
    if (skip) {
      strictEqual(found, 1, "the inf gradient is flagged");
      opt.unstep();
      continue;
    }
    const norm = Math.sqrt(grads.flatMap((g) => [...g]).reduce((s, x) => s + x * x, 0));
    const c = Math.min(1, maxNorm / (norm + 1e-6));
    assertClose([gotCoef, gotNorm, found], [c, norm, 0], { rtol: 1e-5, what: "clip" });
    for (let p = 0; p < 2; p++) {
      const wd = p === 0 ? 0.1 : 0;
      for (let i = 0; i < ref[p].length; i++) {
        const g = grads[p][i] * c;
        mo[p][i] = 0.9 * mo[p][i] + 0.1 * g;
        vo[p][i] = 0.95 * vo[p][i] + 0.05 * g * g;
        const mh = mo[p][i] / (1 - 0.9 ** step);
        const vh = vo[p][i] / (1 - 0.95 ** step);
        ref[p][i] = ref[p][i] - lr * wd * ref[p][i] - lr * mh / (Math.sqrt(vh) + eps);
      }
    }
    step++;
  }
  assertClose(await m.w.read(), ref[0], { rtol: 1e-5, atol: 1e-6, what: "w" });
  assertClose(await m.b.read(), ref[1], { rtol: 1e-5, atol: 1e-6, what: "b" });
  strictEqual(opt.step, 3);
}

Deno.test(
  "AdamW matches a hand computation, with clipping and decay exemptions",
  gpuTest,
  () => adamwAgainstHand(1e-8),
);

Deno.test(
  "AdamW's vec4 forms (stream textures on CPU adapters) match the hand computation; a flagged step changes nothing",
  gpuTest,
  async () => {
    // 4096 weights and 8 biases: one flat bucket of 1026 vec4s (past STREAM_MIN_VEC4S) by
    // default; with buckets off, the weight's own dispatch reads textures and the bias's 2 vec4s
    // their buffers.
    await adamwAgainstHand(1e-8, { wSize: 4096, bSize: 8, skipAt: 2 });
    await adamwAgainstHand(1e-8, { wSize: 4096, bSize: 8, skipAt: 2, bucketElements: 0 });
  },
);

Deno.test(
  "AdamW's eps (--adam-eps) divides as PyTorch's: a large one changes the steps as computed by hand",
  gpuTest,
  async () => {
    // The clipped gradients here are ~0.1–0.5 an element: eps 0.3 shrinks every step by about
    // half (eps 1e-8 would leave the weights ~1e-2 from this reference, far past its tolerance).
    await adamwAgainstHand(0.3);
    strictEqual(new AdamW([]).eps, 1e-8, "the default, Megatron's and PyTorch's");
  },
);

Deno.test("clipping is off for maxNorm 0 and leaves small gradients alone", gpuTest, async () => {
  const g = Tensor.fromArray(dev, [0.1, 0.2]);
  const sq = ops.sumSquares(g);
  assertClose(await clipCoefficient(sq, 0).read(), [1, Math.sqrt(0.05), 0], { rtol: 1e-6 });
  assertClose(await clipCoefficient(sq, 10).read(), [1, Math.sqrt(0.05), 0], { rtol: 1e-6 });
});

Deno.test("learning-rate schedules: warm-up, cosine, linear, constant", () => {
  // Megatron's get_lr at num_steps = iter: the first update at 0, the peak at iter = warm-up.
  const s = { lr: 1e-3, minLr: 1e-4, warmupIters: 10, decayIters: 110 };
  assertClose([learningRate(0, s)], [0]);
  assertClose([learningRate(1, s)], [1e-4]);
  assertClose([learningRate(4, s)], [4e-4]);
  assertClose([learningRate(9, s)], [9e-4]);
  assertClose([learningRate(10, s)], [1e-3]);
  assertClose([learningRate(11, s)], [1e-4 + 0.9e-3 * 0.5 * (1 + Math.cos(Math.PI / 100))]);
  assertClose([learningRate(60, s)], [1e-4 + 0.9e-3 * 0.5]);
  assertClose([learningRate(110, s)], [1e-4]);
  assertClose([learningRate(500, s)], [1e-4]);
  assertClose([learningRate(35, { ...s, style: "linear" })], [1e-4 + 0.9e-3 * 0.75]);
  assertClose([learningRate(35, { ...s, style: "constant" })], [1e-3]);
});

Deno.test("learning rate: Megatron's --lr-warmup-fraction and --lr-warmup-init, counted in samples there", () => {
  // get_optimizer_param_scheduler: decay = lr_decay_iters·G samples, warm-up = fraction × decay
  // (here 0.05 × 110 = 5.5 iterations: it ends between steps), init_lr = --lr-warmup-init.
  const G = 24, decayIters = 110, fraction = 0.05;
  for (const style of ["cosine", "linear", "constant"] as const) {
    const s = {
      lr: 1e-3,
      minLr: 1e-4,
      initLr: 2e-4,
      warmupIters: fraction * decayIters,
      decayIters,
      style,
    };
    const m = {
      maxLr: 1e-3,
      minLr: 1e-4,
      initLr: 2e-4,
      warmupSteps: fraction * decayIters * G,
      decaySteps: decayIters * G,
      style,
    };
    for (let iter = 0; iter <= 130; iter++) {
      assertClose([learningRate(iter, s)], [megatronGetLr(iter * G, m)], {
        rtol: 1e-12,
        what: `${style}, update ${iter}`,
      });
    }
  }
  // By hand: the first update at the warm-up's start, 5 and 5.5 within it, 6 decaying.
  const s = { lr: 1e-3, minLr: 1e-4, initLr: 2e-4, warmupIters: 5.5, decayIters: 110 };
  assertClose([learningRate(0, s)], [2e-4]);
  assertClose([learningRate(5, s)], [2e-4 + 8e-4 * 5 / 5.5]);
  assertClose([learningRate(6, s)], [1e-4 + 0.9e-3 * 0.5 * (1 + Math.cos(Math.PI * 0.5 / 104.5))]);
  // Without --lr-warmup-init the warm-up starts at 0, as before.
  assertClose([learningRate(0, { ...s, initLr: undefined })], [0]);
});

/**
 * `learningRate` against Megatron's `get_lr` at every update of a schedule
 * counted in samples, as the CLI builds it (`lrScheduleOf`): warm-up `W`, decay
 * `D` and WSD's annealing `A` samples at a global batch of `G`, whose
 * `num_steps` is update·G.
 */
function assertMegatronInSamples(
  G: number,
  W: number,
  D: number,
  style: MegatronLrOptions["style"],
  wsd: { A?: number; wsdStyle?: MegatronLrOptions["wsdStyle"] } = {},
): void {
  const s = {
    lr: 1e-3,
    minLr: 1e-4,
    initLr: 2e-4,
    warmupIters: W / G,
    decayIters: D / G,
    style,
    stepIters: 1 / G,
    ...(wsd.A !== undefined ? { wsdDecayIters: wsd.A / G, wsdStyle: wsd.wsdStyle } : {}),
  };
  const m = {
    maxLr: 1e-3,
    minLr: 1e-4,
    initLr: 2e-4,
    warmupSteps: W,
    decaySteps: D,
    style,
    wsdDecaySteps: wsd.A,
    wsdStyle: wsd.wsdStyle,
  };
  for (let iter = 0; iter * G <= D + 2 * G; iter++) {
    assertClose([learningRate(iter, s)], [megatronGetLr(iter * G, m)], {
      rtol: 1e-12,
      atol: 0,
      what: `G ${G}, W ${W}, D ${D}, ${style} ${wsd.wsdStyle ?? ""}, update ${iter}`,
    });
  }
}

Deno.test("learning rate: Megatron's schedule counted in samples, as W / G and D / G updates", () => {
  // --train-samples with --lr-warmup-samples W and --lr-decay-samples D at a global batch of G:
  // Megatron's num_steps is iter·G; the lengths are fractional here where G does not divide them.
  for (const G of [1, 3, 7, 8, 24]) {
    for (const W of [0, 5, 12, 16, 24]) {
      for (const D of [30, 36, 37, 100]) {
        for (const style of ["cosine", "linear", "constant"] as const) {
          assertMegatronInSamples(G, W, D, style);
        }
      }
    }
  }
});

Deno.test("learning rate: Megatron's inverse-square-root and WSD styles, in iterations and in samples", () => {
  // By hand (values from Python): inverse square root, warm-up 4: lr·2/√iter after it.
  const inv = { lr: 1e-3, minLr: 1e-4, warmupIters: 4, decayIters: 100 };
  const isr = { ...inv, style: "inverse-square-root" as const };
  assertClose([learningRate(2, isr)], [5e-4]); // warming up
  assertClose([learningRate(16, isr)], [5e-4]);
  assertClose([learningRate(25, isr)], [4e-4]);
  assertClose([learningRate(99, isr)], [2.0100756305184241e-4]);
  assertClose([learningRate(101, isr)], [1e-4]); // past the decay: min-lr
  // No warm-up: lr at iteration 0 and 1 (Megatron's max(·, 1)), never below min-lr.
  const noWarm = { lr: 1e-3, minLr: 3e-4, decayIters: 1000, style: "inverse-square-root" as const };
  assertClose([learningRate(0, noWarm), learningRate(1, noWarm)], [1e-3, 1e-3]);
  assertClose([learningRate(4, noWarm), learningRate(100, noWarm)], [5e-4, 3e-4]);
  // Megatron counts samples: at a global batch of 4 its floor is a quarter of an update.
  assertClose([learningRate(1, { ...noWarm, stepIters: 0.25 })], [5e-4]);
  // WSD: warm-up 10, stable to 80, annealing over the decay's last 20 (80..100).
  const wsd = { lr: 1e-3, minLr: 1e-4, warmupIters: 10, decayIters: 100, wsdDecayIters: 20 };
  const at = (iter: number, wsdStyle: "exponential" | "linear" | "cosine" | "minus_sqrt") =>
    learningRate(iter, { ...wsd, style: "WSD", wsdStyle });
  assertClose([at(5, "linear"), at(11, "linear"), at(80, "linear")], [5e-4, 1e-3, 1e-3]);
  assertClose([at(90, "linear")], [5.5e-4]);
  assertClose([at(85, "cosine")], [1e-4 + 9e-4 * 0.8535533905932737]);
  assertClose([at(90, "exponential")], [1e-4 + 9e-4 * 0.41421356237309515]);
  assertClose([at(95, "minus_sqrt")], [1e-4 + 9e-4 * 0.1339745962155614]);
  assertClose([at(100, "exponential"), at(100, "minus_sqrt"), at(101, "cosine")], [
    1e-4,
    1e-4,
    1e-4,
  ]);
  assertClose([learningRate(90, { ...wsd, style: "WSD" })], [at(90, "exponential")]);
  // Against Megatron's get_lr, counted in samples as its scheduler counts them.
  for (const G of [1, 3, 8]) {
    for (const W of [0, 6, 16]) {
      for (const [D, A] of [[40, 10], [37, 37], [100, 7]]) {
        const styles = [
          ["inverse-square-root", undefined],
          ...(["exponential", "linear", "cosine", "minus_sqrt"] as const).map((w) =>
            ["WSD", w] as const
          ),
        ] as const;
        for (const [style, wsdStyle] of styles) {
          assertMegatronInSamples(G, W, D, style, style === "WSD" ? { A, wsdStyle } : {});
        }
      }
    }
  }
  throws(
    () => checkLrSchedule({ lr: 1e-3, decayIters: 10, style: "WSD" }),
    /style "WSD" needs wsdDecayIters/,
  );
  throws(
    () => checkLrSchedule({ lr: 1e-3, decayIters: 10, style: "WSD", wsdDecayIters: 11 }),
    /in \(0, decayIters 10\], got 11/,
  );
  throws(
    () =>
      checkLrSchedule({
        lr: 1e-3,
        decayIters: 10,
        style: "WSD",
        wsdDecayIters: 5,
        wsdStyle: "square" as "linear",
      }),
    /wsdStyle must be one of exponential, linear, cosine, minus_sqrt/,
  );
});

Deno.test("checkLrSchedule: fractional warm-ups and decays pass; a warm-up start above lr or below 0 is refused", () => {
  checkLrSchedule({ lr: 1e-3, warmupIters: 2.4, initLr: 1e-3, decayIters: 6 });
  // Megatron's --lr-decay-samples 36 at a global batch of 8: the decay ends at update 4.5.
  checkLrSchedule({ lr: 1e-3, warmupIters: 1.5, decayIters: 4.5 });
  throws(
    () => checkLrSchedule({ lr: 1e-3, initLr: 2e-3, decayIters: 6 }),
    /initLr 0\.002 is above lr 0\.001/,
  );
  throws(() => checkLrSchedule({ lr: 1e-3, initLr: -1, decayIters: 6 }), /initLr must be/);
  throws(() => checkLrSchedule({ lr: 1e-3, warmupIters: NaN, decayIters: 6 }), /warmupIters/);
  throws(() => checkLrSchedule({ lr: 1e-3, decayIters: Infinity }), /decayIters must be a finite/);
  throws(() => checkLrSchedule({ lr: 1e-3, decayIters: -1 }), /decayIters must be a finite/);
});

class Mlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(rng: RngStream) {
    super();
    this.fc1 = this.child("fc1", new Linear(dev, 2, 32, { rng, std: 0.5 }));
    this.fc2 = this.child("fc2", new Linear(dev, 32, 2, { rng, std: 0.5 }));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(ops.gelu(this.fc1.forward(x)));
  }
}

Deno.test(
  "a two-layer MLP learns to classify points inside/outside a circle",
  gpuTest,
  async () => {
    const n = 128;
    const xs = randomArray(2 * n, 5, -1, 1);
    const ys = Int32Array.from(
      { length: n },
      (_, i) => (xs[2 * i] ** 2 + xs[2 * i + 1] ** 2 < 0.5 ? 1 : 0),
    );
    const model = new Mlp(new RngStream(1));
    const opt = new AdamW(model.namedParams().map(([, p]) => p), { weightDecay: 0 });
    const x = Tensor.fromArray(dev, xs, [n, 2]).keep();
    const y = TokenIds.fromHost(dev, ys, [n]).keep();
    let first = 0;
    let last = 0;
    for (let it = 0; it < 150; it++) {
      const loss = await tidy(dev, async () => {
        const l = ops.crossEntropy(model.forward(x), y);
        await backward(l);
        opt.update(0.03);
        zeroGrad(model.parameters());
        return it % 149 === 0 ? await l.item() : 0;
      });
      if (it === 0) first = loss;
      if (it === 149) last = loss;
    }
    const logits = await dev.noGrad(() => model.forward(x)).read();
    let correct = 0;
    for (let i = 0; i < n; i++) {
      correct += (logits[2 * i + 1] > logits[2 * i] ? 1 : 0) === ys[i] ? 1 : 0;
    }
    if (!(last < 0.25 && correct / n > 0.9)) {
      throw new Error(`MLP did not learn: loss ${first} -> ${last}, accuracy ${correct / n}`);
    }
  },
);
