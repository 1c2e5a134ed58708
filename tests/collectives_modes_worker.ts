/**
 * Worker module for collectives scenario tests; `ctx.args[0]` picks the scenario:
 * subgroups, hang, mismatch, opmismatch, throw, loop (runs until killed), gpu.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";

/** Runs one scenario; returns a summary value for the test to check. */
export default async function main(ctx: WorkerContext): Promise<unknown> {
  const g = ctx.group;
  const mode = ctx.args[0];
  const victim = Number(ctx.args[1] ?? 1);
  if (mode === "subgroups") {
    const { tpGroup, dpGroup } = parallelGroups(g, 2);
    const a = new Float32Array([ctx.rank + 1]);
    await tpGroup.allReduce(a, "sum");
    const b = new Float32Array([ctx.rank + 1]);
    await dpGroup.allReduce(b, "max");
    const c = await g.allGather(new Int32Array([ctx.rank * 10]));
    return { tp: [...tpGroup.ranks], dp: [...dpGroup.ranks], a: a[0], b: b[0], c: [...c] };
  }
  if (mode === "hang") {
    if (ctx.rank === victim) {
      await new Promise((r) => setTimeout(r, Number(ctx.args[2] ?? 3000)));
      return "slept";
    }
    await g.allReduce(new Float32Array(1000), "sum");
    return "finished";
  }
  if (mode === "mismatch") {
    await g.allReduce(new Float32Array(ctx.rank === victim ? 1001 : 1000), "sum");
    return "finished";
  }
  if (mode === "opmismatch") {
    if (ctx.rank === victim) await g.allGather(new Float32Array(10));
    else await g.allReduce(new Float32Array(10), "sum");
    return "finished";
  }
  if (mode === "throw") {
    if (ctx.rank === victim) throw new Error("deliberate failure before the collective");
    await g.allReduce(new Float32Array(10), "sum");
    return "finished";
  }
  if (mode === "loop") {
    const x = g.alloc(1 << 20);
    for (let i = 0;; i++) {
      await g.allReduce(x, "sum");
      x.fill(0);
      if (i === 2) console.log(`STARTED rank ${ctx.rank}`);
    }
  }
  throw new Error(`unknown mode ${mode}`);
}
