/**
 * The EGL thread-exit race (core/gpu.ts, `eglThreadHooks`), checked without
 * waiting for it to strike. glvnd's libEGL frees a thread's EGL state in that
 * thread's exit destructor and again, for every thread, in its own destructor at
 * process exit; a `deno test` file's thread ends as the process exits, and 2 of
 * 450 runs of one GPU test file aborted with heap corruption after passing.
 * A thread that holds no EGL state when it ends cannot race.
 *
 * tests/egl/exit_probe.c (compiled here with the system's C compiler, loaded
 * with LD_PRELOAD) counts, per thread, the values of libEGL's and
 * libGLdispatch's thread keys, and reports at process exit how many other
 * threads still hold (and any thread that ended holding one): deterministic,
 * whichever thread wins the race. tests/egl/thread_child.ts does GPU work with
 * Dawn on its test thread; with the device closed (as tests/helpers.ts and the
 * CLI's Workers do) nothing may be held, and without the close something must
 * be (the control: the probe sees the state when it is there). Skipped, saying
 * why, without a C compiler, off Linux, or where Dawn makes no EGL keys (a GPU
 * with Vulkan).
 */

import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { withTimeLimit } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

/** What the probe saw in one child run. */
interface ProbeReport {
  /** EGL pthread keys created (0: Dawn did not use EGL). */
  keys: number;
  /** EGL key values other threads held when the process exited. */
  heldAtExit: number;
  /** Threads that ended holding an EGL key value. */
  endedHolding: number;
}

function probeReport(text: string): ProbeReport {
  const exit = text.match(/egl-exit-probe: at exit: (\d+) EGL keys, (\d+) values held/);
  if (!exit) throw new Error(`the probe did not report (was LD_PRELOAD ignored?):\n${text}`);
  return {
    keys: Number(exit[1]),
    heldAtExit: Number(exit[2]),
    endedHolding: text.split("\n").filter((l) => l.includes("destructor ran at thread exit"))
      .length,
  };
}

function compilerAvailable(): boolean {
  try {
    return new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/**
 * Runs the child under the probe. Without the close the race itself may strike
 * (it did here, under load: "double free or corruption", SIGABRT); with it the
 * child must exit 0.
 */
async function runChild(probe: string, close: boolean): Promise<ProbeReport> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "tests/egl/thread_child.ts"],
    env: { LD_PRELOAD: probe, EGL_PROBE_CLOSE: close ? "1" : "0", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const text = dec.decode(out.stdout) + dec.decode(out.stderr);
  if (close || out.signal !== "SIGABRT") strictEqual(out.code, 0, text);
  return probeReport(text);
}

Deno.test(
  "a closed Dawn GL device leaves its thread no EGL state to free at exit",
  withTimeLimit(180),
  async () => {
    if (Deno.build.os !== "linux" || !compilerAvailable()) {
      console.log("skipped: needs Linux and a C compiler (cc) for the LD_PRELOAD probe");
      return;
    }
    await using temp = await tempDir({ prefix: "egl_probe_" });
    const dir = temp.path;
    const probe = `${dir}/exit_probe.so`;
    const cc = await new Deno.Command("cc", {
      args: ["-shared", "-fPIC", "-O2", "-o", probe, "tests/egl/exit_probe.c", "-ldl"],
    }).output();
    ok(cc.success, `cc failed: ${new TextDecoder().decode(cc.stderr)}`);

    const control = await runChild(probe, false);
    if (control.keys === 0) {
      console.log("skipped: Dawn made no EGL state here (not on GL), nothing to release");
      return;
    }
    // The control: without the close, the test thread's EGL state outlives it.
    ok(
      control.heldAtExit + control.endedHolding > 0,
      `the probe saw no EGL state without a close: ${JSON.stringify(control)}`,
    );
    const closed = await runChild(probe, true);
    deepStrictEqual(
      { heldAtExit: closed.heldAtExit, endedHolding: closed.endedHolding },
      { heldAtExit: 0, endedHolding: 0 },
      "a thread held EGL state at exit after its device was closed",
    );
  },
);

/**
 * Test files that open a Device of their own and are not in this list must
 * close it (`await device.close()`), not only destroy it: a Dawn GL device
 * left to the process's exit is the race above (tests/kept_textures_test.ts
 * aborted a CI run that way after its three tests passed, exit 134).
 */
const NO_CLOSE_NEEDED: Record<string, string> = {
  "tests/checkpoint_crash_test.ts": "its child process is killed mid-write on purpose",
  "tests/errors_test.ts": "its devices fail to open",
  "tests/collectives_gpu_worker.ts": "Deno's WebGPU (wgpu on Vulkan): no EGL state",
};

Deno.test("every test file that opens a Device of its own closes it", async () => {
  const missing: string[] = [];
  for await (const e of Deno.readDir(new URL("./", import.meta.url))) {
    if (!e.isFile || !e.name.endsWith(".ts")) continue;
    const path = `tests/${e.name}`;
    const text = await Deno.readTextFile(new URL(e.name, import.meta.url));
    if (!text.includes("Device.create(") || path in NO_CLOSE_NEEDED) continue;
    if (!/\.close\(\)/.test(text)) missing.push(path);
  }
  deepStrictEqual(missing, [], "these open a Device and never close one");
});
