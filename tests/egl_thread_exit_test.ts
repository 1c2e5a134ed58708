/**
 * The EGL thread-exit race (core/gpu.ts, `eglThreadHooks`), checked without
 * waiting for it to strike. glvnd's libEGL frees a thread's EGL state in that
 * thread's exit destructor and again, for every thread, in its own destructor at
 * process exit; a `deno test` file's thread ends as the process exits, and one
 * run in 150–300 of a GPU test file aborted with heap corruption after passing.
 * A thread that holds no EGL state when it ends cannot race.
 *
 * tests/egl/exit_probe.c (compiled here with the system's C compiler, loaded
 * with LD_PRELOAD) prints a line whenever libEGL's or libGLdispatch's
 * thread-exit destructor runs. tests/egl/thread_child.ts does GPU work with Dawn
 * on its test thread; with the device closed (as tests/helpers.ts and the CLI's
 * Workers do) no such destructor may run, and without the close one must (the
 * control: the probe sees the state when it is there). Skipped, saying why,
 * without a C compiler, off Linux, or where Dawn does not use EGL (a GPU with
 * Vulkan): the control then sees nothing.
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { withTimeLimit } from "./helpers.ts";

const PROBE_LINE = "egl-exit-probe: EGL key destructor ran at thread exit";

function compilerAvailable(): boolean {
  try {
    return new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function runChild(probe: string, close: boolean): Promise<{ code: number; text: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "tests/egl/thread_child.ts"],
    env: { LD_PRELOAD: probe, EGL_PROBE_CLOSE: close ? "1" : "0", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test(
  "a closed Dawn GL device leaves its thread no EGL state to free at exit",
  withTimeLimit(180),
  async () => {
    if (Deno.build.os !== "linux" || !compilerAvailable()) {
      console.log("skipped: needs Linux and a C compiler (cc) for the LD_PRELOAD probe");
      return;
    }
    const dir = await Deno.makeTempDir({ prefix: "egl_probe_" });
    try {
      const probe = `${dir}/exit_probe.so`;
      const cc = await new Deno.Command("cc", {
        args: ["-shared", "-fPIC", "-O2", "-o", probe, "tests/egl/exit_probe.c", "-ldl"],
      }).output();
      ok(cc.success, `cc failed: ${new TextDecoder().decode(cc.stderr)}`);

      const control = await runChild(probe, false);
      strictEqual(control.code, 0, control.text);
      if (!control.text.includes(PROBE_LINE)) {
        console.log("skipped: Dawn holds no EGL state here (not on GL), nothing to release");
        return;
      }
      const closed = await runChild(probe, true);
      strictEqual(closed.code, 0, closed.text);
      const lines = closed.text.split("\n").filter((l) => l.includes(PROBE_LINE));
      deepStrictEqual(lines, [], "a thread ended holding EGL state after its device was closed");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
