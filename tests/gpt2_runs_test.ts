/**
 * `bench:torch`'s GPT-2 rounds: TP=1 runs pinned to one core, unpinned on
 * every core, or both when the ranks are pinned processes, and once (a
 * Worker) when they are Workers; other TP sizes run once under the placement
 * asked. No GPU: the benchmark itself is `deno task bench:torch`.
 */

import assert from "node:assert/strict";
import { gpt2Runs } from "../bench/gpt2_scale.ts";

Deno.test("gpt2Runs: TP=1 as pinned and unpinned runs beside pinned TP=2", () => {
  assert.deepEqual(gpt2Runs([1, 2], "procs", "both"), [
    { tp: 1, placement: "procs" },
    { tp: 1, placement: "workers" },
    { tp: 2, placement: "procs" },
  ]);
  assert.deepEqual(gpt2Runs([1, 2], "procs", "core"), [
    { tp: 1, placement: "procs" },
    { tp: 2, placement: "procs" },
  ]);
  assert.deepEqual(gpt2Runs([2, 1], "procs", "cpu"), [
    { tp: 2, placement: "procs" },
    { tp: 1, placement: "workers" },
  ]);
});

Deno.test("gpt2Runs: Workers run each TP size once", () => {
  assert.deepEqual(gpt2Runs([1, 2], "workers", "both"), [
    { tp: 1, placement: "workers" },
    { tp: 2, placement: "workers" },
  ]);
  assert.deepEqual(gpt2Runs([], "procs", "both"), []);
});
