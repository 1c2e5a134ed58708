/**
 * Child of tests/driver_pin_test.ts. Opens a Deno-WebGPU device in a Worker
 * twice: first through `navigator.gpu` directly (the control), then through the
 * project's `Device`, terminating the Worker each time, and reports on stdout,
 * as JSON, which of the shared objects the Worker's adapter request mapped are
 * unloaded once the Worker is gone.
 */
import { loadedLibraries } from "../../core/native_libraries.ts";

/** Runs one Worker; returns the shared objects its adapter request loaded. */
async function runWorker(raw: boolean): Promise<string[]> {
  const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  try {
    return await new Promise<string[]>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<string[]>) => resolve(e.data);
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(e.message));
      };
      worker.postMessage({ raw });
    });
  } finally {
    worker.terminate();
  }
}

/** Polls until none of `paths` is loaded or `limitMs` passes; returns what is left. */
async function stillLoaded(paths: string[], limitMs: number): Promise<[string[], number]> {
  const start = performance.now();
  for (;;) {
    const now = loadedLibraries() ?? new Set();
    const left = paths.filter((p) => now.has(p));
    const waited = performance.now() - start;
    if (left.length === 0 || waited >= limitMs) return [left, waited];
    await new Promise((r) => setTimeout(r, 50));
  }
}

const controlLoaded = await runWorker(true);
const drivers = controlLoaded.filter((p) => /vulkan/i.test(p));
const [controlLeft, controlMs] = await stillLoaded(drivers, 10_000);
const pinnedLoaded = await runWorker(false);
// Wait well past the time the control's drivers took to go.
await new Promise((r) => setTimeout(r, Math.max(1000, 3 * controlMs)));
const now = loadedLibraries() ?? new Set();
console.log(JSON.stringify({
  drivers,
  controlLeft,
  controlMs: Math.round(controlMs),
  pinnedLoaded,
  pinnedUnloaded: pinnedLoaded.filter((p) => !now.has(p)),
}));
