/**
 * Every rank of a job must write its checkpoints into one directory and resume
 * from one checkpoint. Each node names its own `--save` and `--load` paths
 * (their values may differ), so a job whose nodes save to local disks would
 * train for an hour and fail at its first save (each node holding part of the
 * shards), and a node whose `--load` copy is older would resume another
 * iteration than its peers and stop in a mismatched collective. Both are
 * checked before the first step, with the ranks named.
 * @module
 */

import { disagreements } from "../collectives/agree.ts";
import { randomRunId } from "../collectives/env.ts";
import type { ProcessGroup } from "../collectives/group.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";
import { UsageError } from "./flags.ts";

/** The start of the name of the file rank 0 writes into `--save` for the others to find. */
export const SAVE_PROBE_PREFIX = ".save-probe-";

/**
 * Refuses a `--save DIR` that is not one directory for every rank of `group`:
 * its first member writes a file with a fresh token there, every rank reads it
 * back, and the ranks that cannot are named. The file is removed afterwards.
 */
export async function checkSharedSave(group: ProcessGroup, dir: string): Promise<void> {
  if (group.size === 1) return;
  const first = group.rank === 0;
  // A fresh token (16 hex digits), sent as its characters.
  const mine = first ? randomRunId() : "";
  const bytes = new Uint8Array(16);
  new TextEncoder().encodeInto(mine, bytes);
  if (first) await Deno.writeTextFile(`${dir}/${SAVE_PROBE_PREFIX}${mine}`, mine);
  // The first member's token reaches the others after its file is written.
  await group.broadcast(bytes);
  const token = new TextDecoder().decode(bytes);
  const path = `${dir}/${SAVE_PROBE_PREFIX}${token}`;
  const seen = await Deno.readTextFile(path).then((t) => t === token, () => false);
  const found = await disagreements(group, { sees: seen });
  if (first) await Deno.remove(path).catch(() => {});
  if (found.length) {
    const ranks = found.map((d) => d.rank).join(", ");
    throw new UsageError(
      `--save ${dir} is not one directory for every rank: rank${found.length > 1 ? "s" : ""} ` +
        `${ranks} cannot read the file rank ${group.ranks[0]} wrote there. Every rank writes ` +
        "its shards into it and rank 0 moves the checkpoint into place, so --save must be " +
        "storage every node shares (NFS or the like)",
    );
  }
}

/**
 * Refuses a resume in which the ranks of `group` would load different
 * checkpoints: `iteration` is the one this rank's `--load DIR` gives (null:
 * none, a first run), compared across the ranks.
 */
export async function checkSameLoad(
  group: ProcessGroup,
  dir: string,
  iteration: number | null,
): Promise<void> {
  const found = await disagreements(group, { iteration });
  if (!found.length) return;
  const shown = (it: unknown) => it === null ? "none" : `iteration ${it}`;
  const others = found.map((d) => `${shown(d.value)} on rank ${d.rank}`).join(", ");
  throw new CheckpointError(
    `--load ${dir} gives the ranks different checkpoints: ${shown(found[0].firstValue)} on ` +
      `rank ${group.ranks[0]}, ${others} (each node reads its own copy's latest): give every ` +
      "node the same checkpoint directory, or --iteration N",
  );
}
