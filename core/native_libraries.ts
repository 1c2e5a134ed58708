/**
 * Keeps the native libraries of a WebGPU stack loaded for the life of the
 * process (Linux/glibc; elsewhere, and without --allow-ffi, nothing is done).
 *
 * Why: a WebGPU instance unloads its drivers when it goes away, and a driver's
 * unload runs its destructors on the thread that drops the instance. A Worker's
 * or a test file's instance is dropped when its thread ends, which can be while
 * the main thread runs `exit()`: the two then run library destructors at once,
 * and the process dies after its work is done (SIGSEGV in `__cxa_finalize`, or
 * a glibc heap abort). A library also opened with `RTLD_NODELETE` is never
 * unloaded: its destructors run once, at exit, on the exiting thread.
 * @module
 */

const RTLD_LAZY = 0x1;
const RTLD_NOW = 0x2;
const RTLD_NOLOAD = 0x4;
const RTLD_NODELETE = 0x1000;

type Dlopen = (path: string, flags: number) => boolean;

/** Calls glibc's `dlopen` through FFI; undefined where that is not possible. */
function withDlopen<T>(use: (dlopen: Dlopen) => T): T | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
    const libc = Deno.dlopen("libc.so.6", {
      dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
    });
    try {
      const encoder = new TextEncoder();
      return use((path, flags) => libc.symbols.dlopen(encoder.encode(`${path}\0`), flags) !== null);
    } finally {
      libc.close();
    }
  } catch {
    return undefined; // not glibc
  }
}

/**
 * Loads the first of `names` that exists and keeps it loaded for good. Returns
 * whether one was.
 */
export function pinLibrary(names: readonly string[]): boolean {
  return withDlopen((dlopen) => names.some((name) => dlopen(name, RTLD_NOW | RTLD_NODELETE))) ??
    false;
}

/**
 * The shared objects the dynamic linker has loaded into this process now (their
 * paths, from glibc's `dl_iterate_phdr`), or undefined where they cannot be
 * listed (not glibc, or no --allow-ffi). Unlike `/proc/self/maps`, which Deno
 * opens only to --allow-all, this needs --allow-ffi alone.
 */
export function loadedLibraries(): Set<string> | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
    const libc = Deno.dlopen("libc.so.6", {
      dl_iterate_phdr: { parameters: ["function", "pointer"], result: "i32" },
    });
    const paths = new Set<string>();
    // struct dl_phdr_info { ElfW(Addr) dlpi_addr; const char *dlpi_name; ... }
    const visit = new Deno.UnsafeCallback(
      { parameters: ["pointer", "usize", "pointer"], result: "i32" },
      (info) => {
        const name = info && new Deno.UnsafePointerView(info).getPointer(8);
        if (name) {
          const path = Deno.UnsafePointerView.getCString(name);
          if (path.startsWith("/")) paths.add(path);
        }
        return 0;
      },
    );
    try {
      libc.symbols.dl_iterate_phdr(visit.pointer, null);
    } finally {
      visit.close();
      libc.close();
    }
    return paths;
  } catch {
    return undefined; // not glibc
  }
}

/**
 * Runs `load` (something that loads drivers, such as a first `requestAdapter()`)
 * and keeps every shared object it loaded loaded for good. Libraries loaded
 * before are left as they are: only what `load` brought in is pinned. Returns
 * `load`'s result.
 */
export async function pinLoadedBy<T>(load: () => Promise<T>): Promise<T> {
  const before = loadedLibraries();
  const result = await load();
  const after = before && loadedLibraries();
  if (after) {
    const added = [...after].filter((path) => !before.has(path));
    withDlopen((dlopen) => {
      for (const path of added) dlopen(path, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    });
  }
  return result;
}
