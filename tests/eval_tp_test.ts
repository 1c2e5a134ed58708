/**
 * A checkpoint saved by a TP=2 training run evaluates to the same loss when
 * loaded at TP=1, 2 and 4 (`deno task eval --tp N`), through the real CLIs.
 * Tolerance: 1e-5 relative (float32 sums in a different order across shards).
 */

import { match, strictEqual } from "node:assert/strict";
import { runCli } from "./cli_helpers.ts";
import { assertClose } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

Deno.test("TP=2 checkpoint: eval at TP=1, 2 and 4 gives the same loss", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const text = "It was the best of times, it was the worst of times. ".repeat(80);
  await Deno.writeTextFile(`${dir}/data.txt`, text);
  const train = await runCli(
    "cli/train.ts",
    [
      "--num-layers",
      "1",
      "--hidden-size",
      "32",
      "--num-attention-heads",
      "4",
      "--seq-length",
      "16",
      "--micro-batch-size",
      "2",
      "--train-iters",
      "3",
      "--eval-iters",
      "1",
      "--sample-tokens",
      "0",
      "--data-path",
      `${dir}/data.txt`,
      "--save",
      `${dir}/ck`,
      "--tp",
      "2",
      "--nproc-per-node",
      "2",
    ],
  );
  strictEqual(train.code, 0, train.stderr);
  const losses: number[] = [];
  for (const tp of [1, 2, 4]) {
    const r = await runCli(
      "cli/eval.ts",
      [
        "--load",
        `${dir}/ck`,
        "--data-path",
        `${dir}/data.txt`,
        "--tokenizer",
        "byte",
        "--seq-length",
        "16",
        "--json",
        // Train's parallel flags: --tp, --tensor-model-parallel-size, --nproc-per-node.
        ...(tp === 1
          ? ["--tp", "1"]
          : tp === 2
          ? ["--tensor-model-parallel-size", "2"]
          : ["--nproc-per-node", "4"]),
      ],
    );
    strictEqual(r.code, 0, r.stderr);
    // Under --json the report goes to stderr and stdout holds the object alone.
    if (tp > 1) match(r.stderr, new RegExp(`tensor parallel ${tp}`));
    match(
      r.stderr,
      /\n-+\n validation loss at iteration 3 on .* \| lm loss value: \d\.\d{6}E[+-]\d\d \| lm loss PPL: /,
    );
    losses.push(JSON.parse(r.stdout).loss);
  }
  assertClose([losses[1], losses[2]], [losses[0], losses[0]], {
    rtol: 1e-5,
    what: "eval loss by TP",
  });
});
