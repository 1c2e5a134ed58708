/**
 * The fused residual ops (`residualLayerNorm`, `residualDropout`,
 * `embedPositions`) against the unfused composition of `add`, `dropout`,
 * `layerNorm` and `embedding`: forward outputs and every input gradient, with
 * dropout on and off, rows that are not a multiple of the 64-thread row
 * workgroup, and both the one-invocation-per-row and the workgroup-per-row
 * forms (rows of 16,500 columns take the workgroup form on software adapters).
 * Loss = Σ_k Σ out_k·R_k for fixed random R_k.
 * Tolerances: forward |Δ| ≤ 1e-6 + 1e-5·|ref| (the same float operations: in
 * practice equal), gradients |Δ| ≤ 1e-5 + 1e-4·|ref| (sums in another order).
 * Dropped elements must coincide exactly (the same mask).
 */

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { backward } from "../core/autograd.ts";
import { Dropout } from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import { RngStream } from "../core/rng.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { assertClose, gpuTest, prng, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();

const FWD = { rtol: 1e-5, atol: 1e-6 };
const GRAD = { rtol: 1e-4, atol: 1e-5 };

/** Runs `f` on fresh leaves of `inputs`, back-propagates Σ out·R, returns outputs and grads. */
async function run(
  inputs: { data: Float32Array; shape: number[] }[],
  f: (ts: Tensor[]) => Tensor[],
): Promise<{ outs: Float32Array[]; grads: (Float32Array | null)[] }> {
  return await tidy(dev, async () => {
    const ts = inputs.map((i) => Tensor.fromArray(dev, i.data, i.shape).requireGrad());
    const outs = f(ts);
    let loss: Tensor | null = null;
    outs.forEach((o, k) => {
      const R = Tensor.fromArray(dev, randomArray(o.size, 50 + k), o.shape);
      const term = ops.sum(ops.mul(o, R));
      loss = loss ? ops.add(loss, term) : term;
    });
    await backward(loss!);
    return {
      outs: await Promise.all(outs.map((o) => o.read())),
      grads: await Promise.all(ts.map((t) => t.grad ? t.grad.read() : null)),
    };
  });
}

async function compare(
  name: string,
  inputs: { data: Float32Array; shape: number[] }[],
  fused: (ts: Tensor[]) => Tensor[],
  unfused: (ts: Tensor[]) => Tensor[],
): Promise<void> {
  const a = await run(inputs, fused);
  const b = await run(inputs, unfused);
  a.outs.forEach((o, k) => {
    assertClose(o, b.outs[k], { ...FWD, what: `${name}: output ${k}` });
    const zerosA = Array.from(o, (v) => v === 0);
    const zerosB = Array.from(b.outs[k], (v) => v === 0);
    assertEquals(zerosA, zerosB, `${name}: output ${k} zero pattern`);
  });
  a.grads.forEach((g, i) => {
    const ref = b.grads[i];
    assertEquals(g === null, ref === null, `${name}: grad ${i} presence`);
    if (g && ref) assertClose(g, ref, { ...GRAD, what: `${name}: grad of input ${i}` });
  });
}

function lnInputs(shape: number[], seed: number) {
  const cols = shape[shape.length - 1];
  const n = shape.reduce((x, y) => x * y, 1);
  const r = prng(seed);
  return [
    { data: randomArray(n, seed), shape },
    { data: randomArray(n, seed + 1, -2, 2), shape },
    { data: Float32Array.from({ length: cols }, () => 0.5 + r()), shape: [cols] },
    { data: randomArray(cols, seed + 2, -0.5, 0.5), shape: [cols] },
  ];
}

const draw = { seed: 0x12345678 + 2 ** 33, offset: 5 };

// [3, 16500]: rows longer than the one-invocation-per-row form walks on a
// software adapter, so the workgroup-per-row form (the GPU form) runs there too.
// [2, 16000]: the longest rows that form walks, with a Philox draw per element:
// Mesa's loop cap would cut it short if the draws' 10-round loops counted.
for (const shape of [[37, 48], [2, 35, 130], [3, 16500], [2, 16000]]) {
  for (const p of [0, 0.3]) {
    const spec = p ? { p, draw } : null;
    const unfusedSum = (x: Tensor, a: Tensor) => ops.add(x, p ? ops.dropout(a, p, draw) : a);
    const tag = `[${shape}] p=${p}`;
    Deno.test(`residualLayerNorm ${tag}: both outputs`, gpuTest, async () => {
      await compare(tag, lnInputs(shape, 1), ([x, a, g, b]) => {
        const r = ops.residualLayerNorm(x, a, spec, g, b, 1e-5);
        return [r.sum, r.normed];
      }, ([x, a, g, b]) => {
        const s = unfusedSum(x, a);
        return [s, ops.layerNorm(s, g, b, 1e-5)];
      });
    });
    Deno.test(`residualLayerNorm ${tag}: normed only (post-LN)`, gpuTest, async () => {
      await compare(
        tag,
        lnInputs(shape, 2),
        ([x, a, g, b]) => [ops.residualLayerNorm(x, a, spec, g, b, 1e-12).normed],
        ([x, a, g, b]) => [ops.layerNorm(unfusedSum(x, a), g, b, 1e-12)],
      );
    });
    Deno.test(`residualLayerNorm ${tag}: sum only`, gpuTest, async () => {
      await compare(
        tag,
        lnInputs(shape, 3),
        ([x, a, g, b]) => [ops.residualLayerNorm(x, a, spec, g, b).sum],
        ([x, a]) => [unfusedSum(x, a)],
      );
    });
    Deno.test(`residualLayerNorm + residualDropout ${tag}: a pre-LN layer`, gpuTest, async () => {
      const draw2 = { seed: 99, offset: 6 };
      await compare(tag, lnInputs(shape, 4), ([x, a, g, b]) => {
        const r = ops.residualLayerNorm(x, a, spec, g, b);
        return [ops.residualDropout(r.sum, ops.tanh(r.normed), p ? { p, draw: draw2 } : null)];
      }, ([x, a, g, b]) => {
        const h = unfusedSum(x, a);
        const m = ops.tanh(ops.layerNorm(h, g, b));
        return [ops.add(h, p ? ops.dropout(m, p, draw2) : m)];
      });
    });
  }
}

for (const p of [0, 0.25]) {
  const spec = p ? { p, draw } : null;
  const drop = (t: Tensor) => p ? ops.dropout(t, p, draw) : t;
  const [B, T, h, P, V] = [3, 5, 24, 7, 11];
  const posIds = (start: number) =>
    TokenIds.fromHost(dev, Int32Array.from({ length: B * T }, (_, i) => start + (i % T)), [B, T]);
  const ids = () =>
    TokenIds.fromHost(dev, Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % V), [B, T]);
  for (const start of [0, 2]) {
    Deno.test(`embedPositions p=${p} start=${start}: looked-up tokens`, gpuTest, async () => {
      await compare(
        `embedPositions tokens p=${p} start=${start}`,
        [{ data: randomArray(B * T * h, 5), shape: [B, T, h] }, {
          data: randomArray(P * h, 6),
          shape: [P, h],
        }],
        ([tok, pos]) => [ops.embedPositions(tok, pos, spec, start)],
        ([tok, pos]) => [drop(ops.add(tok, ops.embedding(pos, posIds(start))))],
      );
    });
  }
  Deno.test(`embedPositions p=${p}: fused lookup`, gpuTest, async () => {
    await compare(
      `embedPositions lookup p=${p}`,
      [{ data: randomArray(V * h, 7), shape: [V, h] }, {
        data: randomArray(T * h, 8),
        shape: [T, h],
      }],
      ([table, pos]) => [ops.embedPositions({ table, ids: ids() }, pos, spec)],
      ([table, pos]) => [drop(ops.add(ops.embedding(table, ids()), ops.embedding(pos, posIds(0))))],
    );
  });
}

Deno.test("Dropout.spec draws from the stream as forward does", gpuTest, () => {
  const a = new RngStream(7);
  const b = new RngStream(7);
  const d1 = new Dropout(0.1, a);
  const d2 = new Dropout(0.1, b);
  dev.noGrad(() => d1.forward(ops.zeros(dev, [4])).dispose());
  const s = d2.spec();
  assertEquals(s?.draw, { seed: 7, offset: 0 });
  assertEquals(a.offset, b.offset);
  d2.training = false;
  assertEquals(d2.spec(), null);
  assertEquals(b.offset, a.offset);
});
