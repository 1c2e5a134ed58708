/**
 * Operands the ops must refuse, or keep as they are, instead of computing
 * something wrong: tensors from another device (named by the op, and by the
 * kernel for a raw dispatch, where WebGPU would only log a validation error
 * and skip the work), `i32` tensors through the shape ops (their values and
 * type kept, bit for bit), a 0-D tensor given to a row op, a loss normalizer
 * or `valid` count that is no positive number, a negative `eps`, a seed that
 * is no integer, a NaN clip, a disposed loss, a loss run backward twice, a
 * sampler outside [0, 1), a
 * stop token outside the vocabulary, and GPT targets of another shape.
 */

import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { Device } from "../core/device.ts";
import { backward } from "../core/autograd.ts";
import { fillKernel } from "../kernels/elementwise.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { generate } from "../models/generate.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { Trainer } from "../models/trainer.ts";
import { gpuTest, testBackend, testDevice } from "./helpers.ts";

const dev = await testDevice();
const cfg: GptConfig = {
  vocabSize: 11,
  numLayers: 1,
  hiddenSize: 8,
  numHeads: 2,
  maxPositions: 4,
  hiddenDropout: 0,
  attentionDropout: 0,
};
const schedule = { lr: 1e-3, decayIters: 10 };

Deno.test("an operand from another device is refused by name", gpuTest, async () => {
  const other = await Device.create({ backend: testBackend() });
  try {
    const x = Tensor.fromArray(dev, [1, 2, 3, 4], [2, 2]);
    const here = Tensor.fromArray(dev, [1, 1]);
    const there = Tensor.fromArray(other, [1, 1]);
    const differ = /tensors are on different devices/;
    throws(() => ops.layerNorm(x, there, here), new RegExp("layerNorm: " + differ.source));
    throws(() => ops.layerNorm(x, here, there), differ);
    throws(() => ops.linear(x, Tensor.fromArray(dev, [1, 0, 0, 1], [2, 2]), there), differ);
    // A linear layer's input from elsewhere: linear names itself (not the matmul inside it), and
    // which operand is elsewhere.
    throws(
      () => ops.linear(Tensor.fromArray(other, [1, 2, 3, 4], [2, 2]), x),
      /^Error: linear: tensors are on different devices \(operand 2 is not on operand 1's device\)$/,
    );
    throws(() => ops.concat([x, Tensor.fromArray(other, [5, 6, 7, 8], [2, 2])], 0), differ);
    throws(
      () => ops.softmax(x, { mask: "padding", keep: Tensor.fromArray(other, [1, 1], [1, 2]) }),
      differ,
    );
    // Any kernel: a tensor's binding says whose it is.
    throws(
      () => dev.dispatch(fillKernel(), [there.binding], new ArrayBuffer(16), [1]),
      /kernel fill: binding 0 is a tensor on another device than the one running the kernel/,
    );
    // A trainer on another device than its model's, before any work.
    const gpt = Gpt.serial(dev, cfg, 1);
    throws(
      () => new Trainer(other, gpt, { schedule, clipGrad: 1 }),
      /Trainer: the model's parameter \S+ is on another device than the trainer's/,
    );
    gpt.dispose();
  } finally {
    await other.close();
  }
});

Deno.test("shape ops keep an i32 tensor's type and exact values", gpuTest, async () => {
  // Values whose f32 bit patterns are denormals, NaNs and infinities.
  const values = [1, 3, -1, 0x7f800001, 0x7f800000, 2 ** 31 - 1];
  const t = Tensor.fromArray(dev, Int32Array.from(values), [2, 3]);
  const same = async (u: Tensor, expected: number[]) => {
    equal(u.dtype, "i32");
    deepEqual([...(await u.readInt())], expected);
  };
  const swapped = [1, 0x7f800001, 3, 0x7f800000, -1, 2 ** 31 - 1];
  await same(ops.transpose(t), swapped);
  await same(ops.permute(t, [1, 0]), swapped);
  await same(ops.slice(t, 1, 1, 3), [3, -1, 0x7f800000, 2 ** 31 - 1]);
  const [a, b] = ops.split(t, 2, 0);
  await same(a, values.slice(0, 3));
  await same(ops.concat([b, a], 0), [...values.slice(3), ...values.slice(0, 3)]);
  throws(
    () => ops.concat([t, Tensor.fromArray(dev, new Float32Array(6), [2, 3])], 0),
    /concat: mixed element types, i32 and f32/,
  );
});

Deno.test("row ops refuse a 0-D tensor with a sentence", gpuTest, () => {
  const scalar = Tensor.fromArray(dev, [1], []);
  const one = Tensor.fromArray(dev, [1]);
  const zeroD = /needs at least 1, got a 0-D tensor/;
  throws(() => ops.softmax(scalar), new RegExp("softmax: works along the last dimension and "));
  throws(() => ops.softmax(scalar), zeroD);
  throws(() => ops.layerNorm(scalar, one, one), zeroD);
  throws(() => ops.crossEntropy(scalar, TokenIds.fromHost(dev, [0])), zeroD);
});

Deno.test("argument values an op cannot use are refused, each named", gpuTest, async () => {
  const logits = Tensor.fromArray(dev, [0, 0, 0, 0], [2, 2]);
  const targets = TokenIds.fromHost(dev, [0, 1]);
  for (const n of [0, -2, NaN, Infinity]) {
    throws(
      () => ops.crossEntropy(logits, targets, 2, n),
      new RegExp(`crossEntropy: normalizer must be a positive number, got ${n}`),
    );
  }
  const quarter = await ops.crossEntropy(logits, targets, 2, 4).item();
  ok(Math.abs(quarter - 2 * Math.LN2 / 4) < 1e-6, `summed loss / 4: ${quarter}`);
  // Every target ignored, no normalizer: a zero loss, not a division by zero.
  equal(await ops.crossEntropy(logits, TokenIds.fromHost(dev, [-1, -1])).item(), 0);
  throws(
    () => ops.crossEntropy(logits, targets, 1.5),
    /crossEntropy: valid columns 1.5 not an integer in \[1, 2\]/,
  );
  const x = Tensor.fromArray(dev, [1, 2], [1, 2]);
  const g = Tensor.fromArray(dev, [1, 1]);
  const b = Tensor.fromArray(dev, [0, 0]);
  for (const eps of [-1, NaN]) {
    throws(
      () => ops.layerNorm(x, g, b, eps),
      new RegExp(`layerNorm: eps must be a finite number ≥ 0, got ${eps}`),
    );
  }
  for (const seed of [NaN, 1.5]) {
    throws(() => Gpt.serial(dev, cfg, seed), new RegExp(`seed must be an integer, got ${seed}`));
  }
  const gpt = Gpt.serial(dev, cfg, 1);
  try {
    throws(
      () => new Trainer(dev, gpt, { schedule, clipGrad: NaN }),
      /Trainer: clipGrad must be a number \(≤ 0: off\), got NaN/,
    );
    const ids = TokenIds.fromHost(dev, [1, 2, 3, 4], [1, 4]);
    await rejects(
      () => gpt.loss(ids, TokenIds.fromHost(dev, [2, 3, 4, 5], [4, 1])),
      /GPT: targets \[4,1\] must have the inputs' shape \[1,4\]/,
    );
    const sample = async (opts: { uniform: () => number; stopToken?: number }) => {
      for await (const _ of generate(gpt, [1, 2], { maxNewTokens: 2, ...opts })) { /* drain */ }
    };
    await rejects(
      () => sample({ uniform: () => 1 }),
      /uniform\(\) must give numbers in \[0, 1\), gave 1/,
    );
    await rejects(
      () => sample({ uniform: () => 0.5, stopToken: 11 }),
      /generate: stopToken must be a token id in \[0, 11\), got 11/,
    );
  } finally {
    gpt.dispose();
  }
});

Deno.test("backward from a disposed loss is an error, not a silent no-op", gpuTest, async () => {
  const w = Tensor.fromArray(dev, [1, 2]).requireGrad();
  const loss = ops.sum(ops.mul(w, w));
  loss.dispose();
  await rejects(() => backward(loss), /backward\(\): use of a disposed tensor of shape \[1\]/);
  equal(w.grad, null);
  w.dispose();
});

Deno.test(
  "backward twice from one loss is refused: the gradients are not added again",
  gpuTest,
  async () => {
    // It added them twice (PyTorch refuses a second pass through a graph).
    const w = Tensor.fromArray(dev, [1, 2]).requireGrad();
    const loss = ops.sum(ops.mul(w, w));
    await backward(loss);
    await rejects(() => backward(loss), /backward\(\): this tensor was already run backward/);
    equal(Array.from(await w.grad!.read()).join(","), "2,4");
    loss.dispose();
    w.grad!.dispose();
    w.dispose();
  },
);
