/**
 * What the command line asks about processes on this host: its name, whether a
 * pid exists, and when a process started. The save lock (cli/save_lock.ts) and
 * export-hf's staging sweep (cli/export_hf.ts) decide with them whether what a
 * process left behind is still in use.
 * @module
 */

/** This host's name, or null where the sys permission does not allow asking (no prompt). */
export function hostName(): string | null {
  return Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state === "granted"
    ? Deno.hostname()
    : null;
}

/**
 * Whether process `pid` exists on this host: glibc's `kill(pid, 0)` through FFI
 * (0: it does; EPERM: it does, another user's; ESRCH: it does not). Null where
 * glibc cannot be loaded. (Deno reads `/proc` only with every permission.)
 */
export function processExists(pid: number): boolean | null {
  let libc;
  try {
    libc = Deno.dlopen("libc.so.6", {
      kill: { parameters: ["i32", "i32"], result: "i32" },
      __errno_location: { parameters: [], result: "pointer" },
    });
  } catch {
    return null;
  }
  try {
    if (libc.symbols.kill(pid, 0) === 0) return true;
    const at = libc.symbols.__errno_location();
    return at !== null && new Deno.UnsafePointerView(at).getInt32() === EPERM;
  } finally {
    libc.close();
  }
}

/** errno: the process exists but may not be signalled. */
const EPERM = 1;

/**
 * When process `pid` started (ms since the epoch), from `ps -o etimes=`; null
 * where `ps` may not run, is missing, or knows no such process. A process that
 * started within the clock tick `ps` reads the uptime in has a negative elapsed
 * time, which procps prints wrapped (4123168608 with procps-ng 4.0.2, in about
 * one call of seven right after a spawn): more seconds than have passed since
 * 1970 mean it started now.
 */
export async function processStartMs(pid: number): Promise<number | null> {
  if (Deno.permissions.querySync({ name: "run", command: "ps" }).state !== "granted") return null;
  try {
    const o = await new Deno.Command("ps", {
      args: ["-o", "etimes=", "-p", String(pid)],
      stdout: "piped",
      stderr: "null",
    }).output();
    const seconds = Number(new TextDecoder().decode(o.stdout).trim());
    if (!o.success || !Number.isFinite(seconds)) return null;
    const now = Date.now();
    return seconds * 1000 > now ? now : now - seconds * 1000;
  } catch {
    return null;
  }
}
