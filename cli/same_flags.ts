/**
 * Every node of a training job must run the same command: nodes started with
 * another `--tensor-model-parallel-size`, batch or learning rate would pair
 * mismatched collectives and wait out the dist timeout, or train apart. The
 * ranks compare their flags once, before any data or device, and stop with
 * the difference named.
 * @module
 */

import { disagreements } from "../collectives/agree.ts";
import { DIST_FLAGS } from "../collectives/env.ts";
import type { ProcessGroup } from "../collectives/group.ts";
import { blendShape, DATA_PATH_FLAGS } from "./data_source.ts";
import { UsageError } from "./flags.ts";
import { MEGATRON_UNIMPLEMENTED } from "./megatron_flags.ts";

/**
 * Flags that name a node's own files: they must be given on all nodes or none,
 * with any value; a blend (data-path flags) with the same weights on each.
 */
export const NODE_PATH_FLAGS: readonly string[] = [
  "data-path",
  "train-data-path",
  "valid-data-path",
  "save",
  "load",
  "init-from-hf",
  "vocab-file",
  "merge-file",
];

/**
 * Flags a node may set for itself: its WebGPU implementation, rank 0's log
 * file, matmul tuning (each rank tunes its own kernels), error traces and the
 * launcher's own flags.
 */
export const NODE_OWN_FLAGS: readonly string[] = [
  "backend",
  "log-json",
  "matmul-tuning-cache",
  "matmul-autotune-budget",
  "no-matmul-autotune",
  "debug",
  ...DIST_FLAGS,
];

/** How many differing flags the error names. */
const SHOWN = 4;

/**
 * Refuses, on every rank at once, a job whose ranks parsed different `flags`
 * (kebab-case names, as {@link TrainArgs.flags}), but for
 * {@link NODE_OWN_FLAGS}, the values of {@link NODE_PATH_FLAGS} (but for a
 * blend's weights) and Megatron's unimplemented flags that were accepted
 * (`MEGATRON_UNIMPLEMENTED`: they change nothing).
 */
export async function checkSameFlags(
  group: ProcessGroup,
  flags: Readonly<Record<string, unknown>>,
): Promise<void> {
  const compared = Object.fromEntries(
    Object.entries(resolvedSchedule(flags))
      .filter(([k, v]) =>
        v !== undefined && !NODE_OWN_FLAGS.includes(k) && !(k in MEGATRON_UNIMPLEMENTED)
      )
      .map(([k, v]) => [
        k,
        DATA_PATH_FLAGS.includes(k) ? blendShape(k, v) : NODE_PATH_FLAGS.includes(k) ? true : v,
      ]),
  );
  const found = await disagreements(group, compared);
  if (!found.length) return;
  const byKey = new Map<string, typeof found>();
  for (const d of found) byKey.set(d.key, [...(byKey.get(d.key) ?? []), d]);
  const lines = [...byKey].slice(0, SHOWN).map(([key, ds]) => {
    const values = new Map<string, number[]>();
    for (const d of ds) {
      const v = shown(d.value);
      values.set(v, [...(values.get(v) ?? []), d.rank]);
    }
    const others = [...values].map(([v, ranks]) =>
      `${v} on rank${ranks.length > 1 ? "s" : ""} ${ranks.join(", ")}`
    );
    return `--${key} ${shown(ds[0].firstValue)} on rank ${group.ranks[0]}, ${others.join("; ")}`;
  });
  const more = byKey.size > SHOWN ? ` (and ${byKey.size - SHOWN} more)` : "";
  throw new UsageError(
    `the ranks were started with different flags: ${lines.join("; ")}${more}. ` +
      `Start every node with the same flags (only the paths' values, --backend, --log-json, ` +
      `the matmul tuning flags and Megatron's flags that change nothing here may differ)`,
  );
}

/**
 * `flags` with the schedule as the run resolves it, so that nodes giving the
 * same schedule, one in full and one by default, agree: without the flags a
 * warm-up fraction or a run counted in samples replaces (`--lr-warmup-iters`,
 * its default or the 0 beside them; `--train-iters`, the default beside
 * `--train-samples`), and with the lengths left out: the decay over the
 * training length (`--lr-decay-iters` `--train-iters`, `--lr-decay-samples`
 * `--train-samples`), a run counted in samples warming up over 0 samples
 * unless a fraction is given.
 */
function resolvedSchedule(flags: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out = { ...flags };
  if (out["lr-warmup-fraction"] !== undefined || out["train-samples"] !== undefined) {
    delete out["lr-warmup-iters"];
  }
  if (out["train-samples"] !== undefined) {
    delete out["train-iters"];
    out["lr-decay-samples"] ??= out["train-samples"];
    if (out["lr-warmup-fraction"] === undefined) out["lr-warmup-samples"] ??= 0;
  } else if (out["train-iters"] !== undefined) out["lr-decay-iters"] ??= out["train-iters"];
  return out;
}

function shown(v: unknown): string {
  if (v === undefined) return "not given";
  if (v === true) return "given";
  if (v === false) return "not given";
  return v === "" ? '""' : String(v);
}
