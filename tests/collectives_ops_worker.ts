/**
 * Worker module for the collectives tests: runs every op on this rank's data
 * and checks the results against plain TypeScript references; returns the
 * list of mismatches (empty when all is well).
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import type { ProcessGroup } from "../collectives/group.ts";
import { chunkRange } from "../collectives/ring.ts";
import { fromHalfBits, type HalfFormat, roundToHalf, toHalfBits } from "../core/half.ts";
import { halfCodec } from "../models/parallel/half_codec.ts";

/** Rank r's value at index i: small integers and quarters, so f32 sums are exact. */
export function value(r: number, i: number): number {
  return ((i * 7 + r * 13) % 17) - 8 + (r % 4) * 0.25;
}

/** Runs the op suite for the sizes in `ctx.args[0]` (comma list). */
export default async function main(ctx: WorkerContext): Promise<string[]> {
  const g = ctx.group, n = g.size, r = g.rank;
  const sizes = (ctx.args[0] ?? "0,1,7").split(",").map(Number);
  const errs: string[] = [];
  const fill = (a: Float32Array, rank: number) => {
    for (let i = 0; i < a.length; i++) a[i] = value(rank, i);
  };
  const check = (name: string, got: Float32Array, want: (i: number) => number, tol = 0) => {
    for (let i = 0; i < got.length; i++) {
      const w = want(i);
      if (!(Math.abs(got[i] - w) <= tol * Math.max(1, Math.abs(w)))) {
        errs.push(`rank ${ctx.rank} ${name}: [${i}] = ${got[i]}, want ${w}`);
        return;
      }
    }
  };
  // value(r, i) has period 17 in i, so references are tables over i % 17.
  const sums = new Float64Array(17), maxs = new Float64Array(17).fill(-Infinity);
  for (let j = 0; j < 17; j++) {
    for (let q = 0; q < n; q++) {
      sums[j] += value(q, j);
      maxs[j] = Math.max(maxs[j], value(q, j));
    }
  }
  const sum = (i: number) => sums[i % 17];
  const max = (i: number) => maxs[i % 17];
  for (const size of sizes) {
    const big = size > 100000;
    // allReduce on a plain array (staged) and on an arena array (in place)
    for (const op of big ? ["sum"] as const : ["sum", "avg", "max"] as const) {
      for (const inArena of big ? [true] : [false, true]) {
        const x = inArena ? g.alloc(size) : new Float32Array(size);
        fill(x, r);
        await g.allReduce(x, op);
        const want = op === "max" ? max : op === "avg" ? (i: number) => sum(i) / n : sum;
        check(`allReduce(${op}) size ${size} arena=${inArena}`, x, want, op === "avg" ? 1e-6 : 0);
      }
    }
    // reduceScatter
    {
      const x = new Float32Array(size);
      fill(x, r);
      const got = await g.reduceScatter(x, "sum");
      const [start, len] = chunkRange(size, n, r);
      if (got.length !== len) {
        errs.push(`reduceScatter size ${size}: length ${got.length} != ${len}`);
      }
      check(`reduceScatter size ${size}`, got, (i) => sum(start + i));
    }
    // allGather (f32 and odd-sized bytes)
    {
      const part = new Float32Array(size);
      fill(part, r);
      const got = await g.allGather(part);
      if (got.length !== size * n) errs.push(`allGather size ${size}: length ${got.length}`);
      for (let q = 0; q < n; q++) {
        check(
          `allGather size ${size} part ${q}`,
          got.subarray(q * size, (q + 1) * size),
          (i) => value(q, i),
        );
      }
      if (!big) {
        const b = new Uint8Array(size).map((_, i) => (i + r * 31) & 255);
        const gb = await g.allGather(b);
        for (let i = 0; i < gb.length; i++) {
          const want = ((i % size) + Math.floor(i / size) * 31) & 255;
          if (gb[i] !== want) {
            errs.push(`allGather u8 size ${size}: [${i}] = ${gb[i]}, want ${want}`);
            break;
          }
        }
      }
    }
    // 16-bit all-reduce (mixed precision's wire beyond two ranks)
    if (size <= 300001) await checkHalf(g, size, errs, ctx.rank);
    // broadcast from the last rank
    {
      const root = n - 1;
      const x = new Float32Array(size);
      if (r === root) fill(x, 100);
      await g.broadcast(x, root);
      check(`broadcast size ${size}`, x, (i) => value(100, i));
    }
    await g.barrier();
  }
  if (errs.length && ctx.args.includes("--throw")) throw new Error(errs.join("\n"));
  if (ctx.args.includes("--print") && ctx.rank === 0) {
    // how the link to the next rank carries payloads (a shared-memory link has no `mapped`)
    const link = await ctx.comm.link(g.key, g.ranks[(r + 1) % n]);
    console.log(`OPS_OK world=${n} mapped=${"mapped" in link ? link.mapped : "local"}`);
  }
  return errs;
}

/** Rank r's value at index i for the rounding checks: not representable in 16 bits. */
function inexact(r: number, i: number): number {
  return Math.sin(i * 0.37 + r * 1.91) * (1 + (i % 5));
}

/**
 * `allReduceHalf` in both formats: sums of values 16 bits hold exactly (every
 * partial sum too) must be exact; sums of inexact values must be the same bits
 * on every rank and within the ring's n−1 roundings (u = 2^-8 bf16, 2^-11
 * fp16, per rounding, relative to the sum of magnitudes) of the exact sum.
 */
async function checkHalf(g: ProcessGroup, size: number, errs: string[], rank: number) {
  const n = g.size, r = g.rank;
  for (const format of ["bf16", "fp16"] as HalfFormat[]) {
    const codec = halfCodec(format);
    const u = format === "bf16" ? 2 ** -8 : 2 ** -11;
    for (const op of ["sum", "avg"] as const) {
      const bits = toHalfBits(Array.from({ length: size }, (_, i) => value(r, i)), format);
      await g.allReduceHalf(bits, codec, op);
      const got = fromHalfBits(bits, format);
      for (let i = 0; i < size; i++) {
        let want = 0;
        for (let q = 0; q < n; q++) want += value(q, i);
        if (op === "avg") want /= n;
        const tol = op === "avg" ? u * Math.abs(want) : 0;
        if (!(Math.abs(got[i] - want) <= tol)) {
          errs.push(
            `rank ${rank} allReduceHalf(${op}) ${format} size ${size}: [${i}] = ${
              got[i]
            }, want ${want}`,
          );
          break;
        }
      }
    }
    // every rank's values as the format holds them
    const held = Array.from(
      { length: n },
      (_, q) => roundToHalf(Array.from({ length: size }, (_, i) => inexact(q, i)), format),
    );
    const bits = toHalfBits(held[r], format);
    await g.allReduceHalf(bits, codec);
    const got = fromHalfBits(bits, format);
    for (let i = 0; i < size; i++) {
      let want = 0, mag = 0;
      for (let q = 0; q < n; q++) {
        want += held[q][i];
        mag += Math.abs(held[q][i]);
      }
      if (!(Math.abs(got[i] - want) <= (n - 1) * u * mag + 1e-30)) {
        errs.push(
          `rank ${rank} allReduceHalf ${format} size ${size}: [${i}] = ${got[i]}, want ${want} ± ${
            (n - 1) * u * mag
          }`,
        );
        break;
      }
    }
    // the same bits on every rank
    const all = await g.allGather(bits);
    for (let q = 0; q < n && size > 0; q++) {
      const theirs = all.subarray(q * size, (q + 1) * size);
      if (theirs.some((b, i) => b !== bits[i])) {
        errs.push(`rank ${rank} allReduceHalf ${format} size ${size}: rank ${q} holds other bits`);
        break;
      }
    }
  }
}
