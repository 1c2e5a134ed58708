/**
 * A Hugging Face GPT directory's own tokenizer files: GPT-2's `vocab.json` and
 * `merges.txt` (or a BPE `tokenizer.json`) are read as GPT-2's built-in BPE;
 * another vocabulary's files, or GPT-2's beside a model the byte tokenizer
 * reads, are refused by `generate`, `eval` and `train --init-from-hf` (they
 * were ignored, and the text tokenized with ids that mean other tokens). A
 * vocabulary no tokenizer fits is said to be one.
 */

import { equal, match } from "node:assert/strict";
import { join } from "node:path";
import { paramsToHost } from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { writeHfGpt2 } from "../models/hf/mod.ts";
import { gpt2VocabFiles, runCli } from "./cli_helpers.ts";
import { gpuTest, testDevice } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();

async function hfDir(dir: string, vocabSize: number): Promise<string> {
  const c: GptConfig = { vocabSize, numLayers: 1, hiddenSize: 8, numHeads: 2, maxPositions: 16 };
  const m = Gpt.serial(dev, c, 3);
  const w = await paramsToHost(m.namedParams());
  await writeHfGpt2(dir, c, (n) => w.get(n));
  m.dispose();
  return dir;
}

const generate = (dir: string, ...extra: string[]) =>
  runCli("cli/generate.ts", [
    "--init-from-hf",
    dir,
    "--prompt",
    "Hi",
    "--max-new-tokens",
    "2",
    "--temperature",
    "0",
    ...extra,
  ]);

Deno.test(
  "an HF directory's tokenizer files: GPT-2's are read as GPT-2's BPE; another vocabulary's are refused",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const { vocab, merges } = await gpt2VocabFiles();
    // GPT-2's vocabulary and GPT-2's files: read with the built-in BPE.
    const gpt2 = await hfDir(join(temp.path, "gpt2"), 50257);
    await Deno.writeTextFile(join(gpt2, "vocab.json"), vocab);
    await Deno.writeTextFile(join(gpt2, "merges.txt"), merges);
    const ok = await generate(gpt2);
    equal(ok.code, 0, ok.stderr);
    // The same vocabulary in a tokenizer.json (BPE, merges as pairs) only.
    await Deno.remove(join(gpt2, "vocab.json"));
    await Deno.remove(join(gpt2, "merges.txt"));
    const pairs = merges.split("\n").slice(1).filter((l) => l).map((l) => l.split(" "));
    await Deno.writeTextFile(
      join(gpt2, "tokenizer.json"),
      JSON.stringify({ model: { type: "BPE", vocab: JSON.parse(vocab), merges: pairs } }),
    );
    equal((await generate(gpt2)).code, 0);
    // Another vocabulary of GPT-2's size: its ids mean other tokens.
    const own = JSON.stringify(Object.fromEntries(
      Array.from({ length: 50257 }, (_, i) => [`tok${i}`, i]),
    ));
    await Deno.writeTextFile(join(gpt2, "vocab.json"), own);
    await Deno.writeTextFile(join(gpt2, "merges.txt"), merges);
    const foreign = await generate(gpt2);
    equal(foreign.code, 1, foreign.stderr);
    match(
      foreign.stderr,
      /its tokenizer \(vocab\.json and merges\.txt\) is not GPT-2's \(token "tok0"/,
    );
    const ev = await runCli("cli/eval.ts", [
      "--init-from-hf",
      gpt2,
      "--data-path",
      join(gpt2, "config.json"),
    ]);
    equal(ev.code, 1, ev.stderr);
    match(ev.stderr, /is not GPT-2's/);
    const tr = await runCli("cli/train.ts", [
      ...["--init-from-hf", gpt2, "--tokenizer", "gpt2", "--train-iters", "1", "--seq-length", "8"],
      ...["--eval-iters", "0", "--sample-tokens", "0"],
    ]);
    equal(tr.code, 1, tr.stderr);
    match(tr.stderr, /is not GPT-2's/);
    // GPT-2's files beside a model the byte tokenizer reads (its 256 rows).
    const bytes = await hfDir(join(temp.path, "bytes"), 256);
    await Deno.writeTextFile(join(bytes, "vocab.json"), vocab);
    await Deno.writeTextFile(join(bytes, "merges.txt"), merges);
    const mixed = await generate(bytes);
    equal(mixed.code, 1, mixed.stderr);
    match(mixed.stderr, /is GPT-2's, but the text would be read with the byte tokenizer/);
    // No tokenizer files: the vocabulary's size picks the tokenizer, as before.
    await Deno.remove(join(bytes, "vocab.json"));
    await Deno.remove(join(bytes, "merges.txt"));
    equal((await generate(bytes)).code, 0);
    // A vocabulary no tokenizer fits is said to be one (it named GPT-2's misfit, never asked for).
    const odd = await generate(await hfDir(join(temp.path, "odd"), 200));
    equal(odd.code, 1, odd.stderr);
    match(
      odd.stderr,
      /the model has a vocabulary of 200 ids: no tokenizer here has that vocabulary/,
    );
  },
);
