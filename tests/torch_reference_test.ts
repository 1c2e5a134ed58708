/**
 * Against an independent implementation, at GPT-2's real vocabulary: a GPT
 * trained here at TP=2 with the GPT-2 tokenizer (50,257 ids, padded to 50,304
 * so that two ranks split it) is exported with `export-hf` and evaluated by a
 * GPT-2 forward pass written from GPT-2's published structure in PyTorch
 * (`tests/torch_gpt2_eval.py`: its own safetensors reader, float64, nothing
 * shared with this project). `eval` at TP=1 and TP=2 must give PyTorch's loss
 * over the same windows, and `generate --temperature 0` (KV cache, TP=2) its
 * greedy continuation. And the backward pass: every parameter's gradient of a
 * GPT at the same vocabulary (TP=1; tp_gpt_test.ts ties TP=2 to TP=1) against
 * PyTorch autograd's in float64 (`tests/torch_gpt2_grads.py`).
 *
 * Needs Debian's PyTorch (`apt-get install -y python3-torch
 * libopenblas0-pthread`, which `.ci/run` installs); skipped, saying so, without it.
 */

import assert from "node:assert/strict";
import { TokenIds } from "../core/token_ids.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { writeHfGpt2 } from "../models/hf/gpt2.ts";
import { makeRunDir, PYTHON, runCli, torchMissing } from "./cli_helpers.ts";
import { gpuTest, testDevice } from "./helpers.ts";
import { gpuGrads, randomizeWeights, tokens } from "./model_grad_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const missing = torchMissing();
if (missing) {
  console.warn(
    `torch_reference_test: SKIPPED: no PyTorch for ${PYTHON} (${missing}); ` +
      `install it with: apt-get install -y python3-torch libopenblas0-pthread`,
  );
}

/** float32 here against float64 there, over 64 tokens of a 50,257-way softmax. */
const LOSS_RTOL = 1e-5;
/** Greedy tokens are compared while PyTorch's top logit leads the runner-up by at least this. */
const GREEDY_MIN_MARGIN = 1e-3;
const SEQ = 32;
const PROMPT = "It was the best";
const NEW_TOKENS = 8;

/** Text the model never trained on (its loss is far from its training loss). */
const EVAL_TEXT =
  "The whale rose from the grey water at dawn, and the crew watched it in silence. Nobody on " +
  "the deck spoke; the captain kept his eyes on the horizon, where the clouds were gathering " +
  "again. It was the third morning of the chase, and the men were tired, hungry and afraid of " +
  "what the sea would ask of them before the day was out. Still the ship ran on before the wind.";

async function ok(script: string, args: string[]): Promise<string> {
  const r = await runCli(script, args, undefined, { timeoutMs: 90_000 });
  assert.equal(r.code, 0, `${script} ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
  return r.stdout;
}

function lastJson(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split("\n").pop()!);
}

/** Runs one of the PyTorch scripts beside this file; its last stdout line is JSON. */
async function runPython(script: string, args: string[]): Promise<Record<string, unknown>> {
  const r = await new Deno.Command(PYTHON, {
    args: [new URL(script, import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const dec = new TextDecoder();
  assert.ok(r.success, `${script} failed (exit ${r.code}):\n${dec.decode(r.stderr)}`);
  return lastJson(dec.decode(r.stdout));
}

Deno.test({
  name: `GPT-2 vocabulary at TP=2 against a PyTorch GPT-2: eval's loss and generate's greedy text${
    missing ? " [SKIPPED: no PyTorch]" : ""
  }`,
  ignore: missing !== null,
  timeout: 240_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      await ok("cli/train.ts", [
        ...["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4"],
        ...["--seq-length", String(SEQ), "--micro-batch-size", "2", "--tokenizer", "gpt2"],
        ...["--train-iters", "40", "--lr", "0.005", "--eval-iters", "1", "--sample-tokens", "0"],
        ...["--data-path", `${dir}/data.txt`, "--tp", "2", "--nproc-per-node", "2"],
        ...["--save", `${dir}/ck`],
      ]);
      await Deno.writeTextFile(`${dir}/eval.txt`, EVAL_TEXT);
      await Deno.writeTextFile(`${dir}/prompt.txt`, PROMPT);
      for (const name of ["eval", "prompt"]) {
        await ok("cli/preprocess.ts", [
          ...["--data-path", `${dir}/${name}.txt`, "--tokenizer", "gpt2"],
          ...["--output", `${dir}/${name}.bin`],
        ]);
      }
      await ok("cli/export_hf.ts", ["--load", `${dir}/ck`, "--output", `${dir}/hf`]);
      const ref = await runPython("./torch_gpt2_eval.py", [
        ...[`${dir}/hf`, `${dir}/eval.bin`, String(SEQ), `${dir}/prompt.bin`],
        String(NEW_TOKENS),
      ]) as {
        loss: number;
        tokens: number;
        windows: number;
        greedy: number[];
        margins: number[];
        vocab: number;
      };
      assert.equal(ref.vocab, 50257);
      assert.equal(ref.windows, 2, "the evaluation text should hold two full windows");

      for (const tp of ["1", "2"]) {
        const ours = lastJson(
          await ok("cli/eval.ts", [
            ...["--load", `${dir}/ck`, "--data-path", `${dir}/eval.bin`],
            ...["--seq-length", String(SEQ), "--tp", tp, "--json"],
          ]),
        ) as { loss: number; tokens: number };
        assert.equal(ours.tokens, ref.tokens);
        const rel = Math.abs(ours.loss - ref.loss) / ref.loss;
        assert.ok(
          rel <= LOSS_RTOL,
          `eval at TP=${tp}: loss ${ours.loss} against PyTorch's ${ref.loss} (relative ${rel})`,
        );
      }

      const text = await ok("cli/generate.ts", [
        ...["--load", `${dir}/ck`, "--tp", "2", "--prompt", PROMPT, "--temperature", "0"],
        ...["--max-new-tokens", String(NEW_TOKENS), "--ignore-eos"],
      ]);
      let sure = ref.margins.findIndex((m) => m < GREEDY_MIN_MARGIN);
      if (sure < 0) sure = NEW_TOKENS;
      assert.ok(sure >= 4, `PyTorch's greedy margins are too close to compare: ${ref.margins}`);
      const tokenizer = await createTokenizer("gpt2");
      const expected = PROMPT + tokenizer.decode(ref.greedy.slice(0, sure));
      assert.ok(
        text.startsWith(expected),
        `generate gave ${JSON.stringify(text)}; PyTorch's greedy text ${JSON.stringify(expected)}`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * Gradient tolerance, as tests/vocab_scale_test.ts's at this vocabulary: |g − ref| ≤ 1e-5·G +
 * 1e-3·|ref|, G the largest |ref| of the set (the float32 head sums over 50,257 columns).
 */
const GRAD_ATOL_OF_MAX = 1e-5;
const GRAD_RTOL = 1e-3;

Deno.test({
  name: `GPT-2 vocabulary: every parameter's gradient against PyTorch autograd (float64)${
    missing ? " [SKIPPED: no PyTorch]" : ""
  }`,
  ...gpuTest,
  ignore: missing !== null,
  timeout: 240_000,
  fn: async () => {
    const dev = await testDevice();
    const cfg: GptConfig = {
      vocabSize: 50257,
      numLayers: 2,
      hiddenSize: 32,
      numHeads: 4,
      maxPositions: 16,
      hiddenDropout: 0,
      attentionDropout: 0,
    };
    const B = 2, T = 16, V = cfg.vocabSize;
    const m = Gpt.serial(dev, cfg, 5);
    // O(1) weights, so that the softmax over the vocabulary is far from uniform and every path
    // carries a gradient; the last real row, and rows past 2^15, are looked up and targeted.
    const weights = randomizeWeights(m, 7);
    const ids = tokens(B * T, 8, V), targets = tokens(B * T, 9, V);
    ids[3] = V - 1;
    targets[5] = V - 1;
    ids[7] = 40000;
    targets[11] = 32768;
    const { loss, grads } = await gpuGrads(
      dev,
      m,
      () => m.loss(TokenIds.fromHost(dev, ids, [B, T]), TokenIds.fromHost(dev, targets, [B, T])),
    );
    const shapes = new Map(m.namedParams().map(([n, p]) => [n, p.tensor.shape]));
    const host = (values: Map<string, Float32Array>) => (name: string) => {
      const data = values.get(name), shape = shapes.get(name);
      return data && shape ? { shape: [...shape], data } : undefined;
    };
    m.dispose();

    await using temp = await tempDir({ prefix: "torch_grads-" });
    const dir = temp.path;
    await writeHfGpt2(`${dir}/weights`, cfg, host(weights));
    await writeHfGpt2(`${dir}/grads`, cfg, host(grads));
    await Deno.writeTextFile(
      `${dir}/batch.json`,
      JSON.stringify({ B, T, ids: [...ids], targets: [...targets] }),
    );
    const ref = await runPython("./torch_gpt2_grads.py", [
      ...[`${dir}/weights`, `${dir}/grads`, `${dir}/batch.json`],
      ...[String(GRAD_ATOL_OF_MAX), String(GRAD_RTOL)],
    ]) as { loss: number; sets: Record<string, { ratio: number; err: number; G: number }> };
    const rel = Math.abs(loss - ref.loss) / ref.loss;
    assert.ok(rel <= LOSS_RTOL, `loss ${loss} against PyTorch's ${ref.loss} (relative ${rel})`);
    const sets = Object.entries(ref.sets);
    assert.equal(
      sets.length,
      2 + 12 * cfg.numLayers + 2 + 1,
      "every HF tensor and the unused rows",
    );
    const failed = sets.filter(([, s]) => !(s.ratio <= 1));
    assert.deepEqual(
      failed,
      [],
      `gradients past |g − ref| ≤ ${GRAD_ATOL_OF_MAX}·G + ${GRAD_RTOL}·|ref| ` +
        `(ratio > 1 fails): ${JSON.stringify(failed)}`,
    );
    if (Deno.env.get("TORCH_REFERENCE_VERBOSE")) console.log(ref.sets);
  },
});
