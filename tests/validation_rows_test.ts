/**
 * Train's validation loss is the mean over every validation window, as `deno task eval`'s is:
 * a short last batch (13 windows in batches of 5: 5, 5, 3) counts for its rows, not as a full
 * batch (until the twenty-eighth session it weighed as much as a full one).
 * @module
 */
import assert from "node:assert/strict";
import { makeRunDir, runCli, TINY_MODEL_FLAGS } from "./cli_helpers.ts";
import { withTimeLimit } from "./helpers.ts";

/** The `lm loss value` of the last validation report in `out`. */
function lastValidation(out: string): number {
  const all = [...out.matchAll(/validation loss at .*\| lm loss value: (\S+) \|/g)];
  assert.ok(all.length > 0, `no validation report in:\n${out}`);
  return Number(all.at(-1)![1]);
}

Deno.test(
  "train's validation loss weighs a short last batch by its rows: eval's loss on the checkpoint",
  withTimeLimit(120),
  async () => {
    const dir = await makeRunDir();
    try {
      // Byte-level: 13 windows of 16 tokens (and their next tokens) fit in 215 bytes.
      const val = "A whale of a tale, told twice over in the fog at sea. ".repeat(4).slice(0, 215);
      await Deno.writeTextFile(`${dir}/val.txt`, val);
      const micro = ["--micro-batch-size", "5"];
      const train = await runCli("cli/train.ts", [
        ...TINY_MODEL_FLAGS,
        ...micro,
        ...["--train-data-path", `${dir}/data.txt`, "--valid-data-path", `${dir}/val.txt`],
        ...["--train-iters", "1", "--eval-iters", "100", "--sample-tokens", "0"],
        ...["--no-matmul-autotune", "--save", `${dir}/ck`],
      ]);
      assert.equal(train.code, 0, train.stderr);
      const ev = await runCli("cli/eval.ts", [
        ...["--load", `${dir}/ck`, "--data-path", `${dir}/val.txt`, ...micro, "--json"],
      ]);
      assert.equal(ev.code, 0, ev.stderr);
      const evLoss = JSON.parse(ev.stdout).loss as number;
      assert.equal(JSON.parse(ev.stdout).windows, 13);
      const trainLoss = lastValidation(train.stdout);
      // The report prints 7 significant digits.
      assert.ok(
        Math.abs(trainLoss - evLoss) <= 1e-6 * evLoss,
        `train's validation ${trainLoss}, eval's ${evLoss}`,
      );
      console.log(`validation over 5 + 5 + 3 windows: train ${trainLoss}, eval ${evLoss}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
