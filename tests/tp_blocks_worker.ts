/**
 * Worker module of the parallel-block unit tests (`tp_blocks_test.ts`). Every
 * rank builds each tensor-parallel block next to its serial counterpart from
 * the same seed on its own device, runs both forward and backward with the same
 * data, and compares the rank's shard against the matching slice of the serial
 * result. Each check reports an error message (or null) instead of throwing,
 * so one wrong block does not hide the others; comparisons happen after a
 * check's collectives, so every rank makes the same collective calls.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { backward } from "../core/autograd.ts";
import { Device } from "../core/device.ts";
import { BACKEND_ENV, defaultBackendFor, parseBackend } from "../core/gpu.ts";
import { Embedding, Linear } from "../core/nn.ts";
import * as ops from "../core/ops/mod.ts";
import { type RngDraw, RngStream } from "../core/rng.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import {
  copyToRegion,
  gatherLastDim,
  reduceFromRegion,
  scatterLastDim,
  type TpGroup,
} from "../models/parallel/mappings.ts";
import { RngTracker } from "../models/parallel/random.ts";
import {
  ColumnParallelLinear,
  RowParallelLinear,
  TensorParallelLayers,
  VocabParallelEmbedding,
} from "../models/parallel/tp_layers.ts";
import { assertClose, prng, randomArray } from "./helpers.ts";

/** What the test asks one launch to check. */
export interface BlocksSpec {
  /** Tensor-parallel size. */
  tp: number;
  /** Weight-initialisation seed. */
  seed: number;
}

/** The outcome of one named check on one rank. */
export interface CheckResult {
  /** Check name (same on every rank). */
  name: string;
  /** Failure message, or null when the check passed. */
  error: string | null;
}

/** Dropout masks drawn from the RNG tracker's streams (1 = kept). */
export interface MaskDraws {
  /** Three successive draws from the per-TP-group stream. */
  group: Uint8Array[];
  /** Three successive draws from the per-TP-rank stream. */
  rank: Uint8Array[];
}

/** What one rank returns. */
export interface BlocksResult {
  /** Global rank. */
  rank: number;
  /** Position in the TP group. */
  tpRank: number;
  /** Position in the DP group. */
  dpRank: number;
  /** Every check, in a fixed order. */
  checks: CheckResult[];
  /** Dropout masks of the RNG tracker. */
  masks: MaskDraws;
}

/** Relative tolerance of every comparison (see the test's header). */
export const RTOL = 1e-5;
/** Absolute tolerance, as a fraction of the largest expected magnitude. */
export const ATOL_SCALE = 1e-6;

/** Batch and sequence of every activation: odd, as in Megatron's tests. */
const BATCH = 7;
const SEQ = 3;
const ROWS = BATCH * SEQ;

/** Compares with `RTOL` and an absolute floor scaled to the expected values. */
function near(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  assertClose(actual, expected, { rtol: RTOL, atol: ATOL_SCALE * Math.max(scale, 1), what });
}

/**
 * Entries `idx` of the middle axis of `data` viewed as `[outer, n, inner]`
 * (e.g. columns of a matrix: inner = 1; rows of a weight: outer = 1).
 */
export function take(
  data: Float32Array,
  outer: number,
  n: number,
  inner: number,
  idx: readonly number[],
): Float32Array {
  if (data.length !== outer * n * inner) {
    throw new Error(`take: ${data.length} values are not [${outer}, ${n}, ${inner}]`);
  }
  const out = new Float32Array(outer * idx.length * inner);
  let at = 0;
  for (let o = 0; o < outer; o++) {
    for (const i of idx) {
      out.set(data.subarray((o * n + i) * inner, (o * n + i + 1) * inner), at);
      at += inner;
    }
  }
  return out;
}

/** `[start, end)` as a list. */
function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

/** Output features rank `r` of `t` owns when `out` is made of `blocks` fused blocks. */
export function ownedOutputs(out: number, blocks: number, t: number, r: number): number[] {
  const blockRows = out / blocks;
  const per = blockRows / t;
  const idx: number[] = [];
  for (let b = 0; b < blocks; b++) {
    idx.push(...range(b * blockRows + r * per, b * blockRows + (r + 1) * per));
  }
  return idx;
}

/** A group that forwards to `inner` and records the size and op of every all-reduce. */
function recordingGroup(
  inner: TpGroup,
): { group: TpGroup; calls: { size: number; op: string }[] } {
  const calls: { size: number; op: string }[] = [];
  const group: TpGroup = {
    size: inner.size,
    rank: inner.rank,
    allReduce: (x, op) => {
      calls.push({ size: ArrayBuffer.isView(x) ? x.length : x.size, op: op ?? "sum" });
      return inner.allReduce(x, op);
    },
    allGather: (part, out) => inner.allGather(part, out),
  };
  return { group, calls };
}

/** Context shared by the checks of one rank. */
interface Ctx {
  device: Device;
  group: TpGroup;
  t: number;
  r: number;
  seed: number;
}

/** `sum(y · c)`: a scalar loss touching every element of `y`. */
function dotLoss(y: Tensor, c: Float32Array): Tensor {
  return ops.sum(ops.mul(y, Tensor.fromArray(y.device, c, y.shape)));
}

function leaf(device: Device, data: Float32Array, shape: number[]): Tensor {
  return Tensor.fromArray(device, data, shape).requireGrad();
}

async function grad(t: Tensor, what: string): Promise<Float32Array> {
  if (!t.grad) throw new Error(`${what}: no gradient`);
  return await t.grad.read();
}

/** ColumnParallelLinear (in 13·t, out 17·t per block) against Linear. */
async function checkColumn(c: Ctx, blocks: number, gatherOutput: boolean): Promise<void> {
  const { device, group, t, r } = c;
  const inF = 13 * t, outF = 17 * t * blocks;
  const serial = new Linear(device, inF, outF, { rng: new RngStream(c.seed) });
  const par = new ColumnParallelLinear(device, group, inF, outF, { rng: new RngStream(c.seed) }, {
    blocks,
    gatherOutput,
  });
  const own = ownedOutputs(outF, blocks, t, r);
  // a non-zero bias, so its placement in the shard is tested too
  const bias = randomArray(outF, 31 + blocks);
  serial.bias!.write(bias);
  par.bias!.write(take(bias, 1, outF, 1, own));
  const x = randomArray(ROWS * inF, 32);
  const coef = randomArray(ROWS * outF, 33);
  const xs = leaf(device, x, [BATCH, SEQ, inF]);
  const xp = leaf(device, x, [BATCH, SEQ, inF]);
  const ys = serial.forward(xs);
  const yp = await par.forward(xp);
  await backward(dotLoss(ys, coef));
  await backward(dotLoss(yp, gatherOutput ? coef : take(coef, ROWS, outF, 1, own)));

  const wFull = await serial.weight.read();
  near(await par.weight.read(), take(wFull, 1, outF, inF, own), "initial weight shard");
  const yFull = await ys.read();
  const y = await yp.read();
  try {
    near(y, gatherOutput ? yFull : take(yFull, ROWS, outF, 1, own), "output");
  } catch (e) {
    if (!gatherOutput || blocks === 1) throw e;
    // diagnose: are the gathered columns the shards concatenated in rank order?
    const rankMajor = range(0, t).flatMap((q) => ownedOutputs(outF, blocks, t, q));
    try {
      near(y, take(yFull, ROWS, outF, 1, rankMajor), "output");
    } catch {
      throw e;
    }
    throw new Error(
      `${(e as Error).message}; the gathered output holds the serial columns in rank-major ` +
        `order (each rank's [block 0 | … | block ${blocks - 1}] parts, rank after rank) ` +
        `instead of the serial block order`,
    );
  }
  const gw = await grad(serial.weight, "serial weight");
  near(await grad(par.weight, "weight"), take(gw, 1, outF, inF, own), "weight grad");
  const gb = await grad(serial.bias!, "serial bias");
  near(await grad(par.bias!, "bias"), take(gb, 1, outF, 1, own), "bias grad");
  near(await grad(xp, "input"), await grad(xs, "serial input"), "input grad (after f)");
}

/** RowParallelLinear (in 13·t split, out 17·t) on the rank's slice of the input. */
async function checkRow(c: Ctx): Promise<void> {
  const { device, group, t, r } = c;
  const inF = 13 * t, outF = 17 * t;
  const serial = new Linear(device, inF, outF, { rng: new RngStream(c.seed) });
  const par = new RowParallelLinear(device, group, inF, outF, { rng: new RngStream(c.seed) });
  const own = range(r * 13, (r + 1) * 13);
  const bias = randomArray(outF, 41);
  serial.bias!.write(bias);
  par.bias!.write(bias);
  const x = randomArray(ROWS * inF, 42);
  const coef = randomArray(ROWS * outF, 43);
  const xs = leaf(device, x, [BATCH, SEQ, inF]);
  const xFull = leaf(device, x, [BATCH, SEQ, inF]);
  // the rank's input slice, as scatterLastDim yields it (then made a leaf of its own)
  const part = scatterLastDim(xFull, group);
  const xp = leaf(device, await part.read(), [BATCH, SEQ, 13]);
  const ys = serial.forward(xs);
  const yp = await par.forward(xp);
  await backward(dotLoss(ys, coef));
  await backward(dotLoss(yp, coef));

  near(await xp.read(), take(x, ROWS, inF, 1, own), "scatterLastDim slice");
  const wFull = await serial.weight.read();
  near(await par.weight.read(), take(wFull, outF, inF, 1, own), "initial weight shard");
  near(await yp.read(), await ys.read(), "output");
  const gw = await grad(serial.weight, "serial weight");
  near(await grad(par.weight, "weight"), take(gw, outF, inF, 1, own), "weight grad");
  near(await grad(par.bias!, "bias"), await grad(serial.bias!, "serial bias"), "bias grad");
  const gx = await grad(xs, "serial input");
  near(await grad(xp, "input"), take(gx, ROWS, inF, 1, own), "input grad");
}

/** VocabParallelEmbedding (vocab 17·t, dim 13) against Embedding. */
async function checkEmbedding(c: Ctx): Promise<void> {
  const { device, group, t, r } = c;
  const vocab = 17 * t, dim = 13;
  const serial = new Embedding(device, vocab, dim, { rng: new RngStream(c.seed) });
  const par = new VocabParallelEmbedding(device, group, vocab, dim, {
    rng: new RngStream(c.seed),
  });
  const rnd = prng(51);
  // repeated ids, every rank's range hit, the first and last id present
  const ids = Int32Array.from(
    { length: ROWS },
    (_, i) => i === 0 ? 0 : i === 1 ? vocab - 1 : Math.floor(rnd() * vocab),
  );
  const coef = randomArray(ROWS * dim, 52);
  const ys = serial.forward(TokenIds.fromHost(device, ids, [BATCH, SEQ]));
  const yp = await par.forward(TokenIds.fromHost(device, ids, [BATCH, SEQ]));
  await backward(dotLoss(ys, coef));
  await backward(dotLoss(yp, coef));

  const own = range(r * 17, (r + 1) * 17);
  if (par.start !== r * 17) throw new Error(`start ${par.start}, expected ${r * 17}`);
  const wFull = await serial.weight.read();
  near(await par.weight.read(), take(wFull, 1, vocab, dim, own), "initial table shard");
  near(await yp.read(), await ys.read(), "output");
  const gw = await grad(serial.weight, "serial table");
  near(await grad(par.weight, "table"), take(gw, 1, vocab, dim, own), "table grad");
}

/** Targets in `[0, valid)`, every third one ignored (-1), some in the last valid column. */
function targetsFor(valid: number, seed: number): Int32Array {
  const rnd = prng(seed);
  return Int32Array.from(
    { length: ROWS },
    (_, i) => i % 3 === 2 ? -1 : i === 0 ? valid - 1 : Math.floor(rnd() * valid),
  );
}

/** Full logits `[7, 3, vocab]`; padding columns (≥ valid) hold large values that must not win. */
function logitsFor(vocab: number, valid: number, seed: number): Float32Array {
  const l = randomArray(ROWS * vocab, seed, -3, 3);
  for (let i = 0; i < ROWS; i++) for (let v = valid; v < vocab; v++) l[i * vocab + v] = 40 + v;
  return l;
}

/**
 * `vocabParallelCrossEntropy` on the rank's columns against `crossEntropy` on
 * the full logits; only one all-reduce of `3·rows` floats per rank may cross ranks.
 */
async function checkXent(c: Ctx, valid: number, normalizer?: number): Promise<void> {
  const { device, group, t, r } = c;
  const vocab = 17 * t;
  const logits = logitsFor(vocab, valid, 61 + valid);
  const targets = targetsFor(valid, 62 + valid);
  const own = range(r * 17, (r + 1) * 17);
  const ls = leaf(device, logits, [BATCH, SEQ, vocab]);
  const lp = leaf(device, take(logits, ROWS, vocab, 1, own), [BATCH, SEQ, 17]);
  const lossS = ops.crossEntropy(
    ls,
    TokenIds.fromHost(device, targets, [BATCH, SEQ]),
    valid,
    normalizer,
  );
  const rec = recordingGroup(group);
  const lossP = await ops.vocabParallelCrossEntropy(
    lp,
    TokenIds.fromHost(device, targets, [BATCH, SEQ]),
    { start: r * 17, validVocab: valid, normalizer },
    rec.group,
  );
  const forwardCalls = rec.calls.length;
  await backward(lossS);
  await backward(lossP);

  near(await lossP.read(), await lossS.read(), "loss");
  const gs = await grad(ls, "serial logits");
  near(await grad(lp, "logits"), take(gs, ROWS, vocab, 1, own), "logits grad");
  const padGrad = (await grad(lp, "logits")).filter((_, i) => r * 17 + (i % 17) >= valid);
  if (padGrad.some((g) => g !== 0)) throw new Error("non-zero gradient on a padding column");
  const sizes = rec.calls.map((k) => `${k.op}:${k.size}`).join(",");
  if (sizes !== `sum:${3 * ROWS * t}` || forwardCalls !== 1) {
    throw new Error(
      `all-reduces were [${sizes}] (${forwardCalls} in the forward), ` +
        `expected [sum:${3 * ROWS * t}] and none in the backward`,
    );
  }
}

/**
 * `TensorParallelLayers.lmLoss` (tied head: f, local logits, parallel loss)
 * against `crossEntropy(linear(h, table))`, and `lmLogits` against the full logits.
 */
async function checkLmLoss(c: Ctx): Promise<void> {
  const { device, group, t, r } = c;
  const vocab = 17 * t, dim = 13, valid = vocab - 3;
  const table = randomArray(vocab * dim, 71);
  const hidden = randomArray(ROWS * dim, 72);
  const targets = targetsFor(valid, 73);
  const own = range(r * 17, (r + 1) * 17);
  const rec = recordingGroup(group);
  const layers = new TensorParallelLayers(device, rec.group);
  const hs = leaf(device, hidden, [BATCH, SEQ, dim]);
  const hp = leaf(device, hidden, [BATCH, SEQ, dim]);
  const ts = leaf(device, table, [vocab, dim]);
  const tp = leaf(device, take(table, 1, vocab, dim, own), [17, dim]);
  const lossS = ops.crossEntropy(
    ops.linear(hs, ts),
    TokenIds.fromHost(device, targets, [BATCH, SEQ]),
    valid,
  );
  const lossP = await layers.lmLoss(
    hp,
    tp,
    TokenIds.fromHost(device, targets, [BATCH, SEQ]),
    valid,
  );
  const fwd = rec.calls.map((k) => k.size);
  await backward(lossS);
  await backward(lossP);
  const bwd = rec.calls.slice(fwd.length).map((k) => k.size);
  const logitsS = await device.noGrad(() => ops.linear(hs, ts)).read();
  const logitsP = await device.noGrad(() => layers.lmLogits(hp, tp));

  near(await lossP.read(), await lossS.read(), "loss");
  near(await grad(hp, "hidden"), await grad(hs, "serial hidden"), "hidden grad (after f)");
  const gt = await grad(ts, "serial table");
  near(await grad(tp, "table"), take(gt, 1, vocab, dim, own), "table grad");
  near(await logitsP.read(), logitsS, "lmLogits (gathered)");
  if (fwd.join(",") !== `${3 * ROWS * t}`) {
    throw new Error(`forward all-reduced sizes [${fwd}], expected [${3 * ROWS * t}]`);
  }
  if (bwd.join(",") !== `${ROWS * dim}`) {
    throw new Error(`backward all-reduced sizes [${bwd}], expected only f's [${ROWS * dim}]`);
  }
}

/** Per-rank data that every rank can regenerate for any other rank. */
function perRank(n: number, seed: number, rank: number): Float32Array {
  return randomArray(n, seed * 100 + rank);
}

function sumOverRanks(n: number, seed: number, t: number): Float32Array {
  const out = new Float32Array(n);
  for (let q = 0; q < t; q++) perRank(n, seed, q).forEach((v, i) => (out[i] += v));
  return out;
}

/** `f`: identity forward, gradients summed over the group backward. */
async function checkF(c: Ctx): Promise<void> {
  const { device, group, t, r } = c;
  const n = ROWS * 5;
  const x = randomArray(n, 81);
  const xl = leaf(device, x, [BATCH, SEQ, 5]);
  const y = copyToRegion(xl, group);
  await backward(y, Tensor.fromArray(device, perRank(n, 82, r), [BATCH, SEQ, 5]));
  near(await y.read(), x, "forward");
  near(await grad(xl, "input"), sumOverRanks(n, 82, t), "backward (sum of every rank's grad)");
}

/** `g`: sum over the group forward, gradient passed through unchanged. */
async function checkG(c: Ctx): Promise<void> {
  const { device, group, t, r } = c;
  const n = ROWS * 5;
  const x = perRank(n, 91, r);
  const xl = leaf(device, x, [BATCH, SEQ, 5]);
  const y = await reduceFromRegion(xl, group);
  const gy = randomArray(n, 92 + r);
  await backward(y, Tensor.fromArray(device, gy, [BATCH, SEQ, 5]));
  near(await y.read(), sumOverRanks(n, 91, t), "forward (sum over ranks)");
  near(await xl.read(), x, "input left untouched");
  near(await grad(xl, "input"), gy, "backward (identity)");
}

/** scatterLastDim / gatherLastDim: values round-trip; gather's backward keeps the rank's slice. */
async function checkScatterGather(c: Ctx): Promise<void> {
  const { device, group, t, r } = c;
  const cols = 3 * t, n = ROWS * cols;
  const own = range(r * 3, (r + 1) * 3);
  const x = randomArray(n, 101);
  const s = scatterLastDim(Tensor.fromArray(device, x, [BATCH, SEQ, cols]), group);
  const back = await gatherLastDim(s, group);
  // gather alone: the rank's part in, every part out; backward = this rank's slice
  const part = leaf(device, perRank(ROWS * 3, 102, r), [BATCH, SEQ, 3]);
  const joined = await gatherLastDim(part, group);
  const gy = randomArray(n, 103);
  await backward(joined, Tensor.fromArray(device, gy, [BATCH, SEQ, cols]));

  near(await s.read(), take(x, ROWS, cols, 1, own), "scatter keeps the rank's slice");
  near(await back.read(), x, "gather(scatter(x)) = x");
  const expect = new Float32Array(n);
  for (let q = 0; q < t; q++) {
    const p = perRank(ROWS * 3, 102, q);
    for (let i = 0; i < ROWS; i++) expect.set(p.subarray(i * 3, i * 3 + 3), i * cols + q * 3);
  }
  near(await joined.read(), expect, "gather concatenates in rank order");
  near(await grad(part, "part"), take(gy, ROWS, cols, 1, own), "gather backward");
}

/**
 * scatterLastDim's documented backward ("gathers the gradient", Megatron's
 * scatter-to-region): a replicated input `x` must receive the full gradient on
 * every rank.
 */
async function checkScatterBackward(c: Ctx): Promise<void> {
  const { device, group, t, r } = c;
  const cols = 3 * t, n = ROWS * cols;
  const xl = leaf(device, randomArray(n, 111), [BATCH, SEQ, cols]);
  const s = scatterLastDim(xl, group);
  // the upstream gradient of every rank's slice is its slice of one full gradient
  const gy = randomArray(n, 112);
  const own = range(r * 3, (r + 1) * 3);
  await backward(s, Tensor.fromArray(device, take(gy, ROWS, cols, 1, own), [BATCH, SEQ, 3]));
  const gx = await grad(xl, "input");
  try {
    near(gx, gy, "input grad (all ranks' slices gathered)");
  } catch (e) {
    // diagnose: is it only this rank's slice, zero elsewhere (slice's local backward)?
    const local = new Float32Array(n);
    for (let i = 0; i < ROWS; i++) {
      for (const j of own) local[i * cols + j] = gy[i * cols + j];
    }
    try {
      near(gx, local, "input grad");
    } catch {
      throw e;
    }
    throw new Error(
      `${(e as Error).message}; the input grad holds only this rank's columns ` +
        `[${own[0]}, ${own[own.length - 1] + 1}) and zeros elsewhere (no gather in the backward)`,
    );
  }
}

/** Three dropout masks (p = 0.5, `[7, 3, 13·t]`) from successive draws. */
async function masks(device: Device, t: number, draw: () => RngDraw): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (let k = 0; k < 3; k++) {
    const y = device.noGrad(() => ops.dropout(ops.ones(device, [BATCH, SEQ, 13 * t]), 0.5, draw()));
    out.push(Uint8Array.from(await y.read(), (v) => (v !== 0 ? 1 : 0)));
  }
  return out;
}

/** Runs every check on this rank. */
export default async function main(ctx: WorkerContext): Promise<BlocksResult> {
  const spec = JSON.parse(ctx.args[0]) as BlocksSpec;
  const { position, tpGroup } = parallelGroups(ctx.group, spec.tp);
  const device = await Device.create({
    backend: parseBackend(Deno.env.get(BACKEND_ENV), defaultBackendFor(ctx.world)),
  });
  ctx.deviceAcquired();
  try {
    const c: Ctx = { device, group: tpGroup, t: spec.tp, r: position.tpRank, seed: spec.seed };
    const t = spec.tp;
    const list: [string, () => Promise<void>][] = [
      ["ColumnParallelLinear", () => checkColumn(c, 1, false)],
      ["ColumnParallelLinear gatherOutput", () => checkColumn(c, 1, true)],
      ["ColumnParallelLinear blocks=3", () => checkColumn(c, 3, false)],
      ["ColumnParallelLinear blocks=3 gatherOutput", () => checkColumn(c, 3, true)],
      ["RowParallelLinear", () => checkRow(c)],
      ["VocabParallelEmbedding", () => checkEmbedding(c)],
      [
        `vocab-parallel cross-entropy, valid ${17 * t - 5} of ${17 * t}`,
        () => checkXent(c, 17 * t - 5),
      ],
      [
        `vocab-parallel cross-entropy, valid ${17 * (t - 1) - 2} of ${
          17 * t
        } (last shard all padding)`,
        () => checkXent(c, 17 * (t - 1) - 2),
      ],
      ["vocab-parallel cross-entropy, normalizer 10", () => checkXent(c, 17 * t - 1, 10)],
      ["TensorParallelLayers.lmLoss and lmLogits", () => checkLmLoss(c)],
      ["f (copyToRegion)", () => checkF(c)],
      ["g (reduceFromRegion)", () => checkG(c)],
      ["scatterLastDim / gatherLastDim round trip", () => checkScatterGather(c)],
      ["scatterLastDim backward gathers the gradient", () => checkScatterBackward(c)],
    ];
    // The block checks use only the TP group: the first DP replica runs them, the
    // others only draw dropout masks (for the RNG tracker's DP guarantee).
    const checks: CheckResult[] = [];
    for (const [name, run] of position.dpRank === 0 ? list : []) {
      let error: string | null = null;
      try {
        await run();
      } catch (e) {
        error = (e as Error)?.message ?? String(e);
      }
      checks.push({ name, error });
    }
    const rng = new RngTracker(spec.seed, position.tpRank, position.dpRank);
    const result: BlocksResult = {
      rank: ctx.rank,
      tpRank: position.tpRank,
      dpRank: position.dpRank,
      checks,
      masks: {
        group: await masks(device, t, () => rng.group.next()),
        rank: await masks(device, t, () => rng.rank.next()),
      },
    };
    return result;
  } finally {
    await device.close();
  }
}
