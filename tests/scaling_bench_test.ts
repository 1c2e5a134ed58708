/**
 * The weak-scaling benchmark runs end to end at a tiny size in both
 * placements (one pinned process per rank over TCP, and Workers of one
 * process): the table has one row per rank count with finite numbers. Speed is
 * measured by `deno task bench:scaling`, not asserted here.
 */

import assert from "node:assert/strict";
import { formatScaling, runScaling, type ScalingConfig } from "../bench/scaling.ts";

const TINY: ScalingConfig[] = [
  { ranks: 1, hidden: 32, heads: 2, layers: 1 },
  { ranks: 2, hidden: 48, heads: 2, layers: 1 },
];

for (const placement of ["procs", "workers"] as const) {
  Deno.test(`scaling bench: 1 → 2 ranks, ${placement}`, async () => {
    const rows = await runScaling({
      maxRanks: 2,
      steps: 1,
      warmup: 0,
      batch: 2,
      seq: 8,
      placement,
      ladder: TINY,
      repeats: 1,
    });
    assert.deepEqual(rows.map((r) => r.config.ranks), [1, 2]);
    for (const r of rows) {
      assert.ok(r.msPerStep > 0 && Number.isFinite(r.gflopsPerRank), JSON.stringify(r));
      assert.ok(r.commShare >= 0 && r.commShare < 1, JSON.stringify(r));
      assert.ok(r.commWaitShare >= 0 && r.commWaitShare <= r.commShare, JSON.stringify(r));
    }
    assert.equal(rows[0].efficiency, 1);
    assert.match(formatScaling(rows), /\| 2 \| 48 \| 1 \| 2 \|/);
  });
}
