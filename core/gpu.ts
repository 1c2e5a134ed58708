/**
 * WebGPU backends: Deno's built-in WebGPU (wgpu), Dawn through npm `webgpu`, and
 * a web browser's own `navigator.gpu` (page or Worker). All expose the standard
 * `GPU` interface; the rest of core takes that object and never reaches for
 * `navigator.gpu` itself. In a browser every backend name resolves to
 * `navigator.gpu`, and nothing Deno- or npm-specific is loaded (Dawn is a
 * dynamic import, made only when asked for outside a browser).
 * @module
 */

import { importDawn } from "../deps/dawn.ts";
import { pinLibrary, pinLoadedBy } from "./native_libraries.ts";
import { preferWideVectors } from "./simd.ts";
import { mayRead, mayUseEnv, readEnv } from "./env.ts";

/** The WebGPU implementations this project can run on. */
export type BackendName = "deno" | "dawn" | "browser";

/** All backends selectable on the command line (a browser has only its own, `"browser"`). */
export const BACKENDS: readonly BackendName[] = ["deno", "dawn"];

/**
 * The backend used when none is named: Dawn, by measurement (README, "Backends"):
 * its host syncs cost ~0.02 ms against Deno's ≥ 11 ms poll loop, reads back
 * faster, and its matmul and training steps ran faster in the same runs.
 */
export const DEFAULT_BACKEND: BackendName = "dawn";

/**
 * The environment variable that names the backend where nothing else does: the
 * tests and benches read it, and the commands take it as `--backend`'s default.
 */
export const BACKEND_ENV = "WEBGPU_BACKEND";

/**
 * The backend for `ranksInProcess` training devices in one process when the
 * user names none. Several devices in one process: Deno's WebGPU, whose devices
 * run independently (measured 90% weak-scaling efficiency for 2 ranks on 2
 * cores), while Dawn's GL path serialises devices that share a process (47%).
 * One device: {@link DEFAULT_BACKEND}. (`eval` and `generate`, which sync at
 * every collective, keep {@link DEFAULT_BACKEND} for their Workers too.)
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
  /**
   * Per-thread bookkeeping for devices of this provider: `opened` after a device is
   * made, `closed` once it is lost after {@link Device.close}. Dawn on GL uses it
   * to release the thread's EGL state when the thread's last device closes (see
   * `eglThreadHooks`).
   */
  readonly threadHooks?: { opened(): void; closed(): Promise<void> };
}

/**
 * Thrown for a backend name that is not one of {@link BACKENDS} (a flag's or
 * the tests' and benches' `WEBGPU_BACKEND`): the command line reports it as a usage error.
 */
export class UnknownBackendError extends Error {
  /** The error for `name`. */
  constructor(readonly backendName: string) {
    super(`unknown backend "${backendName}": expected one of ${BACKENDS.join(", ")}`);
    this.name = "UnknownBackendError";
  }
}

/** Thrown when a backend cannot give an adapter; the message says how to get one. */
export class NoAdapterError extends Error {
  /**
   * Creates the error for `backend`, with `detail` saying what happened; with
   * `installHint` false (the adapters exist, none matched what was asked) the
   * message is that one line, without how to install a driver.
   */
  constructor(readonly backend: BackendName, detail: string, installHint = true) {
    super(
      `No WebGPU adapter from the ${backend} backend (${detail}).` +
        (!installHint ? "" : "\n") +
        (!installHint || backend === "browser"
          ? ""
          : backend === "deno"
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

/**
 * Environment variable that lets Deno's WebGPU use wgpu's OpenGL backend (`=1`).
 * By default only its Vulkan, Metal and DX12 backends are used: see
 * {@link UnsupportedAdapterError}.
 */
export const DENO_ALLOW_GL_ENV = "WEBGPU_DENO_ALLOW_GL";

/**
 * The wgpu backends Deno's WebGPU is restricted to (through wgpu's
 * `DENO_WEBGPU_BACKEND`, read at a thread's first `requestAdapter()`).
 */
export const DENO_NATIVE_BACKENDS = "vulkan,metal,dx12";

/**
 * Thrown when Deno's WebGPU finds only wgpu's OpenGL fallback. On a machine with
 * Mesa's EGL but no Vulkan driver that is llvmpipe through GL, where
 * barrier-heavy kernels crawl: one tiled-matmul test ran over 18 minutes there
 * against under 4 on Mesa's Vulkan driver (lavapipe) on the same CPU.
 */
export class UnsupportedAdapterError extends NoAdapterError {
  /** Creates the error; `adapter` names what was found. */
  constructor(readonly adapter: string) {
    super("deno", "only wgpu's OpenGL fallback");
    this.message = `Deno's WebGPU found only wgpu's OpenGL fallback (${adapter}), which is ` +
      "refused: barrier-heavy kernels crawl there (a tiled-matmul test ran over 18 minutes " +
      "against under 4 on Mesa's Vulkan driver). Fix: sudo apt-get install -y " +
      `mesa-vulkan-drivers (bash scripts/deno.sh does it), or set ${DENO_ALLOW_GL_ENV}=1 to ` +
      "use it anyway.";
    this.name = "UnsupportedAdapterError";
  }
}

/**
 * Restricts Deno's WebGPU to its native backends unless the user chose
 * otherwise (DENO_WEBGPU_BACKEND set, or {@link DENO_ALLOW_GL_ENV}=1). Returns
 * whether the restriction is this module's (then a missing adapter is explained).
 */
function restrictDenoBackends(): boolean {
  const allow = readEnv(DENO_ALLOW_GL_ENV);
  const chosen = readEnv("DENO_WEBGPU_BACKEND");
  if (allow === "1" || allow === "true") {
    // Our own restriction, inherited from a parent process, must not stand.
    if (chosen === DENO_NATIVE_BACKENDS || chosen === "") {
      try {
        Deno.env.delete("DENO_WEBGPU_BACKEND");
      } catch { /* no --allow-env */ }
    }
    return false;
  }
  if (chosen !== undefined && chosen !== "") return chosen === DENO_NATIVE_BACKENDS;
  // Not allowed to set it (a program run with no permissions): wgpu picks its backends.
  if (!mayUseEnv("DENO_WEBGPU_BACKEND")) return false;
  try {
    Deno.env.set("DENO_WEBGPU_BACKEND", DENO_NATIVE_BACKENDS);
    return true;
  } catch {
    return false; // no --allow-env: wgpu chooses
  }
}

/**
 * The adapter wgpu's OpenGL backend offers here, probed in a subprocess (wgpu
 * reads its backends once per thread): its description, "" for none, or
 * undefined when it cannot be probed (no --allow-run).
 */
async function glFallbackAdapter(): Promise<string | undefined> {
  try {
    const code = "const a = await navigator.gpu.requestAdapter();" +
      'console.log(a ? a.info.description || "an unnamed adapter" : "")';
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", "--unstable-webgpu", code],
      env: { DENO_WEBGPU_BACKEND: "gl" },
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(30_000),
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Returns the `GPU` object of Deno's built-in WebGPU, or throws with advice.
 * Unless {@link DENO_ALLOW_GL_ENV}=1 (or DENO_WEBGPU_BACKEND is set), wgpu may
 * use only Vulkan, Metal or DX12; where it finds none, `requestAdapter()`
 * rejects with an {@link UnsupportedAdapterError} if wgpu's OpenGL fallback is
 * what it would have used, else with a {@link NoAdapterError}. The restriction
 * applies when it is set before the thread's first `requestAdapter()`.
 */
export function denoGPU(): GPUProvider {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw new NoAdapterError(
      "deno",
      'navigator.gpu is undefined: run with --unstable-webgpu or add "unstable": ["webgpu"] to deno.json',
    );
  }
  const adapterOptions: GPURequestAdapterOptions = { powerPreference: "high-performance" };
  const restricted = restrictDenoBackends();
  if (!restricted) pinLibEGL(); // wgpu may take its OpenGL backend
  const wrapped = {
    async requestAdapter(options?: GPURequestAdapterOptions): Promise<GPUAdapter | null> {
      const adapter = await requestAdapterPinningDrivers(gpu, options);
      if (adapter || !restricted) return adapter;
      const gl = await glFallbackAdapter();
      if (gl) throw new UnsupportedAdapterError(gl);
      throw new NoAdapterError(
        "deno",
        "no Vulkan, Metal or DX12 adapter" +
          (gl === "" ? ", nor an OpenGL one" : `; ${DENO_ALLOW_GL_ENV}=1 would allow OpenGL`),
      );
    },
    getPreferredCanvasFormat: () => gpu.getPreferredCanvasFormat(),
    wgslLanguageFeatures: wgslLanguageFeatures(gpu),
  };
  return { backend: "deno", gpu: wrapped as unknown as GPU, adapterOptions };
}

/** The WGSL language features `gpu` lists (standard; Deno's `GPU` type does not declare the set yet). */
export function wgslLanguageFeatures(gpu: GPU): ReadonlySet<string> | undefined {
  return (gpu as { wgslLanguageFeatures?: ReadonlySet<string> }).wgslLanguageFeatures;
}

/** Whether this thread's wgpu instance exists yet (module state is per isolate). */
let denoInstanceMade = false;

/**
 * `gpu.requestAdapter`; the first call on a thread, which makes that thread's
 * wgpu instance and so loads the Vulkan loader, its drivers and layers, keeps
 * all of them loaded for the life of the process.
 *
 * Why: when a thread ends, wgpu drops its instance, and the Vulkan loader then
 * unloads every driver (`dlclose` in `vkDestroyInstance`), running their
 * destructors on that thread. A Worker that ends while the main thread is in
 * `exit()` (a multi-rank run finishing, `deno test` finishing a file) runs them
 * alongside exit's own: 4 of 150 runs of four Workers with a Deno WebGPU device
 * each, terminated just before `Deno.exit`, died so (SIGSEGV in `__cxa_finalize`
 * under `vkDestroyInstance`; glibc heap aborts) and 0 of 450 with the drivers
 * pinned (README, Platform notes; `tests/driver_pin_test.ts`).
 */
async function requestAdapterPinningDrivers(
  gpu: GPU,
  options?: GPURequestAdapterOptions,
): Promise<GPUAdapter | null> {
  if (denoInstanceMade) return gpu.requestAdapter(options);
  denoInstanceMade = true;
  return await pinLoadedBy(() => gpu.requestAdapter(options));
}

let eglPinned = false;

/** Dawn GL devices open on this thread: module state is per isolate, so per thread. */
let eglDevicesOpen = 0;

/**
 * Releases this thread's EGL state once its last Dawn GL device is closed.
 *
 * Why: glvnd's libEGL frees a thread's EGL state in two places, that thread's
 * exit destructor and, at process exit, its own library destructor, which frees
 * every thread's state. A thread that ends while the main thread is exiting
 * runs both at once, and the process aborts with "double free or corruption"
 * after all its work is done. `deno test` runs each test file on a pool thread
 * that ends just as the process exits: 2 of 450 runs of one GPU test file
 * aborted so here, and a CI run failed on it (core dump: that thread in
 * libEGL's key destructor, the main thread in `exit`).
 *
 * A thread with no EGL state runs neither. But Dawn destroys its GL context
 * (an EGL call, which makes the state again) only when the last JS object of
 * the device is finalized, else at the isolate's teardown, too late to undo.
 * So, once the Device has dropped its objects ({@link Device.close}), this runs
 * a full garbage collection (Dawn's finalizers then destroy the context now)
 * and then `eglReleaseThread`. Objects the caller still holds (a tensor of the
 * closed device) keep the context until teardown, and with it the hazard.
 * Best effort: needs --allow-ffi (Dawn does too) and libEGL.so.1.
 */
const eglThreadHooks = {
  opened(): void {
    eglDevicesOpen++;
  },
  async closed(): Promise<void> {
    if (eglDevicesOpen === 0 || --eglDevicesOpen > 0) return;
    await collectGarbage();
    releaseEglThread();
  },
};

let fullGc: (() => void) | null | undefined;

/** A full V8 collection, and a turn of the event loop for finalizers (best effort). */
async function collectGarbage(): Promise<void> {
  if (fullGc === undefined) {
    try {
      const v8 = await import("node:v8");
      const vm = await import("node:vm");
      // Exposed only to the one context made here; later contexts get no `gc`.
      v8.setFlagsFromString("--expose-gc");
      fullGc = vm.runInNewContext("gc") as () => void;
      v8.setFlagsFromString("--no-expose-gc");
    } catch {
      fullGc = null;
    }
  }
  if (!fullGc) return;
  for (let i = 0; i < 3; i++) {
    fullGc();
    await new Promise((r) => setTimeout(r, 0));
  }
}

function releaseEglThread(): void {
  try {
    const egl = Deno.dlopen("libEGL.so.1", {
      eglReleaseThread: { parameters: [], result: "u32" },
    });
    egl.symbols.eglReleaseThread();
    egl.close();
  } catch { /* no ffi permission or no libEGL: nothing to release */ }
}

/**
 * Keeps glvnd's libEGL loaded for the life of the process. Dawn (and wgpu's GL
 * backend) load it for a GL device and unload it when their instance goes away,
 * but it keeps per-thread state with a destructor: a thread that used EGL (a
 * Worker, a test file's isolate) then crashes when it exits (SIGSEGV in
 * `__nptl_deallocate_tsd`, seen in about two of three parallel test runs here).
 * Loading it once more with RTLD_NODELETE keeps it mapped. Linux/glibc only;
 * best effort (needs --allow-ffi, else nothing is done).
 */
function pinLibEGL(): void {
  if (eglPinned) return;
  eglPinned = true;
  pinLibrary(["libEGL.so.1", "libEGL.so"]);
}

/**
 * Loads Dawn's node bindings (npm `webgpu`). With no display and no native GPU
 * driver, Dawn runs on Mesa's GL in compatibility mode; `options` are Dawn toggles
 * such as `backend=vulkan` or `adapter=NAME` (a substring of the adapter name).
 */
export async function dawnGPU(options?: string[]): Promise<GPUProvider> {
  await preferWideVectors(); // before Dawn loads Mesa
  let mod: { create: (opts: string[]) => GPU; globals: Record<string, unknown> };
  try {
    mod = await importDawn() as unknown as typeof mod;
  } catch (e) {
    // A permission refused (no --allow-ffi) is not a missing driver: no install hint then.
    const denied = e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
    throw new NoAdapterError(
      "dawn",
      `npm:webgpu failed to load: ${(e as Error).message}`,
      !denied,
    );
  }
  // Dawn's enums and classes (GPUBufferUsage …) must exist as globals for code
  // that runs on both backends; Deno already defines them, so fill only gaps.
  for (const [k, v] of Object.entries(mod.globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  const envBackend = Deno.env.get("WEBGPU_DAWN_BACKEND");
  const base = envBackend ? [`backend=${envBackend}`] : defaultDawnOptions();
  // Options that name no backend (e.g. `adapter=NAME`, from --devices) keep the default one.
  const chosen = !options
    ? base
    : options.some((o) => o.startsWith("backend="))
    ? options
    : [...base, ...options];
  // Dawn's Vulkan backend hides shader-f16 on NVIDIA unless asked (harmless elsewhere:
  // the toggle applies only there, and an adapter that ignores it is unchanged).
  const opts = chosen.some((o) => o.startsWith("enable-dawn-features="))
    ? chosen
    : [...chosen, `enable-dawn-features=${DAWN_F16_ON_NVIDIA}`];
  if (opts.some((o) => o === "backend=opengl") && !Deno.env.get("EGL_PLATFORM")) {
    Deno.env.set("EGL_PLATFORM", "surfaceless");
  }
  if (opts.some((o) => o === "backend=opengl" || o === "backend=opengles")) pinLibEGL();
  const gpu = mod.create(opts);
  const compat = opts.some((o) => o === "backend=opengl" || o === "backend=opengles");
  return {
    backend: "dawn",
    gpu,
    keepAlive: gpu,
    ...(compat && Deno.build.os === "linux" ? { threadHooks: eglThreadHooks } : {}),
    adapterOptions: compat
      ? { featureLevel: "compatibility" } as GPURequestAdapterOptions
      : { powerPreference: "high-performance" },
  };
}

/** The Dawn toggle that lets its Vulkan backend offer `shader-f16` on NVIDIA GPUs. */
const DAWN_F16_ON_NVIDIA = "vulkan_enable_f16_on_nvidia";

function defaultDawnOptions(): string[] {
  // On Linux without a hardware Vulkan driver, Dawn's Vulkan backend rejects
  // lavapipe; Mesa's GL (llvmpipe) works. Prefer Vulkan when a real GPU exists.
  if (Deno.build.os !== "linux") return [];
  // Not allowed to look (the README's --allow-read=/dev/dri not given): taken for no GPU, as on
  // the software-only machines this runs on most, without a prompt.
  if (!mayRead("/dev/dri")) return ["backend=opengl"];
  try {
    for (const e of Deno.readDirSync("/dev/dri")) {
      if (e.name.startsWith("renderD")) return [];
    }
  } catch { /* no /dev/dri: software only */ }
  return ["backend=opengl"];
}

/** True in a web browser (a page or a Worker): no `Deno` global, a `navigator`. */
export function inBrowser(): boolean {
  return !("Deno" in globalThis) && typeof globalThis.navigator !== "undefined";
}

/**
 * The browser's own WebGPU (`navigator.gpu`, in a page or a Worker), or a
 * {@link NoAdapterError} saying how to enable it.
 */
export function browserGPU(): GPUProvider {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw new NoAdapterError(
      "browser",
      "navigator.gpu is undefined: this browser has no WebGPU, or it is turned off. Chrome and " +
        "Edge 113+ have it on secure origins (https or localhost); on Linux start Chrome with " +
        "--enable-unsafe-webgpu --enable-features=Vulkan, or enable chrome://flags/#enable-unsafe-webgpu; " +
        "Firefox 141+ and Safari 26+ have it too",
    );
  }
  return { backend: "browser", gpu, adapterOptions: { powerPreference: "high-performance" } };
}

/**
 * Returns the provider for `backend`. In a browser every name gives the
 * browser's own WebGPU ({@link browserGPU}): it is the only one there. Outside
 * one it first lets Mesa's CPU adapters use 512-bit vectors where the CPU has
 * AVX-512, unless the process chose a width for its model already
 * (core/simd.ts's `preferWideVectors`; `LP_NATIVE_VECTOR_WIDTH=256` keeps
 * Mesa's default).
 */
export async function gpuProvider(backend: BackendName): Promise<GPUProvider> {
  if (backend === "browser" || inBrowser()) return browserGPU();
  if (backend !== "deno" && backend !== "dawn") throw new UnknownBackendError(backend);
  if (backend === "dawn") return await dawnGPU();
  await preferWideVectors();
  return denoGPU();
}

/** Parses a backend name from a flag or environment value, with a clear error. */
export function parseBackend(
  name: string | undefined,
  fallback: BackendName = DEFAULT_BACKEND,
): BackendName {
  if (name === undefined || name === "") return fallback;
  if ((BACKENDS as readonly string[]).includes(name)) return name as BackendName;
  throw new UnknownBackendError(name);
}
