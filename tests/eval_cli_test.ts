/**
 * `deno task eval` and `deno task export-hf` end to end (subprocesses): the loss
 * over all non-overlapping windows (or the first `--eval-iters` batches of them)
 * equals a window-by-window computation, and a
 * checkpoint, its HF export and the HF original evaluate to the same loss.
 */

import { deepStrictEqual, match } from "node:assert/strict";
import { join } from "node:path";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { writeTokenBin } from "../data/token_bin.ts";
import { gptCheckpointInfo, paramsToHost, saveCheckpoint } from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { writeHfGpt2 } from "../models/hf/mod.ts";
import { assertClose, gpuTest, prng, testDevice } from "./helpers.ts";
import { permissionArgs } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();
const cfg: GptConfig = {
  vocabSize: 50,
  numLayers: 2,
  hiddenSize: 16,
  numHeads: 2,
  maxPositions: 8,
};

async function run(
  script: string,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissionArgs(`cli/${script}`),
      "--unstable-webgpu",
      new URL(`../cli/${script}`, import.meta.url).pathname,
      ...args,
    ],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
  }).output();
  const d = new TextDecoder();
  return { code: o.code, out: d.decode(o.stdout), err: d.decode(o.stderr) };
}

/** Under `--json`, stdout is the JSON object alone (the report goes to stderr). */
function lastJson(out: string): Record<string, number> {
  const lines = out.trim().split("\n");
  deepStrictEqual(lines.length, 1, `--json printed more than the object on stdout:\n${out}`);
  return JSON.parse(lines[0]);
}

Deno.test("eval CLI: window loss, checkpoint, HF export and HF import agree", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const m = Gpt.serial(dev, cfg, 8);
  const r = prng(3);
  const ids = Array.from({ length: 53 }, () => Math.floor(r() * cfg.vocabSize));
  const bin = join(dir, "val.bin");
  await writeTokenBin(bin, ids);
  const T = 5; // windows at 0, 5, …, 45: ⌊52/5⌋ = 10
  m.train(false);
  const windowLoss: number[] = [];
  for (let s = 0; s + T + 1 <= ids.length; s += T) {
    windowLoss.push(
      await tidy(dev, async () =>
        (await m.loss(
          TokenIds.fromHost(dev, Int32Array.from(ids.slice(s, s + T)), [1, T]),
          TokenIds.fromHost(dev, Int32Array.from(ids.slice(s + 1, s + T + 1)), [1, T]),
        )).item()),
    );
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const expected = mean(windowLoss);

  const hfDir = join(dir, "hf");
  const w = await paramsToHost(m.namedParams());
  await writeHfGpt2(hfDir, cfg, (n) => w.get(n));
  const common = [
    "--data-path",
    bin,
    "--seq-length",
    String(T),
    "--micro-batch-size",
    "4",
    "--json",
  ];
  const a = await run("eval.ts", ["--init-from-hf", hfDir, ...common]);
  deepStrictEqual(a.code, 0, a.err);
  const ja = lastJson(a.out);
  deepStrictEqual([ja.tokens, ja.windows], [50, 10]);
  assertClose([ja.loss], [expected], { rtol: 1e-6, what: "eval loss" });
  assertClose([ja.ppl], [Math.exp(expected)], { rtol: 1e-6, what: "ppl" });

  const ck = join(dir, "ck");
  await saveCheckpoint(ck, { iteration: 4, params: m.namedParams(), ...gptCheckpointInfo(cfg) });
  const b = await run("eval.ts", ["--load", ck, ...common]);
  deepStrictEqual(b.code, 0, b.err);
  deepStrictEqual(lastJson(b.out).loss, ja.loss);
  // --eval-iters 2: the first two batches of 4 windows, and the report says so
  const firstTwo = await run("eval.ts", ["--load", ck, ...common, "--eval-iters", "2"]);
  deepStrictEqual(firstTwo.code, 0, firstTwo.err);
  const j2 = lastJson(firstTwo.out);
  deepStrictEqual([j2.tokens, j2.windows], [40, 8]);
  assertClose([j2.loss], [mean(windowLoss.slice(0, 8))], { rtol: 1e-6, what: "--eval-iters 2" });
  match(firstTwo.err, /eval: 8 of 10 \(--eval-iters 2\) windows, 40 tokens/);
  const past = await run("eval.ts", ["--load", ck, ...common, "--eval-iters", "9"]);
  deepStrictEqual(lastJson(past.out).loss, ja.loss, "more batches than the data has: all of it");

  const exported = join(dir, "exported");
  const e = await run("export_hf.ts", ["--load", ck, "--output", exported]);
  deepStrictEqual(e.code, 0, e.err);
  match(e.out, /exported gpt iteration 4/);
  const c = await run("eval.ts", ["--init-from-hf", exported, ...common]);
  deepStrictEqual(c.code, 0, c.err);
  deepStrictEqual(lastJson(c.out).loss, ja.loss);
  // HF's initializer_range: the std the weights were drawn with where the checkpoint says
  // (--init-method-std, saved by train), else 0.02.
  const range = async (d: string) =>
    JSON.parse(await Deno.readTextFile(join(d, "config.json"))).initializer_range;
  deepStrictEqual(await range(exported), 0.02);
  const ck6 = join(dir, "ck6"), exported6 = join(dir, "exported6");
  await saveCheckpoint(ck6, {
    iteration: 4,
    params: m.namedParams(),
    ...gptCheckpointInfo(cfg),
    state: { args: { "init-method-std": 0.006 } },
  });
  const e6 = await run("export_hf.ts", ["--load", ck6, "--output", exported6]);
  deepStrictEqual(e6.code, 0, e6.err);
  deepStrictEqual(await range(exported6), 0.006);
  // Trained from a Hugging Face directory: its initializer_range goes on into the checkpoint
  // and the next export (and a resumed --init-method-std must agree with it).
  const byteCfg: GptConfig = { ...cfg, vocabSize: 256 };
  const mb = Gpt.serial(dev, byteCfg, 8);
  const wb = await paramsToHost(mb.namedParams());
  mb.dispose();
  const hf6 = join(dir, "hf6"), ck7 = join(dir, "ck7"), exported7 = join(dir, "exported7");
  await writeHfGpt2(hf6, byteCfg, (n) => wb.get(n), undefined, "F32", 0.006);
  await Deno.writeTextFile(join(dir, "text.txt"), "It was the best of times. ".repeat(8));
  const trainFlags = [
    ...["--data-path", join(dir, "text.txt"), "--seq-length", "8", "--micro-batch-size", "2"],
    ...["--eval-iters", "0", "--sample-tokens", "0", "--no-matmul-autotune"],
  ];
  const t7 = await run("train.ts", [
    ...["--init-from-hf", hf6, "--train-iters", "1", "--save", ck7],
    ...trainFlags,
  ]);
  deepStrictEqual(t7.code, 0, t7.err);
  deepStrictEqual((await run("export_hf.ts", ["--load", ck7, "--output", exported7])).code, 0);
  deepStrictEqual(await range(exported7), 0.006);
  const r7 = await run("train.ts", [
    ...["--load", ck7, "--train-iters", "2", "--init-method-std", "0.02"],
    ...trainFlags,
  ]);
  deepStrictEqual(r7.code, 2, r7.err);
  match(r7.err, /--init-method-std 0\.02 disagrees with .* \(weights drawn with std 0\.006\)/);
  // A .bin without a sidecar (Megatron's): its ids are the model's, and a --tokenizer that
  // disagrees with the checkpoint is refused as for text (it was ignored).
  const bare = join(dir, "bare.bin");
  await writeTokenBin(bare, Array.from(new TextEncoder().encode("It was the best of times.")));
  const onBare = ["--load", ck7, "--data-path", bare, "--seq-length", "8"];
  const b7 = await run("eval.ts", onBare);
  deepStrictEqual(b7.code, 0, b7.err);
  match(b7.out, /on .*bare\.bin \(tokenizer byte, no sidecar\)/);
  const g7 = await run("eval.ts", [...onBare, "--tokenizer", "gpt2"]);
  deepStrictEqual(g7.code, 2, g7.err);
  match(g7.err, /--tokenizer gpt2: the model was trained with the byte tokenizer/);
  console.log(
    `eval loss ${ja.loss} (window-by-window ${expected}), ppl ${ja.ppl}, tokens ${ja.tokens}`,
  );
  match(a.err, /validation loss/);
  console.log(a.err.trim());

  // usage and data errors are clear
  const u = await run("eval.ts", ["--data-path", bin]);
  deepStrictEqual(u.code, 2);
  match(u.err, /exactly one of --load DIR and --init-from-hf DIR/);
  const t = await run("eval.ts", ["--load", ck, "--data-path", bin, "--seq-length", "9"]);
  match(t.err, /--seq-length 9 is longer than the model's position table \(8\)/);
  const n = await run("eval.ts", ["--load", join(dir, "none"), "--data-path", bin]);
  deepStrictEqual(n.code, 1);
  match(n.err, /no checkpoint/);
  m.dispose();
});
