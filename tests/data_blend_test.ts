/**
 * Megatron's dataset blending (`--data-path W1 P1 W2 P2 …`): the blend order
 * against the weights (exact counts), determinism, resume from a saved state,
 * the blended sampler and validation windows, the flag's forms and errors, and
 * `deno task train` on a blend of two corpora of disjoint token ids.
 */

import assert from "node:assert/strict";
import {
  blendCounts,
  blendOrder,
  BlendSchedule,
  normalizeWeights,
  numpySum,
} from "../data/blend.ts";
import { blendedEvalBatches, BlendedGptBatchSampler } from "../data/blended_gpt_batches.ts";
import { evalBatches, GptBatchSampler, sliceBatch } from "../data/gpt_batches.ts";
import { writeTokenBin } from "../data/token_bin.ts";
import { blendShape, dataSourceOf, megatronPrefix, parseDataSource } from "../cli/data_source.ts";
import { parseFlags } from "../cli/flags.ts";
import { trainArgsFromFlags } from "../cli/train_args.ts";
import { TRAIN_FLAGS } from "../cli/train_flags.ts";
import { readMeta } from "../models/checkpoint/layout.ts";
import { jsonlLosses, runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";
import { withTimeLimit } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

/** `n` ids cycling through [lo, lo + 100). */
const ids = (n: number, lo: number) => Uint32Array.from({ length: n }, (_, i) => lo + (i % 100));

Deno.test("blend order: each sample goes to the corpus furthest behind its weight", () => {
  // Megatron's order for 0.25/0.75: i = 0 and 1 both weigh max(i, 1) = 1.
  assert.deepEqual([...blendOrder([0.25, 0.75], 8)], [1, 0, 1, 1, 0, 1, 1, 1]);
  assert.deepEqual([...blendOrder([0.2, 0.3, 0.5], 10)], [2, 1, 0, 2, 1, 2, 0, 2, 1, 2]);
  // Weights are normalized: 1:3 is 0.25/0.75.
  assert.deepEqual(blendOrder([1, 3], 100), blendOrder([0.25, 0.75], 100));
  assert.deepEqual(blendCounts([0.3, 0.7], 1000), [300, 700]);
  assert.deepEqual(blendCounts([0.3, 0.7], 999), [300, 699]);
  assert.deepEqual(blendCounts([1, 2, 7], 100), [10, 20, 70]);
  assert.deepEqual(blendCounts([1, 2, 7], 7), [1, 2, 4]);
  // Every prefix holds each corpus within one sample of its share.
  for (const w of [[0.3, 0.7], [0.2, 0.3, 0.5], [0.01, 0.99], [1, 1, 1]]) {
    const nw = normalizeWeights(w);
    const order = blendOrder(w, 5000);
    const counts = w.map(() => 0);
    order.forEach((k, i) => {
      counts[k]++;
      for (let j = 0; j < w.length; j++) {
        assert.ok(Math.abs(counts[j] - nw[j] * (i + 1)) <= 1, `${w} at ${i}: ${counts}`);
      }
    });
  }
  // Megatron's own loop (helpers.cpp build_blending_indices over utils.py's w / numpy.sum(w)),
  // written out here: ties fall the same way (weights scaled by their largest first, 0.33 became
  // 0.32999999999999996 and 62 of these 5,000 samples went to another corpus).
  const megatron = (w: number[], n: number) => {
    const sum = numpySum(w);
    const share = w.map((x) => x / sum), taken = w.map(() => 0);
    return Array.from({ length: n }, (_, i) => {
      let best = 0;
      for (let k = 1; k < w.length; k++) {
        if (share[k] * Math.max(i, 1) - taken[k] > share[best] * Math.max(i, 1) - taken[best]) {
          best = k;
        }
      }
      taken[best]++;
      return best;
    });
  };
  for (const w of [[0.33, 0.33, 0.34], [0.1, 0.2, 0.3, 0.4], [3, 1, 1], [0.3, 0.7]]) {
    assert.deepEqual([...blendOrder(w, 5000)], megatron(w, 5000), `weights ${w}`);
  }
  // numpy.sum's own results (numpy 1.24, float64) for a[i] = ((7919·i mod 1000) + 1) / 997: from
  // 8 values on it sums pairwise, and every one of these differs from the sum in order.
  const numpys: [number, number][] = [
    [3, 1.765295887662989],
    [7, 4.318956870611835],
    [8, 4.754262788365096],
    [9, 5.108324974924774],
    [15, 7.53259779338014],
    [16, 8.320962888666],
    [17, 9.028084252758276],
    [100, 49.29789368104313],
    [129, 64.58676028084253],
    [300, 150.90270812437313],
  ];
  for (const [n, expected] of numpys) {
    const a = Array.from({ length: n }, (_, i) => ((i * 7919) % 1000 + 1) / 997);
    assert.equal(numpySum(a), expected, `numpy.sum of ${n}`);
    if (n >= 8) assert.notEqual(a.reduce((x, y) => x + y, 0), expected, `in order, ${n}`);
  }
  assert.throws(() => normalizeWeights([1, 0]), /positive finite/);
  assert.throws(() => normalizeWeights([1, Infinity]), /positive finite/);
  // At f64's limits: the sum of two 1e308 overflowed to Infinity (weights of 0, a crash later).
  assert.deepEqual(normalizeWeights([1e308, 1e308]), [0.5, 0.5]);
  assert.throws(() => normalizeWeights([5e-324, 1e300]), /too small beside 1e\+300/);
  assert.throws(
    () => parseDataSource("data-path", ["5e-324", "a", "1e300", "b"]),
    (e: Error) => e.name === "UsageError" && /too small/.test(e.message),
  );
});

Deno.test("blend schedule: a restored state continues the order; other weights go on at the same sample", () => {
  const a = new BlendSchedule([0.3, 0.7]);
  for (let i = 0; i < 37; i++) a.next();
  const saved = JSON.parse(JSON.stringify(a.state()));
  const b = new BlendSchedule([3, 7]);
  b.restore(saved);
  assert.equal(b.samples, 37);
  const rest = Array.from({ length: 50 }, () => a.next());
  assert.deepEqual(Array.from({ length: 50 }, () => b.next()), rest);
  assert.deepEqual([...blendOrder([0.3, 0.7], 87)].slice(37), rest);
  // Resumed with other weights: the new blend's order from sample 37 on, as Megatron's rebuilt index.
  const c = new BlendSchedule([0.5, 0.25, 0.25]);
  c.restore(saved);
  assert.equal(c.samples, 37);
  assert.deepEqual(c.counts, blendCounts([0.5, 0.25, 0.25], 37));
  assert.deepEqual(
    Array.from({ length: 20 }, () => c.next()),
    [...blendOrder([0.5, 0.25, 0.25], 57)].slice(37),
  );
  assert.throws(() => c.restore({ weights: [1], counts: [-1] }), /no valid per-corpus counts/);
});

Deno.test("blended sampler: rows from the scheduled corpus, reproducible, resumable", () => {
  const A = ids(500, 0), B = ids(700, 128); // disjoint ids: a row tells its corpus
  const opts = { batchSize: 4, seqLength: 8, seed: 11 };
  const s = new BlendedGptBatchSampler([A, B], [1, 3], opts, ["a.bin", "b.bin"]);
  const order = blendOrder([1, 3], 400);
  for (let k = 0; k < 100; k++) {
    const b = s.next();
    b.sources!.forEach((src, r) => {
      assert.equal(src, order[k * 4 + r]);
      const ids = src === 0 ? A : B;
      assert.ok(b.starts[r] >= 0 && b.starts[r] <= ids.length - 8 - 1);
      for (let j = 0; j < 8; j++) {
        assert.equal(b.inputs[r * 8 + j], ids[b.starts[r] + j]);
        assert.equal(b.targets[r * 8 + j], ids[b.starts[r] + j + 1]);
        assert.equal(b.inputs[r * 8 + j] >= 128, src === 1);
      }
    });
  }
  assert.deepEqual(s.counts, [100, 300]);

  const x = new BlendedGptBatchSampler([A, B], [0.25, 0.75], opts);
  const y = new BlendedGptBatchSampler([A, B], [0.25, 0.75], opts);
  for (let k = 0; k < 5; k++) assert.deepEqual(x.next(), y.next());
  const saved = JSON.parse(JSON.stringify(x.state()));
  const expected = [x.next(), x.next(), x.next()];
  const resumed = new BlendedGptBatchSampler([A, B], [0.25, 0.75], opts);
  resumed.restore(saved);
  assert.equal(resumed.batchesDrawn, 5);
  assert.deepEqual([resumed.next(), resumed.next(), resumed.next()], expected);

  const other = new BlendedGptBatchSampler([A, B], [0.25, 0.75], { ...opts, seed: 12 });
  assert.throws(() => other.restore(saved), /seed 11/);
  // A run may change its data, as Megatron's may: one corpus goes on from a blend's state (the
  // random stream and the batch count), and a blend from one corpus's state at the sample that
  // run had reached (5 batches of 4 rows: 20 samples, 5 and 15 of them by the blend's order).
  const single = new GptBatchSampler(A, opts);
  single.restore(saved);
  assert.equal(single.batchesDrawn, 5);
  const ref = new GptBatchSampler(A, opts);
  ref.restore({ seed: saved.seed, rng: saved.rng, batches: saved.batches });
  assert.deepEqual(single.next(), ref.next());
  const fromSingle = new BlendedGptBatchSampler([A, B], [0.25, 0.75], opts);
  fromSingle.restore(new GptBatchSampler(A, opts).state());
  const oneRun = new GptBatchSampler(A, opts);
  for (let k = 0; k < 5; k++) oneRun.next();
  fromSingle.restore(oneRun.state());
  assert.equal(fromSingle.batchesDrawn, 5);
  assert.deepEqual(fromSingle.counts, [5, 15]);
});

Deno.test("blended sampler: one corpus draws GptBatchSampler's windows; a short corpus is named", () => {
  const A = ids(300, 0);
  const opts = { batchSize: 3, seqLength: 16, seed: 7 };
  const one = new BlendedGptBatchSampler([A], [1], opts);
  const plain = new GptBatchSampler(A, opts);
  for (let k = 0; k < 10; k++) {
    const a = one.next(), b = plain.next();
    assert.deepEqual([a.inputs, a.targets, a.starts], [b.inputs, b.targets, b.starts]);
  }
  assert.throws(
    () => new BlendedGptBatchSampler([A, ids(16, 0)], [1, 1], opts, ["a.bin", "short.bin"]),
    /short\.bin has 16 tokens, fewer than one window of seq length \+ 1 = 17/,
  );
  assert.throws(() => new BlendedGptBatchSampler([A, A], [1], opts), /2 corpora but 1 weights/);
});

Deno.test("blended validation: windows in order per corpus, in blend order; one corpus is evalBatches", () => {
  const A = ids(41, 0), B = ids(161, 128); // 5 and 20 windows of 8
  const batches = blendedEvalBatches([A, B], [0.25, 0.75], 4, 8, { maxBatches: 3 });
  assert.equal(batches.length, 3);
  const sources = batches.flatMap((b) => b.sources!);
  assert.deepEqual(sources, [...blendOrder([0.25, 0.75], 12)]);
  const startsOf = (k: number) =>
    batches.flatMap((b) => b.starts.filter((_, r) => b.sources![r] === k));
  assert.deepEqual(startsOf(0), [0, 8, 16]);
  assert.deepEqual(startsOf(1), [0, 8, 16, 24, 32, 40, 48, 56, 64]);
  // Every window of both: 25 rows, the last batch of 1; corpus A's 6th and later rows start over.
  const all = blendedEvalBatches([A, B], [0.5, 0.5], 4, 8);
  assert.deepEqual(all.map((b) => b.batchSize), [4, 4, 4, 4, 4, 4, 1]);
  const aStarts = all.flatMap((b) => b.starts.filter((_, r) => b.sources![r] === 0));
  assert.deepEqual(aStarts.slice(0, 7), [0, 8, 16, 24, 32, 0, 8]);
  const plain = [...evalBatches(A, 2, 8, { maxBatches: 2 })];
  const one = blendedEvalBatches([A], [1], 2, 8, { maxBatches: 2 });
  assert.deepEqual(
    one.map((b) => [b.inputs, b.targets, b.starts]),
    plain.map((b) => [b.inputs, b.targets, b.starts]),
  );
  assert.throws(
    () => blendedEvalBatches([A, ids(8, 0)], [1, 1], 2, 8, { names: ["a", "tiny"] }),
    /tiny has 8 tokens, fewer than one window/,
  );
});

Deno.test("data-parallel ranks take disjoint rows of a blended batch, sources included", () => {
  const s = new BlendedGptBatchSampler([ids(200, 0), ids(200, 128)], [1, 1], {
    batchSize: 4,
    seqLength: 8,
    seed: 3,
  });
  const full = s.next();
  const halves = [sliceBatch(full, 0, 2), sliceBatch(full, 1, 2)];
  assert.deepEqual(halves.flatMap((h) => h.sources!), full.sources);
  assert.deepEqual(halves.flatMap((h) => h.starts), full.starts);
});

Deno.test("--data-path: one path, weight-path pairs, or paths; bad forms are named", () => {
  assert.deepEqual(parseDataSource("data-path", "a.bin"), { paths: ["a.bin"] });
  assert.deepEqual(parseDataSource("data-path", "0.3"), { paths: ["0.3"] }); // one value: a path
  assert.deepEqual(parseDataSource("data-path", ["0.3", "a.bin", "0.7", "b.bin"]), {
    paths: ["a.bin", "b.bin"],
    weights: [0.3, 0.7],
  });
  const w = parseDataSource("data-path", ["30", "a", "10", "b", "60", "c"]).weights!;
  assert.deepEqual(w.map((x) => +x.toFixed(12)), [0.3, 0.1, 0.6]);
  assert.deepEqual(parseDataSource("data-path", ["a.bin", "b.bin"]), { paths: ["a.bin", "b.bin"] });
  assert.deepEqual(parseDataSource("data-path", ["1", "./2"]), { paths: ["./2"], weights: [1] });
  const bad: [string[], RegExp][] = [
    [["0.3", "a.bin", "0.7"], /the last weight, 0\.7, has no path after it/],
    [["a.bin", "0.5"], /a\.bin has no weight before it/],
    [["0.3", "0.7", "a.bin", "b.bin"], /the weight 0\.3 is followed by 0\.7, not by a path/],
    [
      ["0", "a.bin", "1", "b.bin"],
      /the weight of a\.bin is 0; a weight must be a positive finite number/,
    ],
    [["-1", "a.bin", "1", "b.bin"], /the weight of a\.bin is -1/],
    [["inf", "a.bin", "1", "b.bin"], /the weight of a\.bin is inf/],
    [["nan", "a.bin", "1", "b.bin"], /the weight of a\.bin is nan/],
    [["1e400", "a.bin", "1", "b.bin"], /the weight of a\.bin is 1e400/],
  ];
  for (const [v, re] of bad) assert.throws(() => parseDataSource("data-path", v), re, v.join(" "));
});

Deno.test("the flag parser takes --data-path's values up to the next flag; twice is refused", () => {
  const f = parseFlags(
    ["--data-path", "0.25", "a.bin", "0.75", "b.bin", "--seq-length", "16"],
    TRAIN_FLAGS,
  );
  assert.deepEqual(f["data-path"], ["0.25", "a.bin", "0.75", "b.bin"]);
  assert.equal(f["seq-length"], 16);
  assert.deepEqual(trainArgsFromFlags(f).data.source, {
    paths: ["a.bin", "b.bin"],
    weights: [0.25, 0.75],
  });
  // One path is a string, as before.
  assert.equal(parseFlags(["--data-path", "a.bin"], TRAIN_FLAGS)["data-path"], "a.bin");
  assert.equal(parseFlags(["--data-path=a.bin"], TRAIN_FLAGS)["data-path"], "a.bin");
  // A negative number is a value (a weight, refused later), not a flag.
  assert.deepEqual(parseFlags(["--data-path", "-1", "a"], TRAIN_FLAGS)["data-path"], ["-1", "a"]);
  // Another flag's value that looks like --data-path stays that flag's.
  assert.throws(
    () => parseFlags(["--prompt", "--data-path", "x"], TRAIN_FLAGS),
    /--prompt needs a value \(the next word, --data-path, is a flag\)/,
  );
  assert.throws(
    () => parseFlags(["--data-path", "a.bin", "--lr", "0.1", "--data-path", "b.bin"], TRAIN_FLAGS),
    /--data-path is given twice \(a\.bin, then b\.bin\): one would replace the other/,
  );
  assert.throws(
    () => parseFlags(["--data-path", "--lr", "1"], TRAIN_FLAGS),
    /--data-path needs a value/,
  );
  assert.throws(() => parseFlags(["--data-path", ""], TRAIN_FLAGS), /--data-path is empty/);
  assert.throws(
    () => parseFlags(["--seed", "1", "a.bin"], TRAIN_FLAGS),
    /Unexpected argument 'a\.bin'/,
  );
  assert.deepEqual(
    parseFlags(
      ["--train-data-path", "a", "b", "--valid-data-path", "c"],
      TRAIN_FLAGS,
    )["train-data-path"],
    ["a", "b"],
  );
});

Deno.test("nodes compare a blend's weights, not its paths", () => {
  assert.equal(blendShape("data-path", "a.bin"), "PATH");
  assert.equal(blendShape("data-path", ["1", "a", "3", "b"]), "0.25 PATH 0.75 PATH");
  assert.equal(
    blendShape("data-path", ["1", "x", "3", "y"]),
    blendShape("data-path", ["1", "a", "3", "b"]),
  );
  assert.equal(blendShape("data-path", ["a", "b"]), "PATH PATH");
});

/** Two `.bin` corpora of disjoint byte ids (a: 0–99, b: 128–227) and their sidecars in a fresh folder. */
async function corpora(): Promise<
  { dir: string; a: string; b: string; A: Uint32Array; B: Uint32Array }
> {
  const dir = await Deno.makeTempDir();
  const A = ids(1200, 0), B = ids(2000, 128);
  await writeTokenBin(`${dir}/a.bin`, A, { tokenizer: "byte", vocab_size: 256 });
  await writeTokenBin(`${dir}/b.bin`, B, { tokenizer: "byte", vocab_size: 256 });
  return { dir, a: `${dir}/a.bin`, b: `${dir}/b.bin`, A, B };
}

async function expectError(args: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await runCli(
    "cli/train.ts",
    [...TINY_RUN_FLAGS, "--train-iters", "2", ...args],
    undefined,
    {
      timeoutMs: 60_000,
    },
  );
  assert.equal(r.code, code, `exit code for ${args.join(" ")}: ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stdout, /iteration\s+1\//, "training started despite bad input");
}

Deno.test(
  "train: a bad blend is refused before any work, naming what is wrong",
  withTimeLimit(240),
  async () => {
    const { dir, a, b } = await corpora();
    try {
      await writeTokenBin(`${dir}/g.bin`, ids(2000, 0), { tokenizer: "gpt2", vocab_size: 50257 });
      await writeTokenBin(`${dir}/short.bin`, ids(12, 0), { tokenizer: "byte", vocab_size: 256 });
      await expectError(
        ["--data-path", "0.3", a, "0.7"],
        2,
        /the last weight, 0\.7, has no path after it/,
      );
      await expectError(
        ["--data-path", "0", a, "1", b],
        2,
        /a weight must be a positive finite number/,
      );
      await expectError(["--data-path", a, "--data-path", b], 2, /--data-path is given twice/);
      await expectError(
        ["--data-path", "0.3", a, "0.7", `${dir}/none.bin`],
        1,
        /data path ".*none\.bin" does not exist \(--data-path\)/,
      );
      await expectError(
        ["--data-path", "0.5", a, "0.5", `${dir}/g.bin`],
        1,
        /a blend's corpora must share one tokenizer: .*a\.bin was tokenized with byte .*g\.bin with gpt2/,
      );
      await expectError(
        ["--data-path", "0.5", a, "0.5", `${dir}/short.bin`],
        1,
        /the training split of .*short\.bin has 11 tokens, fewer than --seq-length \+ 1 = 17/,
      );
      await expectError(
        ["--model", "bert", "--data-path", a, b],
        2,
        /--data-path blends several corpora, which only GPT runs do for now/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "train --data-path 0.25 a.bin 0.75 b.bin: both corpora in the blend's ratio, resumed exactly",
  withTimeLimit(300),
  async () => {
    const { dir, a, b, A, B } = await corpora();
    try {
      const args = [
        ...TINY_RUN_FLAGS,
        "--train-iters",
        "4",
        "--eval-interval",
        "100",
        "--lr-warmup-iters",
        "1",
        "--data-path",
        "0.25",
        a,
        "0.75",
        b,
      ];
      const full = await runCli(
        "cli/train.ts",
        [
          ...args,
          "--save",
          `${dir}/ck`,
          "--save-interval",
          "2",
          "--log-json",
          `${dir}/full.jsonl`,
        ],
        undefined,
        { timeoutMs: 120_000 },
      );
      assert.equal(full.code, 0, full.stderr);
      assert.match(
        full.stdout,
        /data: blend of 2: .*a\.bin \(weight 0\.25, 1200 tokens\), .*b\.bin \(weight 0\.75, 2000 tokens\) \| tokenizer byte/,
      );
      // 4 steps × 2 sequences: 2 windows of a.bin, 6 of b.bin (1 and 3 at iteration 2).
      const state = async (it: number) =>
        (await readMeta(`${dir}/ck/iter_000000${it}`)).state!.sampler as {
          blend: { counts: number[]; weights: number[] };
        };
      assert.deepEqual((await state(2)).blend.counts, [1, 3]);
      const end = await state(4);
      assert.deepEqual(end.blend, { weights: [0.25, 0.75], counts: [2, 6] });
      // The sampler the run used, rebuilt here: its windows hold a.bin's ids (< 128) or b.bin's.
      const TRAIN = { a: A.subarray(0, 1080), b: B.subarray(0, 1800) }; // --val-fraction 0.1 held out
      const same = new BlendedGptBatchSampler([TRAIN.a, TRAIN.b], [0.25, 0.75], {
        batchSize: 2,
        seqLength: 16,
        seed: 1234,
      });
      const rows = [0, 0];
      for (let k = 0; k < 4; k++) {
        const batch = same.next();
        for (let r = 0; r < 2; r++) {
          const row = batch.inputs.subarray(r * 16, (r + 1) * 16);
          const fromB = row.every((t) => t >= 128);
          assert.ok(fromB || row.every((t) => t < 100));
          rows[fromB ? 1 : 0]++;
        }
      }
      assert.deepEqual(rows, [2, 6]);
      assert.deepEqual(JSON.parse(JSON.stringify(same.state())), end);

      // Resumed from iteration 2: the same losses, bitwise, and the same sampler state at the end.
      await Deno.remove(`${dir}/ck/iter_0000004`, { recursive: true });
      await Deno.writeTextFile(`${dir}/ck/latest`, "2\n");
      const resumed = await runCli(
        "cli/train.ts",
        [
          ...args,
          "--load",
          `${dir}/ck`,
          "--save",
          `${dir}/ck`,
          "--log-json",
          `${dir}/resumed.jsonl`,
        ],
        undefined,
        { timeoutMs: 120_000 },
      );
      assert.equal(resumed.code, 0, resumed.stderr);
      assert.match(resumed.stdout, /loaded .*iteration 2/);
      const lossesFull = jsonlLosses(await Deno.readTextFile(`${dir}/full.jsonl`));
      const lossesResumed = jsonlLosses(await Deno.readTextFile(`${dir}/resumed.jsonl`));
      assert.deepEqual(lossesResumed, lossesFull.slice(2));
      assert.deepEqual(await state(4), end);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "train: a blend over 2 data-parallel ranks trains on the windows one rank does",
  withTimeLimit(240),
  async () => {
    const { dir, a, b } = await corpora();
    try {
      const args = [
        ...TINY_RUN_FLAGS.filter((f, i, all) =>
          f !== "--micro-batch-size" && all[i - 1] !== "--micro-batch-size"
        ),
        "--train-iters",
        "3",
        "--hidden-dropout",
        "0",
        "--attention-dropout",
        "0",
        "--data-path",
        "0.25",
        a,
        "0.75",
        b,
      ];
      const run = async (extra: string[], log: string) => {
        const r = await runCli("cli/train.ts", [...args, ...extra, "--log-json", log], dir, {
          timeoutMs: 120_000,
        });
        assert.equal(r.code, 0, r.stderr);
        return jsonlLosses(await Deno.readTextFile(log));
      };
      const one = await run(["--micro-batch-size", "2"], `${dir}/one.jsonl`);
      const two = await run(
        ["--micro-batch-size", "1", "--nproc-per-node", "2"],
        `${dir}/two.jsonl`,
      );
      assert.equal(two.length, 3);
      two.forEach((l, i) => assert.ok(Math.abs(l - one[i]) < 1e-5, `${two} vs ${one}`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("a Megatron dataset prefix reads its .bin; an existing path stays itself", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  await Deno.writeFile(`${dir}/corpus.bin`, new Uint8Array(8));
  await Deno.writeTextFile(`${dir}/text`, "x");
  await Deno.writeFile(`${dir}/text.bin`, new Uint8Array(8));
  assert.equal(megatronPrefix(`${dir}/corpus`), `${dir}/corpus.bin`);
  assert.equal(megatronPrefix(`${dir}/text`), `${dir}/text`);
  assert.equal(megatronPrefix(`${dir}/none`), `${dir}/none`);
  assert.deepEqual(
    dataSourceOf({ "data-path": ["1", `${dir}/corpus`, "3", `${dir}/text`] }, "data-path")!.paths,
    [`${dir}/corpus.bin`, `${dir}/text`],
  );
});
