/**
 * Rank processes that torchrun (or SLURM, OpenMPI) starts each parse the same
 * command line: a mistake in it, or a missing data file, is printed once per
 * node, by the node's first rank, and every rank exits with the command's own
 * code (2 for the command line, 1 for the data). Until the twenty-ninth
 * session every rank printed it: eight copies of a multi-line refusal on an
 * eight-GPU node. Two processes with torchrun's variables stand in for
 * torchrun; the errors come before the ranks meet.
 */

import { strictEqual } from "node:assert/strict";
import { makeRunDir, TINY_RUN_FLAGS, torchrunStyleRanks } from "./cli_helpers.ts";

/** Both ranks of a 2-rank job with torchrun's variables, run with `args`. */
const ranks = (dir: string, args: string[]) => torchrunStyleRanks(dir, args, { timeoutMs: 60_000 });

Deno.test({
  name: "torchrun's ranks: a bad command line or missing data is printed by the first rank only",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      const data = ["--data-path", `${dir}/data.txt`];
      // Two refused flags: the multi-line refusal.
      const [r0, r1] = await ranks(dir, [
        ...TINY_RUN_FLAGS,
        ...data,
        "--tp",
        "2",
        "--swiglu",
        "--num-experts",
        "8",
      ]);
      strictEqual(r0.code, 2, r0.stderr);
      strictEqual(r1.code, 2, r1.stderr);
      strictEqual(
        r0.stderr.trim(),
        [
          "error: 2 flags are refused (--help lists the flags):",
          "  • --swiglu: the MLP is GPT-2's GeLU MLP here",
          "  • --num-experts 8: mixture of experts is not implemented here: each layer has one " +
          "dense GeLU MLP",
        ].join("\n"),
      );
      strictEqual(r1.stderr, "");
      // One bad value.
      const [b0, b1] = await ranks(dir, [...TINY_RUN_FLAGS, ...data, "--train-iters", "0"]);
      strictEqual(b0.code, 2, b0.stderr);
      strictEqual(b1.code, 2, b1.stderr);
      strictEqual(b0.stderr.trim(), "error: --train-iters must be ≥ 1, got 0");
      strictEqual(b1.stderr, "");
      // A data path that does not exist: exit 1, printed once.
      const [d0, d1] = await ranks(dir, [
        ...TINY_RUN_FLAGS,
        "--data-path",
        `${dir}/none.txt`,
      ]);
      strictEqual(d0.code, 1, d0.stderr);
      strictEqual(d1.code, 1, d1.stderr);
      strictEqual(
        d0.stderr.trim(),
        `error: data path ${JSON.stringify(`${dir}/none.txt`)} does not exist (--data-path)`,
      );
      strictEqual(d1.stderr, "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
