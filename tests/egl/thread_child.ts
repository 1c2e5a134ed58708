/**
 * Run by tests/egl_thread_exit_test.ts as its own `deno test` file: one Dawn
 * device does GPU work on this test file's thread and, unless
 * EGL_PROBE_CLOSE=0, is closed at the end, as tests/helpers.ts does.
 */

import { Device } from "../../core/device.ts";
import { add } from "../../core/ops/basic.ts";
import { Tensor } from "../../core/tensor.ts";

/** Doubles a tensor on `dev`; its tensors are garbage once this returns. */
async function double(dev: Device): Promise<void> {
  const a = Tensor.fromArray(dev, [1, 2, 3, 4]);
  const sum = await add(a, a).read();
  if (sum.join() !== "2,4,6,8") throw new Error(`a + a = ${sum.join()}`);
}

Deno.test("GPU work on this test file's thread", {
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dev = await Device.create({ backend: "dawn" });
  await double(dev);
  if (Deno.env.get("EGL_PROBE_CLOSE") !== "0") await dev.close();
});
