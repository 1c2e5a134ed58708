/**
 * Host copies without fresh memory: `Tensor.readInto` fills a caller's array
 * (the collectives read into their shared-memory arena), and `Device.upload`
 * writes through the queue when nothing recorded waits for a submit, through a
 * staging copy recorded in order otherwise; from shared memory too, which
 * Dawn's `writeBuffer` does not take (the process dies of SIGSEGV). Reads
 * larger than one staging buffer go in rounds and keep every byte.
 */

import { deepStrictEqual, rejects } from "node:assert/strict";
import { READ_STAGING_MAX_BYTES } from "../core/device.ts";
import { fillInPlace } from "../core/ops/raw.ts";
import { Tensor } from "../core/tensor.ts";
import { gpuTest, randomArray, testDevice } from "./helpers.ts";

Deno.test("readInto and uploads from shared memory keep values and order", gpuTest, async () => {
  const device = await testDevice();
  const n = 1000;
  const values = randomArray(n, 3);
  const t = Tensor.fromArray(device, values, [n]);
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
  const shared = new Float32Array(memory.buffer, 64, n);
  await t.readInto(shared);
  deepStrictEqual(Array.from(shared), Array.from(values));
  await rejects(t.readInto(new Float32Array(n - 1)), /readInto: 999 floats/);
  // An i32 tensor reads as read() gives it (the values as floats), as collectives did before.
  const ids = Tensor.fromArray(device, Int32Array.from([3, -7, 1 << 20]), [3], "i32");
  const idsOut = new Float32Array(memory.buffer, 64 + 4 * n, 3);
  await ids.readInto(idsOut);
  deepStrictEqual(Array.from(idsOut), [3, -7, 1 << 20]);
  ids.dispose();

  // Nothing recorded: the queue writes, from shared memory through a host copy.
  shared.set(values.map((v) => 2 * v));
  device.flush();
  t.write(shared);
  deepStrictEqual(Array.from(await t.read()), Array.from(shared));

  // Work recorded and not submitted: the upload lands after it, in order.
  fillInPlace(t, 7);
  t.write(shared.subarray(0, n));
  deepStrictEqual(Array.from(await t.read()), Array.from(shared));
  t.write(values);
  fillInPlace(t, 5);
  deepStrictEqual(Array.from(await t.read()), new Array(n).fill(5));
  t.dispose();
});

Deno.test("reads past one staging buffer go in rounds and keep every byte", gpuTest, async () => {
  // A save of GPT-2 small read its embedding's moments through one 309 MB staging buffer.
  const device = await testDevice();
  const big = READ_STAGING_MAX_BYTES / 4 + 12_345; // two rounds, the second short
  const values = new Float32Array(big);
  for (let i = 0; i < big; i++) values[i] = i % 65_521 - 30_000.5;
  const a = Tensor.fromArray(device, values, [big]);
  const small = Tensor.fromArray(device, Float32Array.of(1.5, -2.5, 3.25), [3]);
  const reads = device.hostSyncs;
  const [x, y, z] = await device.readMany([small.binding, a.binding, small.binding]);
  deepStrictEqual(Array.from(new Float32Array(y)).every((v, i) => v === values[i]), true);
  deepStrictEqual(Array.from(new Float32Array(x)), [1.5, -2.5, 3.25]);
  deepStrictEqual(Array.from(new Float32Array(z)), [1.5, -2.5, 3.25]);
  // Rounds in order, each as full as the next piece allows: [small], [a's first 64 MiB],
  // [the rest of a, small].
  deepStrictEqual(device.hostSyncs - reads, 3, "rounds of one staging buffer's worth");
  const into = new Float32Array(big);
  await a.readInto(into);
  deepStrictEqual(into.every((v, i) => v === values[i]), true);
  a.dispose();
  small.dispose();
});
