/**
 * The CLI's matmul autotuning flags and the tuner they make (core/matmul_tuner.ts):
 * on by default, choices cached on disk per adapter (cli/tuning_cache.ts).
 * @module
 */

import type { Device } from "../core/device.ts";
import { DEFAULT_TUNING_BUDGET_MS, MatmulTuner, type TunedShape } from "../core/matmul_tuner.ts";
import { decimalNumber, type FlagSpec, type FlagValues, UsageError } from "./flags.ts";
import { counted } from "./log.ts";
import { defaultTuningCachePath, FileTuningStore } from "./tuning_cache.ts";

/**
 * Share of a training run's estimated length that autotuning may take when no
 * budget is asked (and at most {@link DEFAULT_TUNING_BUDGET_MS}). On a fresh
 * machine (Mesa's shader cache cold, a Zen 5 core) the candidates of one shape
 * of `deno task train`'s model took 75 s to compile and time: longer than the
 * whole 1000-step run takes tuned (55 s), and the choice was not even cached
 * (the shape did not finish). A short run now keeps the heuristic tilings; a
 * long one tunes as before, and its choices serve later runs.
 */
export const TUNING_SHARE_OF_RUN = 0.1;

/**
 * A run whose share ({@link TUNING_SHARE_OF_RUN}) is under this keeps the
 * heuristic tilings: with Mesa's shader cache cold one candidate can take this
 * long to compile (3–11 s for the large blocks on a Zen 5 core), so less rarely
 * finishes a shape and caches nothing. `deno task train`'s budget of 6–9 s
 * overran to 15–18 s in one shape's candidates and cached none, run after run.
 */
export const LEAST_USEFUL_TUNING_MS = 10_000;

/** Flags of matmul autotuning, shared by `train` and `profile`. */
export const AUTOTUNE_FLAGS: Record<string, FlagSpec> = {
  "no-matmul-autotune": {
    type: "boolean",
    help: "use the heuristic matmul tiling for every shape instead of timing the candidates " +
      "after the first steps (choices are cached per adapter)",
    group: "Performance",
  },
  "matmul-autotune-budget": {
    type: "string",
    valueName: "SECONDS|inf",
    help: `seconds of matmul autotuning per run, largest shapes first (default ` +
      `${DEFAULT_TUNING_BUDGET_MS / 1000}; in train at most a tenth of the run's estimated ` +
      `length, none when that is under ${
        LEAST_USEFUL_TUNING_MS / 1000
      }; 'inf': every shape now); ` +
      `shapes left over are tuned by later runs`,
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
  /**
   * Tuning time per run in ms, as asked. Undefined: the default, at most
   * {@link DEFAULT_TUNING_BUDGET_MS}, and in a training run at most
   * {@link TUNING_SHARE_OF_RUN} of its estimated length ({@link runTuningLimit}).
   */
  budgetMs?: number;
}

/**
 * The typed {@link AUTOTUNE_FLAGS}. Throws {@link UsageError} for a cache file
 * or a budget beside `--no-matmul-autotune`, which neither tunes nor reads a
 * tiling (`--matmul-tuning-cache none`, asking for no file, goes with it).
 */
export function autotuneArgs(f: FlagValues): AutotuneArgs {
  const budget = f["matmul-autotune-budget"] as string | undefined;
  if (f["no-matmul-autotune"]) {
    for (const flag of ["matmul-tuning-cache", "matmul-autotune-budget"]) {
      if (f[flag] !== undefined && !(flag === "matmul-tuning-cache" && f[flag] === "none")) {
        throw new UsageError(
          `--${flag} changes nothing with --no-matmul-autotune (no tiling is tuned or read ` +
            `from a cache): drop one`,
        );
      }
    }
  }
  return {
    enabled: !f["no-matmul-autotune"],
    cache: f["matmul-tuning-cache"] as string | undefined,
    ...(budget === undefined ? {} : { budgetMs: parseBudget(budget) }),
  };
}

function parseBudget(text: string): number {
  const s = decimalNumber(text, false);
  if (s === Infinity) return Infinity;
  if (!Number.isFinite(s) || s < 0) {
    throw new UsageError(
      `--matmul-autotune-budget ${text}: expected seconds (a number ≥ 0) or 'inf'`,
    );
  }
  return s * 1000;
}

/**
 * Attaches a tuner to `device` as `a` asks and returns it (null when off). The
 * default cache is the program's own: a damaged one is moved aside, with a
 * line to `warn` (default: stderr), and started anew.
 */
export function attachTuner(
  device: Device,
  a: AutotuneArgs,
  warn: (line: string) => void = (line) => console.error(`warning: ${line}`),
): MatmulTuner | null {
  if (!a.enabled) return null;
  const named = a.cache !== undefined;
  const path = a.cache === "none" ? null : a.cache ?? defaultTuningCachePath();
  if (path === null && !named) {
    warn(
      "no matmul tuning cache: neither XDG_CACHE_HOME nor HOME is set, so tuned choices last " +
        "this run only (--matmul-tuning-cache FILE names one)",
    );
  }
  const store = path ? new FileTuningStore(path, { own: !named, warn }) : null;
  const tuner = new MatmulTuner(device, store, { budgetMs: a.budgetMs });
  device.matmulTuner = tuner;
  return tuner;
}

/** When a training run tunes, and for how long at most. */
export interface RunTuningLimit {
  /** Tuning time this call may take, in ms (Infinity: the tuner's budget alone). */
  limitMs: number;
  /** The run's estimated time left, in ms, when the default budget is scaled to it; else null. */
  runLeftMs: number | null;
  /** The scaled budget is under {@link LEAST_USEFUL_TUNING_MS}: this run does not tune. */
  tooShort: boolean;
}

/**
 * The steps of a run after which it may tune: with a budget asked, from its
 * first step on (which met every shape); by default from its second, whose
 * time (the first one's compiles excluded) sizes the budget to the run.
 */
export function firstTuningStep(a: AutotuneArgs, startIter: number): number {
  return a.budgetMs === undefined ? startIter + 1 : startIter;
}

/**
 * How long a training run tunes after a step of `stepMs` with `stepsLeft`
 * steps to go: as asked, or by default {@link TUNING_SHARE_OF_RUN} of the
 * estimated time left (the tuner caps it at its own budget), none when that
 * is under {@link LEAST_USEFUL_TUNING_MS}.
 */
export function runTuningLimit(a: AutotuneArgs, stepMs: number, stepsLeft: number): RunTuningLimit {
  if (a.budgetMs !== undefined) return { limitMs: Infinity, runLeftMs: null, tooShort: false };
  const runLeftMs = stepMs * Math.max(stepsLeft, 0);
  const limitMs = TUNING_SHARE_OF_RUN * runLeftMs;
  return { limitMs, runLeftMs, tooShort: limitMs < LEAST_USEFUL_TUNING_MS };
}

/**
 * One line, said before tuning starts, on what it is about to do: a first run
 * on a CPU adapter may sit for minutes compiling candidate kernels. `limit`
 * says when the default budget was scaled down to a short run.
 */
export function describeTuningStart(
  pending: number,
  budgetMs: number,
  limit: RunTuningLimit = { limitMs: Infinity, runLeftMs: null, tooShort: false },
): string {
  const ms = Math.min(budgetMs, limit.limitMs);
  const budget = Number.isFinite(ms) ? aboutSeconds(ms) : "none";
  const why = limit.runLeftMs !== null && limit.limitMs < budgetMs
    ? `: a tenth of the ~${aboutSeconds(limit.runLeftMs)} this run has left`
    : "";
  return `matmul autotune: timing the tilings of ${shapes(pending)} ` +
    `(budget ${budget}${why}; compiling each candidate kernel takes seconds to a minute on a CPU ` +
    `adapter, once per machine; --no-matmul-autotune skips)`;
}

/**
 * One line for a run too short to tune (its share of the run under
 * {@link LEAST_USEFUL_TUNING_MS}): the shapes keep the heuristic tilings.
 */
export function describeTuningSkipped(pending: number, runLeftMs: number): string {
  return `matmul autotune: not tuning ${shapes(pending)}: this run is too short ` +
    `(~${aboutSeconds(runLeftMs)} left, and tuning takes at most a tenth of a run); they keep ` +
    `the heuristic tilings, and --matmul-autotune-budget SECONDS|inf tunes them for this run ` +
    `and later ones`;
}

function shapes(n: number): string {
  return counted(n, "new shape");
}

function aboutSeconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/**
 * A training run's one tuning pass, after the step that met every shape: times
 * the pending shapes' tilings for as long as {@link runTuningLimit} allows (none
 * for a run too short to afford it: the shapes wait for a later run), saying
 * what it is about to do and what it found; `stop` (a signal to the run) cuts
 * it short between compiles.
 */
export async function tuneDuringRun(
  tuner: MatmulTuner,
  a: AutotuneArgs,
  stepMs: number,
  stepsLeft: number,
  say: (line: string) => void,
  stop?: () => boolean,
): Promise<void> {
  const limit = runTuningLimit(a, stepMs, stepsLeft);
  if (limit.tooShort) {
    say(describeTuningSkipped(tuner.pending, limit.runLeftMs ?? 0));
    await tuner.tune(0);
    return;
  }
  say(describeTuningStart(tuner.pending, tuner.budgetMs, limit));
  const t0 = performance.now();
  const found = await tuner.tune(limit.limitMs, stop);
  const stopped = stop?.() ?? false;
  say(
    describeTuning(
      found,
      (performance.now() - t0) / 1000,
      tuner.saveError,
      tuner.deferred,
      stopped,
    ),
  );
}

/**
 * One line on what tuning found: shapes (those the budget cut short serve this
 * run only, uncached), retiled ones, shapes the budget left for later runs
 * (`deferred`, and the cut-short ones), and a failed save; `stopped`: a
 * signal cut it short, not the budget.
 */
export function describeTuning(
  found: TunedShape[],
  seconds: number,
  saveError?: string | null,
  deferred = 0,
  stopped = false,
): string {
  const faster = found.filter((r) => r.chosen !== r.heuristic);
  const gain = faster.map((r) =>
    `${r.shape} ${r.heuristic}→${r.chosen} ` +
    `${r.heuristicGflops.toFixed(1)}→${r.gflops.toFixed(1)} GFLOP/s`
  );
  const unfinished = found.filter((r) => !r.complete).length;
  const later = deferred + unfinished;
  const part = unfinished ? ` (${unfinished} in part: for this run only)` : "";
  return `matmul autotune: ${counted(found.length, "shape")}${part} in ${seconds.toFixed(1)} s, ` +
    `${faster.length} retiled${gain.length ? `: ${gain.join("; ")}` : ""}` +
    (later
      ? (stopped
        ? `; stopped by a signal, ${later} shape${later > 1 ? "s" : ""} left for later runs`
        : `; budget spent, ${later} shape${later > 1 ? "s" : ""} left for later runs ` +
          `(--matmul-autotune-budget)`)
      : "") +
    (saveError ? ` (not cached: ${saveError})` : "");
}
