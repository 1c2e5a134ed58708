/**
 * Nodes of one training job that read different data (each node reads its own
 * copy of the files): refused at once on every node, naming the stream, before
 * any device or step. The fingerprint the ranks compare: a stream's length and
 * a hash of every token. Two `cli/train.ts` nodes on loopback, one
 * rank each, as in tests/same_flags_test.ts.
 */

import assert from "node:assert/strict";
import { streamFingerprint, TokenStreamHash } from "../cli/same_data.ts";
import { makeRunDir, TINY_RUN_FLAGS, twoLocalNodes } from "./cli_helpers.ts";

Deno.test("streamFingerprint: the length and a hash that sees every token, in order", async () => {
  const a = Uint32Array.from({ length: 1_000_000 }, (_, i) => (i * 104729) % 50257);
  const same = await streamFingerprint(Uint32Array.from(a));
  assert.deepEqual(await streamFingerprint(a), same);
  assert.equal(same.tokens, 1_000_000);
  assert.match(same.hash, /^[0-9a-f]{8}$/);
  // The same values in another array type hash alike (a uint32 and its int32 bits too).
  assert.deepEqual(await streamFingerprint(Uint16Array.from(a)), same);
  assert.deepEqual(
    await streamFingerprint([0xffffffff, 7]),
    await streamFingerprint(Int32Array.from([-1, 7])),
  );
  // One token changed anywhere (the ends, and between where a sampled hash would look), one token
  // fewer, or two neighbours swapped: another fingerprint.
  for (const i of [0, 255, 256, 300, 500_123, 999_744, 999_999]) {
    const b = Uint32Array.from(a);
    b[i] ^= 1;
    assert.notEqual((await streamFingerprint(b)).hash, same.hash, `token ${i}`);
  }
  assert.notDeepEqual(await streamFingerprint(a.subarray(1)), same);
  const swapped = Uint32Array.from(a);
  [swapped[700_001], swapped[700_002]] = [swapped[700_002], swapped[700_001]];
  assert.notEqual((await streamFingerprint(swapped)).hash, same.hash);
});

Deno.test("TokenStreamHash: a stream fed in pieces hashes as the whole; where the pieces end is not hashed", async () => {
  const a = Int32Array.from({ length: 10_000 }, (_, i) => (i * 7919) % 30522);
  const hash = new TokenStreamHash();
  for (const [from, to] of [[0, 1], [1, 4097], [4097, 4097], [4097, 10_000]]) {
    hash.add(a.subarray(from, to));
  }
  assert.deepEqual(hash.fingerprint(), await streamFingerprint(a));
  assert.equal(new TokenStreamHash().fingerprint().tokens, 0);
  // BERT's streams mark sentence and document ends with -1 and -2 (cli/tasks/bert.ts) for that.
  const cut = (at: number) => {
    const h = new TokenStreamHash();
    h.add(a.subarray(0, at));
    h.add([-1]);
    h.add(a.subarray(at));
    return h.fingerprint().hash;
  };
  assert.notEqual(cut(10), cut(11));
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
