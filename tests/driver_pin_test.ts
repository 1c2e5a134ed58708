/**
 * Deno's WebGPU drivers stay loaded after a Worker's instance is gone
 * (core/gpu.ts, `requestAdapterPinningDrivers`). When a thread ends, wgpu drops
 * its instance and the Vulkan loader unloads every driver, running their
 * destructors on that thread; a Worker ending while the main thread is in
 * `exit()` ran them alongside exit's own and crashed the process after its work
 * was done (4 of 150 runs of four Workers terminated before `Deno.exit`). A
 * pinned driver is never unloaded, so its destructors run once, at exit.
 *
 * Checked without waiting for the race: tests/driver_pin/child.ts opens a
 * device in a Worker through `navigator.gpu` (the control: its drivers must be
 * unloaded once the Worker is gone, which shows the check can see an unload)
 * and then through the project's `Device`, whose drivers must all stay loaded.
 * Skipped, saying why, off Linux or where Deno's WebGPU has no adapter.
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { DENO_NATIVE_BACKENDS } from "../core/gpu.ts";
import { withTimeLimit } from "./helpers.ts";

Deno.test(
  "Deno's WebGPU drivers stay loaded after the Worker that loaded them ends",
  withTimeLimit(120),
  async () => {
    if (Deno.build.os !== "linux") {
      console.log("skipped: the unload race and its fix are glibc's");
      return;
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-env",
        "--allow-ffi",
        "--unstable-webgpu",
        "tests/driver_pin/child.ts",
      ],
      env: { DENO_WEBGPU_BACKEND: DENO_NATIVE_BACKENDS, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    const stderr = dec.decode(out.stderr);
    if (!out.success && /No WebGPU adapter|requestDevice|null/.test(stderr)) {
      console.log(`skipped: Deno's WebGPU has no adapter here:\n${stderr}`);
      return;
    }
    ok(out.success, `child failed (${out.code}):\n${stderr}`);
    const report = JSON.parse(dec.decode(out.stdout).trim().split("\n").at(-1)!);
    ok(report.drivers.length > 0, `the Worker loaded no Vulkan library: ${JSON.stringify(report)}`);
    deepStrictEqual(
      report.controlLeft,
      [],
      `the control's drivers were not unloaded within 10 s, so this check could not ` +
        `see an unload: ${JSON.stringify(report)}`,
    );
    ok(report.pinnedLoaded.length > 0, "the project's Worker loaded nothing new");
    deepStrictEqual(
      report.pinnedUnloaded,
      [],
      `drivers unloaded after the project's Worker ended (waited ${report.controlMs} ms × 3)`,
    );
  },
);
