/**
 * Scratch stream textures answered without a copy (`Device.streamOperands`,
 * `Device.streamAsTexture`): a range read again while nothing wrote its buffer
 * is not copied again, and every way of writing a buffer (a kernel binding it
 * writable, a clear, a copy, an upload) makes the next read copy afresh; one
 * dispatch's operands may be answered from another slot's texture without
 * disturbing a texture of a slot they did not ask for; and a trainer's losses
 * and weights are bit for bit those of the same steps copying every read.
 * Each texture is checked by reading it back through a kernel.
 * @module
 */

import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { Device, type TextureBinding } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Trainer } from "../models/trainer.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { STREAM_TEXTURE, streamTexel } from "../kernels/texture.ts";
import type { KernelSource } from "../kernels/kernel.ts";
import { prng, randomArray, testBackend, withTimeLimit } from "./helpers.ts";

const N = 4096 + 24; // vec4s 1030: one whole stream row and a partial one
const V = N / 4;

/** `out = a − b` over the vec4s of two stream textures. */
const DIFF: KernelSource = {
  key: "test:stream-diff",
  code: `
@group(0) @binding(0) var a: ${STREAM_TEXTURE};
@group(0) @binding(1) var b: ${STREAM_TEXTURE};
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= arrayLength(&out)) { return; }
  out[i] = ${streamTexel("a", "i")} - ${streamTexel("b", "i")};
}`,
};

/** `x += 1`, binding x writable. */
const INCREMENT: KernelSource = {
  key: "test:stream-increment",
  code: `
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < arrayLength(&x)) { x[id.x] = x[id.x] + 1.0; }
}`,
};

/** `out = x`, binding x read-only. */
const COPY: KernelSource = {
  key: "test:stream-copy",
  code: `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < arrayLength(&x)) { out[id.x] = x[id.x]; }
}`,
};

const wg = (n: number): [number] => [Math.ceil(n / 64)];

/** What the texture `view` holds, read through a kernel (a − 0). */
async function readTexture(device: Device, view: TextureBinding): Promise<Float32Array> {
  const zero = Tensor.fromArray(device, new Float32Array(N), [N]);
  const zeroView = device.streamAsTexture(zero.binding, V, 7);
  const out = Tensor.empty(device, [N]);
  device.dispatch(DIFF, [view, { view: zeroView }, out.binding], null, wg(V));
  const r = new Float32Array(await device.read(out.buffer, 4 * N, out.binding.offset ?? 0));
  zero.dispose();
  out.dispose();
  return r;
}

async function values(t: Tensor): Promise<Float32Array> {
  return new Float32Array(await t.device.read(t.buffer, 4 * t.size, t.binding.offset ?? 0));
}

Deno.test(
  "a range read again unwritten is not copied; every kind of write makes the next read copy",
  withTimeLimit(120),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      if (!device.maxTextureDimension) return; // no stream textures on this adapter
      const x = Tensor.fromArray(device, randomArray(N, 1), [N]);
      const y = Tensor.fromArray(device, randomArray(N, 2), [N]);
      const scratch = Tensor.empty(device, [N]);
      const read = async (expectCopy: boolean, what: string) => {
        const copies = device.textureCopies, skipped = device.scratchFillsSkipped;
        const view = { view: device.streamAsTexture(x.binding, V, 0) };
        deepStrictEqual(device.textureCopies > copies, expectCopy, `${what}: copied`);
        deepStrictEqual(device.scratchFillsSkipped > skipped, !expectCopy, `${what}: skipped`);
        deepStrictEqual(await readTexture(device, view), await values(x), `${what}: contents`);
      };
      await read(true, "first read");
      await read(false, "read again");
      device.dispatch(COPY, [x.binding, scratch.binding], null, wg(N));
      await read(false, "after a kernel that only reads it");
      device.dispatch(INCREMENT, [x.binding], null, wg(N));
      await read(true, "after a kernel that writes it");
      device.clear(x.buffer, (x.binding.offset ?? 0) + 64, 64);
      await read(true, "after a clear");
      device.copy(y.buffer, y.binding.offset ?? 0, x.buffer, x.binding.offset ?? 0, 256);
      await read(true, "after a copy into it");
      device.upload(x.buffer, randomArray(16, 3), x.binding.offset ?? 0);
      await read(true, "after an upload");
      device.reuseStreamTextures = false;
      await read(true, "with reuse off");
    } finally {
      await device.close();
    }
  },
);

Deno.test(
  "one dispatch's operands may come from another slot's texture, leaving slots not asked for alone",
  withTimeLimit(120),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      if (!device.maxTextureDimension) return;
      const [x, y, z] = [1, 2, 3].map((s) => Tensor.fromArray(device, randomArray(N, s), [N]));
      const [xs, ys, zs] = await Promise.all([x, y, z].map(values));
      const vz = { view: device.streamAsTexture(z.binding, V, 0) }; // slot 0 holds z
      const vx = device.streamAsTexture(x.binding, V, 2); // slot 2 holds x
      const copies = device.textureCopies;
      // x asks for slot 0 and y for slot 1: x is answered from slot 2, y fills slot 1.
      const [a, b] = device.streamOperands([
        { binding: x.binding, vec4s: V, slot: 0 },
        { binding: y.binding, vec4s: V, slot: 1 },
      ]);
      ok(a === vx, "x read from the texture that holds it");
      deepStrictEqual(device.textureCopies - copies, 2, "only y copied (a row and a partial row)");
      const out = Tensor.empty(device, [N]);
      device.dispatch(DIFF, [{ view: a }, { view: b }, out.binding], null, wg(V));
      deepStrictEqual(await values(out), Float32Array.from(xs, (v, i) => Math.fround(v - ys[i])));
      deepStrictEqual(await readTexture(device, vz), zs, "slot 0's texture still holds z");

      // Within the operands' slots: y asks for slot 0 while slot 1's texture holds it, and
      // z asks for slot 1: y is read where it is, z fills slot 0's texture.
      const [c, d] = device.streamOperands([
        { binding: y.binding, vec4s: V, slot: 0 },
        { binding: z.binding, vec4s: V, slot: 1 },
      ]);
      ok(c === b && d === vz.view, "y read in place, z filled into the free slot");
      device.dispatch(DIFF, [{ view: c }, { view: d }, out.binding], null, wg(V));
      deepStrictEqual(await values(out), Float32Array.from(ys, (v, i) => Math.fround(v - zs[i])));

      throws(
        () =>
          device.streamOperands([
            { binding: x.binding, vec4s: V, slot: 3 },
            { binding: z.binding, vec4s: V, slot: 3 },
          ]),
        /share slot 3/,
      );
    } finally {
      await device.close();
    }
  },
);

const cfg: GptConfig = {
  vocabSize: 300,
  numLayers: 2,
  hiddenSize: 64,
  numHeads: 4,
  maxPositions: 16,
  hiddenDropout: 0,
  attentionDropout: 0,
};

/** Losses and final weights of 3 trainer steps, with scratch textures reused or not. */
async function train(reuse: boolean) {
  const device = await Device.create({ backend: testBackend() });
  try {
    device.reuseStreamTextures = reuse;
    const m = Gpt.serial(device, cfg, 3);
    const trainer = new Trainer(device, m, {
      schedule: { lr: 3e-3, warmupIters: 1, decayIters: 3 },
      clipGrad: 1,
    });
    const r = prng(5);
    const ids = () => Int32Array.from({ length: 2 * 16 }, () => Math.floor(r() * cfg.vocabSize));
    const losses: number[] = [];
    const copies0 = device.textureCopies;
    for (let s = 0; s < 3; s++) {
      const x = ids(), y = ids();
      const res = await trainer.step(
        1,
        () => m.loss(TokenIds.fromHost(device, x, [2, 16]), TokenIds.fromHost(device, y, [2, 16])),
      );
      losses.push(res.loss);
    }
    const named = m.namedParams();
    const w = (await device.readMany(named.map(([, p]) => p.tensor.binding))).map((b) =>
      new Float32Array(b)
    );
    m.dispose();
    return {
      losses,
      w,
      copies: device.textureCopies - copies0,
      skipped: device.scratchFillsSkipped,
      software: device.isSoftware,
    };
  } finally {
    await device.close();
  }
}

Deno.test(
  "a trainer reusing scratch textures gives the bits of one copying every read",
  withTimeLimit(120),
  async () => {
    const reused = await train(true);
    const fresh = await train(false);
    if (!reused.software) return; // GPUs read buffers: no stream textures
    deepStrictEqual(fresh.skipped, 0);
    ok(reused.skipped > 0, "some reads were answered without a copy");
    ok(
      reused.copies < fresh.copies,
      `copies: ${reused.copies} reused against ${fresh.copies} fresh`,
    );
    deepStrictEqual(reused.losses, fresh.losses);
    reused.w.forEach((w, i) => deepStrictEqual(w, fresh.w[i], `weight ${i}`));
  },
);
