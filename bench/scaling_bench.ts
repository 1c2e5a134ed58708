/**
 * `deno bench` entry of the weak-scaling experiment (see bench/scaling.ts):
 * one measurement of the 1 → 2 rank ladder, printing the table.
 * @module
 */

import { formatScaling, runScaling } from "./scaling.ts";

Deno.bench({
  name: "weak scaling, 1 → 2 ranks (GPT, TP)",
  n: 1,
  warmup: 0,
  permissions: "inherit",
  async fn() {
    const rows = await runScaling({
      maxRanks: Number(Deno.env.get("SCALING_MAX_RANKS") ?? 2),
      backend: Deno.env.get("WEBGPU_BACKEND"),
      steps: 8,
      warmup: 2,
    });
    console.log("\n" + formatScaling(rows));
  },
});
