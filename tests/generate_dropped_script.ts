/**
 * Run by `tests/generate_test.ts` with `--v8-flags=--expose-gc`: drops 20
 * generators after their first token (neither run out nor returned), collects
 * them, and prints the device's live bytes before and after as JSON.
 * @module
 */

import { Device } from "../core/device.ts";
import { generate } from "../models/generate.ts";
import { Gpt } from "../models/gpt.ts";
import { prng } from "./helpers.ts";

const device = await Device.create();
const model = Gpt.serial(device, {
  vocabSize: 37,
  numLayers: 2,
  hiddenSize: 16,
  numHeads: 4,
  maxPositions: 32,
  hiddenDropout: 0,
  attentionDropout: 0,
}, 1);
const before = device.pool.liveBytes;
const start = async () => {
  const g = generate(model, [1, 2, 3], { maxNewTokens: 10, uniform: prng(1) });
  await g.next();
  return device.pool.liveBytes;
};
let held = 0;
for (let i = 0; i < 20; i++) held = await start();
const gc = (globalThis as unknown as { gc: () => void }).gc;
for (let i = 0; i < 5 && device.pool.liveBytes > before; i++) {
  gc();
  await new Promise((r) => setTimeout(r, 10));
}
console.log(JSON.stringify({ before, held, after: device.pool.liveBytes }));
await device.close();
