/**
 * `deno bench` entry of the weak-scaling experiment (see bench/scaling.ts):
 * the 1 → 2 rank ladder at batch 8, one round per `deno bench` iteration,
 * printing a table each time. `deno task bench:scaling` interleaves rounds and
 * reports medians (the numbers in the README).
 * @module
 */

import { BACKEND_ENV } from "../core/gpu.ts";
import { formatScaling, runScaling } from "./scaling.ts";

Deno.bench({
  name: "weak scaling, 1 → 2 ranks (GPT, TP)",
  n: 1,
  warmup: 0,
  permissions: "inherit",
  async fn() {
    const rows = await runScaling({
      maxRanks: Number(Deno.env.get("SCALING_MAX_RANKS") ?? 2),
      backend: Deno.env.get(BACKEND_ENV),
      steps: 8,
      warmup: 2,
      batch: 8,
      repeats: 1,
    });
    console.log("\n" + formatScaling(rows));
  },
});
