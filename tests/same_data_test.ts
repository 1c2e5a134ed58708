/**
 * Nodes of one training job that read different data (each node reads its own
 * copy of the files): refused at once on every node, naming the stream, before
 * any device or step. The fingerprint the ranks compare: a stream's length and
 * a hash of (a sample of) its tokens. Two `cli/train.ts` nodes on loopback, one
 * rank each, as in tests/same_flags_test.ts.
 */

import assert from "node:assert/strict";
import { streamFingerprint } from "../cli/same_data.ts";
import { makeRunDir, TINY_RUN_FLAGS, twoLocalNodes } from "./cli_helpers.ts";

Deno.test("streamFingerprint: the length and a hash that sees every token of a short stream and samples a long one", () => {
  const a = Uint32Array.from({ length: 5000 }, (_, i) => (i * 7919) % 50257);
  const same = streamFingerprint(Uint32Array.from(a));
  assert.deepEqual(streamFingerprint(a), same);
  assert.equal(same.tokens, 5000);
  assert.match(same.hash, /^[0-9a-f]{8}$/);
  // One token changed anywhere in a short stream, or one token fewer: another fingerprint.
  for (const i of [0, 2500, 4999]) {
    const b = Uint32Array.from(a);
    b[i] ^= 1;
    assert.notEqual(streamFingerprint(b).hash, same.hash, `token ${i}`);
  }
  assert.notDeepEqual(streamFingerprint(a.subarray(1)), same);
  // A long stream: its first and last tokens and evenly spaced ones are hashed.
  const long = Uint32Array.from({ length: 1_000_000 }, (_, i) => (i * 104729) % 50257);
  const f = streamFingerprint(long);
  assert.equal(f.tokens, 1_000_000);
  for (const i of [0, 255, 999_744, 999_999, 256]) {
    const b = Uint32Array.from(long);
    b[i] ^= 1;
    assert.notEqual(streamFingerprint(b).hash, f.hash, `token ${i}`);
  }
  // Another file of the same length differs at sampled positions.
  assert.notEqual(streamFingerprint(long.map((t) => (t + 1) % 50257)).hash, f.hash);
});

/** Both nodes of a 2-node job on loopback, node `i` reading `files[i]`, with `extra` flags. */
async function nodesReading(dir: string, files: [string, string], extra: string[] = []) {
  const common = [...TINY_RUN_FLAGS, "--train-iters", "2", ...extra];
  return await twoLocalNodes(dir, [
    [...common, "--data-path", `${dir}/${files[0]}`],
    [...common, "--data-path", `${dir}/${files[1]}`],
  ]);
}

for (const model of ["gpt", "bert"]) {
  Deno.test({
    name: `same data: a ${model} node whose data differs from the others' stops at once, naming it`,
    timeout: 120_000,
    fn: async () => {
      const dir = await makeRunDir();
      try {
        // The same length, one sentence changed: only the hash tells them apart.
        const text = await Deno.readTextFile(`${dir}/data.txt`);
        await Deno.writeTextFile(`${dir}/other.txt`, text.replace("best", "rest"));
        const extra = model === "bert" ? ["--model", "bert", "--eval-iters", "0"] : [];
        const { results: [n0, n1], ms } = await nodesReading(dir, ["data.txt", "other.txt"], extra);
        for (const n of [n0, n1]) {
          assert.equal(n.code, 1, n.stderr);
          assert.match(
            n.stderr,
            /the ranks read different data: training data: (\d+) tokens \(hash [0-9a-f]{8}\) on rank 0, \1 tokens \(hash [0-9a-f]{8}\) on rank 1.*Give every node the same data files/,
          );
          assert.doesNotMatch(n.stdout, /iteration\s+1\//, "it trained");
        }
        // Well inside the 60 s dist timeout.
        assert.ok(ms < 30_000, `took ${Math.round(ms)} ms`);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
