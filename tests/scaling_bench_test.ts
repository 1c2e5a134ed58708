/**
 * The weak-scaling benchmark runs end to end at a tiny size in both
 * placements (one pinned process per rank over TCP, and Workers of one
 * process): the table has one row per rank count with finite numbers. Speed is
 * measured by `deno task bench:scaling`, not asserted here. Pinned ranks take
 * the cores this process may use (its affinity list), and more ranks than
 * those are warned about.
 */

import assert from "node:assert/strict";
import { formatScaling, runScaling, type ScalingConfig } from "../bench/scaling.ts";
import { allowedCores, hasTaskset, parseCpuList, sharedCoresWarning } from "../cli/pinned_procs.ts";

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

Deno.test("pinned ranks: CPU lists parse as taskset writes them", () => {
  assert.deepEqual(parseCpuList("0,1"), [0, 1]);
  assert.deepEqual(parseCpuList("0-3,8,10-11\n"), [0, 1, 2, 3, 8, 10, 11]);
  assert.deepEqual(parseCpuList(" 5 "), [5]);
  for (const bad of ["", "a", "3-1", "1,,2"]) assert.equal(parseCpuList(bad), null, bad);
});

Deno.test("pinned ranks: more ranks than allowed cores are warned about", () => {
  assert.equal(sharedCoresWarning(2, [0, 1]), null);
  assert.equal(sharedCoresWarning(1, [0, 1], 1), null, "the baseline on the second core");
  assert.match(
    sharedCoresWarning(2, [1]) ?? "",
    /^warning: 2 ranks but this process may use 1 core \(1\): ranks share cores/,
  );
});

Deno.test(
  "pinned ranks: under taskset the ranks take the allowed cores, not cores 0..n−1",
  { ignore: !hasTaskset() || navigator.hardwareConcurrency < 2 },
  async () => {
    // A child under `taskset -c 1` (the way a user or a Slurm cpuset narrows a
    // job): it may use core 1 only, and reports that, not core 0.
    const code = `import { allowedCores } from ${
      JSON.stringify(
        new URL("../cli/pinned_procs.ts", import.meta.url).href,
      )
    }; console.log(JSON.stringify(allowedCores()));`;
    const o = await new Deno.Command("taskset", {
      args: ["-c", "1", Deno.execPath(), "eval", code],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(o.success, new TextDecoder().decode(o.stderr));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(o.stdout)), [1]);
    assert.ok(allowedCores().length >= 2, "this process may use every core");
  },
);
