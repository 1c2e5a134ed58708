/** GPU tensors round-trip through a process group: 2 Workers, each with its own device. */

import assert from "node:assert/strict";
import { resolveDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";

Deno.test("gpu: tensors are read back, reduced over the group and written again", async () => {
  const cfg = resolveDistConfig({ "nproc-per-node": "2", "dist-timeout": "60s" }, {});
  const res = await runWorkers(cfg, new URL("./collectives_gpu_worker.ts", import.meta.url), [], {
    gpus: [],
  });
  assert.ok(res.ok, JSON.stringify(res.ranks));
  for (const r of res.ranks) {
    const o = r.result as Record<string, number[]>;
    assert.deepEqual(o.a, [3, 6, 9, 12, 15]); // (1 + 2) * [1..5]
    assert.deepEqual(o.b, [1, 1, 1]);
    assert.deepEqual(o.out, [0, 0.5, 1, 1.5]);
    assert.deepEqual(o.c, [1, 3, 2, 7]);
  }
});
