/**
 * Every non-matmul kernel against the plain TypeScript references, on random
 * inputs with odd shapes (1, primes, and sizes past one workgroup).
 * Tolerances: float32 kernels vs float64 references, rtol 1e-5 / atol 1e-6 for
 * pointwise maps, 1e-4 for reductions over rows.
 */

import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import * as ops from "../core/ops/mod.ts";
import { columnSum } from "../core/ops/raw.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { assertClose, gpuTest, randomArray, testDevice } from "./helpers.ts";
import {
  crossEntropyRef,
  geluErf,
  geluTanh,
  layerNormRef,
  philox,
  softmaxRef,
  u01,
} from "./reference.ts";

const dev = await testDevice();
const T = (data: Float32Array, shape: number[]) => Tensor.fromArray(dev, data, shape);

Deno.test("add/sub/mul with broadcast, scale", gpuTest, async () => {
  for (const [rows, cols] of [[1, 1], [3, 7], [37, 129], [5, 1000]]) {
    const a = randomArray(rows * cols, 1);
    const b = randomArray(cols, 2);
    const c = randomArray(rows * cols, 3);
    const ta = T(a, [rows, cols]);
    const tb = T(b, [cols]);
    const tc = T(c, [rows, cols]);
    const [add, sub, mul, mulFull, sc] = await dev.readMany(
      [ops.add(ta, tb), ops.sub(ta, tb), ops.mul(ta, tb), ops.mul(ta, tc), ops.scale(ta, 2.5, -1)]
        .map((t) => t.binding),
    );
    const ref = (f: (i: number) => number) => Array.from({ length: rows * cols }, (_, i) => f(i));
    assertClose(new Float32Array(add), ref((i) => a[i] + b[i % cols]), { what: "add" });
    assertClose(new Float32Array(sub), ref((i) => a[i] - b[i % cols]), { what: "sub" });
    assertClose(new Float32Array(mul), ref((i) => a[i] * b[i % cols]), { what: "mul" });
    assertClose(new Float32Array(mulFull), ref((i) => a[i] * c[i]), { what: "mul full" });
    assertClose(new Float32Array(sc), ref((i) => 2.5 * a[i] - 1), { what: "scale" });
  }
});

Deno.test("gelu tanh and erf", gpuTest, async () => {
  const n = 1031;
  const x = randomArray(n, 4, -6, 6);
  const t = T(x, [n]);
  assertClose(await ops.gelu(t, "tanh").read(), Array.from(x, geluTanh), {
    rtol: 1e-5,
    atol: 2e-6,
    what: "gelu tanh",
  });
  assertClose(await ops.gelu(t, "erf").read(), Array.from(x, geluErf), {
    rtol: 1e-5,
    atol: 2e-6,
    what: "gelu erf",
  });
});

Deno.test("layer norm", gpuTest, async () => {
  for (const [rows, cols] of [[1, 1], [1, 3], [7, 13], [3, 257], [65, 100]]) {
    const x = randomArray(rows * cols, 5, -3, 3);
    const g = randomArray(cols, 6);
    const b = randomArray(cols, 7);
    const y = ops.layerNorm(T(x, [rows, cols]), T(g, [cols]), T(b, [cols]), 1e-5);
    assertClose(await y.read(), layerNormRef(x, g, b, cols, 1e-5), {
      rtol: 1e-4,
      atol: 1e-4,
      what: `layernorm ${rows}x${cols}`,
    });
  }
});

Deno.test("softmax: plain, causal, padding, scale", gpuTest, async () => {
  const B = 2, H = 3, Tq = 5, Tk = 5;
  const x = randomArray(B * H * Tq * Tk, 8, -4, 4);
  const tx = T(x, [B, H, Tq, Tk]);
  const plain = await ops.softmax(tx, { scale: 0.5 }).read();
  assertClose(plain, softmaxRef(x, Tk, 0.5, () => false), {
    rtol: 1e-5,
    atol: 1e-6,
    what: "plain",
  });
  const causal = await ops.softmax(tx, { scale: 0.5, mask: "causal" }).read();
  assertClose(causal, softmaxRef(x, Tk, 0.5, (r, c) => c > r % Tq), { what: "causal" });
  const keep = new Float32Array([1, 1, 1, 0, 0, 1, 0, 1, 1, 1]);
  const pad = await ops.softmax(tx, { mask: "padding", keep: T(keep, [B, Tk]) }).read();
  assertClose(
    pad,
    softmaxRef(x, Tk, 1, (r, c) => keep[Math.floor(r / (H * Tq)) * Tk + c] === 0),
    { what: "padding" },
  );
  // long rows past one workgroup, and a fully masked row gives zeros
  const n = 1000;
  const xl = randomArray(3 * n, 9, -10, 10);
  assertClose(await ops.softmax(T(xl, [3, n])).read(), softmaxRef(xl, n, 1, () => false), {
    rtol: 1e-4,
    atol: 1e-7,
    what: "long rows",
  });
  const none = await ops.softmax(T(x.slice(0, 4), [1, 4]), {
    mask: "padding",
    keep: T(new Float32Array(4), [1, 4]),
  }).read();
  assertEquals([...none], [0, 0, 0, 0]);
});

Deno.test(
  "dropout mask is Philox(seed, offset, index) and scales by 1/(1-p)",
  gpuTest,
  async () => {
    // 776 = 4·194: on CPU adapters the vec4 stream-texture form; 777 the scalar one.
    for (const n of [777, 776]) await dropoutAgainstPhilox(n);
  },
);

async function dropoutAgainstPhilox(n: number) {
  {
    const x = randomArray(n, 10);
    const draw = { seed: 1234567890123, offset: 42 };
    const p = 0.3;
    const y = await ops.dropout(T(x, [n]), p, draw).read();
    const seedLo = draw.seed >>> 0;
    const seedHi = Math.floor(draw.seed / 2 ** 32);
    const ref = Array.from(x, (v, i) => {
      const r = philox([i, draw.offset, 0, 0], [seedLo, seedHi]);
      return u01(r[0]) >= p ? v / (1 - p) : 0;
    });
    assertClose(y, ref, { rtol: 1e-6, what: "dropout" });
    const kept = y.filter((v) => v !== 0).length / n;
    if (Math.abs(kept - 0.7) > 0.06) throw new Error(`kept fraction ${kept}`);
    const again = await ops.dropout(T(x, [n]), p, draw).read();
    assertEquals([...again], [...y]);
    const other = await ops.dropout(T(x, [n]), p, { ...draw, offset: 43 }).read();
    if (other.every((v, i) => v === y[i])) throw new Error("different offsets gave the same mask");
  }
}

Deno.test("random normal/uniform: reproducible, sharded draws equal slices", gpuTest, async () => {
  const draw = { seed: 7, offset: 3 };
  const full = await ops.randn(dev, [64, 33], draw, 0.02).read();
  const again = await ops.randn(dev, [64, 33], draw, 0.02).read();
  assertEquals([...again], [...full]);
  const shard = await ops.randn(dev, [16, 33], draw, 0.02, 0, 32 * 33).read();
  assertEquals([...shard], [...full.slice(32 * 33, 48 * 33)]);
  const big = await ops.randn(dev, [100000], { seed: 1, offset: 0 }).read();
  const mean = big.reduce((a, b) => a + b, 0) / big.length;
  const std = Math.sqrt(big.reduce((a, b) => a + (b - mean) ** 2, 0) / big.length);
  if (Math.abs(mean) > 0.02 || Math.abs(std - 1) > 0.02) throw new Error(`normal ${mean} ${std}`);
  const uni = await ops.rand(dev, [100000], { seed: 2, offset: 0 }, -2, 2).read();
  if (uni.some((v) => v < -2 || v >= 2)) throw new Error("uniform out of range");
  const um = uni.reduce((a, b) => a + b, 0) / uni.length;
  if (Math.abs(um) > 0.03) throw new Error(`uniform mean ${um}`);
});

Deno.test("embedding lookup, vocab-parallel range", gpuTest, async () => {
  const V = 11, D = 5;
  const w = randomArray(V * D, 11);
  const ids = new Int32Array([0, 3, 10, 3, 7, 1, 2]);
  const tw = T(w, [V, D]);
  const out = await ops.embedding(tw, TokenIds.fromHost(dev, ids, [7])).read();
  assertClose(out, Array.from(ids).flatMap((id) => Array.from(w.slice(id * D, id * D + D))));
  // a shard holding global rows [4, 8): others give zeros
  const shard = T(w.slice(4 * D, 8 * D), [4, D]);
  const part = await ops.embedding(shard, TokenIds.fromHost(dev, ids, [7]), 4, V).read();
  assertClose(
    part,
    Array.from(ids).flatMap((id) =>
      id >= 4 && id < 8 ? Array.from(w.slice(id * D, id * D + D)) : [0, 0, 0, 0, 0]
    ),
  );
});

Deno.test("cross-entropy with padding columns and ignored rows", gpuTest, async () => {
  for (const [rows, cols, valid] of [[1, 1, 1], [7, 13, 11], [33, 1000, 999]]) {
    const x = randomArray(rows * cols, 12, -5, 5);
    const t = Int32Array.from({ length: rows }, (_, i) => (i % 5 === 4 ? -1 : (i * 7) % valid));
    const loss = await ops.crossEntropy(T(x, [rows, cols]), TokenIds.fromHost(dev, t), valid)
      .item();
    assertClose([loss], [crossEntropyRef(x, t, cols, valid)], { rtol: 1e-5, what: "xent" });
  }
});

Deno.test("reductions: sum, mean, sum of squares, max", gpuTest, async () => {
  // Multiples of 4 take the stream-texture first pass on CPU adapters: one
  // partial row, whole rows only, whole rows and a partial one.
  for (const n of [1, 3, 4, 255, 4097, 8192, 300001, 300004]) {
    const x = randomArray(n, 13);
    const t = T(x, [n]);
    const s = x.reduce((a, b) => a + b, 0);
    const sq = x.reduce((a, b) => a + b * b, 0);
    assertClose([await ops.sum(t).item()], [s], { rtol: 1e-4, atol: 1e-4, what: `sum ${n}` });
    assertClose([await ops.mean(t).item()], [s / n], { rtol: 1e-4, atol: 1e-6, what: "mean" });
    assertClose([await ops.sumSquares(t).item()], [sq], { rtol: 1e-4, what: "sumsq" });
    assertEquals(await ops.max(t).item(), x.reduce((a, b) => Math.max(a, b), -Infinity));
  }
});

Deno.test(
  "max is the largest element at the float range's ends, and carries a NaN",
  gpuTest,
  async () => {
    // It began at −3e38: all −∞, or all below −3e38, gave −3e38; and WGSL's max dropped a NaN.
    const max = (v: number[]) => ops.max(T(Float32Array.from(v), [v.length])).item();
    for (const n of [2, 4, 4097]) {
      assertEquals(await max(Array(n).fill(-Infinity)), -Infinity, `${n} × −∞`);
      const low = Array.from({ length: n }, (_, i) => -3.4e38 + i * 1e30);
      assertEquals(await max(low), Math.fround(low[n - 1]), `${n} below −3e38`);
      const nan = Array.from({ length: n }, (_, i) => i);
      nan[n >> 1] = NaN;
      assertEquals(await max(nan), NaN, `${n} with a NaN`);
    }
    assertEquals(await max([-Infinity, -1, Infinity]), Infinity);
  },
);

Deno.test("permute, transpose, slice, concat, split", gpuTest, async () => {
  const shape = [2, 3, 5, 7];
  const n = 2 * 3 * 5 * 7;
  const x = randomArray(n, 14);
  const t = T(x, shape);
  const idx = (a: number, b: number, c: number, d: number) => ((a * 3 + b) * 5 + c) * 7 + d;
  const p = await ops.permute(t, [0, 2, 1, 3]).read();
  const pref: number[] = [];
  for (let a = 0; a < 2; a++) {
    for (let c = 0; c < 5; c++) {
      for (let b = 0; b < 3; b++) for (let d = 0; d < 7; d++) pref.push(x[idx(a, b, c, d)]);
    }
  }
  assertClose(p, pref, { rtol: 0, atol: 0 });
  const tr = await ops.transpose(ops.reshape(t, [30, 7])).read();
  assertClose(tr, Array.from({ length: n }, (_, i) => x[(i % 30) * 7 + Math.floor(i / 30)]), {
    rtol: 0,
    atol: 0,
  });
  const sl = await ops.slice(t, 2, 1, 4).read();
  const slref: number[] = [];
  for (let a = 0; a < 2; a++) {
    for (let b = 0; b < 3; b++) {
      for (let c = 1; c < 4; c++) for (let d = 0; d < 7; d++) slref.push(x[idx(a, b, c, d)]);
    }
  }
  assertClose(sl, slref, { rtol: 0, atol: 0 });
  const parts = ops.split(t, [2, 1, 4], 3);
  assertEquals(parts.map((q) => q.shape[3]), [2, 1, 4]);
  const back = await ops.concat(parts, 3).read();
  assertClose(back, x, { rtol: 0, atol: 0 });
  assertThrows(() => ops.split(t, 2, 3), /does not divide into 2 parts/);
});

Deno.test("column sums (bias gradients), vec4 rows and odd rows", gpuTest, async () => {
  // cols a multiple of 4: on a CPU adapter the texture kernel (kernels/reduce.ts)
  for (const [rows, cols] of [[37, 24], [512, 128], [5, 7], [1000, 40], [300, 384], [70, 256]]) {
    const x = randomArray(rows * cols, 40 + cols, -1, 1);
    const got = await columnSum(T(x, [rows, cols]), rows, cols, [cols]).read();
    const want = new Float64Array(cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) want[c] += x[r * cols + c];
    assertClose(got, Array.from(want), {
      rtol: 1e-5,
      atol: rows * 2 ** -22,
      what: `${rows}x${cols}`,
    });
  }
});
