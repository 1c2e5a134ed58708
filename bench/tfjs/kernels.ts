/**
 * The kernel benchmarks of `bench/kernels.ts` with TensorFlow.js's WebGPU backend beside
 * the project's kernels, on the same backend and adapter, in the same run (TF.js as each group's
 * second line, and a `project/tfjs` column in the table printed at the end). Not named
 * `*_bench.ts`, so `deno task bench` leaves it (and TF.js) out; `deno task bench:tfjs` runs it.
 *
 *     WEBGPU_BACKEND=deno|dawn deno bench -A bench/tfjs/kernels.ts
 * @module
 */

import { benchDevice, registerBenches, type Row, ROWS, type Runner } from "../kernels.ts";
import { createTfjs, type Tfjs } from "./backend.ts";

let tfjsHandle: Promise<Tfjs> | null = null;
const tfjs = () => (tfjsHandle ??= benchDevice().then((d) => createTfjs(d.provider)));

/** The TF.js implementation of `row`'s operation. */
function tfjsRunner(row: Row): () => Promise<Runner> {
  const op = row.op;
  switch (op.kind) {
    case "matmul":
      return async () => {
        const t = await tfjs();
        const tf = t.tf;
        const { shape } = op;
        const { batch, M, N, K } = shape;
        const aShape = shape.transA ? [K, M] : [M, K];
        const bShape = shape.transB ? [N, K] : [K, N];
        const { a: aData, b: bData, bias: biasData } = op.inputs();
        const a = tf.tensor(aData, shape.batchA && batch > 1 ? [batch, ...aShape] : aShape);
        const b = tf.tensor(bData, shape.batchB && batch > 1 ? [batch, ...bShape] : bShape);
        const bias = tf.tensor(biasData, [N]);
        return {
          record(count) {
            for (let i = 0; i < count; i++) {
              tf.tidy(() => {
                const c = tf.matMul(a, b, shape.transA, shape.transB);
                return shape.bias ? tf.add(c, bias) : c;
              }).dispose();
            }
          },
          sync: () => t.sync(),
        };
      };
    case "softmax":
      return async () => {
        const t = await tfjs();
        const tf = t.tf;
        const x = tf.tensor(op.inputs(), [op.rows, op.cols]);
        return {
          record(count) {
            for (let i = 0; i < count; i++) tf.tidy(() => tf.softmax(tf.mul(x, 0.125))).dispose();
          },
          sync: () => t.sync(),
        };
      };
    case "layernorm":
      return async () => {
        const t = await tfjs();
        const tf = t.tf;
        const { rows, cols } = op;
        const { x: data, gamma, beta } = op.inputs();
        const x = tf.tensor(data, [rows, cols]);
        const g = tf.tensor(gamma, [cols]);
        const b = tf.tensor(beta, [cols]);
        return {
          record(count) {
            for (let i = 0; i < count; i++) {
              tf.tidy(() => {
                const { mean, variance } = tf.moments(x, -1, true);
                return tf.add(
                  tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), g),
                  b,
                );
              }).dispose();
            }
          },
          sync: () => t.sync(),
        };
      };
  }
}

for (const row of ROWS) row.impls.tfjs = tfjsRunner(row);
registerBenches(["project", "tfjs"]);
