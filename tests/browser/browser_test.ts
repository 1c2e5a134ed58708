/// <reference lib="dom" />
/**
 * The browser trainer in real headless Chromium: `deno task serve` (run with its
 * own permission set) serves the page; puppeteer-core drives it. A tiny GPT
 * trains 20 steps at TP = 1 and at TP = 2 (two Workers, each with its own
 * GPUDevice, joined by the shared-memory collectives): the loss must fall, the
 * TP = 2 losses must equal TP = 1's to 1e-5 relative, and the page must log no
 * console error. A screenshot mid-training goes to a temporary directory, or
 * to docs/browser.png with BROWSER_SCREENSHOT=1. The checkpoint the page offers (HF
 * GPT-2 files built in the page) is then evaluated by `deno task eval
 * --init-from-hf` on the page's validation windows, where it must find the
 * page's last validation loss (1e-4 relative: another adapter). A run pressed
 * Stop on (TP = 2) and a run at learning rate 0 (TP = 1) follow on the same
 * page, which must run them on the Workers and devices it kept.
 *
 * Chromium: Debian's `chromium` package, installed on first use by
 * scripts/chromium.sh (apt-get as root, saying so). Without one, and no way to
 * install it, the test is reported as ignored, with a line on stderr saying
 * why. Its WebGPU here is a software adapter (SwiftShader, Vulkan on the CPU).
 * A second test loads the page through a front that breaks one thing at a
 * time: the corpus request answered with an HTTP error, `worker.js` missing,
 * and (in the page) a `navigator.gpu` that offers no adapter; each must be
 * said on the page, and nothing trained.
 * Own time limit: 900 s (the runs took about 4 minutes on the 2-core build box in the
 * thirty-sixth session, SwiftShader compiling each new Worker's pipelines afresh;
 * about 1.5 minutes once the page kept its Workers).
 * Run with this folder's config and lockfile (`deno task test` does):
 * `deno test -A --config tests/browser/deno.json tests/browser/`.
 * @module
 */

import assert from "node:assert/strict";
import { ISOLATION_HEADERS } from "../../cli/serve.ts";
import {
  findChromium,
  launch,
  type Page,
  pageChecked,
  pageState,
  root,
  type RunState,
  serve,
  steadyMs,
  trainOnPage,
} from "./harness.ts";
import { assertClose, withTimeLimit } from "../helpers.ts";
import { tempDir } from "../temp_dir.ts";

const chromium = await findChromium();

Deno.test({
  name: "browser: the page trains a tiny GPT at TP=1 and TP=2 in headless Chromium",
  ignore: chromium === null,
  timeout: withTimeLimit(900).timeout,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = await serve();
    const browser = await launch(chromium!);
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
      await pageChecked(page);
      assert.equal(
        await page.evaluate(() => crossOriginIsolated),
        true,
        "not cross-origin isolated",
      );
      const noGpu = await page.$eval("#nogpu", (e) => (e as HTMLElement).innerText);
      assert.equal(noGpu, "", `the page found no WebGPU: ${noGpu}`);

      const run = async (tp: 1 | 2, shot?: string): Promise<RunState> => {
        const s = await trainOnPage(
          page,
          { size: "tiny", tp, steps: 20, lr: 0.003, sampleEvery: 10 },
          shot ? { path: shot, shotAt: 12 } : undefined,
        );
        assert.equal(s.error, null, `TP=${tp}: ${s.error}`);
        console.log(
          `TP=${tp}: ${s.adapter} | losses ${s.losses[0].toFixed(4)} → ${
            s.losses.at(-1)!.toFixed(4)
          } | validation ${s.val.map((v) => v.loss.toFixed(4)).join(", ")} | ` +
            `${steadyMs(s).toFixed(0)} ms/step | first step ` +
            `${(s.firstStepAt - s.trainPressedAt).toFixed(0)} ms after Train`,
        );
        return s;
      };

      // The tracked docs/browser.png is rewritten only when asked for; a run
      // (CI's too) otherwise screenshots into a temporary directory.
      const shot = Deno.env.get("BROWSER_SCREENSHOT") === "1"
        ? decodeURIComponent(new URL("docs/browser.png", root).pathname)
        : `${await Deno.makeTempDir({ prefix: "browser-shot-" })}/browser.png`;
      await Deno.mkdir(new URL("docs/", root), { recursive: true });
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
      await using temp = await tempDir({ prefix: "browser_ckpt_" });
      const dir = temp.path;
      for (const [name, bytes] of Object.entries(files)) {
        await Deno.writeFile(`${dir}/${name}`, Uint8Array.from(bytes));
      }
      const text = await Deno.readFile(new URL("data/assets/moby_dick.txt", root));
      // The page's validation windows: the tiny config's 2 batches of 4 windows of 32 bytes
      // from the start of the last tenth (web/worker.ts).
      const cut = Math.floor(text.length * 0.9);
      await Deno.writeFile(`${dir}/text.txt`, text.subarray(cut, cut + 2 * 4 * 32 + 1));
      const ev = await new Deno.Command(Deno.execPath(), {
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
        cwd: decodeURIComponent(root.pathname),
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(ev.stdout);
      assert.ok(ev.success, `eval failed: ${out}${new TextDecoder().decode(ev.stderr)}`);
      const result = JSON.parse(out.trim().split("\n").at(-1)!);
      console.log(`deno task eval --init-from-hf (page's checkpoint): ${JSON.stringify(result)}`);
      // The CLI, on another adapter, finds the page's last validation loss.
      assert.equal(result.windows, 8);
      assertClose([result.loss], [two.val.at(-1)!.loss], {
        rtol: 1e-4,
        atol: 0,
        what: "deno task eval of the page's checkpoint vs the page's validation loss",
      });

      // Stop: every rank stops after the same step; the run ends with a checkpoint.
      await page.select("#tp", "2");
      await page.$eval("#steps", (e) => ((e as HTMLInputElement).value = "200"));
      await page.$eval("#sampleEvery", (e) => ((e as HTMLInputElement).value = "0"));
      await page.click("#train");
      await page.waitForFunction(
        () => (globalThis as unknown as { megatron: RunState }).megatron.losses.length >= 3,
        { timeout: 120_000, polling: 50 },
      );
      await page.click("#stop");
      await page.waitForFunction(
        () => {
          const m = (globalThis as unknown as { megatron: RunState }).megatron;
          return m.done || m.error !== null;
        },
        { timeout: 120_000, polling: 100 },
      );
      const stopped = await pageState(page);
      assert.equal(stopped.error, null);
      assert.ok(stopped.losses.length < 200, `Stop did not stop (${stopped.losses.length} steps)`);
      assert.equal(
        await page.$$eval("#downloads a", (as) => as.length),
        2,
        "no checkpoint after Stop",
      );
      // The page kept the last TP = 2 run's Workers, and each its device (and its pipelines).
      const pageLog = () => page.$eval("#log", (e) => e.textContent ?? "");
      assert.match(
        await pageLog(),
        /^2 workers \(one per tensor-parallel rank\): 2 kept from the last run with their devices$/m,
      );
      const firstStep = (s: RunState) => `${(s.firstStepAt - s.trainPressedAt).toFixed(0)} ms`;
      console.log(`TP=2 again (Stop): first step ${firstStep(stopped)} after Train`);
      // A new run shows none of the last one's numbers; a learning rate of 0 is kept (it read
      // as "missing" and ran 3e-3); with sampling every 0 steps the run samples after its last.
      const frozen = await trainOnPage(
        page,
        {
          size: "tiny",
          tp: 1,
          steps: 2,
          lr: 0,
          sampleEvery: 0,
        },
        undefined,
        async () => {
          assert.deepEqual(
            await page.$$eval(
              ["#s-step", "#s-val"].join(","),
              (es) => es.map((e) => e.textContent),
            ),
            ["–", "–"],
            "the last run's numbers on show",
          );
        },
      );
      assert.equal(frozen.error, null);
      assert.match(
        await pageLog(),
        /^1 worker \(one per tensor-parallel rank\): 1 kept from the last run with its device$/m,
      );
      console.log(`TP=1 again (learning rate 0): first step ${firstStep(frozen)} after Train`);
      assert.equal(frozen.config?.lr, 0);
      assert.equal(frozen.samples.length, 1, "no sample after the last step");
      assert.deepEqual(errors, [], "the page logged errors");
      // A run whose weights blow up while its training losses stay finite (1e10 … 1e16) was
      // "done", charted NaN (console errors from the chart) and offered a checkpoint that eval
      // refuses. Now it fails, saying why, and its only console error is that message.
      const blown = await trainOnPage(page, {
        size: "tiny",
        tp: 1,
        steps: 5,
        lr: 100000,
        sampleEvery: 0,
      });
      assert.match(blown.error ?? "", /finite; lower the learning rate/, JSON.stringify(blown));
      assert.equal(await page.$$eval("#downloads a", (as) => as.length), 0, "a checkpoint offered");
      // (The page's console has the message, and the Worker's its error with it.)
      const message = blown.error!.replace(/^rank \d+: /, "");
      const unexpected = (errors as string[]).filter((e) => !e.includes(message));
      assert.deepEqual(unexpected, [], "the chart's errors");
      errors.length = 0;

      // Every rank reported that error (no rank is left in a collective): the Worker is kept,
      // with its device and compiled pipelines, as after a run that ended well. Stop pressed
      // while a sample streams cuts the sample short and ends the run after that step (it
      // finished the sample, trained one more step and validated: 7 s on the small model).
      const downloads = () => page.$$eval("#downloads a", (as) => as.map((a) => a.href));
      await page.select("#size", "tiny");
      await page.select("#tp", "1");
      await page.$eval("#steps", (e) => ((e as HTMLInputElement).value = "200"));
      await page.$eval("#lr", (e) => ((e as HTMLInputElement).value = "0.003"));
      await page.$eval("#sampleEvery", (e) => ((e as HTMLInputElement).value = "2"));
      await page.click("#train");
      await page.waitForFunction(
        () => {
          const m = (globalThis as unknown as { megatron: RunState }).megatron;
          return m.error !== null || m.samples.some((s) => s.length > "Call me ".length);
        },
        { timeout: 120_000, polling: 20 },
      );
      await page.click("#stop");
      await page.waitForFunction(
        () => {
          const m = (globalThis as unknown as { megatron: RunState }).megatron;
          return m.done || m.error !== null;
        },
        { timeout: 120_000, polling: 50 },
      );
      const cutShort = await pageState(page);
      assert.equal(cutShort.error, null);
      assert.match(
        await pageLog(),
        /^1 worker \(one per tensor-parallel rank\): 1 kept from the last run with its device$/m,
        "the Worker of the run that failed on every rank was ended",
      );
      assert.equal(cutShort.losses.length, 2, "the run went on after Stop cut its sample");
      assert.equal(cutShort.samples.length, 1);
      const tokens = cutShort.config!.sampleTokens;
      assert.ok(
        cutShort.samples[0].length < "Call me ".length + tokens,
        `the sample was not cut short: ${JSON.stringify(cutShort.samples[0])}`,
      );
      assert.deepEqual(cutShort.val.map((v) => v.step), [2], "no validation at the last step");
      // The next run's start revokes this run's download links (each held a checkpoint).
      const links = await downloads();
      assert.equal(links.length, 2);
      await trainOnPage(page, { size: "tiny", tp: 1, steps: 1, lr: 0.003, sampleEvery: 0 });
      assert.deepEqual(errors, [], "the page logged errors");
      // (Fetching a revoked link is a failed request, which the page reports.)
      const revoked = await page.evaluate(
        (urls: string[]) =>
          Promise.all(urls.map((u) => fetch(u).then(() => "fetched", () => "revoked"))),
        links,
      );
      assert.deepEqual(revoked, ["revoked", "revoked"]);

      // Without WebGPU the page says so, and how to enable it.
      const bare = await browser.newPage();
      await bare.evaluateOnNewDocument(() => {
        Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined });
      });
      await bare.goto(server.url, { waitUntil: "load" });
      await pageChecked(bare);
      const said = await bare.$eval("#nogpu", (e) => (e as HTMLElement).innerText);
      assert.match(said, /no WebGPU/);
      assert.match(said, /--enable-unsafe-webgpu/);
      assert.equal(await bare.$eval("#train", (e) => (e as HTMLButtonElement).disabled), true);
    } finally {
      await browser.close();
      await server.close();
    }
  },
});

/** Which request the front in the test below answers with an error. */
type Fault = "corpus" | "worker" | "none";

/** What the server says instead of the book: long enough to train on, were it taken for one. */
const ERROR_TEXT = "500 Internal Server Error: the corpus is unavailable. ".repeat(200);

/** Waits until the run the page started has failed, ended or trained a step; returns its state. */
async function settled(page: Page): Promise<RunState> {
  await page.waitForFunction(
    () => {
      const m = (globalThis as unknown as { megatron: RunState }).megatron;
      return m.done || m.error !== null || m.losses.length > 0;
    },
    { timeout: 60_000, polling: 50 },
  );
  return await pageState(page);
}

Deno.test({
  name: "browser: the page says what went wrong (corpus request, worker.js, no adapter)",
  ignore: chromium === null,
  timeout: withTimeLimit(300).timeout,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = await serve();
    // A front for the server that breaks the request `fault` names and passes the rest through.
    let fault: Fault = "none";
    const front = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
      const path = new URL(req.url).pathname;
      const headers = { ...ISOLATION_HEADERS, "content-type": "text/plain" };
      if (fault === "corpus" && path === "/data/moby_dick.txt") {
        return new Response(ERROR_TEXT, { status: 500, headers });
      }
      if (fault === "worker" && path === "/worker.js") {
        return new Response(`not found: ${path}\n`, { status: 404, headers });
      }
      return fetch(new URL(path.slice(1), server.url));
    });
    const url = `http://127.0.0.1:${front.addr.port}/`;
    const browser = await launch(chromium!);
    // Opens the page on a new tab and presses Train (tiny, TP = 1, 2 steps).
    const tinyRun = async () => {
      const page = await browser.newPage();
      await page.goto(url, { waitUntil: "load" });
      await pageChecked(page);
      await page.select("#size", "tiny");
      await page.select("#tp", "1");
      await page.$eval("#steps", (e) => ((e as HTMLInputElement).value = "2"));
      await page.click("#train");
      const s = await settled(page);
      return {
        s,
        log: await page.$eval("#log", (e) => e.textContent ?? ""),
        trainEnabled: await page.$eval("#train", (e) => !(e as HTMLButtonElement).disabled),
      };
    };
    try {
      // The corpus request fails: the page says so and trains nothing (it once trained on the
      // server's error text).
      fault = "corpus";
      const corpus = await tinyRun();
      assert.match(
        corpus.s.error ?? "",
        /^rank 0: could not fetch the corpus http:\/\/127\.0\.0\.1:\d+\/data\/moby_dick\.txt: HTTP 500$/,
      );
      assert.equal(corpus.s.losses.length, 0, "trained on the error text");
      assert.deepEqual(corpus.s.val, []);
      assert.match(corpus.log, /^error: rank 0: could not fetch the corpus .*: HTTP 500$/m);
      assert.ok(corpus.trainEnabled, "Train stays disabled after the failed run");

      // worker.js does not load: the page says so instead of waiting for ever.
      fault = "worker";
      const worker = await tinyRun();
      assert.equal(
        worker.s.error,
        "rank 0: could not load worker.js (is deno task serve still running?)",
      );
      assert.equal(worker.s.losses.length, 0);
      assert.match(worker.log, /^error: rank 0: could not load worker\.js/m);
      assert.ok(worker.trainEnabled, "Train stays disabled after the failed run");

      // navigator.gpu without an adapter (Chrome on Linux without its flags): one line says so
      // and how to turn WebGPU on, and Train waits.
      fault = "none";
      const page = await browser.newPage();
      await page.evaluateOnNewDocument(() => {
        GPU.prototype.requestAdapter = () => Promise.resolve(null);
      });
      await page.goto(url, { waitUntil: "load" });
      await pageChecked(page);
      const said = await page.$eval("#nogpu", (e) => (e as HTMLElement).innerText);
      assert.match(
        said,
        /^This browser has WebGPU but offers no adapter \(requestAdapter\(\) returned null\)/,
      );
      assert.match(said, /--enable-unsafe-webgpu --enable-features=Vulkan/);
      assert.ok(!said.includes("\n"), `more than one line: ${said}`);
      assert.equal(await page.$eval("#train", (e) => (e as HTMLButtonElement).disabled), true);
      await page.click("#train");
      assert.equal((await pageState(page)).config, null, "a run started without an adapter");
    } finally {
      await browser.close();
      await front.shutdown();
      await server.close();
    }
  },
});
