/**
 * Stream textures (kernels/texture.ts) are bound as read-only storage textures,
 * which WGSL reads only with the `readonly_and_readwrite_storage_textures`
 * language feature. A device whose WGSL lacks it must read every operand from
 * its buffer instead: `maxTextureDimension` is 0 and no texture is filled.
 *
 * Checked here: a provider that hides the feature gives such a device; an MLP
 * with a layer norm, forward and backward, records no buffer-to-texture copy
 * on it, and its output and gradients match the same model on the usual device
 * (which, on a software adapter, reads them through textures) to rtol 1e-4,
 * atol 1e-5: the two devices' kernels may add their sums in other orders (the
 * texture and buffer forms of a matmul get different tilings; measured: 2e-5
 * relative at most).
 */

import assert from "node:assert/strict";
import { backward } from "../core/autograd.ts";
import { Device } from "../core/device.ts";
import { type GPUProvider, gpuProvider } from "../core/gpu.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { assertClose, gpuTest, randomArray, testBackend, testDevice } from "./helpers.ts";

const usual = await testDevice();
const base = await gpuProvider(testBackend());
const hidden: GPUProvider = {
  ...base,
  gpu: {
    requestAdapter: (o?: GPURequestAdapterOptions) => base.gpu.requestAdapter(o),
    getPreferredCanvasFormat: () => base.gpu.getPreferredCanvasFormat(),
    wgslLanguageFeatures: new Set<string>(),
  } as unknown as GPU,
};
const plain = await Device.create({ provider: hidden });

/** An MLP with a layer norm on `dev`: its output and the gradients of its inputs. */
async function run(dev: Device) {
  const [T, H, F] = [24, 32, 64];
  return await tidy(dev, async () => {
    const x = Tensor.fromArray(dev, randomArray(T * H, 1, -2, 2), [T, H]).requireGrad();
    const g = Tensor.fromArray(dev, randomArray(H, 2, 0.5, 1.5), [H]).requireGrad();
    const b = Tensor.fromArray(dev, randomArray(H, 3), [H]).requireGrad();
    const w1 = Tensor.fromArray(dev, randomArray(F * H, 4), [F, H]).requireGrad();
    const w2 = Tensor.fromArray(dev, randomArray(H * F, 5), [H, F]).requireGrad();
    const y = ops.linear(ops.gelu(ops.linear(ops.layerNorm(x, g, b), w1), "tanh"), w2);
    const r = Tensor.fromArray(dev, randomArray(y.size, 9), y.shape);
    await backward(ops.sum(ops.mul(y, r)));
    return {
      y: await y.read(),
      grads: await Promise.all([x, g, b, w1, w2].map((t) => t.grad!.read())),
    };
  });
}

Deno.test.afterAll(async () => {
  await plain.close();
});

Deno.test(
  "stream textures: without WGSL storage-texture reads, every operand comes from its buffer",
  gpuTest,
  async () => {
    assert.equal(plain.maxTextureDimension, 0);
    const copies = plain.textureCopies;
    const a = await run(plain);
    assert.equal(plain.textureCopies, copies, "no stream texture was filled");
    const usualCopies = usual.textureCopies;
    const b = await run(usual);
    if (usual.isSoftware) {
      assert.ok(
        usual.textureCopies > usualCopies,
        "the usual device used textures",
      );
    }
    const tol = { rtol: 1e-4, atol: 1e-5 };
    assertClose(a.y, b.y, { ...tol, what: "output" });
    ["x", "gamma", "beta", "w1", "w2"].forEach((name, i) =>
      assertClose(a.grads[i], b.grads[i], { ...tol, what: `grad ${name}` })
    );
  },
);
