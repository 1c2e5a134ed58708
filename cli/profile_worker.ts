/**
 * One rank of a tensor-parallel `deno task profile`: opens this rank's device,
 * makes its TP group and profiles the same steps as every other rank
 * (cli/profile.ts's {@link profileRun}); returns its {@link Profile}.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { parseBackend } from "../core/gpu.ts";
import { type Profile, profileRun } from "./profile.ts";

/** Profiles this rank: `ctx.args[0]` is the parsed flags as JSON. */
export default async function main(ctx: WorkerContext): Promise<Profile> {
  const f = JSON.parse(ctx.args[0]) as Record<string, unknown>;
  const g = parallelGroups(ctx.group, f["tensor-model-parallel-size"] as number);
  const device = await Device.create(
    f.backend ? { backend: parseBackend(f.backend as string) } : {},
  );
  ctx.deviceAcquired();
  try {
    return await profileRun(device, f, { tp: g.tp, dp: g.dp, tpRank: g.position.tpRank });
  } finally {
    await device.close();
  }
}
