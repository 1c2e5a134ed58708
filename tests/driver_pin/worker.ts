/**
 * A Worker that opens a WebGPU device on Deno's WebGPU, closes it and
 * reports the shared objects its adapter request loaded. `{ raw: true }` asks
 * `navigator.gpu` directly (the control); otherwise the project's `Device`.
 */
import { Device } from "../../core/device.ts";
import { loadedLibraries } from "../../core/native_libraries.ts";

self.onmessage = async (e: MessageEvent<{ raw: boolean }>) => {
  const before = loadedLibraries() ?? new Set();
  if (e.data.raw) {
    const adapter = await navigator.gpu.requestAdapter();
    const device = await adapter!.requestDevice();
    device.destroy();
  } else {
    const device = await Device.create({ backend: "deno" });
    await device.sync();
    await device.close();
  }
  const loaded = [...(loadedLibraries() ?? [])].filter((p) => !before.has(p));
  self.postMessage(loaded);
};
