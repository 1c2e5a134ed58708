/**
 * A worker module for tests/launch_cli_test.ts: rank 1 hangs in a busy loop (it
 * never reaches a collective, never reports), rank 0 waits for it in an
 * all-reduce until the dist timeout fails it.
 * @module
 */
import type { WorkerContext } from "../collectives/launch.ts";

/** Rank 1 spins forever; the others all-reduce with it. */
export default async function (ctx: WorkerContext): Promise<void> {
  if (ctx.rank === 1) {
    let spins = 0;
    for (;;) spins++;
  }
  await ctx.group.allReduce(new Float32Array(4));
}
