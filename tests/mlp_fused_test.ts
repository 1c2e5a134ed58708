/**
 * The GeLU fused into the MLP's products (core/ops/mlp.ts, the `geluOut` and
 * `geluGrad` epilogues of kernels/matmul.ts) against the unfused composition
 * `linear → gelu → linear → + bias`: forward outputs and the gradients of the
 * input, both weights and both biases (the second in `geluLinear`'s epilogue,
 * as the MLP's row-parallel layer does at TP=1), for both GeLU kinds, widths that are and are not a
 * multiple of 4 (vec4 and scalar stores), leading batch dims, and both matmul
 * variant families (the software and the shared-memory GPU tiling).
 * Loss = Σ out·R for a fixed random R.
 * Tolerances: forward |Δ| ≤ 1e-6 + 1e-5·|ref| and gradients |Δ| ≤ 1e-5 + 1e-4·|ref|:
 * the same f32 formulas on the same f32 values (in practice equal up to the
 * compiler contracting a multiply-add differently in another shader).
 */

import { recordPlan } from "../core/ops/matmul.ts";
import assert from "node:assert/strict";
import { backward } from "../core/autograd.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { matmulPlanWith, type MatmulShape, tilingCandidates } from "../kernels/matmul.ts";
import { assertClose, gpuTest, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();
const FWD = { rtol: 1e-5, atol: 1e-6 };
const GRAD = { rtol: 1e-4, atol: 1e-5 };

async function run(
  shapes: { x: number[]; hidden: number; out: number },
  kind: ops.GeluKind,
  fused: boolean,
) {
  const inF = shapes.x[shapes.x.length - 1];
  const n = shapes.x.reduce((a, b) => a * b, 1);
  return await tidy(dev, async () => {
    const x = Tensor.fromArray(dev, randomArray(n, 1, -2, 2), shapes.x).requireGrad();
    const w1 = Tensor.fromArray(dev, randomArray(shapes.hidden * inF, 2), [shapes.hidden, inF])
      .requireGrad();
    const b1 = Tensor.fromArray(dev, randomArray(shapes.hidden, 3), [shapes.hidden]).requireGrad();
    const w2 = Tensor.fromArray(dev, randomArray(shapes.out * shapes.hidden, 4), [
      shapes.out,
      shapes.hidden,
    ]).requireGrad();
    const b2 = Tensor.fromArray(dev, randomArray(shapes.out, 5), [shapes.out]).requireGrad();
    let y: Tensor;
    if (fused) {
      const { pre, act } = ops.linearGelu(x, w1, b1, kind);
      y = ops.geluLinear(pre, act, w2, kind, b2);
    } else {
      y = ops.add(ops.linear(ops.gelu(ops.linear(x, w1, b1), kind), w2), b2);
    }
    const R = Tensor.fromArray(dev, randomArray(y.size, 9), y.shape);
    await backward(ops.sum(ops.mul(y, R)));
    return {
      y: await y.read(),
      grads: await Promise.all([x, w1, b1, w2, b2].map((t) => t.grad!.read())),
    };
  });
}

for (const kind of ["tanh", "erf"] as const) {
  Deno.test(`mlp fused: GeLU-${kind} in the products equals the unfused MLP`, gpuTest, async () => {
    const cases = [
      { x: [2, 9, 12], hidden: 48, out: 12 },
      { x: [13, 7], hidden: 22, out: 5 }, // widths not a multiple of 4: scalar stores
    ];
    for (const c of cases) {
      const a = await run(c, kind, true);
      const b = await run(c, kind, false);
      const what = `${JSON.stringify(c)} ${kind}`;
      assertClose(a.y, b.y, { ...FWD, what: `${what}: output` });
      ["x", "w1", "b1", "w2", "b2"].forEach((name, i) =>
        assertClose(a.grads[i], b.grads[i], { ...GRAD, what: `${what}: grad ${name}` })
      );
    }
  });
}

Deno.test(
  "mlp fused: the epilogues in every tiling of both variant families",
  gpuTest,
  async () => {
    const M = 19, N = 24, K = 13;
    const a = randomArray(M * K, 11, -2, 2), b = randomArray(N * K, 12), bias = randomArray(N, 13);
    const u = randomArray(M * N, 14, -3, 3);
    const up = (v: Float32Array) => Tensor.fromArray(dev, v, [v.length]);
    const A = up(a), B = up(b), Bias = up(bias), U = up(u);
    // references: the plain product, GeLU and its gradient as separate kernels
    const prod = ops.linear(A.view([M, K]), B.view([N, K]), Bias);
    const refAct = await ops.gelu(prod, "tanh").read();
    // gelu'(U) ⊙ product, through the unfused GeLU's own backward
    const gradRef = await (() => {
      const g = dev.noGrad(() => ops.linear(A.view([M, K]), B.view([N, K]), Bias));
      const x = U.view([M, N]).requireGrad();
      return tidy(dev, async () => {
        const y = ops.gelu(x, "tanh");
        await backward(ops.sum(ops.mul(y, g)));
        return await x.grad!.read();
      });
    })();
    for (const software of [dev.isSoftware, !dev.isSoftware]) {
      const opts = {
        software,
        maxInvocations: dev.limits.maxComputeInvocationsPerWorkgroup,
        maxWorkgroupStorage: dev.limits.maxComputeWorkgroupStorageSize,
        // software kernels read U (24 columns: whole vec4s) through a stream texture
        maxTextureDimension: software ? dev.maxTextureDimension : undefined,
      };
      const base: MatmulShape = {
        batch: 1,
        M,
        N,
        K,
        transA: false,
        transB: true,
        batchA: true,
        batchB: true,
        bias: true,
      };
      for (const epilogue of ["geluOut", "geluGrad"] as const) {
        const shape = { ...base, [epilogue]: "tanh" } as MatmulShape;
        for (const t of tilingCandidates(shape, opts)) {
          const C = up(new Float32Array(M * N)), D = up(new Float32Array(M * N));
          const plan = matmulPlanWith(shape, opts, t);
          const extra = epilogue === "geluOut" ? D : U;
          recordPlan(dev, plan, [A.binding, B.binding, Bias.binding, C.binding, extra.binding]);
          const what = `${epilogue} ${plan.kernel.key}`;
          if (epilogue === "geluGrad") assert.equal(!!plan.textureU, software, what);
          if (epilogue === "geluOut") assertClose(await D.read(), refAct, { ...FWD, what });
          else assertClose(await C.read(), gradRef, { ...FWD, what });
          C.dispose();
          D.dispose();
        }
      }
    }
    for (const t of [A, B, Bias, U, prod]) t.dispose();
  },
);

Deno.test("mlp fused: mismatched tensors are refused", gpuTest, () => {
  const x = Tensor.fromArray(dev, randomArray(12, 1), [3, 4]);
  const w = Tensor.fromArray(dev, randomArray(20, 2), [5, 4]);
  const { pre, act } = ops.linearGelu(x, w, undefined, "tanh");
  const w2 = Tensor.fromArray(dev, randomArray(12, 3), [3, 4]);
  assert.throws(() => ops.geluLinear(pre, act, w2, "tanh"), /do not fit/);
  for (const t of [x, w, pre, act, w2]) t.dispose();
});
