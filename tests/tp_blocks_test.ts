/**
 * Unit tests of each tensor-parallel block against its serial counterpart, as
 * Megatron's own layer tests do, with odd sizes (input 13·t, output 17·t, batch
 * 7, sequence 3) for t = 2 (× DP 2) and t = 4. Each rank builds the parallel
 * block and the serial module from the same seed on its own device and checks,
 * for the same data:
 * - ColumnParallelLinear (plain, gatherOutput, 3 fused blocks, both): initial
 *   weight shard = slice of the serial weight; output = its slice of the serial
 *   output (all of it when gathered); weight and bias grads = slices; input grad
 *   after f's all-reduce = the serial input grad. Loss `sum(y · C)`, C random.
 * - RowParallelLinear on the rank's scatterLastDim slice: output = serial
 *   output; weight grad = column slice; bias grad equal; input grad = slice.
 * - VocabParallelEmbedding: output = serial lookup; table grad = row slice.
 * - vocab-parallel cross-entropy vs crossEntropy on the full logits, with
 *   padding columns beyond the valid vocabulary (holding large logits that must
 *   not win) and ignored targets (-1): loss equal, logits grad = slice, zero on
 *   padding; the all-reduces it makes are exactly max over `rows` and sum over
 *   `2·rows` floats, none in the backward. Also via TensorParallelLayers.lmLoss
 *   (tied head) and lmLogits.
 * - f and g: f identity forward / all-reduce backward; g all-reduce forward /
 *   identity backward; scatterLastDim / gatherLastDim round trip and backward.
 * - RngTracker: dropout masks from the `group` stream are identical on every
 *   rank of a TP group and differ between DP replicas; masks from the `rank`
 *   stream differ between TP ranks.
 * Tolerance: |a − b| ≤ 1e-5·|b| + 1e-6·max(1, max|b|) elementwise.
 */

import assert from "node:assert/strict";
import { localDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import { gpuTest } from "./helpers.ts";
import type { BlocksResult, BlocksSpec } from "./tp_blocks_worker.ts";

/** Runs the block checks with TP size `tp` on `world` Workers of this process. */
async function runBlocks(spec: BlocksSpec, world: number): Promise<BlocksResult[]> {
  const cfg = localDistConfig(world);
  const res = await runWorkers(
    cfg,
    new URL("./tp_blocks_worker.ts", import.meta.url),
    [JSON.stringify(spec)],
    { gpus: [] },
  );
  if (!res.ok) {
    throw new Error(
      `run failed: ${
        res.ranks.filter((r) => !r.ok).map((r) => `rank ${r.rank}: ${r.error}`).join("; ")
      }`,
    );
  }
  return res.ranks.map((r) => r.result as BlocksResult);
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The RNG tracker's guarantees over the masks of every rank. */
function checkMasks(res: BlocksResult[]): void {
  for (const r of res) {
    for (const m of [...r.masks.group, ...r.masks.rank]) {
      const kept = m.reduce((s, v) => s + v, 0) / m.length;
      assert.ok(kept > 0.25 && kept < 0.75, `rank ${r.rank}: kept fraction ${kept} at p = 0.5`);
    }
    for (const s of [r.masks.group, r.masks.rank]) {
      assert.ok(
        !equal(s[0], s[1]) && !equal(s[1], s[2]),
        `rank ${r.rank}: successive draws repeat`,
      );
    }
  }
  for (const a of res) {
    for (const b of res) {
      if (a.rank >= b.rank) continue;
      for (let k = 0; k < 3; k++) {
        const sameGroup = equal(a.masks.group[k], b.masks.group[k]);
        const sameRank = equal(a.masks.rank[k], b.masks.rank[k]);
        const pair = `ranks ${a.rank} and ${b.rank}, draw ${k}`;
        if (a.dpRank === b.dpRank) {
          assert.ok(sameGroup, `${pair}: group-stream masks differ within a TP group`);
          assert.ok(!sameRank, `${pair}: rank-stream masks equal across TP ranks`);
        } else {
          assert.ok(!sameGroup, `${pair}: group-stream masks equal across DP replicas`);
          assert.ok(!sameRank, `${pair}: rank-stream masks equal across DP replicas`);
        }
      }
    }
  }
}

for (const [tp, world] of [[2, 4], [4, 4]]) {
  Deno.test(
    `parallel blocks equal their serial counterparts, TP=${tp} (world ${world})`,
    gpuTest,
    async (t) => {
      const res = await runBlocks({ tp, seed: 5 }, world);
      const runners = res.filter((r) => r.dpRank === 0);
      assert.equal(runners.length, tp);
      for (const [i, { name }] of runners[0].checks.entries()) {
        await t.step(name, () => {
          const failed = runners
            .filter((r) => r.checks[i].error !== null)
            .map((r) => `rank ${r.rank} (tp ${r.tpRank}, dp ${r.dpRank}): ${r.checks[i].error}`);
          assert.deepEqual(failed, [], failed.join("\n"));
        });
      }
      await t.step("RngTracker: group stream shared by a TP group, rank stream per TP rank", () => {
        checkMasks(res);
      });
    },
  );
}
