/**
 * Nodes of one training job started with different flags: refused at once on
 * every node, naming the flag, instead of pairing mismatched collectives until
 * the dist timeout. Paths and node-own flags may differ. Two `cli/train.ts`
 * nodes on loopback, one rank each.
 */

import assert from "node:assert/strict";
import { makeRunDir, TINY_RUN_FLAGS, twoLocalNodes } from "./cli_helpers.ts";

/** Both nodes of a 2-node job on loopback, node `i` with `extra[i]` after the common flags. */
function twoNodes(dir: string, extra: [string[], string[]]) {
  const common = [...TINY_RUN_FLAGS, "--train-iters", "2"];
  return twoLocalNodes(dir, [[...common, ...extra[0]], [...common, ...extra[1]]]);
}

Deno.test({
  name:
    "same flags: nodes started with another --tensor-model-parallel-size stop at once, naming it",
  timeout: 120_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      const data = ["--data-path", `${dir}/data.txt`];
      const { results: [n0, n1], ms } = await twoNodes(dir, [
        [...data, "--tp", "2", "--lr", "0.001"],
        [...data, "--tp", "1", "--lr", "0.002", "--adam-eps", "1e-6"],
      ]);
      assert.equal(n0.code, 2, n0.stderr);
      assert.equal(n1.code, 2, n1.stderr);
      assert.match(
        n0.stderr,
        /the ranks were started with different flags: --adam-eps 1e-8 on rank 0, 0\.000001 on rank 1; --lr 0\.001 on rank 0, 0\.002 on rank 1; --tensor-model-parallel-size 2 on rank 0, 1 on rank 1\. Start every node with the same flags/,
      );
      // Well inside the 60 s dist timeout.
      assert.ok(ms < 30_000, `took ${Math.round(ms)} ms`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "same flags: a path given on one node only is refused; paths, --log-json and Megatron's no-op flags may differ",
  timeout: 180_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      await Deno.copyFile(`${dir}/data.txt`, `${dir}/copy.txt`);
      const data = (f: string) => ["--data-path", `${dir}/${f}`];
      const half = await twoNodes(dir, [
        [...data("data.txt"), "--save", `${dir}/ck`],
        data("copy.txt"),
      ]);
      assert.equal(half.results[0].code, 2, half.results[0].stderr);
      assert.match(half.results[0].stderr, /--save given on rank 0, not given on rank 1/);

      // Megatron's flags that change nothing here may differ too (cli/megatron_flags.ts), and so
      // may --lr-warmup-iters beside a warm-up fraction, which replaces it, and a decay length
      // given on one node as the length the other resolves (--train-iters).
      const warmup = ["--lr-warmup-fraction", "0.25"];
      const ok = await twoNodes(dir, [
        [
          ...data("data.txt"),
          ...["--log-json", `${dir}/log.jsonl`, "--use-mcore-models"],
          ...warmup,
          ...["--lr-warmup-iters", "0", "--lr-decay-iters", "2"],
        ],
        [...data("copy.txt"), "--distributed-backend", "gloo", ...warmup],
      ]);
      for (const r of ok.results) assert.equal(r.code, 0, r.stderr);
      assert.match(ok.results[0].stdout, /iteration\s+2\/\s*2/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "same flags: a blend's weights must agree across nodes; its paths may differ",
  timeout: 120_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      await Deno.copyFile(`${dir}/data.txt`, `${dir}/copy.txt`);
      const blend = (w: string, f: string) => ["--data-path", w, `${dir}/${f}`, "1", `${dir}/${f}`];
      const { results: [n0, n1] } = await twoNodes(dir, [
        blend("1", "data.txt"),
        blend("3", "copy.txt"),
      ]);
      assert.equal(n0.code, 2, n0.stderr);
      assert.equal(n1.code, 2, n1.stderr);
      assert.match(
        n0.stderr,
        /--data-path 0\.5 PATH 0\.5 PATH on rank 0, 0\.75 PATH 0\.25 PATH on rank 1/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
