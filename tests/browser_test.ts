/// <reference lib="dom" />
/**
 * The browser trainer in real headless Chromium: `deno task serve` (run with its
 * own permission set) serves the page; puppeteer-core drives it. A tiny GPT
 * trains 20 steps at TP = 1 and at TP = 2 (two Workers, each with its own
 * GPUDevice, joined by the shared-memory collectives): the loss must fall, the
 * TP = 2 losses must equal TP = 1's to 1e-5 relative, and the page must log no
 * console error. A screenshot mid-training goes to docs/browser.png (set
 * BROWSER_SCREENSHOT=0 to leave it alone). The checkpoint the page offers (HF
 * GPT-2 files built in the page) is then evaluated by `deno task eval
 * --init-from-hf`, which must find the page's last validation loss.
 *
 * Chromium: Debian's `chromium` package, installed on first use by
 * scripts/chromium.sh (apt-get as root, saying so). Without one, and no way to
 * install it, the test is reported as ignored, with a line on stderr saying
 * why. Its WebGPU here is a software adapter (SwiftShader, Vulkan on the CPU).
 * Own time limit: 600 s (the run takes about a minute on the 2-core build box).
 * @module
 */

import assert from "node:assert/strict";
// A test-only dependency, pinned here: tests/deps_test.ts keeps npm pins of library code in deps.ts.
import puppeteer from "npm:puppeteer-core@25.16.0";
import { assertClose, withTimeLimit } from "./helpers.ts";

const root = new URL("../", import.meta.url);
const rootPath = decodeURIComponent(root.pathname);
const deno = Deno.execPath();

/** The Chromium to drive, or null (with the reason printed) when there is none. */
async function findChromium(): Promise<string | null> {
  const out = await new Deno.Command("bash", {
    args: ["scripts/chromium.sh"],
    cwd: rootPath,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const path = new TextDecoder().decode(out.stdout).trim();
  if (out.success && path) return path;
  console.error(
    "\n*** browser_test: SKIPPED: no Chromium and none could be installed (see the setup line " +
      "above). Install Debian's chromium package or set CHROMIUM=/path/to/chrome. ***\n",
  );
  return null;
}

const chromium = await findChromium();

/** Flags that give headless Chromium a WebGPU adapter on a machine without a GPU. */
export const CHROMIUM_WEBGPU_FLAGS = [
  "--no-sandbox", // the test may run as root (CI containers)
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-angle=swiftshader",
  "--use-webgpu-adapter=swiftshader",
  "--disable-dev-shm-usage",
];

interface Served {
  url: string;
  close(): Promise<void>;
}

/** Starts `deno task serve --port 0` (its permission set) and waits for its URL. */
async function serve(): Promise<Served> {
  const child = new Deno.Command(deno, {
    args: ["run", "-q", "-P=serve", "cli/serve.ts", "--port", "0"],
    cwd: rootPath,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    const m = /serving the browser trainer at (http:\/\/\S+\/)/.exec(text);
    if (m) {
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
  }
  child.kill("SIGKILL");
  await child.status;
  throw new Error(`deno task serve did not print its URL; it printed:\n${text}`);
}

interface RunState {
  adapter: string;
  losses: number[];
  val: { step: number; loss: number }[];
  msPerStep: number[];
  firstStepAt: number;
  trainPressedAt: number;
  samples: string[];
  done: boolean;
  error: string | null;
}

Deno.test({
  name: "browser: the page trains a tiny GPT at TP=1 and TP=2 in headless Chromium",
  ignore: chromium === null,
  timeout: withTimeLimit(600).timeout,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = await serve();
    const browser = await puppeteer.launch({
      executablePath: chromium!,
      headless: true,
      args: CHROMIUM_WEBGPU_FLAGS,
      protocolTimeout: 600_000,
    });
    const errors: string[] = [];
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1000, height: 900 });
      page.on("console", (m) => {
        if (m.type() === "error") errors.push(`console: ${m.text()}`);
      });
      page.on("pageerror", (e) => errors.push(`page error: ${(e as Error).message ?? e}`));
      page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
      page.on("response", (r) => {
        if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`);
      });
      await page.goto(server.url, { waitUntil: "load" });
      assert.equal(
        await page.evaluate(() => crossOriginIsolated),
        true,
        "not cross-origin isolated",
      );
      const noGpu = await page.$eval("#nogpu", (e) => (e as HTMLElement).innerText);
      assert.equal(noGpu, "", `the page found no WebGPU: ${noGpu}`);

      const run = async (tp: number, screenshot?: string): Promise<RunState> => {
        await page.select("#size", "tiny");
        await page.select("#tp", String(tp));
        for (const [id, v] of [["steps", "20"], ["lr", "0.003"], ["sampleEvery", "10"]]) {
          await page.$eval(`#${id}`, (e, v) => ((e as HTMLInputElement).value = v as string), v);
        }
        await page.click("#train");
        if (screenshot) {
          await page.waitForFunction(
            () => {
              const m = (globalThis as unknown as { megatron: RunState }).megatron;
              return m.error !== null || (m.losses.length >= 12 && m.samples.length > 0);
            },
            { timeout: 300_000, polling: 100 },
          );
          await page.screenshot({ path: screenshot as `${string}.png` });
        }
        await page.waitForFunction(
          () => {
            const m = (globalThis as unknown as { megatron: RunState }).megatron;
            return m.done || m.error !== null;
          },
          { timeout: 300_000, polling: 200 },
        );
        const s = await page.evaluate(() =>
          JSON.parse(JSON.stringify((globalThis as unknown as { megatron: RunState }).megatron))
        ) as RunState;
        assert.equal(s.error, null, `TP=${tp}: ${s.error}`);
        console.log(
          `TP=${tp}: ${s.adapter} | losses ${s.losses[0].toFixed(4)} → ${
            s.losses.at(-1)!.toFixed(4)
          } | validation ${s.val.map((v) => v.loss.toFixed(4)).join(", ")} | ` +
            `${
              (s.msPerStep.slice(1).reduce((a, b) => a + b, 0) / (s.msPerStep.length - 1)).toFixed(
                0,
              )
            } ms/step | ` +
            `first step ${(s.firstStepAt - s.trainPressedAt).toFixed(0)} ms after Train`,
        );
        return s;
      };

      const shot = Deno.env.get("BROWSER_SCREENSHOT") === "0"
        ? undefined
        : decodeURIComponent(new URL("docs/browser.png", root).pathname);
      if (shot) await Deno.mkdir(new URL("docs/", root), { recursive: true });
      const one = await run(1);
      assert.equal(one.losses.length, 20);
      const head = one.losses.slice(0, 3).reduce((a, b) => a + b) / 3;
      const tail = one.losses.slice(-3).reduce((a, b) => a + b) / 3;
      assert.ok(tail < head - 0.5, `TP=1 loss did not fall: ${one.losses.join(", ")}`);
      assert.ok(one.val.length >= 2 && one.val.at(-1)!.loss < one.val[0].loss, "validation");
      assert.ok(one.samples.length >= 2 && one.samples[0].length > 8, "no sample streamed");

      const two = await run(2, shot);
      assert.equal(two.losses.length, 20);
      assertClose(two.losses, one.losses, { rtol: 1e-5, atol: 0, what: "TP=2 vs TP=1 losses" });
      assertClose(two.val.map((v) => v.loss), one.val.map((v) => v.loss), {
        rtol: 1e-5,
        atol: 0,
        what: "TP=2 vs TP=1 validation losses",
      });

      // The checkpoint the page offers loads in the CLI.
      const files = await page.evaluate(async () => {
        const out: Record<string, number[]> = {};
        for (const a of document.querySelectorAll<HTMLAnchorElement>("#downloads a")) {
          out[a.download] = Array.from(new Uint8Array(await (await fetch(a.href)).arrayBuffer()));
        }
        return out;
      });
      assert.deepEqual(Object.keys(files).sort(), ["config.json", "model.safetensors"]);
      const dir = await Deno.makeTempDir({ prefix: "browser_ckpt_" });
      try {
        for (const [name, bytes] of Object.entries(files)) {
          await Deno.writeFile(`${dir}/${name}`, Uint8Array.from(bytes));
        }
        const text = await Deno.readFile(new URL("data/assets/moby_dick.txt", root));
        await Deno.writeFile(`${dir}/text.txt`, text.subarray(0, 4096));
        const ev = await new Deno.Command(deno, {
          args: [
            "run",
            "-q",
            "-P=eval",
            "cli/eval.ts",
            "--init-from-hf",
            dir,
            "--data-path",
            `${dir}/text.txt`,
            "--json",
          ],
          cwd: rootPath,
          stdout: "piped",
          stderr: "piped",
        }).output();
        const out = new TextDecoder().decode(ev.stdout);
        assert.ok(ev.success, `eval failed: ${out}${new TextDecoder().decode(ev.stderr)}`);
        const result = JSON.parse(out.trim().split("\n").at(-1)!);
        console.log(`deno task eval --init-from-hf (page's checkpoint): ${JSON.stringify(result)}`);
        const loss = result.loss ?? result.lm_loss ?? result.val_loss;
        assert.ok(
          Number.isFinite(loss) && loss < two.losses[0] - 0.3,
          `the page's checkpoint evaluates to ${loss}, not a trained model`,
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      assert.deepEqual(errors, [], "the page logged errors");
    } finally {
      await browser.close();
      await server.close();
    }
  },
});
