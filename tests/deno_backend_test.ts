/**
 * Deno's WebGPU uses only wgpu's Vulkan/Metal/DX12 backends: its OpenGL fallback
 * (what it takes on a machine with Mesa's EGL but no Vulkan driver) is refused
 * with one line naming the adapter, the reason and the fix, unless
 * WEBGPU_DENO_ALLOW_GL=1. Simulated here by hiding the Vulkan drivers from the
 * Vulkan loader (Linux; skipped where this machine has no OpenGL either).
 * @module
 */

import { doesNotMatch, match, strictEqual } from "node:assert/strict";

const INFO = new URL("../cli/info.ts", import.meta.url).pathname;

async function info(env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", INFO, "--backend", "deno", "--json"],
    env: {
      VK_ICD_FILENAMES: "/nonexistent",
      VK_DRIVER_FILES: "/nonexistent",
      // As a parent process that opened a device passes it on.
      DENO_WEBGPU_BACKEND: "vulkan,metal,dx12",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return { code: out.code, result: JSON.parse(text.trim().split("\n").at(-1)!) };
}

Deno.test({
  name: "deno backend: wgpu's OpenGL fallback is refused with the reason and the fix",
  ignore: Deno.build.os !== "linux",
  async fn(t) {
    const refused = await info({});
    strictEqual(refused.code, 1);
    const error = String(refused.result.error);
    if (/nor an OpenGL one/.test(error)) {
      console.log("no OpenGL adapter on this machine either: nothing to refuse");
      return;
    }
    match(error, /^Deno's WebGPU found only wgpu's OpenGL fallback \(.+\), which is refused/);
    match(error, /18 minutes/);
    match(error, /apt-get install -y mesa-vulkan-drivers/);
    match(error, /WEBGPU_DENO_ALLOW_GL=1/);
    doesNotMatch(error, /\n/); // one line
    await t.step("WEBGPU_DENO_ALLOW_GL=1 lets it through", async () => {
      const allowed = await info({ WEBGPU_DENO_ALLOW_GL: "1" });
      strictEqual(allowed.code, 0, JSON.stringify(allowed.result));
      strictEqual(allowed.result.backend, "deno");
    });
  },
});
