/**
 * The CLI's matmul autotuning flags and the tuner they make (core/matmul_tuner.ts):
 * on by default, choices cached on disk per adapter (cli/tuning_cache.ts).
 * @module
 */

import type { Device } from "../core/device.ts";
import { DEFAULT_TUNING_BUDGET_MS, MatmulTuner, type TunedShape } from "../core/matmul_tuner.ts";
import { type FlagSpec, type FlagValues, UsageError } from "./flags.ts";
import { defaultTuningCachePath, FileTuningStore } from "./tuning_cache.ts";

/** Flags of matmul autotuning, shared by `train` and `profile`. */
export const AUTOTUNE_FLAGS: Record<string, FlagSpec> = {
  "no-matmul-autotune": {
    type: "boolean",
    help: "use the heuristic matmul tiling for every shape instead of timing the candidates " +
      "after the first step (choices are cached per adapter)",
    group: "Performance",
  },
  "matmul-autotune-budget": {
    type: "string",
    valueName: "SECONDS|inf",
    help: `seconds of matmul autotuning per run, largest shapes first (default ${
      DEFAULT_TUNING_BUDGET_MS / 1000
    }; 'inf': every shape now); shapes left over are tuned by later runs`,
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
  /** Tuning time per run in ms (default: the tuner's {@link DEFAULT_TUNING_BUDGET_MS}). */
  budgetMs?: number;
}

/** The typed {@link AUTOTUNE_FLAGS}. */
export function autotuneArgs(f: FlagValues): AutotuneArgs {
  const budget = f["matmul-autotune-budget"] as string | undefined;
  return {
    enabled: !f["no-matmul-autotune"],
    cache: f["matmul-tuning-cache"] as string | undefined,
    ...(budget === undefined ? {} : { budgetMs: parseBudget(budget) }),
  };
}

function parseBudget(text: string): number {
  if (/^inf(inity)?$/i.test(text.trim())) return Infinity;
  const s = Number(text);
  if (text.trim() === "" || !Number.isFinite(s) || s < 0) {
    throw new UsageError(
      `--matmul-autotune-budget ${text}: expected seconds (a number ≥ 0) or 'inf'`,
    );
  }
  return s * 1000;
}

/** Attaches a tuner to `device` as `a` asks and returns it (null when off). */
export function attachTuner(device: Device, a: AutotuneArgs): MatmulTuner | null {
  if (!a.enabled) return null;
  const path = a.cache === "none" ? null : a.cache ?? defaultTuningCachePath();
  const tuner = new MatmulTuner(device, path ? new FileTuningStore(path) : null, {
    budgetMs: a.budgetMs,
  });
  device.matmulTuner = tuner;
  return tuner;
}

/**
 * One line, said before tuning starts, on what it is about to do: a first run
 * on a CPU adapter may sit for minutes compiling candidate kernels.
 */
export function describeTuningStart(pending: number, budgetMs: number): string {
  const budget = Number.isFinite(budgetMs) ? `${(budgetMs / 1000).toFixed(0)} s` : "none";
  return `matmul autotune: timing the tilings of ${pending} new shape${pending > 1 ? "s" : ""} ` +
    `(budget ${budget}; compiling each candidate kernel takes seconds to a minute on a CPU ` +
    `adapter, once per machine; --no-matmul-autotune skips)`;
}

/**
 * One line on what tuning found: shapes, retiled ones, shapes the budget left
 * for later runs (`deferred`), and a failed save.
 */
export function describeTuning(
  found: TunedShape[],
  seconds: number,
  saveError?: string | null,
  deferred = 0,
): string {
  const faster = found.filter((r) => r.chosen !== r.heuristic);
  const gain = faster.map((r) =>
    `${r.shape} ${r.heuristic}→${r.chosen} ` +
    `${r.heuristicGflops.toFixed(1)}→${r.gflops.toFixed(1)} GFLOP/s`
  );
  const unfinished = found.filter((r) => !r.complete).length;
  const later = deferred + unfinished;
  return `matmul autotune: ${found.length} shapes in ${seconds.toFixed(1)} s, ` +
    `${faster.length} retiled${gain.length ? `: ${gain.join("; ")}` : ""}` +
    (later
      ? `; budget spent, ${later} shape${later > 1 ? "s" : ""} left for later runs ` +
        `(--matmul-autotune-budget)`
      : "") +
    (saveError ? ` (not cached: ${saveError})` : "");
}
