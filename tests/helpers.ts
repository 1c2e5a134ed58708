/**
 * Test helpers: one device per test file, deterministic host random data, and
 * comparisons with stated tolerances.
 * @module
 */

import { Device } from "../core/device.ts";
import { BACKEND_ENV, type BackendName, parseBackend } from "../core/gpu.ts";
import { DeviceProfiler } from "../core/profiler.ts";
import "./watchdog.ts";

/** The backend under test: env WEBGPU_BACKEND (deno | dawn), default the library's default. */
export function testBackend(): BackendName {
  return parseBackend(Deno.env.get(BACKEND_ENV));
}

let shared: Promise<Device> | null = null;

/**
 * A device for the whole test file (created on first use), closed after the
 * file's last test: destroyed, and its loss awaited, before the process tears
 * the runtime down (a device still alive at exit can abort the process with
 * heap corruption, see ../shared PLATFORM notes in the README).
 */
export function testDevice(): Promise<Device> {
  shared ??= Device.create({ backend: testBackend() });
  return shared;
}

Deno.test.afterAll(async () => {
  const device = shared;
  shared = null;
  if (device) await (await device).close();
});

/**
 * Options for GPU tests: the device and its pooled buffers outlive single tests.
 * Every test runs under a time limit (`watchdog.ts`: default 300 s, env
 * `TEST_TIME_LIMIT_S`); {@link withTimeLimit} gives a test its own.
 */
export const gpuTest = { sanitizeResources: false, sanitizeOps: false } as const;

/**
 * `options` (default {@link gpuTest}) with a time limit of `seconds` for the
 * test, steps included: `Deno.test("name", withTimeLimit(600), async () => {…})`.
 */
export function withTimeLimit<T extends object = typeof gpuTest>(
  seconds: number,
  options: T = gpuTest as unknown as T,
): T & { timeout: number } {
  return { ...options, timeout: Math.round(seconds * 1000) };
}

/** A small deterministic PRNG (mulberry32) for host-side test data. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/**
 * Asserts `|a − b| ≤ atol + rtol·|b|` elementwise, reporting the worst index.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  opts: { rtol?: number; atol?: number; what?: string } = {},
): void {
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-6;
  if (actual.length !== expected.length) {
    throw new Error(`${opts.what ?? "values"}: length ${actual.length} vs ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const b = expected[i];
    const excess = Math.abs(a - b) - (atol + rtol * Math.abs(b));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${opts.what ?? "values"} differ at [${worst}]: got ${actual[worst]}, expected ${
        expected[worst]
      } (rtol ${rtol}, atol ${atol})`,
    );
  }
}

/** Runs `f` with a profiler attached; returns its result and the kernel keys it dispatched. */
export async function withKernelKeys<T>(
  device: Device,
  f: () => Promise<T>,
): Promise<[T, string[]]> {
  const prof = new DeviceProfiler("sync");
  device.profiler = prof;
  try {
    const r = await f();
    return [r, [...prof.kernels.keys()]];
  } finally {
    device.profiler = null;
  }
}
