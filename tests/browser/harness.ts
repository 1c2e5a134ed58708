/// <reference lib="dom" />
/**
 * Driving the browser trainer (web/) in headless Chromium, for tests/browser/browser_test.ts
 * and tests/browser/bench.ts: find (or install, scripts/chromium.sh) Chromium,
 * start `deno task serve` with its own permission set, launch Chromium with a
 * software WebGPU adapter, and run the page's form.
 * @module
 */

// A test-only dependency, pinned here and locked in tests/browser/deno.lock, apart from the
// root lockfile: Deno installs every npm package of a lockfile for any command, and a user's
// first `deno task train` would fetch a browser driver (tests/deps_test.ts keeps npm pins of
// library code in deps/).
import puppeteer from "npm:puppeteer-core@25.16.0";
import type { RunState } from "../../web/protocol.ts";
import { rootPath } from "../serve_helpers.ts";

export { root, rootPath, serve, type Served } from "../serve_helpers.ts";

/** The Chromium to drive, or null (with the reason printed, loudly) when there is none. */
export async function findChromium(): Promise<string | null> {
  const out = await new Deno.Command("bash", {
    args: ["scripts/chromium.sh"],
    cwd: rootPath,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const path = new TextDecoder().decode(out.stdout).trim();
  if (out.success && path) return path;
  console.error(
    "\n*** browser test SKIPPED: no Chromium, and none could be installed (see the setup line " +
      "above). Install Debian's chromium package or set CHROMIUM=/path/to/chrome. ***\n",
  );
  return null;
}

/**
 * Flags that give headless Chromium a WebGPU adapter on a machine without a GPU:
 * SwiftShader (Vulkan on the CPU). `--no-sandbox` because CI runs as root.
 */
export const CHROMIUM_WEBGPU_FLAGS: readonly string[] = [
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-angle=swiftshader",
  "--use-webgpu-adapter=swiftshader",
  "--disable-dev-shm-usage",
];

/** Launches headless Chromium with a software WebGPU adapter. */
export function launch(executablePath: string) {
  return puppeteer.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_WEBGPU_FLAGS],
    protocolTimeout: 900_000,
  });
}

/** A page of the launched browser. */
export type Page = Awaited<ReturnType<Awaited<ReturnType<typeof launch>>["newPage"]>>;

/** What the page exposes as `globalThis.megatron` (web/app.ts). */
export type { RunState };

/** A run as the form sets it. */
export interface FormRun {
  size: "tiny" | "small" | "medium";
  tp: 1 | 2;
  steps: number;
  lr: number;
  sampleEvery: number;
}

/** Reads `globalThis.megatron`. */
export async function pageState(page: Page): Promise<RunState> {
  return await page.evaluate(() =>
    JSON.parse(JSON.stringify((globalThis as unknown as { megatron: RunState }).megatron))
  ) as RunState;
}

/**
 * Fills the form, presses Train and waits until the run ends; with `screenshot`,
 * saves one (a .png path) once `shotAt` steps are done and a sample has streamed;
 * `afterPress` looks at the page right after Train is pressed.
 */
export async function trainOnPage(
  page: Page,
  run: FormRun,
  screenshot?: { path: string; shotAt: number },
  afterPress?: () => Promise<void>,
): Promise<RunState> {
  await page.select("#size", run.size);
  await page.select("#tp", String(run.tp));
  const values: [string, string][] = [
    ["steps", String(run.steps)],
    ["lr", String(run.lr)],
    ["sampleEvery", String(run.sampleEvery)],
  ];
  for (const [id, v] of values) {
    await page.$eval(`#${id}`, (e, v) => ((e as HTMLInputElement).value = v as string), v);
  }
  await pageChecked(page);
  await page.click("#train");
  await afterPress?.();
  if (screenshot) {
    await page.waitForFunction(
      (n: number) => {
        const m = (globalThis as unknown as { megatron: RunState }).megatron;
        return m.error !== null || (m.losses.length >= n && m.samples.length > 0);
      },
      { timeout: 900_000, polling: 100 },
      screenshot.shotAt,
    );
    await page.screenshot({ path: screenshot.path as `${string}.png` });
  }
  await page.waitForFunction(
    () => {
      const m = (globalThis as unknown as { megatron: RunState }).megatron;
      return m.done || m.error !== null;
    },
    { timeout: 900_000, polling: 200 },
  );
  return await pageState(page);
}

/**
 * Waits until the page has checked for a WebGPU adapter (web/app.ts marks the
 * form): Train is enabled, or the no-WebGPU message shown.
 */
export async function pageChecked(page: Page): Promise<void> {
  await page.waitForFunction(
    () => (document.querySelector("#form") as HTMLElement | null)?.dataset.checked === "yes",
    { timeout: 60_000, polling: 50 },
  );
}

/** Mean ms per step, the first (pipeline compilation) left out. */
export function steadyMs(s: RunState): number {
  const rest = s.msPerStep.slice(1);
  return rest.reduce((a, b) => a + b, 0) / Math.max(1, rest.length);
}
