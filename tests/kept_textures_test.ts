/**
 * Kept stream textures (`Device.keepStreamTextures`, core/kept_textures.ts):
 * a held buffer is copied into its texture once per hold and read from it
 * after; a release makes the next read copy again, so a write between holds
 * is seen. The trainer holds its weights for a step: its losses and weights
 * are bit for bit those of the same steps with every read copied afresh, and
 * the forward, backward and optimizer reads share one copy per weight, the
 * gradient norm and the update one per gradient.
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { KeptTextures } from "../core/kept_textures.ts";
import * as ops from "../core/ops/mod.ts";
import { Tensor } from "../core/tensor.ts";
import { randomArray, testDevice, withTimeLimit } from "./helpers.ts";
import { trainThreeSteps } from "./trainer_bits.ts";

// Whole stream rows of 1024 texels and a partial one: two copy commands a fill.
const N = 4096 * 3 + 24;

Deno.test(
  "a held buffer is copied into its stream texture once per hold",
  withTimeLimit(60),
  async () => {
    const device = await testDevice();
    if (!device.isSoftware) return; // GPUs read buffers: no stream textures
    const x = Tensor.fromArray(device, randomArray(N, 1), [N]).keep();
    const gelu = async () => await ops.mapRaw("geluTanh", x).read();
    const loose = await gelu();
    device.keepStreamTextures([x.buffer]);
    const c0 = device.textureCopies, h0 = device.keptTextureHits;
    const first = await gelu();
    const second = await gelu();
    deepStrictEqual(
      device.textureCopies - c0,
      2,
      "one fill: whole rows and the last partial row",
    );
    deepStrictEqual(device.keptTextureHits - h0, 1);
    deepStrictEqual(first, loose);
    deepStrictEqual(second, loose);
    device.releaseStreamTextures();
    // A write after the release is read: the next hold fills the texture again.
    const other = randomArray(N, 2);
    device.upload(x.buffer, other);
    const want = await ops.mapRaw("geluTanh", Tensor.fromArray(device, other, [N])).read();
    device.keepStreamTextures([x.buffer]);
    const c1 = device.textureCopies;
    deepStrictEqual(await gelu(), want);
    deepStrictEqual(device.textureCopies - c1, 2);
    device.releaseStreamTextures();
    // Not held: every read copies into the scratch texture.
    const c2 = device.textureCopies;
    deepStrictEqual(await gelu(), want);
    deepStrictEqual(device.textureCopies - c2, 2);
    x.dispose();
  },
);

/** A maker of stand-in textures for the bookkeeping alone, counting what it made. */
function standInTextures(): { create: () => GPUTexture; made: () => number } {
  let made = 0;
  const create = () => {
    made++;
    return { createView: () => ({}), destroy: () => {} } as unknown as GPUTexture;
  };
  return { create, made: () => made };
}

Deno.test("a range keeps its texture over a release with nothing held", () => {
  // The bookkeeping alone, on stand-ins for a buffer and textures.
  const { create, made } = standInTextures();
  const kept = new KeptTextures();
  const x = {} as GPUBuffer, y = {} as GPUBuffer;
  kept.hold([x, y]);
  const ex = kept.entry("x", 4, create);
  kept.entry("y", 4, create);
  // A second release in a row, with nothing held (the trainer's at the end of a step), keeps
  // the entries where they are.
  kept.release();
  kept.release();
  kept.hold([x]);
  ok(kept.entry("x", 4, create) === ex, "x keeps its texture (and the bind groups naming it)");
  deepStrictEqual(made(), 2);
  kept.release();
  kept.release();
  kept.hold([x]);
  // y's texture, asked for by nobody in the last hold, serves a new range of its size.
  kept.entry("z", 4, create);
  deepStrictEqual(made(), 2);
});

Deno.test("a recycled texture serves any range of its size in the next hold", () => {
  const { create, made } = standInTextures();
  const kept = new KeptTextures();
  const w = {} as GPUBuffer, g = {} as GPUBuffer;
  kept.hold([w]);
  const ew = kept.entry("w", 4, create);
  ok(!ew.filled);
  ew.filled = true;
  // The trainer's weights, then its gradients: the gradient takes the weight's texture, unfilled.
  kept.recycle();
  ok(!kept.holds(w), "the recycle ends the hold");
  kept.hold([g]);
  const eg = kept.entry("g", 4, create);
  ok(eg === ew && !eg.filled, "the gradient reuses the weight's texture and fills it again");
  kept.recycle();
  kept.hold([w]);
  ok(kept.entry("w", 4, create) === ew, "the next step's weight takes it back");
  deepStrictEqual(made(), 1);
  deepStrictEqual(kept.bytes, 4 * 16 * 1024);
  // A size nobody freed makes a new texture.
  kept.entry("w2", 8, create);
  deepStrictEqual(made(), 2);
  deepStrictEqual(kept.bytes, 12 * 16 * 1024);
  kept.destroy();
  deepStrictEqual(kept.bytes, 0);
});

// Wide enough that the weights are read through stream textures (over 256 vec4s).
/** 3 trainer steps; `keep` false: every read copies afresh. */
function train(keep: boolean) {
  return trainThreeSteps(
    (device) => {
      if (!keep) {
        device.keepStreamTextures = () => {};
        device.reuseStreamTextures = false;
      }
    },
    // Tensor by tensor, as GPT-2's large ones are: the gradients' norm and update read
    // each through a kept texture (a flat bucket's are scratch copies).
    { adam: { bucketElements: 0 } },
  );
}

Deno.test(
  "a trainer step reads each held weight's texture instead of copying it again, with the same bits",
  withTimeLimit(120),
  async () => {
    const kept = await train(true);
    const fresh = await train(false);
    if (!kept.software) return; // GPUs read buffers: no stream textures
    ok(kept.keptHits > 0, "the held weights' textures were read again");
    deepStrictEqual(fresh.keptHits, 0);
    deepStrictEqual(fresh.keptBytes, 0);
    // The gradients took the weights' textures: the kept set is at most the model's size
    // once (each texture whole rows of 1024 texels; a tensor too narrow for a stream
    // texture has none), not twice.
    const rowBytes = 16 * 1024;
    const onceBytes = kept.w.reduce((n, w) => n + Math.ceil(w.byteLength / rowBytes), 0) *
      rowBytes;
    ok(
      kept.keptBytes > 0 && kept.keptBytes <= onceBytes,
      `kept ${kept.keptBytes} bytes of textures for a model of ${onceBytes} in whole rows`,
    );
    deepStrictEqual(kept.losses, fresh.losses);
    kept.w.forEach((w, i) => deepStrictEqual(w, fresh.w[i], `weight ${i}`));
  },
);
