/**
 * Measures the browser trainer in headless Chromium (software WebGPU): the
 * README's reference config (the page's "small": 2 layers, 128 wide, 4 heads,
 * sequence 64, batch 8) at TP = 1 and TP = 2, tokens/s over steps 2..N, and the
 * time from opening the page (navigation start) to the end of the first
 * training step when Train is pressed as soon as the page has loaded.
 * Not a test file (no `_test`): run it by hand,
 *
 *     deno run -A --config tests/browser/deno.json tests/browser/bench.ts [STEPS]   (default 40)
 *
 * and compare with `deno task train --train-iters STEPS` on the same machine.
 * @module
 */

import { findChromium, launch, serve, steadyMs, trainOnPage } from "./harness.ts";

const steps = Number(Deno.args[0] ?? 40);
const chromium = await findChromium();
if (!chromium) Deno.exit(1);
const server = await serve();
const browser = await launch(chromium);
try {
  for (const tp of [1, 2] as const) {
    const page = await browser.newPage();
    await page.goto(server.url, { waitUntil: "load" });
    const s = await trainOnPage(page, { size: "small", tp, steps, lr: 0.003, sampleEvery: 0 });
    if (s.error) throw new Error(s.error);
    const ms = steadyMs(s);
    console.log(
      `browser TP=${tp} | ${s.adapter} | ${s.params.toLocaleString()} parameters | ${steps} steps | ` +
        `${ms.toFixed(1)} ms/step | ${Math.round((8 * 64) / (ms / 1000))} tokens/s | ` +
        `loss ${s.losses[0].toFixed(3)} → ${s.losses.at(-1)!.toFixed(3)} | page opened → first ` +
        `step done: ${(s.pageToFirstStep / 1000).toFixed(2)} s (Train pressed at ` +
        `${(s.trainPressedAt / 1000).toFixed(2)} s; first step ` +
        `${(s.msPerStep[0] / 1000).toFixed(2)} s, pipelines compiled in it)`,
    );
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}
