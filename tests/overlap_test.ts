/**
 * Communication overlapped with backward (models/parallel/overlap.ts) changes
 * timing only: GPT trained with `--overlap-tp-comm` (TP=2), with
 * `--overlap-grad-reduce` in small buckets (DP=2, two micro-batches, fp32 and
 * bf16 with its 16-bit wire) and with both (TP=2 × DP=2) gives bit-identical
 * losses, gradient norms and weights to the same run without overlap.
 */

import assert from "node:assert/strict";
import { withTimeLimit } from "./helpers.ts";
import { joinShards, type RankResult, runSpec, TP_TEST_MODEL } from "./tp_harness.ts";
import type { TpRunSpec } from "./tp_worker.ts";
import { bucketLayout } from "../models/parallel/overlap.ts";

const base: TpRunSpec = {
  tp: 1,
  config: TP_TEST_MODEL,
  batch: 8,
  seq: 7,
  steps: 3,
  seed: 11,
};

function assertSame(a: RankResult[], b: RankResult[]): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.deepEqual(a[i].losses, b[i].losses, `rank ${i} losses`);
    assert.deepEqual(a[i].norms, b[i].norms, `rank ${i} grad norms`);
  }
  const wa = joinShards(a), wb = joinShards(b);
  assert.deepEqual([...wa.keys()], [...wb.keys()]);
  for (const [name, ref] of wb) {
    const got = wa.get(name)!;
    assert.equal(got.length, ref.length, name);
    for (let i = 0; i < ref.length; i++) {
      if (!Object.is(got[i], ref[i])) assert.fail(`${name}[${i}]: ${got[i]} vs ${ref[i]}`);
    }
  }
}

Deno.test("bucketLayout: buckets of at least the size from the last parameter back", () => {
  const t = (size: number) => ({ size }) as never;
  const ps = [t(5), t(3), t(4), t(2), t(6)];
  assert.deepEqual(bucketLayout(ps, 7), [[ps[3], ps[4]], [ps[1], ps[2]], [ps[0]]]);
  assert.deepEqual(bucketLayout(ps, 1000), [ps]);
});

Deno.test("TP=2: --overlap-tp-comm gives the same bits", withTimeLimit(300), async () => {
  const spec = { ...base, tp: 2 };
  const off = await runSpec(spec, 2);
  const on = await runSpec({ ...spec, overlapTpComm: true }, 2);
  assertSame(on, off);
});

Deno.test(
  "DP=2, 2 micro-batches: --overlap-grad-reduce in small buckets gives the same bits (fp32, bf16 wire)",
  withTimeLimit(400),
  async () => {
    const spec = { ...base, microBatches: 2, ddpBucketSize: 600 };
    const one = await runSpec({ ...base, microBatches: 2 }, 2); // today's single flat all-reduce
    const off = await runSpec(spec, 2);
    const on = await runSpec({ ...spec, overlapGradReduce: true }, 2);
    assertSame(off, one);
    assertSame(on, off);
    const halfOff = await runSpec({ ...spec, half: "bf16" }, 2);
    const halfOn = await runSpec({ ...spec, half: "bf16", overlapGradReduce: true }, 2);
    assertSame(halfOn, halfOff);
  },
);

Deno.test("TP=2 × DP=2: both overlaps give the same bits", withTimeLimit(400), async () => {
  const spec = { ...base, tp: 2, ddpBucketSize: 600 };
  const off = await runSpec(spec, 4);
  const on = await runSpec({ ...spec, overlapTpComm: true, overlapGradReduce: true }, 4);
  assertSame(on, off);
});
