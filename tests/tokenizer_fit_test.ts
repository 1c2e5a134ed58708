/**
 * A GPT's tokenizer: a Hugging Face GPT-2 padded to nanoGPT's 50,304 rows
 * trains, evaluates and generates with the GPT-2 tokenizer, and the padding
 * rows are never sampled (here they would win every greedy step); a GPT
 * trained on WordPiece evaluates and generates with its checkpoint's
 * tokenizer, without flags.
 */

import { equal, match, ok, rejects } from "node:assert/strict";
import { join } from "node:path";
import { type HostTensor, writeSafetensors } from "../models/checkpoint/mod.ts";
import { modelTokenizer } from "../cli/model_tokenizer.ts";
import { UsageError } from "../cli/flags.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";
import { jsonlLosses, runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const V = 50304, H = 8, NH = 2, P = 16, F = 4 * H;

/** An HF GPT-2 directory of one layer whose 47 padding rows outscore every real id. */
async function writePaddedGpt2(dir: string): Promise<void> {
  let seed = 1;
  const rand = (n: number, scale: number, offset = 0) =>
    Float32Array.from({ length: n }, () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return offset + scale * (seed / 2147483648 - 0.5);
    });
  const t = (name: string, shape: number[], data: Float32Array): HostTensor & { name: string } => ({
    name,
    shape,
    data,
  });
  const wte = rand(V * H, 0.2);
  // ln_f's bias sums to 8 over the hidden size, so a constant row of 5 scores 40.
  wte.fill(5, 50257 * H);
  const p = "transformer.h.0.";
  const tensors = [
    t("transformer.wte.weight", [V, H], wte),
    t("transformer.wpe.weight", [P, H], rand(P * H, 0.2)),
    t(p + "ln_1.weight", [H], rand(H, 0.1, 1)),
    t(p + "ln_1.bias", [H], rand(H, 0.1)),
    t(p + "attn.c_attn.weight", [H, 3 * H], rand(H * 3 * H, 0.4)),
    t(p + "attn.c_attn.bias", [3 * H], rand(3 * H, 0.1)),
    t(p + "attn.c_proj.weight", [H, H], rand(H * H, 0.4)),
    t(p + "attn.c_proj.bias", [H], rand(H, 0.1)),
    t(p + "ln_2.weight", [H], rand(H, 0.1, 1)),
    t(p + "ln_2.bias", [H], rand(H, 0.1)),
    t(p + "mlp.c_fc.weight", [H, F], rand(H * F, 0.4)),
    t(p + "mlp.c_fc.bias", [F], rand(F, 0.1)),
    t(p + "mlp.c_proj.weight", [F, H], rand(F * H, 0.4)),
    t(p + "mlp.c_proj.bias", [H], rand(H, 0.1)),
    t("transformer.ln_f.weight", [H], rand(H, 0.1, 1)),
    t("transformer.ln_f.bias", [H], new Float32Array(H).fill(1)),
  ];
  await Deno.mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify({
      model_type: "gpt2",
      vocab_size: V,
      n_embd: H,
      n_head: NH,
      n_layer: 1,
      n_positions: P,
      resid_pdrop: 0,
      embd_pdrop: 0,
      attn_pdrop: 0,
    }),
  );
}

Deno.test({
  name:
    "tokenizer fit: a GPT-2 padded to 50,304 rows generates, evaluates, trains and resumes with the GPT-2 tokenizer",
  timeout: 300_000,
  fn: async () => {
    await using temp = await tempDir({ prefix: "tokenizer_fit_" });
    const dir = temp.path;
    const hf = join(dir, "hf");
    await writePaddedGpt2(hf);
    const text = join(dir, "text.txt");
    await Deno.writeTextFile(
      text,
      "It was the best of times, it was the worst of times. ".repeat(20),
    );
    // Greedy: without the limit every step would pick a padding row, which GPT-2 cannot spell.
    for (const tok of [[], ["--tokenizer", "gpt2"]]) {
      const gen = await runCli("cli/generate.ts", [
        "--init-from-hf",
        hf,
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0",
        ...tok,
      ]);
      equal(gen.code, 0, gen.stderr);
      match(gen.stderr, /tokenizer gpt2/);
    }
    const ev = await runCli("cli/eval.ts", ["--init-from-hf", hf, "--data-path", text, "--json"]);
    equal(ev.code, 0, ev.stderr);
    const trainFlags = ["--data-path", text, "--train-iters", "2", "--micro-batch-size", "1"];
    const train = await runCli("cli/train.ts", [
      ...["--init-from-hf", hf, "--tokenizer", "gpt2", ...trainFlags],
      ...["--eval-iters", "0", "--log-json", join(dir, "whole.jsonl")],
      ...["--sample-tokens", "3", "--temperature", "0.01"],
    ]);
    equal(train.code, 0, train.stderr);
    // Stopped after one step and resumed: the checkpoint keeps its 50,304 rows, which no flag
    // gives (the run took the tokenizer's 50,257 and refused the checkpoint).
    const ck = join(dir, "ck");
    const first = await runCli("cli/train.ts", [
      ...["--init-from-hf", hf, "--tokenizer", "gpt2", ...trainFlags, "--eval-iters", "0"],
      ...["--save", ck, "--exit-interval", "1", "--sample-tokens", "0"],
    ]);
    equal(first.code, 0, first.stderr);
    const resumed = await runCli("cli/train.ts", [
      ...["--load", ck, ...trainFlags, "--eval-iters", "0", "--sample-tokens", "0"],
      ...["--log-json", join(dir, "resumed.jsonl")],
    ]);
    equal(resumed.code, 0, resumed.stderr);
    const losses = (f: string) => jsonlLosses(Deno.readTextFileSync(join(dir, f)));
    equal(JSON.stringify(losses("resumed.jsonl")), JSON.stringify(losses("whole.jsonl").slice(1)));
    // The byte tokenizer cannot drive it (not given, the vocabulary's is taken); the advice
    // names the one that can.
    const byte = await runCli("cli/train.ts", [
      "--init-from-hf",
      hf,
      "--tokenizer",
      "byte",
      "--data-path",
      text,
      "--train-iters",
      "1",
    ]);
    equal(byte.code, 1, byte.stderr);
    match(byte.stderr, /has a vocabulary of 50304, the byte tokenizer 256; use --tokenizer gpt2/);
  },
});

Deno.test({
  name:
    "tokenizer fit: a GPT trained on WordPiece evaluates and generates with its checkpoint's tokenizer",
  timeout: 300_000,
  fn: async () => {
    await using temp = await tempDir({ prefix: "tokenizer_fit_wp_" });
    const dir = temp.path;
    const text = join(dir, "text.txt");
    await Deno.writeTextFile(
      text,
      "Call me Ishmael. Some years ago, never mind how long. ".repeat(30),
    );
    const ck = join(dir, "ck");
    const train = await runCli("cli/train.ts", [
      ...TINY_RUN_FLAGS,
      "--tokenizer-type",
      "BertWordPieceLowerCase",
      "--data-path",
      text,
      "--train-iters",
      "2",
      "--save",
      ck,
    ]);
    equal(train.code, 0, train.stderr);
    const ev = await runCli("cli/eval.ts", ["--load", ck, "--data-path", text]);
    equal(ev.code, 0, ev.stderr);
    match(ev.stdout, /tokenizer bert/);
    const gen = await runCli("cli/generate.ts", [
      "--load",
      ck,
      "--prompt",
      "call me",
      "--max-new-tokens",
      "3",
    ]);
    equal(gen.code, 0, gen.stderr);
    ok(gen.stdout.startsWith("call me"), gen.stdout);
    // Ids of another tokenizer are refused, from a .bin or by --tokenizer.
    const bin = join(dir, "byte.bin");
    equal((await runCli("cli/preprocess.ts", ["--data-path", text, "--output", bin])).code, 0);
    const wrongBin = await runCli("cli/eval.ts", ["--load", ck, "--data-path", bin]);
    equal(wrongBin.code, 1, wrongBin.stderr);
    match(
      wrongBin.stderr,
      /byte\.bin holds ids of the byte tokenizer .*, but the model reads the bert tokenizer's: .*preprocess --tokenizer-type BertWordPieceLowerCase/,
    );
    const wrongFlag = await runCli("cli/eval.ts", [
      "--load",
      ck,
      "--data-path",
      text,
      "--tokenizer",
      "byte",
    ]);
    equal(wrongFlag.code, 2, wrongFlag.stderr);
    match(wrongFlag.stderr, /--tokenizer byte: the model was trained with the bert tokenizer/);
    // Its Hugging Face export carries the vocabulary, and generates the same text.
    // Its generation ends at [SEP] (102) there too; another model's generation_config.json,
    // whose end-of-text id would override it, goes.
    const hf = join(dir, "hf");
    await Deno.mkdir(hf);
    await Deno.writeTextFile(join(hf, "generation_config.json"), '{"eos_token_id": 50256}');
    const exp = await runCli("cli/export_hf.ts", ["--load", ck, "--output", hf]);
    equal(exp.code, 0, exp.stderr);
    match(await Deno.readTextFile(join(hf, "tokenizer_config.json")), /BertTokenizer/);
    const hfConfig = JSON.parse(await Deno.readTextFile(join(hf, "config.json")));
    equal(JSON.stringify([hfConfig.bos_token_id, hfConfig.eos_token_id]), "[102,102]");
    match(exp.stdout + exp.stderr, /replacing generation_config\.json/);
    equal(await Deno.stat(join(hf, "generation_config.json")).catch(() => null), null);
    const fromHf = await runCli("cli/generate.ts", [
      "--init-from-hf",
      hf,
      "--prompt",
      "call me",
      "--max-new-tokens",
      "3",
    ]);
    equal(fromHf.code, 0, fromHf.stderr);
    equal(fromHf.stdout, gen.stdout);
    // [SEP], between its training documents, ends a generation and starts an empty prompt
    // (WordPiece has no end-of-text id: an empty prompt was refused, --ignore-eos too).
    const empty = await runCli("cli/generate.ts", [
      ...["--load", ck, "--prompt", "", "--max-new-tokens", "2", "--ignore-eos"],
    ]);
    equal(empty.code, 0, empty.stderr);
    // The export's vocab.txt replaced by another vocabulary: refused, not read as bert-base's.
    const vocabPath = join(hf, "vocab.txt");
    const tokens = (await Deno.readTextFile(vocabPath)).split("\n");
    [tokens[2000], tokens[2001]] = [tokens[2001], tokens[2000]];
    await Deno.writeTextFile(vocabPath, tokens.join("\n"));
    const swapped = await runCli("cli/generate.ts", ["--init-from-hf", hf, "--prompt", "call me"]);
    equal(swapped.code, 1, swapped.stderr);
    match(
      swapped.stderr,
      /its tokenizer \(its WordPiece vocabulary\) is not bert-base-uncased's \(token 2000/,
    );
  },
});

Deno.test("a model whose vocabulary fits no tokenizer is the checkpoint's error in every command (exit 1)", async () => {
  // eval and generate refused it as the command line's (exit 2), train as the checkpoint's (1).
  await rejects(
    modelTokenizer(20000, undefined),
    (e) => e instanceof CheckpointError && /no tokenizer here has that vocabulary/.test(e.message),
  );
  await rejects(modelTokenizer(20000, "gpt2"), CheckpointError);
  // A --tokenizer against the one the model was trained with stays the command line's.
  await rejects(modelTokenizer(256, "gpt2", "byte"), UsageError);
});
