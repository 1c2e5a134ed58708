/// <reference lib="dom" />
/**
 * Driving the browser trainer (web/) in headless Chromium, for tests/browser_test.ts
 * and tests/browser_bench.ts: find (or install, scripts/chromium.sh) Chromium,
 * start `deno task serve` with its own permission set, launch Chromium with a
 * software WebGPU adapter, and run the page's form.
 * @module
 */

// A test-only dependency, pinned here: tests/deps_test.ts keeps npm pins of library code in deps.ts.
import puppeteer from "npm:puppeteer-core@25.16.0";
import type { RunState } from "../web/protocol.ts";

/** The repository root. */
export const root: URL = new URL("../", import.meta.url);
/** The repository root as a path. */
export const rootPath: string = decodeURIComponent(root.pathname);

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

/** A running `deno task serve`. */
export interface Served {
  /** The page's URL. */
  url: string;
  /** Stops the server. */
  close(): Promise<void>;
}

/** Starts `deno task serve --port 0` (its permission set) and waits for its URL. */
export async function serve(): Promise<Served> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-P=serve", "cli/serve.ts", "--port", "0"],
    cwd: rootPath,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const m = /serving the browser trainer at (http:\/\/\S+\/)/.exec(text);
      if (!m) continue;
      // Keep draining stdout so the server never blocks on a full pipe.
      (async () => {
        try {
          while (!(await reader.read()).done) { /* drain */ }
        } catch { /* closed */ }
      })();
      return {
        url: m[1],
        close: async () => {
          child.kill("SIGTERM");
          await child.status;
        },
      };
    }
  } finally {
    clearTimeout(timer);
  }
  await child.status;
  throw new Error(`deno task serve did not print its URL; it printed:\n${text}`);
}

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
 * saves one (a .png path) once `shotAt` steps are done and a sample has streamed.
 */
export async function trainOnPage(
  page: Page,
  run: FormRun,
  screenshot?: { path: string; shotAt: number },
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
  await page.click("#train");
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

/** Mean ms per step, the first (pipeline compilation) left out. */
export function steadyMs(s: RunState): number {
  const rest = s.msPerStep.slice(1);
  return rest.reduce((a, b) => a + b, 0) / Math.max(1, rest.length);
}
