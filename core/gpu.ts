/**
 * WebGPU backends: Deno's built-in WebGPU (wgpu) and Dawn through npm `webgpu`.
 * Both expose the standard `GPU` interface; the rest of core takes that object
 * and never reaches for `navigator.gpu` itself.
 * @module
 */

/** The WebGPU implementations this project can run on. */
export type BackendName = "deno" | "dawn";

/** All backends. */
export const BACKENDS: readonly BackendName[] = ["deno", "dawn"];

/**
 * The backend used when none is named: Dawn, by measurement (README, "Backends"):
 * its host syncs cost ~0.02 ms against Deno's ≥ 11 ms poll loop, reads back
 * faster, and its matmul and training steps ran faster in the same runs.
 */
export const DEFAULT_BACKEND: BackendName = "dawn";

/**
 * The backend for `ranksInProcess` devices in one process when the user names
 * none. Several devices in one process: Deno's WebGPU, whose devices run
 * independently (measured 90% weak-scaling efficiency for 2 ranks on 2 cores),
 * while Dawn's GL path serialises devices that share a process (47%). One
 * device: {@link DEFAULT_BACKEND}.
 */
export function defaultBackendFor(ranksInProcess: number): BackendName {
  return ranksInProcess > 1 ? "deno" : DEFAULT_BACKEND;
}

/** A `GPU` entry point plus what must stay alive while it is used. */
export interface GPUProvider {
  /** Which implementation this is. */
  readonly backend: BackendName;
  /** The standard WebGPU entry point. */
  readonly gpu: GPU;
  /** Options to pass to `requestAdapter` on this backend. */
  readonly adapterOptions: GPURequestAdapterOptions;
  /**
   * Dawn aborts the process if the object `create()` returned is garbage-collected
   * while a device lives; holding it here keeps it reachable.
   */
  readonly keepAlive?: unknown;
}

/** Thrown when a backend cannot give an adapter; the message says how to get one. */
export class NoAdapterError extends Error {
  /** Creates the error for `backend`, with `detail` saying what happened. */
  constructor(readonly backend: BackendName, detail: string) {
    super(
      `No WebGPU adapter from the ${backend} backend (${detail}).\n` +
        (backend === "deno"
          ? "  Deno's WebGPU needs a Vulkan (Linux), Metal (macOS) or DX12 (Windows) driver.\n" +
            "  Without a GPU, install Mesa's software Vulkan driver (lavapipe):\n" +
            "    sudo apt-get install -y mesa-vulkan-drivers\n" +
            "  and run with --unstable-webgpu (the tasks in deno.json already enable it)."
          : "  Dawn here needs Mesa's GL/EGL (Debian: libegl1 libgl1-mesa-dri) with\n" +
            "  EGL_PLATFORM=surfaceless, or a native Vulkan/Metal/D3D12 driver."),
    );
    this.name = "NoAdapterError";
  }
}

/** Returns the `GPU` object of Deno's built-in WebGPU, or throws with advice. */
export function denoGPU(): GPUProvider {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw new NoAdapterError(
      "deno",
      'navigator.gpu is undefined: run with --unstable-webgpu or add "unstable": ["webgpu"] to deno.json',
    );
  }
  return { backend: "deno", gpu, adapterOptions: { powerPreference: "high-performance" } };
}

/**
 * Loads Dawn's node bindings (npm `webgpu`). With no display and no native GPU
 * driver, Dawn runs on Mesa's GL in compatibility mode; `options` are Dawn toggles
 * such as `backend=vulkan` or `adapter=NAME` (a substring of the adapter name).
 */
export async function dawnGPU(options?: string[]): Promise<GPUProvider> {
  let mod: { create: (opts: string[]) => GPU; globals: Record<string, unknown> };
  try {
    mod = await import("npm:webgpu@0.6.2") as unknown as typeof mod;
  } catch (e) {
    throw new NoAdapterError("dawn", `npm:webgpu@0.6.2 failed to load: ${(e as Error).message}`);
  }
  // Dawn's enums and classes (GPUBufferUsage …) must exist as globals for code
  // that runs on both backends; Deno already defines them, so fill only gaps.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  const envBackend = Deno.env.get("WEBGPU_DAWN_BACKEND");
  const opts = options ?? (envBackend ? [`backend=${envBackend}`] : defaultDawnOptions());
  if (opts.some((o) => o === "backend=opengl") && !Deno.env.get("EGL_PLATFORM")) {
    Deno.env.set("EGL_PLATFORM", "surfaceless");
  }
  const gpu = mod.create(opts);
  const compat = opts.some((o) => o === "backend=opengl" || o === "backend=opengles");
  return {
    backend: "dawn",
    gpu,
    keepAlive: gpu,
    adapterOptions: compat
      ? { featureLevel: "compatibility" } as GPURequestAdapterOptions
      : { powerPreference: "high-performance" },
  };
}

function defaultDawnOptions(): string[] {
  // On Linux without a hardware Vulkan driver, Dawn's Vulkan backend rejects
  // lavapipe; Mesa's GL (llvmpipe) works. Prefer Vulkan when a real GPU exists.
  if (Deno.build.os !== "linux") return [];
  try {
    for (const e of Deno.readDirSync("/dev/dri")) {
      if (e.name.startsWith("renderD")) return [];
    }
  } catch { /* no /dev/dri: software only */ }
  return ["backend=opengl"];
}

/** Returns the provider for `backend`. */
export function gpuProvider(backend: BackendName): Promise<GPUProvider> {
  if (backend === "deno") return Promise.resolve(denoGPU());
  if (backend === "dawn") return dawnGPU();
  throw new Error(`unknown backend "${backend}": expected one of ${BACKENDS.join(", ")}`);
}

/** Parses a backend name from a flag or environment value, with a clear error. */
export function parseBackend(
  name: string | undefined,
  fallback: BackendName = DEFAULT_BACKEND,
): BackendName {
  if (name === undefined || name === "") return fallback;
  if ((BACKENDS as readonly string[]).includes(name)) return name as BackendName;
  throw new Error(`unknown backend "${name}": expected one of ${BACKENDS.join(", ")}`);
}
