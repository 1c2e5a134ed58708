/**
 * Tensor-parallel all-reduces with 16-bit values on the wire
 * (models/parallel/mappings.ts `halfWireGroup`): every rank ends with the same
 * bits, the fp32 sum of the ranks' rounded values, having sent half the bytes
 * of an fp32 all-reduce; reductions other than a sum of a GPU tensor pass through;
 * data-parallel gradients averaged the same way on the host, and in a DP=2 training
 * step with half the bytes of the fp32 wire (`--accumulate-allreduce-grads-in-fp32`)
 * and the same bits; at four ranks (TP or DP) a 16-bit ring all-reduce, again
 * half the fp32 bytes.
 */

import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { type HalfFormat, roundToHalf } from "../core/half.ts";
import { Tensor } from "../core/tensor.ts";
import {
  allReduced,
  halfWireGroup,
  type TpGroup,
  type WireCounter,
} from "../models/parallel/mappings.ts";
import type { CommBytes } from "../models/parallel/hooks.ts";
import { allReduceHalfAvg } from "../collectives/half_sum.ts";
import { halfCodec } from "../models/parallel/half_codec.ts";
import type { MixedResult, MixedRun } from "../bench/mixed_precision_worker.ts";
import { gpuTest, randomArray, testDevice } from "./helpers.ts";

const dev = await testDevice();

/** Rank `rank` of a two-rank group whose peer contributes `peer` (a packed all-gather). */
function fakeGroup(rank: number, peer: () => Int32Array, log: string[]): TpGroup {
  return {
    size: 2,
    rank,
    allGather: ((part: Int32Array) => {
      const other = peer();
      const out = new Int32Array(part.length * 2);
      out.set(rank === 0 ? part : other, 0);
      out.set(rank === 0 ? other : part, part.length);
      return Promise.resolve(out);
    }) as unknown as TpGroup["allGather"],
    allReduce: ((_x: unknown, op: string) => {
      log.push(op);
      return Promise.resolve();
    }) as TpGroup["allReduce"],
  };
}

function packHost(x: Float32Array, format: HalfFormat): Int32Array {
  const r = roundToHalf(x, format);
  const bits = new Uint16Array(Math.ceil(x.length / 2) * 2);
  const u = new Uint32Array(r.buffer);
  for (let i = 0; i < x.length; i++) bits[i] = format === "bf16" ? u[i] >>> 16 : 0;
  if (format === "fp16") {
    const h = new Float16Array(r);
    bits.set(new Uint16Array(h.buffer));
  }
  return new Int32Array(bits.buffer);
}

for (const format of ["fp16", "bf16"] as HalfFormat[]) {
  Deno.test(
    `${format} on the wire: same bits on both ranks, fp32 sum of rounded values`,
    gpuTest,
    async () => {
      const n = 77;
      const a = randomArray(n, 1, -3, 3), b = randomArray(n, 2, -3, 3);
      const want = new Float32Array(n);
      const ra = roundToHalf(a, format), rb = roundToHalf(b, format);
      for (let i = 0; i < n; i++) want[i] = ra[i] + rb[i];
      const got: Float32Array[] = [];
      for (const rank of [0, 1]) {
        const counter: WireCounter = { calls: 0, bytes: 0 };
        const mine = rank === 0 ? a : b, peer = rank === 0 ? b : a;
        const g = halfWireGroup(fakeGroup(rank, () => packHost(peer, format), []), format, counter);
        const t = Tensor.fromArray(dev, mine);
        await g.allReduce(t, "sum");
        got.push(await t.read());
        deepStrictEqual(counter, { calls: 1, bytes: Math.ceil(n / 2) * 4 }, "half of n·4 bytes");
        t.dispose();
      }
      deepStrictEqual(got[0], want);
      deepStrictEqual(got[1], got[0]);
    },
  );
}

Deno.test(
  "allReduced reads its input and writes a new tensor, on the 16-bit wire and on an fp32 group",
  gpuTest,
  async () => {
    const n = 77;
    const a = randomArray(n, 3, -3, 3), b = randomArray(n, 4, -3, 3);
    const ra = roundToHalf(a, "bf16"), rb = roundToHalf(b, "bf16");
    const counter: WireCounter = { calls: 0, bytes: 0 };
    const half = halfWireGroup(fakeGroup(0, () => packHost(b, "bf16"), []), "bf16", counter);
    // An fp32 group of two that adds the peer's values, as a ProcessGroup does with a
    // GPU tensor: it reads the values, sums on the host and writes the result back.
    const fp32: TpGroup = {
      size: 2,
      rank: 0,
      allGather: (() => Promise.reject(new Error("unused"))) as TpGroup["allGather"],
      allReduce: (async (x: { read(): Promise<Float32Array>; write(d: Float32Array): void }) => {
        const v = await x.read();
        for (let i = 0; i < n; i++) v[i] += b[i];
        x.write(v);
      }) as unknown as TpGroup["allReduce"],
    };
    const cases: [TpGroup, Float32Array][] = [
      [half, ra.map((v, i) => v + rb[i])],
      [fp32, a.map((v, i) => v + b[i])],
    ];
    for (const [group, want] of cases) {
      const x = Tensor.fromArray(dev, a);
      const y = await allReduced(x, group);
      deepStrictEqual(await y.read(), Float32Array.from(want));
      deepStrictEqual(await x.read(), a, "the input is left as it was");
      x.dispose();
      y.dispose();
    }
    deepStrictEqual(counter, { calls: 1, bytes: Math.ceil(n / 2) * 4 }, "bf16 on the wire");
  },
);

Deno.test("other reductions pass through in fp32", gpuTest, async () => {
  const log: string[] = [];
  const g = halfWireGroup(fakeGroup(0, () => new Int32Array(0), log), "bf16");
  const t = Tensor.fromArray(dev, [1, 2, 3]);
  await g.allReduce(t, "max");
  await g.allReduce(Float32Array.of(1), "sum");
  deepStrictEqual(log, ["max", "sum"]);
  deepStrictEqual(await t.read(), Float32Array.of(1, 2, 3));
  strictEqual(g.size, 2);
  t.dispose();
});

Deno.test("data-parallel gradients averaged with 16-bit values on the wire (host)", async () => {
  const n = 9;
  const a = randomArray(n, 3, -2, 2), b = randomArray(n, 4, -2, 2);
  for (const format of ["fp16", "bf16"] as HalfFormat[]) {
    const res: Float32Array[] = [];
    for (const rank of [0, 1]) {
      const mine = Float32Array.from(rank === 0 ? a : b);
      const peer = packHost(rank === 0 ? b : a, format);
      const group = {
        size: 2,
        allGather: ((part: Int32Array) => {
          const out = new Int32Array(part.length * 2);
          out.set(rank === 0 ? part : peer, 0);
          out.set(rank === 0 ? peer : part, part.length);
          return Promise.resolve(out);
        }) as never,
      };
      await allReduceHalfAvg(group, mine, halfCodec(format));
      res.push(mine);
    }
    const ra = roundToHalf(a, format), rb = roundToHalf(b, format);
    deepStrictEqual(res[0], Float32Array.from(ra, (x, i) => Math.fround(x + rb[i]) / 2));
    deepStrictEqual(res[1], res[0]);
  }
});

/** A 2-layer GPT small enough for a step in seconds. */
const TINY: MixedRun["config"] = {
  vocabSize: 64,
  numLayers: 2,
  hiddenSize: 32,
  numHeads: 2,
  maxPositions: 8,
  hiddenDropout: 0,
  attentionDropout: 0,
};

/** Every rank's result of `run` over `ranks` Workers (bench/mixed_precision_worker.ts). */
async function runRanks(ranks: number, run: MixedRun): Promise<MixedResult[]> {
  const { runWorkers } = await import("../collectives/launch.ts");
  const { localDistConfig } = await import("../collectives/env.ts");
  const res = await runWorkers(
    localDistConfig(ranks),
    new URL("../bench/mixed_precision_worker.ts", import.meta.url),
    [JSON.stringify(run)],
    { log: false, gpus: [] },
  );
  strictEqual(res.ok, true, JSON.stringify(res.ranks.map((r) => r.error)));
  return res.ranks.map((r) => r.result as MixedResult);
}

/**
 * Two steps of a bf16 run at data-parallel size `dp` with the 16-bit gradient
 * wire ("half") and the fp32 one; checks that every rank sent the same bytes,
 * holds the same weights and did no tensor-parallel collective.
 */
async function bf16DpWires(
  dp: number,
  config: MixedRun["config"],
): Promise<Record<"half" | "fp32", MixedResult[]>> {
  const out = {} as Record<"half" | "fp32", MixedResult[]>;
  for (const dpWire of ["half", "fp32"] as const) {
    const run: MixedRun = {
      config,
      batch: 2,
      seq: 8,
      steps: 2,
      mode: "bf16",
      tp: 1,
      dp,
      dpWire,
      keepWeights: true,
    };
    out[dpWire] = await runRanks(dp, run);
    for (const r of out[dpWire]) {
      deepStrictEqual(r.dpBytes, out[dpWire][0].dpBytes, "every rank sends the same");
      deepStrictEqual(r.weights, out[dpWire][0].weights, "replicas hold the same weights");
      strictEqual(r.tpBytes.calls, 0);
    }
  }
  return out;
}

Deno.test("TP=2 step: the f/g bytes each rank sends halve under bf16 (bench/mixed_precision_worker.ts)", async () => {
  const [b, s, h] = [2, TINY.maxPositions, TINY.hiddenSize];
  const bytes: Record<string, CommBytes[]> = {};
  for (const mode of ["fp32", "bf16"] as const) {
    const rs = await runRanks(2, { config: TINY, batch: b, seq: s, steps: 1, mode, tp: 2 });
    bytes[mode] = rs.map((r) => r.tpBytes);
    deepStrictEqual(bytes[mode][1], bytes[mode][0], "both ranks send the same");
  }
  const [f32, bf] = [bytes.fp32[0], bytes.bf16[0]];
  strictEqual(f32.allGather, 0);
  // fp32: every TP collective is an all-reduce; bf16: the f/g ones are 16-bit all-gathers,
  // the rest (cross-entropy's max/sums, the gradient norm) the same fp32 all-reduces
  const fg32 = f32.allReduce - bf.allReduce;
  strictEqual(bf.allGather * 2, fg32, "f/g bytes exactly half");
  strictEqual(fg32 % (b * s * h * 4), 0, "whole [b, s, h] activations");
  strictEqual(fg32 / (b * s * h * 4) >= 4 * 2, true, "≥ 4 f/g all-reduces a layer");
  strictEqual(bf.allReduce > 0 && bf.allReduce < fg32 / 10, true, "the fp32 rest is small");
});

Deno.test("DP=2 step: the 16-bit gradient wire sends half the fp32 wire's bytes, same bits (bench/mixed_precision_worker.ts)", async () => {
  const out = await bf16DpWires(2, { ...TINY, hiddenDropout: 0.1 });
  const [half, f32] = [out.half[0], out.fp32[0]];
  const n = f32.weights!.length; // gradient elements (even here: no 16-bit padding)
  strictEqual(n % 2, 0);
  // fp32 wire: one all-reduce of n fp32 values (a ring sends 2(p−1)/p·4n = 4n at p = 2);
  // 16-bit wire: one all-gather of n 16-bit values ((p−1)·2n); the rest is the logged
  // loss's fp32 average (4 bytes) in both
  strictEqual(f32.dpGradBytes, 4 * n);
  strictEqual(half.dpGradBytes, 2 * n, "half the gradient bytes");
  strictEqual(f32.dpBytes.allGather, 0);
  strictEqual(half.dpBytes.allGather, 2 * n);
  strictEqual(f32.dpBytes.allReduce - f32.dpGradBytes, 4);
  strictEqual(half.dpBytes.allReduce, 4);
  // The gradients are bf16 values before either wire (rounded after backward), so the
  // 16-bit wire loses nothing; both average in fp32 without rounding the result, and at
  // DP=2 the fp32 sum does not depend on the order and ½ is exact: the same bits.
  deepStrictEqual(half.losses, f32.losses);
  deepStrictEqual(half.weights, f32.weights);
  strictEqual(half.losses.length, 3);
});

/** The largest relative difference between two loss curves. */
function maxRelDiff(a: number[], b: number[]): number {
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));
}

Deno.test("TP=4 step: the f/g bytes halve under bf16 too (a 16-bit ring all-reduce, not an all-gather)", async () => {
  const config = { ...TINY, numHeads: 4 };
  const [b, s, h] = [2, config.maxPositions, config.hiddenSize];
  const out: Record<string, MixedResult[]> = {};
  for (const mode of ["fp32", "bf16"] as const) {
    out[mode] = await runRanks(4, { config, batch: b, seq: s, steps: 2, mode, tp: 4 });
    for (const r of out[mode]) deepStrictEqual(r.tpBytes, out[mode][0].tpBytes);
  }
  const [f32, bf] = [out.fp32[0].tpBytes, out.bf16[0].tpBytes];
  // An all-gather of the packed vectors would send (p−1)·2n = 1.5× the fp32 ring's
  // 2(p−1)/p·4n at p = 4; the 16-bit ring sends 2(p−1)/p·2n, half of it.
  strictEqual(bf.allGather, 0, "no all-gather beyond two ranks");
  const fg32 = f32.allReduce - bf.allReduce;
  strictEqual(bf.half * 2, fg32, "f/g bytes exactly half");
  strictEqual(fg32 % (1.5 * b * s * h * 4), 0, "whole [b, s, h] activations, as a ring of 4");
  // Each f/g sum is rounded to bf16 (the ring rounds every partial sum: ≤ 3 roundings of
  // 2^-8 relative each), so the losses move by about that much against fp32, not more.
  const rel = maxRelDiff(out.bf16[0].losses, out.fp32[0].losses);
  strictEqual(rel < 0.02, true, `bf16 TP=4 losses within 2% of fp32: ${rel}`);
});

Deno.test("DP=4 step: the 16-bit gradient wire sends half the fp32 wire's bytes (a 16-bit ring)", async () => {
  const out = await bf16DpWires(4, TINY);
  const [half, f32] = [out.half[0], out.fp32[0]];
  const n = f32.weights!.length;
  // fp32 wire: 2(p−1)/p·4n = 6n at p = 4; 16-bit ring: 2(p−1)/p·2n = 3n (an all-gather
  // of the 16-bit values would have sent (p−1)·2n = 6n, no saving)
  strictEqual(f32.dpGradBytes, 6 * n);
  strictEqual(half.dpGradBytes, 3 * n, "half the gradient bytes");
  strictEqual(half.dpBytes.allGather, 0);
  // The average is rounded to bf16 (and each ring hop's partial sum): close, not equal.
  const rel = maxRelDiff(half.losses, f32.losses);
  strictEqual(rel < 0.01, true, `16-bit wire losses within 1% of the fp32 wire's: ${rel}`);
});
