/**
 * Host side of the tensor-parallel tests: runs a spec on `world` Workers of this
 * process and joins parameter shards back into full tensors.
 * @module
 */

import { localDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import type { ShardOut, TpRunSpec } from "./tp_worker.ts";

/**
 * The tiny model of the tensor-parallel tests (GPT and BERT): 2 layers, hidden
 * 20, 4 heads, a 113-token vocabulary padded to a multiple of 32·tp, 7
 * positions, hidden dropout on (so the per-rank RNG streams are exercised).
 */
export const TP_TEST_MODEL: TpRunSpec["config"] = {
  vocabSize: 113,
  vocabMultiple: 32,
  numLayers: 2,
  hiddenSize: 20,
  numHeads: 4,
  ffnHiddenSize: 52,
  maxPositions: 7,
  hiddenDropout: 0.1,
  attentionDropout: 0,
};

/** What one rank returned. */
export interface RankResult {
  /** Global rank. */
  rank: number;
  /** TP position. */
  tpRank: number;
  /** DP position. */
  dpRank: number;
  /** Loss per step. */
  losses: number[];
  /** Gradient norm per step. */
  norms: number[];
  /** Parameter shards (DP rank 0 only). */
  shards: ShardOut[];
}

/** Runs `spec` on `world` local ranks (Workers of this process, shared memory). */
export async function runSpec(spec: TpRunSpec, world: number): Promise<RankResult[]> {
  const cfg = localDistConfig(world);
  const res = await runWorkers(cfg, new URL("./tp_worker.ts", import.meta.url), [
    JSON.stringify(spec),
  ], {
    gpus: [],
  });
  if (!res.ok) {
    throw new Error(
      `run failed: ${
        res.ranks.filter((r) => !r.ok).map((r) => `rank ${r.rank}: ${r.error}`).join("; ")
      }`,
    );
  }
  return res.ranks.map((r) => r.result as RankResult);
}

function concatDim(
  parts: { data: Float32Array; shape: number[] }[],
  dim: number,
): { data: Float32Array; shape: number[] } {
  const shape = [...parts[0].shape];
  const outer = shape.slice(0, dim).reduce((a, b) => a * b, 1);
  const inner = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  shape[dim] = parts.reduce((s, p) => s + p.shape[dim], 0);
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let at = 0;
  for (let o = 0; o < outer; o++) {
    for (const p of parts) {
      const len = p.shape[dim] * inner;
      data.set(p.data.subarray(o * len, (o + 1) * len), at);
      at += len;
    }
  }
  return { data, shape };
}

function splitDim(p: { data: Float32Array; shape: number[] }, dim: number, n: number) {
  const shape = [...p.shape];
  const outer = shape.slice(0, dim).reduce((a, b) => a * b, 1);
  const inner = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  const part = shape[dim] / n;
  return Array.from({ length: n }, (_, k) => {
    const s = [...shape];
    s[dim] = part;
    const data = new Float32Array(outer * part * inner);
    for (let o = 0; o < outer; o++) {
      data.set(
        p.data.subarray(
          (o * shape[dim] + k * part) * inner,
          (o * shape[dim] + (k + 1) * part) * inner,
        ),
        o * part * inner,
      );
    }
    return { data, shape: s };
  });
}

/** Full parameters from the shards of the TP ranks of DP group 0. */
export function joinShards(results: RankResult[]): Map<string, Float32Array> {
  const ranks = results.filter((r) => r.dpRank === 0).sort((a, b) => a.tpRank - b.tpRank);
  const out = new Map<string, Float32Array>();
  ranks[0].shards.forEach((s0, i) => {
    if (s0.partitionDim === null || ranks.length === 1) {
      out.set(s0.name, s0.data);
      return;
    }
    const dim = s0.partitionDim;
    const byBlock = ranks.map((r) => splitDim(r.shards[i], dim, s0.blocks));
    const blocks = Array.from(
      { length: s0.blocks },
      (_, b) => concatDim(byBlock.map((x) => x[b]), dim),
    );
    out.set(s0.name, concatDim(blocks, dim).data);
  });
  return out;
}
