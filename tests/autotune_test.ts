/**
 * Matmul autotuning (core/matmul_tuner.ts, cli/autotune.ts): every candidate
 * tiling gives bit-identical results (so tuning never changes a model's
 * numbers), the tuner times the shapes a run used and keeps the choice across
 * runs through its store, the file store merges and survives bad files, a time
 * budget takes the largest shapes first and leaves the rest for later runs, and
 * a training run tunes after its first step and caches the choice on disk.
 */

import assert from "node:assert/strict";
import {
  autotuneArgs,
  describeTuning,
  describeTuningSkipped,
  describeTuningStart,
  firstTuningStep,
  LEAST_USEFUL_TUNING_MS,
  runTuningLimit,
  TUNING_SHARE_OF_RUN,
} from "../cli/autotune.ts";
import {
  adapterKey,
  codeDigest,
  compileSize,
  FINALISTS,
  finalistsOf,
  MatmulTuner,
  parseTuningEntry,
  tuningEntry,
  type TuningStore,
  type TuningTable,
  tuningTableKey,
} from "../core/matmul_tuner.ts";
import * as ops from "../core/ops/mod.ts";
import { matmulOptions, recordPlan } from "../core/ops/matmul.ts";
import { Tensor } from "../core/tensor.ts";
import {
  chooseTiling,
  EXACT_BLOCK_CANDIDATES,
  f16Variant,
  HUGE_BLOCK_MACS,
  LARGE_BLOCK_MACS,
  type MatmulOptions,
  matmulPlanWith,
  type MatmulShape,
  matmulShapeKey,
  type MatmulTiling,
  parseTilingKey,
  textureASize,
  textureBSize,
  tilingCandidates,
  tilingKey,
  WIDE_LANES_MOST_BLOCK,
} from "../kernels/matmul.ts";
import { FileTuningStore } from "../cli/tuning_cache.ts";
import { randomArray, testDevice, withTimeLimit } from "./helpers.ts";
import { runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const base: MatmulShape = {
  batch: 1,
  M: 1,
  N: 1,
  K: 1,
  transA: false,
  transB: false,
  batchA: true,
  batchB: true,
  bias: false,
};

Deno.test(
  "autotune: every candidate tiling gives bit-identical results",
  withTimeLimit(240),
  async () => {
    const device = await testDevice();
    const shapes: MatmulShape[] = [
      { ...base, M: 37, N: 44, K: 29 },
      { ...base, M: 64, N: 96, K: 48, transB: true, bias: true },
      { ...base, batch: 3, M: 33, N: 36, K: 12, batchB: false, transA: true, transB: true },
    ];
    for (const software of [device.isSoftware, !device.isSoftware]) {
      const opts: MatmulOptions = { ...matmulOptions(device), software };
      for (const s of shapes) {
        const a = randomArray((s.batchA ? s.batch : 1) * s.M * s.K, 1);
        const b = randomArray((s.batchB ? s.batch : 1) * s.K * s.N, 2);
        const bias = randomArray(s.N, 3);
        const c0 = randomArray(s.batch * s.M * s.N, 4);
        const up = (x: Float32Array) => Tensor.fromArray(device, x, [x.length]);
        const [A, B, Bias] = [up(a), up(b), up(bias)];
        let first: Float32Array | null = null;
        const candidates = tilingCandidates(s, opts);
        assert.ok(candidates.length > 1, `${matmulShapeKey(s)}: one candidate only`);
        if (software) {
          assert.ok(candidates.some((t) => t.texB), `${matmulShapeKey(s)}: no texture candidate`);
          if (textureASize(s, opts)) {
            assert.ok(candidates.every((t) => t.texA), `${matmulShapeKey(s)}: A from its buffer`);
          }
        }
        for (const t of candidates) {
          const C = up(c0);
          const plan = matmulPlanWith(s, opts, t);
          recordPlan(device, plan, [
            A.binding,
            B.binding,
            ...(s.bias ? [Bias.binding] : []),
            C.binding,
          ]);
          const got = await C.read();
          C.dispose();
          if (!first) first = got;
          else {
            const same = got.every((v, i) => Object.is(v, first![i]));
            assert.ok(
              same,
              `${matmulShapeKey(s)}: ${tilingKey(t)} differs from ${tilingKey(candidates[0])}`,
            );
          }
        }
        for (const t of [A, B, Bias]) t.dispose();
      }
    }
  },
);

/**
 * Asserts that `shape`'s product through each of `tilings` has the bits of the
 * heuristic tiling's, on random operands (seeded from `seed`; a bias where the
 * shape has one).
 */
async function assertSameBits(
  shape: MatmulShape,
  opts: MatmulOptions,
  tilings: MatmulTiling[],
  seed: number,
): Promise<void> {
  const device = await testDevice();
  const up = (x: Float32Array) => Tensor.fromArray(device, x, [x.length]);
  const inputs = [
    up(randomArray(shape.M * shape.K, seed)),
    up(randomArray(shape.K * shape.N, seed + 1)),
    ...(shape.bias ? [up(randomArray(shape.N, seed + 2))] : []),
  ];
  const product = async (t: MatmulTiling) => {
    const C = Tensor.empty(device, [shape.M * shape.N]);
    recordPlan(device, matmulPlanWith(shape, opts, t), [
      ...inputs.map((x) => x.binding),
      C.binding,
    ]);
    const got = await C.read();
    C.dispose();
    return got;
  };
  const want = await product(chooseTiling(shape, opts));
  for (const t of tilings) {
    const got = await product(t);
    assert.ok(got.every((v, i) => Object.is(v, want[i])), `${tilingKey(t)} differs`);
  }
  for (const t of inputs) t.dispose();
}

Deno.test(
  "autotune: the large software blocks are candidates for large products only, and give the same bits",
  withTimeLimit(240),
  async () => {
    const device = await testDevice();
    // 8 lanes (llvmpipe at 256 bits), whatever this adapter's width
    const opts: MatmulOptions = { ...matmulOptions(device), software: true, lanes: 8 };
    const isLarge = (t: { tm: number; tv: number }) => t.tm * t.tv >= 256;
    const isHuge = (t: { tm: number; tv: number }) => t.tm * t.tv >= 512;
    const big: MatmulShape = { ...base, M: 512, N: 128, K: 128, transB: true };
    assert.ok(big.M * big.N * big.K >= LARGE_BLOCK_MACS);
    assert.ok(big.M * big.N * big.K < HUGE_BLOCK_MACS);
    // Below HUGE_BLOCK_MACS the 64×32 block comes with 1 or 2 invocations along N only.
    const lxOf = (t: { lx?: number }) => t.lx ?? 8;
    if (textureASize(big, opts)) {
      assert.ok(tilingCandidates(big, opts).some(isLarge));
      assert.ok(tilingCandidates(big, opts).some((t) => isHuge(t) && lxOf(t) === 1));
    }
    assert.ok(!tilingCandidates(big, opts).some((t) => isHuge(t) && lxOf(t) > 2));
    const huge: MatmulShape = { ...base, M: 256, N: 1536, K: 768, transB: true };
    assert.ok(huge.M * huge.N * huge.K >= HUGE_BLOCK_MACS);
    if (textureASize(huge, opts)) {
      assert.ok(tilingCandidates(huge, opts).some((t) => isHuge(t) && lxOf(t) === 8));
      // At 16 lanes no block past WIDE_LANES_MOST_BLOCK (larger ones ran slower and compile slowly).
      const wide = tilingCandidates(huge, { ...opts, lanes: 16 });
      assert.ok(wide.some(isLarge));
      assert.ok(wide.every((t) => t.tm * t.tv <= WIDE_LANES_MOST_BLOCK && t.lanes === 16));
    }
    const small: MatmulShape = { ...base, M: 64, N: 96, K: 48, transB: true, bias: true };
    assert.ok(!tilingCandidates(small, opts).some(isLarge));
    // A product of the small shape through the large blocks (four kernels, ~3–11 s
    // each to compile cold on Zen 5, up to 40 s on Zen 1): the same bits as the
    // heuristic's.
    if (!textureASize(small, opts)) return;
    const texB = textureBSize(small, opts) ? { texB: true } : {};
    const large = [
      { tm: 32, tv: 8, lx: 4 },
      { tm: 64, tv: 4, lx: 8 },
      { tm: 64, tv: 8, lx: 2 },
      { tm: 32, tv: 8, lx: 1 },
    ];
    await assertSameBits(
      small,
      opts,
      large.map((t) => ({ software: true, texA: true, ...texB, ...t })),
      5,
    );
  },
);

Deno.test(
  "autotune: blocks that tile an odd shape exactly are candidates where the usual ones pad, with the same bits",
  withTimeLimit(240),
  async () => {
    const device = await testDevice();
    // M = 176 (rows of a 2-rank share of hidden 352): no usual block divides it.
    const odd: MatmulShape = { ...base, M: 176, N: 96, K: 512, transB: true, batchB: false };
    assert.ok(odd.M * odd.N * odd.K >= LARGE_BLOCK_MACS);
    const extraOf = (opts: MatmulOptions) => {
      const usual = new Set(
        tilingCandidates({ ...odd, M: 256 }, opts).map((t) => tilingKey({ ...t, texA: true })),
      );
      return tilingCandidates(odd, opts).filter((t) => !usual.has(tilingKey(t)));
    };
    const deviceOpts: MatmulOptions = { ...matmulOptions(device), software: true };
    if (!textureASize(odd, deviceOpts)) return;
    // Both workgroup sizes (8 lanes, 16 on llvmpipe at 512 bits), whatever this adapter's.
    for (const lanes of [8, 16]) {
      const opts = { ...deviceOpts, lanes };
      const extra = extraOf(opts);
      const n = extra.length;
      assert.ok(n >= 1 && n <= EXACT_BLOCK_CANDIDATES, `${n} extra at ${lanes} lanes`);
      for (const t of extra) {
        const lx = t.lx ?? lanes;
        assert.equal(t.lanes ?? 8, lanes, tilingKey(t));
        assert.equal(odd.M % (t.tm * (lanes / lx)), 0, `${tilingKey(t)} pads M`);
        assert.equal(odd.N % (4 * t.tv * lx), 0, `${tilingKey(t)} pads N`);
      }
      // Powers of two: the usual blocks fit, nothing is added.
      const even: MatmulShape = { ...odd, M: 512 };
      assert.deepEqual(
        tilingCandidates(even, opts).map(tilingKey),
        tilingCandidates({ ...even, M: 1024 }, opts).map(tilingKey),
        `${lanes} lanes`,
      );
    }
    await assertSameBits(odd, deviceOpts, extraOf(deviceOpts), 8);
  },
);

Deno.test("autotune: finalists are the few close to the fastest, fastest first", () => {
  const ms = (xs: number[]) => finalistsOf(xs.map((x) => ({ ms: x }))).map((t) => t.ms);
  assert.deepEqual(ms([12, 10, 30, 12.9, 13.1]), [10, 12, 12.9]);
  assert.deepEqual(ms([10, 10, 10, 10, 10, 10]).length, FINALISTS);
  assert.deepEqual(ms([5]), [5]);
});

Deno.test("autotune: tiling keys round-trip, bad ones are refused", () => {
  for (
    const t of [
      { software: true, tm: 16, tv: 4, lx: 8 },
      { software: true, tm: 32, tv: 2, lx: 4, texB: true },
      { software: true, tm: 16, tv: 8, lx: 4, texB: true, texA: true },
      { software: true, tm: 16, tv: 8, lx: 2, texA: true },
      { software: true, tm: 64, tv: 8, lx: 1, texA: true },
      { software: true, tm: 32, tv: 8, lx: 4, lanes: 16, texB: true, texA: true },
      { software: false, tm: 32, tv: 64 },
    ]
  ) {
    assert.deepEqual(parseTilingKey(tilingKey(t)), t);
  }
  for (const k of ["cpu3x4x8", "gpu48x16", "cpu16x4", "", "gpu16x16x1", "cpu16x4x8w12"]) {
    assert.equal(parseTilingKey(k), null, k);
  }
});

class MemoryStore implements TuningStore {
  tables = new Map<string, TuningTable>();
  saves = 0;
  load(adapter: string): TuningTable {
    return { ...this.tables.get(adapter) };
  }
  save(adapter: string, table: TuningTable): void {
    this.saves++;
    this.tables.set(adapter, { ...this.tables.get(adapter), ...table });
  }
}

Deno.test(
  "autotune: the tuner times used shapes once, and a new tuner reuses the store",
  withTimeLimit(240),
  async () => {
    const device = await testDevice();
    const store = new MemoryStore();
    const tuner = new MatmulTuner(device, store, { minFlops: 1e5, targetMs: 2 });
    const x = Tensor.fromArray(device, randomArray(64 * 48, 5), [64, 48]);
    const w = Tensor.fromArray(device, randomArray(40 * 48, 6), [40, 48]);
    const tiny = Tensor.fromArray(device, randomArray(4 * 4, 7), [4, 4]);
    const before = await device.noGrad(() => ops.matmul(x, w, { transB: true })).read();
    device.matmulTuner = tuner;
    try {
      await device.noGrad(() => {
        ops.matmul(x, w, { transB: true });
        ops.matmul(x, w, { transB: true }); // the same shape: noted once
        ops.matmul(tiny, tiny); // under minFlops: never tuned
      });
      assert.equal(tuner.pending, 1);
      const found = await tuner.tune();
      assert.equal(found.length, 1);
      assert.equal(tuner.pending, 0);
      assert.equal(store.saves, 1);
      assert.ok(found[0].gflops > 0 && found[0].candidates > 1, JSON.stringify(found[0]));
      const { finalists, candidates } = found[0];
      assert.ok(finalists === 0 || (finalists > 1 && finalists <= Math.min(FINALISTS, candidates)));
      const after = await device.noGrad(() => ops.matmul(x, w, { transB: true })).read();
      assert.ok(after.every((v, i) => Object.is(v, before[i])), "tuned tiling changed the result");
      assert.equal(tuner.pending, 0, "a tuned shape is not noted again");

      const again = new MatmulTuner(device, store, { minFlops: 1e5, targetMs: 2 });
      assert.equal(again.size, 1);
      device.matmulTuner = again;
      device.noGrad(() => ops.matmul(x, w, { transB: true }));
      assert.equal(again.pending, 0, "a stored choice is used without tuning");
    } finally {
      device.matmulTuner = null;
      for (const t of [x, w, tiny]) t.dispose();
    }
  },
);

Deno.test("autotune: a stored entry is the tiling and its kernel's code digest; bad ones are refused", () => {
  const t = parseTilingKey("cpu32x8x4w16ta")!;
  const entry = tuningEntry(t, codeDigest("fn main() {}"));
  assert.match(entry, /^cpu32x8x4w16ta@[0-9a-f]{8}$/);
  assert.deepEqual(parseTuningEntry(entry), { tiling: t, digest: codeDigest("fn main() {}") });
  assert.notEqual(codeDigest("fn main() {}"), codeDigest("fn main() { }"));
  // Saved before entries had a digest: read, with none (so its code counts as changed).
  assert.deepEqual(parseTuningEntry("cpu32x8x4w16ta"), { tiling: t, digest: "" });
  for (const bad of ["cpu3x4x8@12345678", "cpu32x8x4w16ta@xyz", "cpu32x8x4w16ta@", "@12345678"]) {
    assert.equal(parseTuningEntry(bad), null, bad);
  }
});

Deno.test("autotune: runs with and without f16 arithmetic keep a choice each, in a table older versions do not write", async () => {
  const device = await testDevice();
  const opts = matmulOptions(device);
  const shape: MatmulShape = { ...base, M: 64, N: 64, K: 64, transB: true, packedB: "fp16" };
  const variants = [
    { ...opts, shaderF16: false },
    { ...opts, shaderF16: true, f16Arithmetic: false },
    { ...opts, shaderF16: true, f16Arithmetic: true },
  ];
  assert.deepEqual(variants.map((o) => f16Variant(shape, o)), ["", "n", "h"]);
  assert.equal(f16Variant({ ...shape, packedB: "bf16" }, variants[2]), "");
  const tuner = new MatmulTuner(device, null, { minFlops: 1 });
  for (const o of variants) tuner.tiling(shape, o);
  assert.equal(tuner.pending, 3, "one choice per kernel code");
  // The unmarked table of the same adapter (written before digests) is not read.
  assert.ok(tuningTableKey(device).startsWith(adapterKey(device)));
  const store = new MemoryStore();
  store.tables.set(adapterKey(device), { [matmulShapeKey(shape)]: "cpu16x4x4w16ta" });
  assert.equal(new MatmulTuner(device, store).size, 0);
});

Deno.test(
  "autotune: a stored choice whose kernel code has changed since (or was saved without a digest) is tuned again",
  withTimeLimit(240),
  async () => {
    const device = await testDevice();
    const store = new MemoryStore();
    const x = Tensor.fromArray(device, randomArray(64 * 48, 5), [64, 48]);
    const w = Tensor.fromArray(device, randomArray(40 * 48, 6), [40, 48]);
    const opts = { minFlops: 1e5, targetMs: 2 };
    const use = (tuner: MatmulTuner) => {
      device.matmulTuner = tuner;
      device.noGrad(() => ops.matmul(x, w, { transB: true }));
      return tuner.pending;
    };
    try {
      const first = new MatmulTuner(device, store, opts);
      assert.equal(use(first), 1);
      await first.tune();
      const adapter = tuningTableKey(device);
      const [[shape, entry]] = Object.entries(store.load(adapter));
      const { tiling, digest } = parseTuningEntry(entry)!;
      // The entry's digest is that of the code the chosen tiling generates now: used as it is.
      assert.equal(use(new MatmulTuner(device, store, opts)), 0);
      // Another digest (the kernel generator changed since it was timed), or none: tuned again,
      // and the new choice saved with the current digest.
      for (
        const stale of [
          tuningEntry(tiling, digest === "00000000" ? "00000001" : "00000000"),
          tilingKey(tiling),
        ]
      ) {
        store.tables.set(adapter, { [shape]: stale });
        const again = new MatmulTuner(device, store, opts);
        assert.equal(again.size, 1);
        assert.equal(use(again), 1, stale);
        await again.tune();
        const saved = store.load(adapter)[shape];
        assert.notEqual(saved, stale);
        assert.equal(use(new MatmulTuner(device, store, opts)), 0, `${saved} is not used as saved`);
      }
    } finally {
      device.matmulTuner = null;
      for (const t of [x, w]) t.dispose();
    }
  },
);

Deno.test(
  "autotune: the budget takes the largest shape first; what it leaves waits for a later run",
  withTimeLimit(240),
  async () => {
    const device = await testDevice();
    const small = [Tensor.fromArray(device, randomArray(64 * 48, 8), [64, 48])];
    small.push(Tensor.fromArray(device, randomArray(40 * 48, 9), [40, 48]));
    const large = [Tensor.fromArray(device, randomArray(96 * 64, 10), [96, 64])];
    large.push(Tensor.fromArray(device, randomArray(80 * 64, 11), [80, 64]));
    const useBoth = (t: MatmulTuner) => {
      device.matmulTuner = t;
      device.noGrad(() => {
        ops.matmul(small[0], small[1], { transB: true }); // 2·64·40·48 = 246k FLOP
        ops.matmul(large[0], large[1], { transB: true }); // 2·96·80·64 = 983k FLOP
      });
    };
    const opts = { minFlops: 1e5, targetMs: 2 };
    try {
      // No budget: nothing is timed, both shapes wait for a later run, nothing is cached.
      const store = new MemoryStore();
      const none = new MatmulTuner(device, store, { ...opts, budgetMs: 0 });
      useBoth(none);
      assert.equal(none.pending, 2);
      assert.deepEqual(await none.tune(), []);
      assert.equal(none.deferred, 2);
      assert.equal(store.saves, 0);
      useBoth(none);
      assert.equal(none.pending, 0, "a deferred shape is not noted again in this run");
      // A shape first met after the budget ran out waits too: nothing more to tune or say.
      const third = Tensor.fromArray(device, randomArray(72 * 48, 12), [72, 48]);
      device.noGrad(() => ops.matmul(small[0], third, { transB: true }));
      third.dispose();
      assert.equal(none.pending, 0, "after the budget ran out, new shapes are not pending");
      assert.equal(none.deferred, 3);

      // A budget of 1 ms runs out in the first shape (or before it): whatever was
      // timed serves this run only, and both shapes are still untuned in the store.
      const brief = new MatmulTuner(device, store, { ...opts, budgetMs: 1 });
      useBoth(brief);
      const partial = await brief.tune();
      assert.ok(partial.length <= 1, JSON.stringify(partial));
      for (const r of partial) assert.equal(r.complete, false, JSON.stringify(r));
      assert.equal(brief.deferred + partial.length, 2);
      assert.equal(store.saves, 0);
      assert.match(
        describeTuning(partial, 0.001, null, brief.deferred),
        /left for later runs \(--matmul-autotune-budget\)/,
      );
      if (partial.length) {
        assert.match(
          describeTuning(partial, 0.001, null, brief.deferred),
          /^matmul autotune: 1 shape \(1 in part: for this run only\) in /,
        );
      }

      // Unlimited: both, the larger first, every candidate, cached.
      const all = new MatmulTuner(device, store, { ...opts, budgetMs: Infinity });
      useBoth(all);
      const found = await all.tune();
      assert.equal(found.length, 2);
      assert.ok(found.every((r) => r.complete), JSON.stringify(found));
      assert.match(found[0].shape, /^1x96x80x64\//, "the larger shape goes first");
      assert.equal(Object.keys(store.load(tuningTableKey(device))).length, 2);
      assert.doesNotMatch(describeTuning(found, 1, null, all.deferred), /later runs/);

      // A stop request (a signal to the run), asked before each compile: here true from
      // the larger shape's third candidate on. That shape's two timings serve this run
      // only; the smaller waits; nothing is cached. A stop after the first shape has
      // finished leaves its choice saved at once, the smaller shape deferred.
      const stopStore = new MemoryStore();
      let asked = 0;
      const stopped = new MatmulTuner(device, stopStore, { ...opts, budgetMs: Infinity });
      useBoth(stopped);
      const cut = await stopped.tune(Infinity, () => ++asked > 2);
      assert.equal(cut.length, 1, JSON.stringify(cut));
      assert.equal(cut[0].complete, false);
      assert.equal(cut[0].candidates, 2);
      assert.equal(stopped.deferred, 1);
      assert.equal(stopStore.saves, 0);
      assert.match(
        describeTuning(cut, 0.1, null, stopped.deferred, true),
        /; stopped by a signal, 2 shapes left for later runs$/,
      );
      const later = new MatmulTuner(device, stopStore, { ...opts, budgetMs: Infinity });
      useBoth(later);
      const first = await later.tune(Infinity, () => stopStore.saves > 0);
      assert.equal(first.length, 1);
      assert.equal(first[0].complete, true);
      assert.equal(later.deferred, 1);
      assert.equal(stopStore.saves, 1);
      assert.deepEqual(Object.keys(stopStore.load(tuningTableKey(device))), [first[0].shape]);
    } finally {
      device.matmulTuner = null;
      for (const t of [...small, ...large]) t.dispose();
    }
  },
);

Deno.test("autotune: by default a training run tunes for a tenth of its time left, after its second step", () => {
  const byDefault = autotuneArgs({});
  assert.equal(firstTuningStep(byDefault, 1), 2, "the second step sizes the budget");
  assert.equal(firstTuningStep(byDefault, 51), 52, "a resumed run counts from where it starts");
  // 60 ms a step, 998 steps to go: ~60 s left, 6 s of tuning (the tuner caps it at its budget).
  const limit = runTuningLimit(byDefault, 60, 998);
  assert.equal(limit.runLeftMs, 59_880);
  assert.ok(Math.abs(limit.limitMs - TUNING_SHARE_OF_RUN * 59_880) < 1e-9);
  assert.ok(limit.limitMs < LEAST_USEFUL_TUNING_MS, "deno task train's run is too short to tune");
  assert.equal(limit.tooShort, true);
  assert.equal(runTuningLimit(byDefault, 3000, 1000).tooShort, false);
  assert.equal(runTuningLimit(byDefault, 3000, 1000).limitMs, 300_000);
  assert.equal(runTuningLimit(byDefault, 60, 0).limitMs, 0, "the last step leaves nothing");
  // A budget asked for is the budget: tuning starts after the first step, unscaled.
  const asked = autotuneArgs({ "matmul-autotune-budget": "30" });
  assert.equal(firstTuningStep(asked, 1), 1);
  assert.deepEqual(runTuningLimit(asked, 60, 998), {
    limitMs: Infinity,
    runLeftMs: null,
    tooShort: false,
  });
  assert.match(
    describeTuningStart(15, 60_000, runTuningLimit(byDefault, 150, 1000)),
    /15 new shapes \(budget 15 s: a tenth of the ~150 s this run has left;/,
  );
  assert.match(describeTuningStart(3, 30_000), /3 new shapes \(budget 30 s;/);
  assert.match(
    describeTuningSkipped(1, 59_880),
    /not tuning 1 new shape: .*~60 s left, and tuning takes at most a tenth of a run\); they keep/,
  );
});

Deno.test("autotune: a candidate's expected compile time grows with its block", () => {
  // The tuner skips a candidate whose compile would likely run past its budget,
  // guessing from the slowest compile per unit of compileSize seen so far.
  const block = (tm: number, tv: number): MatmulTiling => ({ software: true, tm, tv, lx: 2 });
  assert.equal(compileSize(block(16, 4)), 64);
  assert.ok(compileSize(block(32, 8)) > compileSize(block(16, 8)));
  assert.ok(compileSize(block(64, 8)) > compileSize(block(32, 8)));
  assert.equal(compileSize({ software: false, tm: 64, tv: 64 }), 1024);
});

Deno.test("autotune: --matmul-autotune-budget takes seconds or 'inf'", () => {
  assert.equal(autotuneArgs({ "matmul-autotune-budget": "30" }).budgetMs, 30_000);
  assert.equal(autotuneArgs({ "matmul-autotune-budget": "0" }).budgetMs, 0);
  assert.equal(autotuneArgs({ "matmul-autotune-budget": "inf" }).budgetMs, Infinity);
  assert.equal(autotuneArgs({}).budgetMs, undefined);
  for (const bad of ["", "-1", "soon", "NaN"]) {
    assert.throws(
      () => autotuneArgs({ "matmul-autotune-budget": bad }),
      /--matmul-autotune-budget .*expected seconds/,
      bad,
    );
  }
  // Beside --no-matmul-autotune a budget or a cache file changes nothing: refused ("none", no
  // file, says what the switch does, as scripts pass it).
  for (
    const [flag, value] of [["matmul-autotune-budget", "10"], ["matmul-tuning-cache", "t.json"]]
  ) {
    assert.throws(
      () => autotuneArgs({ "no-matmul-autotune": true, [flag]: value }),
      new RegExp(`--${flag} changes nothing with --no-matmul-autotune`),
    );
  }
  assert.equal(autotuneArgs({ "no-matmul-autotune": true }).enabled, false);
  assert.equal(
    autotuneArgs({ "no-matmul-autotune": true, "matmul-tuning-cache": "none" }).enabled,
    false,
  );
});

Deno.test("autotune: the file store merges entries and refuses, untouched, a file that is not a cache", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const path = `${dir}/sub/tuning.json`;
  const store = new FileTuningStore(path);
  assert.deepEqual(store.load("gpu"), {});
  store.save("gpu", { a: "cpu16x4x8" });
  store.save("gpu", { b: "cpu32x4x2" });
  store.save("other", { a: "gpu32x32" });
  assert.deepEqual(new FileTuningStore(path).load("gpu"), { a: "cpu16x4x8", b: "cpu32x4x2" });
  for (const foreign of ["my notes", "{ not json", '{"version": 2}', "[]"]) {
    await Deno.writeTextFile(path, foreign);
    assert.throws(() => store.load("gpu"), /is not a matmul tuning cache/);
    assert.throws(() => store.save("gpu", { c: "cpu8x2x2" }), /is not a matmul tuning cache/);
    assert.equal(await Deno.readTextFile(path), foreign);
  }
  // Past any cache's size: not read (a 700 MB file took 2 GB to refuse).
  await Deno.truncate(path, 65 * 2 ** 20);
  assert.throws(() => store.load("gpu"), /larger than 67108864 bytes/);
  assert.equal((await Deno.stat(path)).size, 65 * 2 ** 20);
});

Deno.test("autotune: the program's own cache, damaged, is moved aside and started anew", async () => {
  await using temp = await tempDir();
  const path = `${temp.path}/tuning.json`;
  // Empty (a crash between the write and the rename, before saves were flushed), cut
  // short, another shape, or huge: each stopped every later run until removed by hand.
  for (const damage of ["", '{"version": 1, "adap', '{"version":"1"}', "huge"]) {
    await Deno.writeTextFile(path, damage === "huge" ? "" : damage);
    if (damage === "huge") await Deno.truncate(path, 65 * 2 ** 20);
    const said: string[] = [];
    const store = new FileTuningStore(path, { own: true, warn: (l) => said.push(l) });
    assert.deepEqual(store.load("gpu"), {});
    assert.equal(said.length, 1, damage);
    assert.match(
      said[0],
      /tuning\.json was damaged \(.*\): moved aside to .*tuning\.json\.damaged;/,
    );
    assert.equal(
      (await Deno.stat(`${path}.damaged`)).size,
      damage === "huge" ? 65 * 2 ** 20 : damage.length,
    );
    store.save("gpu", { a: "cpu16x4x8" });
    assert.deepEqual(new FileTuningStore(path).load("gpu"), { a: "cpu16x4x8" });
    assert.deepEqual(
      [...Deno.readDirSync(temp.path)].map((e) => e.name).filter((n) => n.endsWith(".tmp")),
      [],
    );
    await Deno.remove(path);
  }
});

Deno.test(
  "autotune: the file store loses no entry when processes and Workers save at once",
  withTimeLimit(120),
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const path = `${dir}/tuning.json`;
    const store = new URL("../cli/tuning_cache.ts", import.meta.url).href;
    const SAVES = 40;
    // Each writer saves SAVES distinct entries, one per save, as fast as it can:
    // without the lock, interleaved read-merge-writes dropped entries.
    const writer = (id: string) =>
      `import { FileTuningStore } from "${store}";
const s = new FileTuningStore(${JSON.stringify(path)});
for (let i = 0; i < ${SAVES}; i++) s.save("adapter", { ["${id}-" + i]: "cpu16x4x8" });`;
    const procs = ["p0", "p1", "p2"].map((id) =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", "--no-config", writer(id)],
        stdout: "piped",
        stderr: "piped",
      }).output()
    );
    // Two Workers of this process too (a TP run's ranks share one process).
    const workers = ["w0", "w1"].map((id) =>
      new Promise<void>((resolve, reject) => {
        const url = `data:application/typescript,${
          encodeURIComponent(writer(id) + "\nself.postMessage('done');")
        }`;
        const w = new Worker(url, { type: "module" });
        w.onmessage = () => {
          w.terminate();
          resolve();
        };
        w.onerror = (e) => {
          w.terminate();
          reject(new Error(`worker ${id}: ${e.message}`));
        };
      })
    );
    for (const out of await Promise.all(procs)) {
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    }
    await Promise.all(workers);
    const table = new FileTuningStore(path).load("adapter");
    const missing: string[] = [];
    for (const id of ["p0", "p1", "p2", "w0", "w1"]) {
      for (let i = 0; i < SAVES; i++) if (!(`${id}-${i}` in table)) missing.push(`${id}-${i}`);
    }
    assert.deepEqual(missing, [], `${missing.length} entries lost`);
  },
);

Deno.test(
  "autotune: a training run tunes after its first step and caches the choice; a short one keeps the heuristic",
  // Seconds with Mesa's shader cache warm; minutes cold on a slow CPU (compiling candidates).
  withTimeLimit(900),
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const cache = `${dir}/tuning.json`;
    const flags = [
      ...TINY_RUN_FLAGS,
      // hidden 64 and 128 tokens: the MLP's products pass the 4 MFLOP threshold
      "--hidden-size",
      "64",
      "--micro-batch-size",
      "8",
      "--train-iters",
      "2",
      "--matmul-tuning-cache",
      cache,
    ];
    // By default a run this short (its second step is its last) tunes nothing and says so.
    const short = await runCli("cli/train.ts", flags);
    assert.equal(short.code, 0, short.stderr);
    assert.match(
      short.stdout,
      /matmul autotune: not tuning [1-9]\d* new shapes?: this run is too short/,
    );
    await assert.rejects(Deno.stat(cache), Deno.errors.NotFound);
    // A budget of 0 s tunes nothing and says what is left.
    const r0 = await runCli("cli/train.ts", [...flags, "--matmul-autotune-budget", "0"]);
    assert.equal(r0.code, 0, r0.stderr);
    assert.match(
      r0.stdout,
      /matmul autotune: 0 shapes in [\d.]+ s, 0 retiled; budget spent, [1-9]\d* shapes? left for later runs/,
    );
    await assert.rejects(Deno.stat(cache), Deno.errors.NotFound);
    // Every shape, whatever the machine (with Mesa's shader cache cold the
    // default budget ran out after one shape): the next run must find them all.
    const r = await runCli("cli/train.ts", [...flags, "--matmul-autotune-budget", "inf"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /matmul autotune: timing the tilings of [1-9]\d* new shapes? \(budget none;/,
    );
    assert.match(r.stdout, /matmul autotune: [1-9]\d* shapes? in [\d.]+ s/);
    assert.doesNotMatch(r.stdout, /later runs/);
    const saved = JSON.parse(await Deno.readTextFile(cache));
    const tables = Object.values(saved.adapters) as Record<string, string>[];
    assert.equal(tables.length, 1);
    for (const t of Object.values(tables[0])) assert.match(t, /^[a-z0-9]+@[0-9a-f]{8}$/);
    for (const t of Object.values(tables[0])) assert.ok(parseTuningEntry(t)?.digest, t);
    // A second run finds every shape in the cache and does not tune again.
    const r2 = await runCli("cli/train.ts", flags);
    assert.equal(r2.code, 0, r2.stderr);
    assert.doesNotMatch(r2.stdout, /matmul autotune/);
  },
);
