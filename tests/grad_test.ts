/**
 * Every differentiable op's gradient against central finite differences.
 * Loss = Σ out·R for a fixed random R; the numeric side evaluates the forward at
 * x ± h (h = 1e-2) on the GPU and combines in float64 on the host.
 * Tolerance: |analytic − numeric| ≤ 2e-3 + 2e-2·|numeric| (float32 forward).
 */

import { backward } from "../core/autograd.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { gpuTest, prng, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();

interface Input {
  data: Float32Array | Int32Array;
  shape: number[];
  grad?: boolean;
}

async function gradCheck(
  name: string,
  inputs: Input[],
  f: (ts: Tensor[]) => Tensor,
  opts: { h?: number; samples?: number } = {},
): Promise<void> {
  const h = opts.h ?? 1e-2;
  const samples = opts.samples ?? 6;
  await tidy(dev, async () => {
    const make = (datas: (Float32Array | Int32Array)[], grad: boolean) =>
      inputs.map((inp, i) => {
        const t = Tensor.fromArray(dev, datas[i], inp.shape);
        if (grad && inp.grad !== false && t.dtype === "f32") t.requireGrad();
        return t;
      });
    const ts = make(inputs.map((i) => i.data), true);
    const out = f(ts);
    const R = randomArray(out.size, 99);
    const loss = ops.sum(ops.mul(out, Tensor.fromArray(dev, R, out.shape)));
    await backward(loss);
    const rnd = prng(7);
    const checks: { input: number; index: number; analytic: number }[] = [];
    const outs: Tensor[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const inp = inputs[i];
      if (inp.grad === false || inp.data instanceof Int32Array) continue;
      const g = await ts[i].grad!.read();
      const n = inp.data.length;
      const picks = new Set<number>();
      while (picks.size < Math.min(samples, n)) picks.add(Math.floor(rnd() * n));
      for (const index of picks) {
        checks.push({ input: i, index, analytic: g[index] });
        for (const sgn of [1, -1]) {
          const datas = inputs.map((x) => x.data.slice());
          (datas[i] as Float32Array)[index] += sgn * h;
          outs.push(dev.noGrad(() => f(make(datas, false))));
        }
      }
    }
    const vals = await dev.readMany(outs.map((o) => o.binding));
    checks.forEach((c, k) => {
      const dot = (buf: ArrayBuffer) => {
        const a = new Float32Array(buf);
        let s = 0;
        for (let j = 0; j < a.length; j++) s += a[j] * R[j];
        return s;
      };
      const numeric = (dot(vals[2 * k]) - dot(vals[2 * k + 1])) / (2 * h);
      const err = Math.abs(c.analytic - numeric);
      if (!(err <= 2e-3 + 2e-2 * Math.abs(numeric))) {
        throw new Error(
          `${name}: d/d input${c.input}[${c.index}] analytic ${c.analytic} vs numeric ${numeric}`,
        );
      }
    });
  });
}

const rnd = (n: number, seed: number, lo = -1, hi = 1) => randomArray(n, seed, lo, hi);

Deno.test("grad: add, sub, mul (with broadcast), scale", gpuTest, async () => {
  const a = { data: rnd(21, 1), shape: [3, 7] };
  const b = { data: rnd(7, 2), shape: [7] };
  const c = { data: rnd(21, 3), shape: [3, 7] };
  await gradCheck("add", [a, b], ([x, y]) => ops.add(x, y));
  await gradCheck("sub", [a, b], ([x, y]) => ops.sub(x, y));
  await gradCheck("mul broadcast", [a, b], ([x, y]) => ops.mul(x, y));
  await gradCheck("mul", [a, c], ([x, y]) => ops.mul(x, y));
  await gradCheck("scale", [a], ([x]) => ops.scale(x, -1.7, 0.3));
});

Deno.test("grad: gelu tanh and erf", gpuTest, async () => {
  const a = { data: rnd(33, 4, -3, 3), shape: [33] };
  await gradCheck("gelu tanh", [a], ([x]) => ops.gelu(x, "tanh"), { samples: 10 });
  await gradCheck("gelu erf", [a], ([x]) => ops.gelu(x, "erf"), { samples: 10 });
});

Deno.test(
  "grad: matmul (all transposes, batched, broadcast, bias, alpha) and linear",
  gpuTest,
  async () => {
    const M = 5, N = 3, K = 7, B = 2;
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = { data: rnd(B * M * K, 5), shape: transA ? [B, K, M] : [B, M, K] };
        const b = { data: rnd(B * K * N, 6), shape: transB ? [B, N, K] : [B, K, N] };
        await gradCheck(
          `matmul batched ${transA} ${transB}`,
          [a, b],
          ([x, y]) => ops.matmul(x, y, { transA, transB, alpha: 0.7 }),
        );
        const w = { data: rnd(K * N, 7), shape: transB ? [N, K] : [K, N] };
        await gradCheck(
          `matmul broadcast B ${transA} ${transB}`,
          [a, w],
          ([x, y]) => ops.matmul(x, y, { transA, transB }),
        );
      }
    }
    const x = { data: rnd(2 * 3 * 7, 8), shape: [2, 3, 7] };
    const w = { data: rnd(5 * 7, 9), shape: [5, 7] };
    const bias = { data: rnd(5, 10), shape: [5] };
    await gradCheck("linear", [x, w, bias], ([p, q, r]) => ops.linear(p, q, r));
  },
);

Deno.test("grad: layer norm", gpuTest, async () => {
  const x = { data: rnd(5 * 13, 11, -2, 2), shape: [5, 13] };
  const g = { data: rnd(13, 12, 0.5, 1.5), shape: [13] };
  const b = { data: rnd(13, 13), shape: [13] };
  await gradCheck("layernorm", [x, g, b], ([p, q, r]) => ops.layerNorm(p, q, r), { samples: 10 });
  // Rows of whole vec4s: on a CPU adapter the texture kernels (kernels/layernorm.ts) run.
  const x4 = { data: rnd(6 * 16, 14, -2, 2), shape: [6, 16] };
  const g4 = { data: rnd(16, 15, 0.5, 1.5), shape: [16] };
  const b4 = { data: rnd(16, 16), shape: [16] };
  await gradCheck("layernorm vec4 rows", [x4, g4, b4], ([p, q, r]) => ops.layerNorm(p, q, r), {
    samples: 10,
  });
});

Deno.test("grad: softmax plain, causal, padding", gpuTest, async () => {
  const x = { data: rnd(2 * 2 * 5 * 5, 14, -2, 2), shape: [2, 2, 5, 5] };
  await gradCheck("softmax", [x], ([p]) => ops.softmax(p, { scale: 0.8 }), { samples: 10 });
  await gradCheck("softmax causal", [x], ([p]) => ops.softmax(p, { mask: "causal" }), {
    samples: 10,
  });
  const keep = Tensor.fromArray(dev, new Float32Array([1, 1, 0, 1, 0, 1, 1, 1, 1, 0]), [2, 5])
    .keep();
  await gradCheck("softmax padding", [x], ([p]) => ops.softmax(p, { mask: "padding", keep }), {
    samples: 10,
  });
  keep.dispose();
});

Deno.test("grad: dropout, embedding, cross-entropy", gpuTest, async () => {
  const x = { data: rnd(40, 15), shape: [40] };
  await gradCheck("dropout", [x], ([p]) => ops.dropout(p, 0.25, { seed: 3, offset: 1 }), {
    samples: 10,
  });
  const w = { data: rnd(9 * 4, 16), shape: [9, 4] };
  const ids = TokenIds.fromHost(dev, [1, 5, 1, 8, 0]);
  await gradCheck("embedding", [w], ([p]) => ops.embedding(p, ids), { samples: 12 });
  await gradCheck(
    "embedding shard",
    [{ data: rnd(4 * 4, 17), shape: [4, 4] }],
    ([p]) => ops.embedding(p, ids, 4, 9),
    { samples: 12 },
  );
  const logits = { data: rnd(6 * 11, 18, -3, 3), shape: [6, 11] };
  const targets = TokenIds.fromHost(dev, [3, -1, 0, 9, 9, 2]);
  await gradCheck("cross-entropy", [logits], ([p]) => ops.crossEntropy(p, targets, 10), {
    samples: 12,
  });
});

Deno.test(
  "grad: sum, mean, reshape, permute, transpose, slice, concat, split",
  gpuTest,
  async () => {
    const x = { data: rnd(2 * 3 * 4, 19), shape: [2, 3, 4] };
    const y = { data: rnd(2 * 5 * 4, 20), shape: [2, 5, 4] };
    await gradCheck("sum", [x], ([p]) => ops.sum(p));
    await gradCheck("mean", [x], ([p]) => ops.mean(p));
    await gradCheck("reshape", [x], ([p]) => ops.reshape(p, [6, -1]));
    await gradCheck("permute", [x], ([p]) => ops.permute(p, [2, 0, 1]));
    await gradCheck("transpose", [x], ([p]) => ops.transpose(p, 0, 1));
    await gradCheck("slice", [x], ([p]) => ops.slice(p, 1, 1, 3));
    await gradCheck("concat", [x, y], ([p, q]) => ops.concat([p, q], 1));
    await gradCheck("split", [y], ([p]) => {
      const [s0, s1] = ops.split(p, [2, 3], 1);
      return ops.concat([ops.scale(s1, 2), s0], 1);
    });
  },
);
