/**
 * Crash safety: a child process saves a checkpoint, then starts a second save and
 * is killed with SIGKILL at every stage of the protocol (and, separately, at
 * random moments during a stream of saves). Afterwards `latest` always names a
 * complete checkpoint that loads, and the previous one is intact.
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { AdamW } from "../core/optim.ts";
import { loadCheckpoint, readLatest, type SaveStage } from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { gpuTest, testDevice } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();
const tiny: GptConfig = {
  vocabSize: 37,
  numLayers: 1,
  hiddenSize: 8,
  numHeads: 2,
  maxPositions: 8,
};

function childCode(dir: string, mode: string): string {
  const u = (p: string) => JSON.stringify(import.meta.resolve(p));
  return `
import { Device } from ${u("../core/device.ts")};
import { AdamW } from ${u("../core/optim.ts")};
import { full } from ${u("../core/ops/mod.ts")};
import { Gpt } from ${u("../models/gpt.ts")};
import { gptCheckpointInfo, saveCheckpoint } from ${u("../models/checkpoint/mod.ts")};
const dev = await Device.create();
const cfg = ${JSON.stringify(tiny)};
const m = Gpt.serial(dev, cfg, 1);
const params = m.namedParams();
const opt = new AdamW(params.map(([, p]) => p));
for (const [, p] of params) p.tensor.grad = full(dev, p.tensor.shape, 0.5).keep();
opt.update(1e-3);
const info = gptCheckpointInfo(cfg);
const mode = ${JSON.stringify(mode)};
const dir = ${JSON.stringify(dir)};
await saveCheckpoint(dir, { iteration: 1, params, optimizer: opt, ...info, state: { it: 1 } });
console.log("saved 1");
for (let it = 2; it < (mode === "loop" ? 100000 : 3); it++) {
  opt.update(1e-3);
  await saveCheckpoint(dir, {
    iteration: it, params, optimizer: opt, ...info, state: { it },
    faultHook: (stage) => { if (stage === mode) Deno.kill(Deno.pid, "SIGKILL"); },
  });
}
console.log("done");
`;
}

function spawnChild(dir: string, mode: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "--unstable-webgpu", childCode(dir, mode)],
    stdout: "piped",
    stderr: "inherit",
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
  }).spawn();
}

async function checkLoadable(dir: string, want?: number): Promise<number> {
  const latest = await readLatest(dir);
  ok(latest !== null && latest >= 1, `latest is ${latest}`);
  if (want !== undefined) deepStrictEqual(latest, want);
  const m = Gpt.serial(dev, tiny, 9);
  const opt = new AdamW(m.namedParams().map(([, p]) => p));
  const r = await loadCheckpoint(dir, { params: m.namedParams(), optimizer: opt });
  deepStrictEqual(r.state, { it: latest });
  deepStrictEqual(opt.step, latest);
  // the first checkpoint is always intact too
  const r1 = await loadCheckpoint(dir, { params: m.namedParams(), iteration: 1 });
  deepStrictEqual(r1.state, { it: 1 });
  m.dispose();
  return latest!;
}

const STAGES: SaveStage[] = [
  "dir-ready",
  "model-written",
  "optimizer-written",
  "shards-done",
  "meta-written",
  "renamed",
  "latest-written",
];

Deno.test(
  "a save killed at any stage leaves the previous checkpoint loadable",
  gpuTest,
  async () => {
    for (const stage of STAGES) {
      await using temp = await tempDir();
      const dir = temp.path;
      const out = await spawnChild(dir, stage).output();
      deepStrictEqual(out.signal, "SIGKILL", `child for stage ${stage} was not killed`);
      ok(new TextDecoder().decode(out.stdout).includes("saved 1"));
      await checkLoadable(dir, stage === "latest-written" ? 2 : 1);
    }
  },
);

Deno.test("saves killed at random moments always leave a loadable latest", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const seen: number[] = [];
  for (const delay of [5, 37, 80, 150]) {
    const child = spawnChild(dir, "loop");
    const reader = child.stdout.getReader();
    let text = "";
    while (!text.includes("saved 1")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await new Promise((r) => setTimeout(r, delay));
    child.kill("SIGKILL");
    reader.releaseLock();
    await child.stdout.cancel();
    await child.status;
    seen.push(await checkLoadable(dir));
  }
  console.log(`latest after kills at 5/37/80/150 ms into the save loop: ${seen.join(", ")}`);
});
