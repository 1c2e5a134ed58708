/**
 * Host-side token ids are explicit: the embedding (whose backward indexes by the
 * ids' host copy) and the cross-entropy targets take `TokenIds`, made only from
 * host data. With them the embedding's forward and backward match a host
 * reference; an index tensor computed on the GPU is refused where it is passed,
 * by the type checker and, past it, with a clear error at the call (not later in
 * the backward pass).
 */

import { deepStrictEqual, equal, throws } from "node:assert/strict";
import { backward } from "../core/autograd.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Gpt } from "../models/gpt.ts";
import { assertClose, gpuTest, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();

/** Rows `[start, start + rows)` of a `vocab`-row table looked up and back-propagated on the host. */
function reference(
  w: Float32Array,
  dim: number,
  ids: Int32Array,
  r: Float32Array,
  start = 0,
): { out: Float32Array; dw: Float32Array } {
  const rows = w.length / dim;
  const out = new Float32Array(ids.length * dim);
  const dw = new Float32Array(w.length);
  ids.forEach((id, p) => {
    const row = id - start;
    if (row < 0 || row >= rows) return;
    for (let j = 0; j < dim; j++) {
      out[p * dim + j] = w[row * dim + j];
      dw[row * dim + j] += r[p * dim + j];
    }
  });
  return { out, dw };
}

Deno.test(
  "embedding forward and backward with TokenIds match the host reference",
  gpuTest,
  async () => {
    const V = 11, D = 6;
    const ids = new Int32Array([3, 0, 10, 3, 7, 3, 1, 10, 5, 0, 2, 9]);
    const wData = randomArray(V * D, 1);
    const rData = randomArray(ids.length * D, 2);
    for (const [start, rows] of [[0, V], [4, 5]]) {
      await tidy(dev, async () => {
        const part = wData.slice(start * D, (start + rows) * D);
        const w = Tensor.fromArray(dev, part, [rows, D]).requireGrad();
        const tokens = TokenIds.fromHost(dev, ids, [3, 4]);
        const out = ops.embedding(w, tokens, start, V);
        deepStrictEqual(out.shape, [3, 4, D]);
        await backward(ops.sum(ops.mul(out, Tensor.fromArray(dev, rData, out.shape))));
        const want = reference(part, D, ids, rData, start);
        assertClose(await out.read(), want.out, { atol: 0, rtol: 0, what: `forward at ${start}` });
        assertClose(await w.grad!.read(), want.dw, { atol: 1e-5, what: `backward at ${start}` });
      });
    }
  },
);

Deno.test(
  "TokenIds copy their host data, check their shape, view and survive tidy",
  gpuTest,
  async () => {
    const src = new Int32Array([1, 2, 3, 4, 5, 6]);
    const kept = tidy(dev, () => {
      const t = TokenIds.fromHost(dev, src, [2, 3]);
      src[0] = 99; // the caller's array is copied
      return t;
    });
    equal(kept.host[0], 1);
    deepStrictEqual([...await kept.tensor.readInt()], [1, 2, 3, 4, 5, 6]);
    const v = kept.view([3, 2]);
    deepStrictEqual(v.shape, [3, 2]);
    equal(v.host, kept.host);
    throws(() => TokenIds.fromHost(dev, [1, 2, 3], [2, 2]), /3 ids do not fill shape \[2, 2\]/);
    kept.dispose();
    v.dispose();
  },
);

Deno.test("an index tensor computed on the GPU is refused at the call", gpuTest, async () => {
  const w = Tensor.fromArray(dev, randomArray(8 * 4, 3), [8, 4]).requireGrad();
  // Ids computed on the GPU (here: host ids moved by a GPU op): a plain i32 Tensor.
  const onGpu = ops.clone(Tensor.fromArray(dev, new Int32Array([1, 2, 3]), [3]));
  const clear =
    /embedding: ids must be TokenIds \(made with TokenIds\.fromHost\), got a i32 Tensor \[3\].*host copy/;
  // @ts-expect-error a Tensor is not TokenIds: the type checker refuses it.
  throws(() => ops.embedding(w, onGpu), clear);
  throws(
    // @ts-expect-error likewise for cross-entropy targets.
    () => ops.crossEntropy(Tensor.fromArray(dev, new Float32Array(3 * 5), [3, 5]), onGpu),
    /crossEntropy: targets must be TokenIds/,
  );
  const gpt = Gpt.serial(dev, {
    vocabSize: 16,
    numLayers: 1,
    hiddenSize: 8,
    numHeads: 2,
    maxPositions: 4,
  }, 1);
  const ids = TokenIds.fromHost(dev, [1, 2, 3], [1, 3]);
  // @ts-expect-error the model's targets too.
  await gpt.loss(ids, onGpu.view([1, 3])).then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: Error) => equal(/GPT: targets must be TokenIds/.test(e.message), true, e.message),
  );
  // With host ids it works, backward included.
  const loss = await gpt.loss(ids, TokenIds.fromHost(dev, [2, 3, 4], [1, 3]));
  await backward(loss);
  equal(Number.isFinite(await loss.item()), true);
  gpt.dispose();
});
