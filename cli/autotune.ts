/**
 * The CLI's matmul autotuning flags and the tuner they make (core/matmul_tuner.ts):
 * on by default, choices cached on disk per adapter (cli/tuning_cache.ts).
 * @module
 */

import type { Device } from "../core/device.ts";
import { MatmulTuner, type TunedShape } from "../core/matmul_tuner.ts";
import type { FlagSpec, FlagValues } from "./flags.ts";
import { defaultTuningCachePath, FileTuningStore } from "./tuning_cache.ts";

/** Flags of matmul autotuning, shared by `train` and `profile`. */
export const AUTOTUNE_FLAGS: Record<string, FlagSpec> = {
  "no-matmul-autotune": {
    type: "boolean",
    help: "use the heuristic matmul tiling for every shape instead of timing the candidates " +
      "after the first step (choices are cached per adapter)",
    group: "Performance",
  },
  "matmul-tuning-cache": {
    type: "string",
    help: "file of tuned matmul tilings (default $XDG_CACHE_HOME or ~/.cache/" +
      "webgpu-megatron/matmul-tuning.json; 'none': keep them in memory only)",
  },
};

/** What the autotune flags ask for. */
export interface AutotuneArgs {
  /** Tune (default true). */
  enabled: boolean;
  /** The cache file, "none", or undefined for the default file. */
  cache?: string;
}

/** The typed {@link AUTOTUNE_FLAGS}. */
export function autotuneArgs(f: FlagValues): AutotuneArgs {
  return {
    enabled: !f["no-matmul-autotune"],
    cache: f["matmul-tuning-cache"] as string | undefined,
  };
}

/** Attaches a tuner to `device` as `a` asks and returns it (null when off). */
export function attachTuner(device: Device, a: AutotuneArgs): MatmulTuner | null {
  if (!a.enabled) return null;
  const path = a.cache === "none" ? null : a.cache ?? defaultTuningCachePath();
  const tuner = new MatmulTuner(device, path ? new FileTuningStore(path) : null);
  device.matmulTuner = tuner;
  return tuner;
}

/** One line on what tuning found: shapes, retiled ones, and a failed save. */
export function describeTuning(
  found: TunedShape[],
  seconds: number,
  saveError?: string | null,
): string {
  const faster = found.filter((r) => r.chosen !== r.heuristic);
  const gain = faster.map((r) =>
    `${r.shape} ${r.heuristic}→${r.chosen} ` +
    `${r.heuristicGflops.toFixed(1)}→${r.gflops.toFixed(1)} GFLOP/s`
  );
  return `matmul autotune: ${found.length} shapes in ${seconds.toFixed(1)} s, ` +
    `${faster.length} retiled${gain.length ? `: ${gain.join("; ")}` : ""}` +
    (saveError ? ` (not cached: ${saveError})` : "");
}
