/**
 * `eval`, `generate` and `fill-mask` pick llvmpipe's vector width for the model
 * they load, as `train` does for the one it builds (core/simd.ts): the model's
 * hidden size is read from its Hugging Face `config.json` or its checkpoint's
 * metadata before any device exists (cli/load_model.ts); `train --init-from-hf`
 * reads it from the `config.json` too.
 */

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { join } from "node:path";
import { sourceHiddenSize } from "../cli/load_model.ts";
import { chooseVectorWidth, cpuFacts, LLVMPIPE_WIDTH_ENV } from "../core/simd.ts";
import { gptCheckpointInfo, paramsToHost, saveCheckpoint } from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { bertConfigToHf } from "../models/hf/bert.ts";
import { writeHfGpt2 } from "../models/hf/mod.ts";
import { gpuTest, testDevice, withTimeLimit } from "./helpers.ts";
import { permissionArgs, runWithoutWidth } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();
const cfg: GptConfig = {
  vocabSize: 50,
  numLayers: 1,
  hiddenSize: 16,
  numHeads: 2,
  maxPositions: 8,
};

/** A checkpoint (iterations 2 and 5, hidden 16 and 24) and HF directories of both families. */
async function sources(dir: string) {
  const ck = join(dir, "ck");
  const small = Gpt.serial(dev, cfg, 1);
  await saveCheckpoint(ck, {
    iteration: 2,
    params: small.namedParams(),
    ...gptCheckpointInfo(cfg),
  });
  const wideCfg = { ...cfg, hiddenSize: 24 };
  const wide = Gpt.serial(dev, wideCfg, 1);
  await saveCheckpoint(ck, {
    iteration: 5,
    params: wide.namedParams(),
    ...gptCheckpointInfo(wideCfg),
  });
  const gpt2 = join(dir, "gpt2");
  const w = await paramsToHost(small.namedParams());
  await writeHfGpt2(gpt2, cfg, (n) => w.get(n));
  small.dispose();
  wide.dispose();
  const bert = join(dir, "bert");
  await Deno.mkdir(bert);
  const bertCfg = {
    vocabSize: 30,
    numLayers: 1,
    hiddenSize: 40,
    numHeads: 2,
    ffnHiddenSize: 160,
    maxPositions: 8,
    typeVocabSize: 2,
    hiddenDropout: 0,
    attentionDropout: 0,
    layerNormEps: 1e-12,
    postLayerNorm: true as const,
  };
  await Deno.writeTextFile(join(bert, "config.json"), JSON.stringify(bertConfigToHf(bertCfg)));
  return { ck, gpt2, bert };
}

Deno.test("load_model: a source's hidden size, read before any device", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const { ck, gpt2, bert } = await sources(dir);
  assertEquals(await sourceHiddenSize({ load: ck }), 24); // the latest iteration
  assertEquals(await sourceHiddenSize({ load: ck, iteration: 2 }), 16);
  assertEquals(await sourceHiddenSize({ hfDir: gpt2 }), 16); // GPT-2's n_embd
  assertEquals(await sourceHiddenSize({ hfDir: bert }), 40); // BERT's hidden_size
  // nothing to read: the load itself says why, later
  assertEquals(await sourceHiddenSize({}), undefined);
  assertEquals(await sourceHiddenSize({ load: join(dir, "missing") }), undefined);
  assertEquals(await sourceHiddenSize({ load: ck, iteration: 3 }), undefined);
  assertEquals(await sourceHiddenSize({ hfDir: dir }), undefined);
});

Deno.test(
  "load_model: generate's permissions set the width train picks for the loaded model",
  withTimeLimit(60),
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const { ck } = await sources(dir);
    const script = join(dir, "width.ts");
    await Deno.writeTextFile(
      script,
      `import { preferWidthForModel } from ${
        JSON.stringify(new URL("../cli/load_model.ts", import.meta.url).href)
      };
      await preferWidthForModel({ load: ${JSON.stringify(ck)} });
      console.log(Deno.env.get(${JSON.stringify(LLVMPIPE_WIDTH_ENV)}) ?? "unset");`,
    );
    const out = await runWithoutWidth([
      ...["run", "-q", "--config", new URL("../deno.json", import.meta.url).pathname],
      ...["-P=generate", script],
    ]);
    assertEquals(out.code, 0, out.stderr);
    const width = chooseVectorWidth(await cpuFacts(), { hiddenSize: 24 });
    assertEquals(out.stdout.trim(), String(width ?? "unset"));
  },
);

Deno.test(
  "train: --init-from-hf picks the width for the Hugging Face model's size, not the flag's default",
  withTimeLimit(180),
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    // 512 wide: 512-bit vectors on every CPU with AVX-512 (the default --hidden-size 128 would
    // get 256 on an Intel CPU)
    const wideCfg: GptConfig = { ...cfg, vocabSize: 256, hiddenSize: 512, numHeads: 8 };
    const m = Gpt.serial(dev, wideCfg, 1);
    const w = await paramsToHost(m.namedParams());
    m.dispose();
    const hf = join(dir, "hf");
    await writeHfGpt2(hf, wideCfg, (n) => w.get(n));
    const text = join(dir, "text.txt");
    await Deno.writeTextFile(text, "It was the best of times. ".repeat(8));
    const script = new URL("../cli/train.ts", import.meta.url).pathname;
    const out = await runWithoutWidth([
      ...["run", ...permissionArgs("cli/train.ts"), "--unstable-webgpu", script],
      ...["--init-from-hf", hf, "--data-path", text, "--train-iters", "1"],
      ...["--seq-length", "8", "--micro-batch-size", "2", "--eval-iters", "0"],
      ...["--sample-tokens", "0", "--no-matmul-autotune"],
    ]);
    const log = out.stdout + out.stderr;
    assertEquals(out.code, 0, log);
    const device = /^device: .*$/m.exec(log)?.[0] ?? "";
    const width = chooseVectorWidth(await cpuFacts(), { hiddenSize: 512 });
    const software = device.includes("(software");
    // the device line names the 512-bit vectors where llvmpipe runs with them
    assertEquals(
      software && device.includes("512-bit vectors"),
      software && width === 512,
      device,
    );
  },
);
