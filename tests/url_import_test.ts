/**
 * The library imports by URL: a script outside the repository imports mod.ts
 * from a file:// URL with `deno run --no-config` (no import map, no deno.json)
 * and trains a two-step toy GPT.
 */

import { match, strictEqual } from "node:assert/strict";
import { tempDir } from "./temp_dir.ts";

Deno.test("mod.ts imports by URL and trains a toy model", async () => {
  const dir = await Deno.makeTempDir();
  const modUrl = new URL("../mod.ts", import.meta.url).href;
  await Deno.writeTextFile(
    `${dir}/toy.ts`,
    `import { Device, Gpt, TokenIds, Trainer } from "${modUrl}";
const device = await Device.create();
const gpt = Gpt.serial(device, { vocabSize: 16, numLayers: 1, hiddenSize: 8, numHeads: 2, maxPositions: 4 }, 1);
const trainer = new Trainer(device, gpt, { schedule: { lr: 1e-2, decayIters: 2 }, clipGrad: 1 });
const ids = TokenIds.fromHost(device, [1, 2, 3, 4, 5, 6, 7, 8], [2, 4]);
const tg = TokenIds.fromHost(device, [2, 3, 4, 5, 6, 7, 8, 9], [2, 4]);
for (let i = 0; i < 2; i++) {
  const r = await trainer.step(1, () => gpt.loss(ids, tg));
  console.log("step", i, r.loss.toFixed(4));
}
await device.close();
`,
  );
  await using temp = await tempDir();
  const xdg = temp.path;
  await Deno.chmod(xdg, 0o700);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--unstable-webgpu", "-A", "toy.ts"],
    cwd: dir,
    env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  strictEqual(out.code, 0, new TextDecoder().decode(out.stderr));
  match(stdout, /step 0 \d+\.\d+\nstep 1 \d+\.\d+/);
  await Deno.remove(dir, { recursive: true });
});
