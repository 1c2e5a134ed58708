/**
 * Nodes that would not share their checkpoints stop before the first step,
 * naming the ranks (cli/same_checkpoint.ts): a `--save` that is a separate
 * directory on each node (each would hold part of every checkpoint's shards,
 * and the first save failed after the training), and `--load` copies whose
 * latest iterations differ (the ranks met in a mismatched collective). A
 * shared `--save` leaves no probe file behind.
 */

import assert from "node:assert/strict";
import { SAVE_PROBE_PREFIX } from "../cli/same_checkpoint.ts";
import { makeRunDir, runCli, TINY_RUN_FLAGS, twoLocalNodes } from "./cli_helpers.ts";

const run = [...TINY_RUN_FLAGS, "--tp", "2"];

/** The names in folder `path`, or null where it does not exist. */
function entries(path: string): string[] | null {
  try {
    return [...Deno.readDirSync(path)].map((e) => e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

Deno.test({
  name: "same checkpoint: a --save that is another directory on each node stops both at once",
  timeout: 120_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      const { results, ms } = await twoLocalNodes(dir, [
        [...run, "--train-iters", "4", "--save", `${dir}/ck0`],
        [...run, "--train-iters", "4", "--save", `${dir}/ck1`],
      ]);
      for (const [i, n] of results.entries()) {
        assert.equal(n.code, 2, n.stderr);
        assert.match(
          n.stderr,
          new RegExp(
            `--save \\S*ck${i} is not one directory for every rank: rank 1 cannot read the file ` +
              "rank 0 wrote there.*storage every node shares",
          ),
        );
        assert.doesNotMatch(n.stdout, /iteration\s+1\//, "it trained");
      }
      assert.ok(ms < 30_000, `took ${Math.round(ms)} ms`);
      // Made by the failed run and empty, each is removed again (cli/train.ts), probe and all.
      for (const ck of ["ck0", "ck1"]) assert.equal(entries(`${dir}/${ck}`), null, ck);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "same checkpoint: nodes whose --load copies are at different iterations stop, naming both",
  timeout: 240_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      // A checkpoint at iterations 2 and 4, and a copy whose latest is still 2.
      const first = await runCli("cli/train.ts", [
        ...run,
        ...["--nproc-per-node", "2", "--backend", "deno", "--train-iters", "4"],
        ...["--save-interval", "2", "--save", `${dir}/ck`],
      ], dir);
      assert.equal(first.code, 0, first.stderr);
      await Deno.mkdir(`${dir}/old`);
      for (const e of Deno.readDirSync(`${dir}/ck`)) {
        if (e.name.startsWith("iter_")) {
          await new Deno.Command("cp", { args: ["-r", `${dir}/ck/${e.name}`, `${dir}/old/`] })
            .output();
        }
      }
      await Deno.writeTextFile(`${dir}/old/latest`, "2\n");
      const resume = ["--train-iters", "6", "--save", `${dir}/next`];
      const { results } = await twoLocalNodes(dir, [
        [...run, ...resume, "--load", `${dir}/ck`],
        [...run, ...resume, "--load", `${dir}/old`],
      ]);
      for (const n of results) {
        assert.equal(n.code, 1, n.stderr);
        assert.match(
          n.stderr,
          /gives the ranks different checkpoints: iteration 4 on rank 0, iteration 2 on rank 1/,
        );
      }
      // A shared --save: the probe is gone once the job is past it (and the folder, made by the
      // failed run and empty, with it).
      const left = entries(`${dir}/next`) ?? [];
      assert.ok(!left.some((n) => n.startsWith(SAVE_PROBE_PREFIX)), `${left}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
