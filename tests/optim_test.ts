/**
 * AdamW, gradient clipping and learning-rate schedules against hand-computed
 * values, and a two-layer MLP that learns a small task.
 */

import { strictEqual } from "node:assert/strict";
import { backward, zeroGrad } from "../core/autograd.ts";
import { Linear, Module } from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import { AdamW, clipCoefficient, gradSumSquares, learningRate } from "../core/optim.ts";
import { RngStream } from "../core/rng.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { assertClose, gpuTest, randomArray, testDevice } from "./helpers.ts";

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

Deno.test(
  "AdamW matches a hand computation, with clipping and decay exemptions",
  gpuTest,
  async () => {
    const w0 = randomArray(5, 1);
    const b0 = randomArray(3, 2);
    const m = new Two(w0, b0);
    const opt = new AdamW(m.namedParams().map(([, p]) => p), {
      beta1: 0.9,
      beta2: 0.95,
      eps: 1e-8,
      weightDecay: 0.1,
    });
    const grads = [randomArray(5, 3, -2, 2), randomArray(3, 4, -2, 2)];
    const ref = [Float64Array.from(w0), Float64Array.from(b0)];
    const mo = [new Float64Array(5), new Float64Array(3)];
    const vo = [new Float64Array(5), new Float64Array(3)];
    const maxNorm = 1.0;
    for (let step = 1; step <= 3; step++) {
      const lr = 0.01 * step;
      m.w.grad = Tensor.fromArray(dev, grads[0]).keep();
      m.b.grad = Tensor.fromArray(dev, grads[1]).keep();
      const sq = gradSumSquares(dev, m.parameters());
      const coef = clipCoefficient(sq, maxNorm);
      opt.update(lr, coef);
      const norm = Math.sqrt(grads.flatMap((g) => [...g]).reduce((s, x) => s + x * x, 0));
      const c = Math.min(1, maxNorm / (norm + 1e-6));
      const [gotCoef, gotNorm] = await coef.read();
      assertClose([gotCoef, gotNorm], [c, norm], { rtol: 1e-5, what: "clip" });
      for (let p = 0; p < 2; p++) {
        const wd = p === 0 ? 0.1 : 0;
        for (let i = 0; i < ref[p].length; i++) {
          const g = grads[p][i] * c;
          mo[p][i] = 0.9 * mo[p][i] + 0.1 * g;
          vo[p][i] = 0.95 * vo[p][i] + 0.05 * g * g;
          const mh = mo[p][i] / (1 - 0.9 ** step);
          const vh = vo[p][i] / (1 - 0.95 ** step);
          ref[p][i] = ref[p][i] - lr * wd * ref[p][i] - lr * mh / (Math.sqrt(vh) + 1e-8);
        }
      }
      zeroGrad(m.parameters());
      sq.dispose();
      coef.dispose();
    }
    assertClose(await m.w.read(), ref[0], { rtol: 1e-5, atol: 1e-6, what: "w" });
    assertClose(await m.b.read(), ref[1], { rtol: 1e-5, atol: 1e-6, what: "b" });
    strictEqual(opt.step, 3);
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
