/**
 * Host copies without fresh memory: `Tensor.readInto` fills a caller's array
 * (the collectives read into their shared-memory arena), and `Device.upload`
 * writes through the queue when nothing recorded waits for a submit, through a
 * staging copy recorded in order otherwise; from shared memory too, which
 * Dawn's `writeBuffer` does not take (the process dies of SIGSEGV).
 */

import { deepStrictEqual, rejects } from "node:assert/strict";
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
