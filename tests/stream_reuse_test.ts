/**
 * Scratch stream textures answered without a copy (`Device.streamOperands`):
 * a range read again while nothing wrote its buffer is not copied again, and
 * every way of writing a buffer (a kernel binding it writable, a clear, a copy,
 * an upload) makes the next read copy afresh; one dispatch's operands are read
 * where they are held and filled only into textures no other operand of the
 * dispatch reads; and a trainer's losses
 * and weights are bit for bit those of the same steps copying every read. Each
 * texture is checked by reading it back through a kernel.
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { Device, type TextureBinding } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";
import { STREAM_TEXTURE, streamTexel } from "../kernels/texture.ts";
import type { KernelSource } from "../kernels/kernel.ts";
import { randomArray, testBackend, withTimeLimit } from "./helpers.ts";
import { trainThreeSteps } from "./trainer_bits.ts";

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

/** `out = a` over the vec4s of a stream texture. */
const FETCH: KernelSource = {
  key: "test:stream-fetch",
  code: `
@group(0) @binding(0) var a: ${STREAM_TEXTURE};
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= arrayLength(&out)) { return; }
  out[i] = ${streamTexel("a", "i")};
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

/** The first `n` floats the texture `view` holds, read through a kernel. */
async function readTexture(device: Device, view: TextureBinding, n: number): Promise<Float32Array> {
  const out = Tensor.empty(device, [n]);
  device.dispatch(FETCH, [view, out.binding], null, wg(n / 4));
  const r = await out.read();
  out.dispose();
  return r;
}

Deno.test(
  "a range read again unwritten is not copied; every kind of write makes the next read copy",
  withTimeLimit(120),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      if (!device.maxTextureDimension) return; // no stream textures on this adapter
      const n = 4096 + 24; // one whole stream row and a partial one
      const x = Tensor.fromArray(device, randomArray(n, 1), [n]);
      const y = Tensor.fromArray(device, randomArray(n, 2), [n]);
      const scratch = Tensor.empty(device, [n]);
      const read = async (expectCopy: boolean, what: string) => {
        const copies = device.textureCopies, hits = device.scratchTextureHits;
        const view = { view: device.streamAsTexture(x.binding, n / 4) };
        deepStrictEqual(device.textureCopies > copies, expectCopy, `${what}: copied`);
        deepStrictEqual(device.scratchTextureHits > hits, !expectCopy, `${what}: hit`);
        deepStrictEqual(await readTexture(device, view, n), await x.read(), `${what}: contents`);
      };
      await read(true, "first read");
      await read(false, "read again");
      device.dispatch(COPY, [x.binding, scratch.binding], null, wg(n));
      await read(false, "after a kernel that only reads it");
      device.dispatch(INCREMENT, [x.binding], null, wg(n));
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
  "one dispatch's operands are read where they are held and filled where no other reads",
  withTimeLimit(120),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      if (!device.maxTextureDimension) return;
      const rows = 16, n = rows * 4096; // whole stream rows: one copy a fill
      const [x, y, z] = [1, 2, 3].map((s) => Tensor.fromArray(device, randomArray(n, s), [n]));
      const [xs, ys, zs] = await Promise.all([x, y, z].map((t) => t.read()));
      const out = Tensor.empty(device, [n]);
      const diff = async (a: Tensor, b: Tensor, copies: number, what: string) => {
        const c0 = device.textureCopies;
        const [va, vb] = device.streamOperands([
          { binding: a.binding, vec4s: n / 4 },
          { binding: b.binding, vec4s: n / 4 },
        ]);
        deepStrictEqual(device.textureCopies - c0, copies, `${what}: copies`);
        ok(va !== vb, `${what}: two textures`);
        device.dispatch(DIFF, [{ view: va }, { view: vb }, out.binding], null, wg(n / 4));
        const [as, bs] = [a, b].map((t) => t === x ? xs : t === y ? ys : zs);
        deepStrictEqual(
          await out.read(),
          Float32Array.from(as, (v, i) => Math.fround(v - bs[i])),
          `${what}: a − b`,
        );
        return [va, vb];
      };
      const vx = device.streamAsTexture(x.binding, n / 4); // the first operand's texture holds x
      // x, the second operand, is read where it is; y takes the second operand's texture.
      const [a1, b1] = await diff(y, x, 1, "y − x");
      ok(b1 === vx, "x read where it was");
      // y, second now, is read where it is; z fills the first texture, which held x.
      const [a2, b2] = await diff(z, y, 1, "z − y");
      ok(b2 === a1 && a2 === vx, "z filled the texture no other operand read");
      // Both held, each in the other's place: no copy.
      await diff(y, z, 0, "y − z");
      deepStrictEqual(device.scratchTextureBytes, 2 * rows * 16 * 1024, "a texture per operand");
    } finally {
      await device.close();
    }
  },
);

Deno.test(
  "a trainer reusing scratch textures gives the bits of one copying every read",
  withTimeLimit(120),
  async () => {
    const reused = await trainThreeSteps(() => {});
    const fresh = await trainThreeSteps((device) => device.reuseStreamTextures = false);
    if (!reused.software) return; // GPUs read buffers: no stream textures
    deepStrictEqual(fresh.scratchHits, 0);
    ok(reused.scratchHits > 0, "some reads were answered without a copy");
    ok(
      reused.textureCopies < fresh.textureCopies,
      `copies: ${reused.textureCopies} reused against ${fresh.textureCopies} fresh`,
    );
    deepStrictEqual(reused.losses, fresh.losses);
    reused.w.forEach((w, i) => deepStrictEqual(w, fresh.w[i], `weight ${i}`));
  },
);
