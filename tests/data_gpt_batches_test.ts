import assert from "node:assert/strict";
import {
  evalBatches,
  evalWindowCount,
  evalWindowStarts,
  GptBatchSampler,
  sliceBatch,
} from "../data/gpt_batches.ts";
import { DataRng } from "../data/rng.ts";
import { uniformEntropy, unigramEntropy } from "../data/stats.ts";

const arange = (n: number) => Uint32Array.from({ length: n }, (_, i) => i);

Deno.test("sampler windows: inputs ids[s..s+T), targets ids[s+1..s+T+1), starts in range", () => {
  const n = 50, T = 7, B = 4;
  const ids = arange(n).map((i) => i * 3 + 1); // distinct values, not equal to positions
  const sampler = new GptBatchSampler(ids, { batchSize: B, seqLength: T, seed: 42 });
  assert.equal(sampler.windowCount, n - T);
  const seen = new Set<number>();
  for (let k = 0; k < 200; k++) {
    const b = sampler.next();
    assert.equal(b.inputs.length, B * T);
    assert.equal(b.targets.length, B * T);
    b.starts.forEach((s, r) => {
      assert.ok(s >= 0 && s <= n - T - 1);
      seen.add(s);
      for (let j = 0; j < T; j++) {
        assert.equal(b.inputs[r * T + j], ids[s + j]);
        assert.equal(b.targets[r * T + j], ids[s + j + 1]);
      }
    });
  }
  assert.equal(seen.size, n - T); // every start reachable, including the last one
  assert.equal(sampler.batchesDrawn, 200);
});

Deno.test("sampler is reproducible from the seed and resumable from its state", () => {
  const ids = arange(10_000);
  const opts = { batchSize: 3, seqLength: 16, seed: 7 };
  const a = new GptBatchSampler(ids, opts);
  const b = new GptBatchSampler(ids, opts);
  for (let k = 0; k < 5; k++) assert.deepEqual(a.next().inputs, b.next().inputs);
  const other = new GptBatchSampler(ids, { ...opts, seed: 8 });
  assert.notDeepEqual(other.next().starts, new GptBatchSampler(ids, opts).next().starts);

  const saved = JSON.parse(JSON.stringify(a.state()));
  const expected = [a.next(), a.next()];
  const resumed = new GptBatchSampler(ids, opts);
  resumed.restore(saved);
  assert.equal(resumed.batchesDrawn, 5);
  assert.deepEqual([resumed.next(), resumed.next()], expected);
  assert.throws(() => other.restore(saved), /seed 7/);
});

Deno.test("sampler rejects a stream shorter than one window", () => {
  assert.throws(
    () => new GptBatchSampler(arange(8), { batchSize: 1, seqLength: 8, seed: 0 }),
    /8 tokens, fewer than one window of seq length \+ 1 = 9/,
  );
  assert.doesNotThrow(() =>
    new GptBatchSampler(arange(9), { batchSize: 1, seqLength: 8, seed: 0 })
  );
  assert.throws(() => new GptBatchSampler(arange(9), { batchSize: 0, seqLength: 8, seed: 0 }));
});

Deno.test("eval windows: exact enumeration on small examples", () => {
  assert.deepEqual(evalWindowStarts(10, 3), [0, 3, 6]); // last window 6..9, next token 9
  assert.equal(evalWindowCount(11, 3), 3);
  assert.equal(evalWindowCount(13, 3), 4);
  assert.equal(evalWindowCount(4, 3), 1);
  assert.equal(evalWindowCount(3, 3), 0);
  assert.equal(evalWindowCount(0, 3), 0);
  const ids = arange(10);
  const batches = [...evalBatches(ids, 2, 3)];
  assert.deepEqual(batches.map((b) => b.batchSize), [2, 1]);
  assert.deepEqual(Array.from(batches[0].inputs), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(Array.from(batches[0].targets), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(Array.from(batches[1].inputs), [6, 7, 8]);
  assert.deepEqual(Array.from(batches[1].targets), [7, 8, 9]);
  assert.deepEqual([...evalBatches(ids, 2, 3, { dropLast: true })].length, 1);
  assert.deepEqual([...evalBatches(arange(1000), 2, 3, { maxBatches: 4 })].length, 4);
});

Deno.test("sliceBatch splits rows for data-parallel ranks", () => {
  const s = new GptBatchSampler(arange(100), { batchSize: 4, seqLength: 5, seed: 3 });
  const full = s.next();
  const halves = [sliceBatch(full, 0, 2), sliceBatch(full, 1, 2)];
  assert.deepEqual(
    Array.from(halves[0].inputs).concat(Array.from(halves[1].inputs)),
    Array.from(full.inputs),
  );
  assert.deepEqual(halves[1].starts, full.starts.slice(2));
  assert.throws(() => sliceBatch(full, 0, 3), /cannot be split/);
});

Deno.test("rng: deterministic, state round trip, unbiased-looking ints", () => {
  const r = new DataRng(123);
  const st = r.state();
  const xs = Array.from({ length: 5 }, () => r.nextU32());
  r.restore(st);
  assert.deepEqual(Array.from({ length: 5 }, () => r.nextU32()), xs);
  const counts = new Array(6).fill(0);
  for (let i = 0; i < 60_000; i++) counts[r.nextInt(6)]++;
  for (const c of counts) assert.ok(Math.abs(c - 10_000) < 400, `count ${c}`);
  assert.notDeepEqual(new DataRng(1).state(), new DataRng(2).state());
  // Seeds at and past 2³²: their high half was folded into the low one, so these collided.
  assert.notDeepEqual(new DataRng(0).state(), new DataRng(2 ** 32 + 0x27d4eb2d).state());
  assert.notDeepEqual(new DataRng(5).state(), new DataRng(2 ** 32 + 5).state());
  // Seeds under 2³² keep the streams (and the data orders) they always had.
  assert.deepEqual(new DataRng(1234).state().slice(0, 4), [
    1889054206,
    3098527212,
    4145563210,
    4171268909,
  ]);
});

Deno.test("entropy baselines", () => {
  assert.ok(Math.abs(unigramEntropy([0, 0, 1, 1]) - Math.LN2) < 1e-12);
  assert.equal(unigramEntropy([5, 5, 5]), 0);
  assert.ok(Math.abs(unigramEntropy(arange(256)) - Math.log(256)) < 1e-12);
  assert.ok(Math.abs(uniformEntropy(50257) - 10.824905) < 1e-6);
});
