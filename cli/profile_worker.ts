/**
 * One rank of a tensor-parallel `deno task profile` (a Worker, or with
 * `--launcher procs` a process): opens this rank's device,
 * makes its TP group and profiles the same steps as every other rank
 * (cli/profile.ts's {@link profileRun}); returns its {@link Profile}.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { printTaggedResult } from "./pinned_procs.ts";
import { type Profile, PROFILE_RESULT_TAG, profileRun } from "./profile.ts";

/** Profiles this rank: `ctx.args[0]` is the parsed flags as JSON. */
export default async function main(ctx: WorkerContext): Promise<Profile> {
  const f = JSON.parse(ctx.args[0]) as Record<string, unknown>;
  const g = parallelGroups(ctx.group, f["tensor-model-parallel-size"] as number);
  const device = await Device.create(
    f.backend ? { backend: parseBackend(f.backend as string) } : {},
  );
  ctx.deviceAcquired();
  try {
    const p = await profileRun(device, f, {
      tpGroup: g.tpGroup,
      dpGroup: g.dpGroup,
      tpRank: g.position.tpRank,
    });
    // A process of its own (`--launcher procs`): the result goes out on stdout.
    if (ctx.args.includes("--print")) printTaggedResult(PROFILE_RESULT_TAG, p);
    return p;
  } finally {
    await device.close();
  }
}
