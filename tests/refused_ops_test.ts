/**
 * An op that refuses its operands after making its output (a tensor past one
 * storage binding, refused at dispatch; a bad random draw) must free what it
 * made before it throws, inside a `tidy`
 * scope or outside one: a caller that catches the error and goes on loses no
 * device memory. A device capped at 64 KiB per binding puts a 128 KiB tensor
 * past "one binding"; the pool's live bytes must be the same before and after
 * each refused call (exactly: nothing of the op's is left).
 */

import { strictEqual, throws } from "node:assert/strict";
import { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { gpuTest, testBackend } from "./helpers.ts";

const CAP = 64 * 1024;
const dev = await Device.create({ backend: testBackend(), maxBindingBytes: CAP });
Deno.test.afterAll(() => dev.close());

const DRAW = { seed: 1, offset: 0 };
/** [64, 512] f32: 128 KiB, past the 64 KiB cap; most ops refuse it whole. */
const big = ops.zeros(dev, [64, 512]).keep();
const gamma = ops.ones(dev, [512]).keep();
const beta = ops.zeros(dev, [512]).keep();
const small = ops.zeros(dev, [64]).keep();

/** Each op called so that it is refused, with the error it must name. */
const refusals: [string, () => unknown, RegExp][] = [
  ["softmax", () => ops.softmax(big), /binding cap/],
  ["layerNorm", () => ops.layerNorm(big, gamma, beta), /binding cap/],
  ["dropout", () => ops.dropout(big, 0.1, DRAW), /binding cap/],
  ["transpose", () => ops.transpose(big), /binding cap/],
  ["permute", () => ops.permute(big, [1, 0]), /binding cap/],
  ["slice", () => ops.slice(big, 1, 0, 256), /binding cap/],
  ["split", () => ops.split(big, 2, 1), /binding cap/],
  ["concat", () => ops.concat([big, big], 0), /binding cap/],
  [
    "residualLayerNorm",
    () => ops.residualLayerNorm(big, big, { p: 0.1, draw: DRAW }, gamma, beta),
    /binding cap/,
  ],
  ["residualDropout", () => ops.residualDropout(big, big, { p: 0.1, draw: DRAW }), /binding cap/],
  [
    "embedPositions",
    () => ops.embedPositions(big.view([1, 64, 512]), big, { p: 0.1, draw: DRAW }),
    /binding cap/,
  ],
  ["rand, a bad seed", () => ops.rand(dev, [4096], { seed: -1, offset: 0 }), /seed/],
  [
    "dropout, an offset past 2^32",
    () => ops.dropout(small, 0.1, { seed: 1, offset: 2 ** 32 }),
    /offset must be an integer in \[0, 2\^32\)/,
  ],
];

for (const [name, call, message] of refusals) {
  Deno.test(`${name}: refused, and frees what it made`, gpuTest, async () => {
    for (const scoped of [false, true]) {
      await dev.sync();
      const before = dev.pool.liveBytes;
      throws(() => scoped ? tidy(dev, call) : call(), message);
      strictEqual(
        dev.pool.liveBytes - before,
        0,
        `${name} ${scoped ? "inside" : "outside"} a scope left bytes behind`,
      );
    }
  });
}

Deno.test("an op that succeeds keeps its output where it was", gpuTest, () => {
  const before = dev.pool.liveBytes;
  const x = ops.zeros(dev, [4, 8]);
  const y = ops.softmax(x);
  strictEqual(y instanceof Tensor && y.shape.join(), "4,8");
  // Outside a scope the caller owns both; inside one the scope frees both.
  y.dispose();
  x.dispose();
  strictEqual(dev.pool.liveBytes, before);
  tidy(dev, () => {
    ops.softmax(ops.zeros(dev, [4, 8]));
  });
  strictEqual(dev.pool.liveBytes, before);
});
