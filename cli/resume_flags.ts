/**
 * The training flags a run resumed with `--load` continues from its checkpoint
 * rather than from defaults: the learning-rate schedule's (Megatron's
 * `OptimizerParamScheduler` state) and the init std the weights were drawn
 * with; their checks, and how each is reconciled with the saved value.
 * @module
 */

import { resolve } from "node:path";
import { readLatest } from "../models/checkpoint/layout.ts";
import { type FlagValues, UsageError, wasGiven } from "./flags.ts";

/**
 * The learning-rate schedule's flags, saved in checkpoints: a run resumed with
 * `--load` continues the saved schedule (cli/model_source.ts `agreeWithModelSource`).
 * The warm-up is `--lr-warmup-iters`, `--lr-warmup-samples` or
 * `--lr-warmup-fraction`, compared as one; the decay `--lr-decay-iters` or, in
 * a run counted in samples, `--lr-decay-samples`.
 */
export const SCHEDULE_FLAGS: readonly string[] = [
  "lr",
  "min-lr",
  "lr-warmup-iters",
  "lr-warmup-samples",
  "lr-warmup-fraction",
  "lr-warmup-init",
  "lr-decay-iters",
  "lr-decay-samples",
  "lr-decay-style",
  "lr-wsd-decay-style",
  "lr-wsd-decay-iters",
  "lr-wsd-decay-samples",
];

/**
 * What a run counted in samples (`--train-samples`) saves besides its
 * schedule: its length, which a resumed run given no length (`--train-samples`
 * or `--train-iters`) takes, and its global batch, which a resumed run keeps
 * (the schedule is followed in updates of that many samples).
 */
export const SAMPLE_RUN_FLAGS: readonly string[] = ["train-samples", "global-batch-size"];

/** The flag of the init std, saved in checkpoints where known (`checkpointArgs`). */
export const INIT_STD_FLAG = "init-method-std";

/**
 * The warm-up flags, as Megatron checks them: `--lr-warmup-fraction` below 1
 * (the warm-up ends before the decay does) and not beside a nonzero
 * `--lr-warmup-iters` (or `--lr-warmup-samples`: {@link checkSampleSchedule});
 * a given `--lr-warmup-iters` (`--lr-warmup-samples`) shorter than the decay;
 * `--lr-warmup-init` not above `--lr`.
 */
export function checkWarmup(f: FlagValues): void {
  const fraction = f["lr-warmup-fraction"] as number | undefined;
  if (fraction !== undefined && !(fraction < 1)) {
    const decay = f["train-samples"] !== undefined ? "--lr-decay-samples" : "--lr-decay-iters";
    throw new UsageError(
      `--lr-warmup-fraction must be below 1 (a share of ${decay}), got ${fraction}`,
    );
  }
  const iters = f["lr-warmup-iters"];
  if (fraction !== undefined && wasGiven(f, "lr-warmup-iters") && iters !== 0) {
    throw new UsageError(
      `give either --lr-warmup-fraction ${fraction} or --lr-warmup-iters ${iters}, not both ` +
        "(as Megatron: only --lr-warmup-iters 0 goes with a fraction)",
    );
  }
  // Megatron's OptimizerParamScheduler asserts a warm-up shorter than the decay; given one
  // that is not, the rate would rise for the whole run and never decay.
  const [lengthFlag, decayFlag, warmupFlag] =
    COUNTED_BY[f["train-samples"] !== undefined ? "samples" : "iterations"];
  const warmup = f[warmupFlag] as number | undefined;
  const decay = (f[decayFlag] ?? f[lengthFlag]) as number;
  if (wasGiven(f, warmupFlag) && warmup! > 0 && warmup! >= decay) {
    throw new UsageError(
      `--${warmupFlag} ${warmup} is not below the decay's length, ${decay} ` +
        `(--${f[decayFlag] !== undefined ? decayFlag : lengthFlag}): the rate would ` +
        "never decay (Megatron asserts a warm-up shorter than the decay)",
    );
  }
  const init = f["lr-warmup-init"] as number;
  if (init > (f.lr as number)) {
    throw new UsageError(
      `--lr-warmup-init ${init} is above --lr ${f.lr} (the warm-up rises from it to --lr)`,
    );
  }
}

/**
 * The WSD flags (after {@link checkSampleSchedule}): `--lr-decay-style WSD`
 * needs its annealing's length, `--lr-wsd-decay-iters` (`--lr-wsd-decay-samples`
 * in a run counted in samples), which Megatron asserts, at most the decay's
 * length (longer, the annealing would start above `--lr`); the length flags
 * are refused beside another style, where they would change nothing.
 */
export function checkWsd(f: FlagValues): void {
  const count = f["train-samples"] !== undefined ? "samples" : "iterations";
  const [lengthFlag, decayFlag] = COUNTED_BY[count];
  const wsdFlag = count === "samples" ? "lr-wsd-decay-samples" : "lr-wsd-decay-iters";
  const wsd = f[wsdFlag] as number | undefined;
  if (f["lr-decay-style"] !== "WSD") {
    if (wsd !== undefined) {
      throw new UsageError(
        `--${wsdFlag} ${wsd} applies to --lr-decay-style WSD only, and the style is ` +
          `${f["lr-decay-style"]}: drop the flag, or add --lr-decay-style WSD`,
      );
    }
    return;
  }
  if (wsd === undefined) {
    throw new UsageError(
      `--lr-decay-style WSD needs --${wsdFlag} N: the annealing's length, the last ${count} ` +
        "of the decay",
    );
  }
  const decay = (f[decayFlag] ?? f[lengthFlag]) as number;
  if (wsd > decay) {
    throw new UsageError(
      `--${wsdFlag} ${wsd} is longer than the decay, ${decay} ` +
        `(--${f[decayFlag] !== undefined ? decayFlag : lengthFlag}): the annealing is the ` +
        "decay's last part",
    );
  }
}

/**
 * Megatron's training length and schedule counted in samples against those
 * counted in iterations, as its `validate_args` asserts them: `--train-samples`
 * not beside a given `--train-iters`; a run counted in samples given no
 * `--lr-decay-iters` and no nonzero `--lr-warmup-iters`, and not a nonzero
 * `--lr-warmup-samples` beside `--lr-warmup-fraction`; a run counted in
 * iterations given no `--lr-decay-samples` and no nonzero
 * `--lr-warmup-samples`. And `--train-samples` at least one global batch
 * (`globalBatch` sequences), or the run would train 0 steps.
 */
export function checkSampleSchedule(f: FlagValues, globalBatch: number): void {
  const samples = f["train-samples"] as number | undefined;
  const warmupSamples = f["lr-warmup-samples"] as number | undefined;
  const mixed = (flag: string, use: string) =>
    new UsageError(
      `--${flag} ${f[flag]} counts ${samples !== undefined ? "iterations" : "samples"}, and ` +
        (samples !== undefined
          ? `this run counts samples (--train-samples ${samples})`
          : `this run counts iterations (${
            wasGiven(f, "train-iters") ? "" : "the default "
          }--train-iters ${f["train-iters"]})`) +
        `: give ${use} (Megatron's schedule is counted one way)`,
    );
  if (samples === undefined) {
    if (f["lr-decay-samples"] !== undefined) {
      throw mixed("lr-decay-samples", "--lr-decay-iters, or the length as --train-samples");
    }
    if (f["lr-wsd-decay-samples"] !== undefined) {
      throw mixed("lr-wsd-decay-samples", "--lr-wsd-decay-iters, or the length as --train-samples");
    }
    if (warmupSamples !== undefined && warmupSamples !== 0) {
      throw mixed(
        "lr-warmup-samples",
        "--lr-warmup-iters or --lr-warmup-fraction, or the length as --train-samples",
      );
    }
    return;
  }
  if (wasGiven(f, "train-iters")) {
    throw new UsageError(
      `give either --train-iters ${f["train-iters"]} or --train-samples ${samples}, not both ` +
        "(as Megatron: a run is counted in iterations or in samples)",
    );
  }
  if (f["lr-decay-iters"] !== undefined) {
    throw mixed("lr-decay-iters", "--lr-decay-samples");
  }
  if (f["lr-wsd-decay-iters"] !== undefined) {
    throw mixed("lr-wsd-decay-iters", "--lr-wsd-decay-samples");
  }
  if (wasGiven(f, "lr-warmup-iters") && f["lr-warmup-iters"] !== 0) {
    throw mixed("lr-warmup-iters", "--lr-warmup-samples or --lr-warmup-fraction");
  }
  const fraction = f["lr-warmup-fraction"] as number | undefined;
  if (fraction !== undefined && warmupSamples !== undefined && warmupSamples !== 0) {
    throw new UsageError(
      `give either --lr-warmup-fraction ${fraction} or --lr-warmup-samples ${warmupSamples}, ` +
        "not both (as Megatron: only --lr-warmup-samples 0 goes with a fraction)",
    );
  }
  if (samples < globalBatch) {
    const batch = f["global-batch-size"] !== undefined
      ? `--global-batch-size ${globalBatch}`
      : `${globalBatch}, --micro-batch-size × the data-parallel size`;
    throw new UsageError(
      `--train-samples ${samples} is less than one global batch (${batch}): it would train ` +
        `0 steps (⌊samples / global batch⌋); give at least ${globalBatch}`,
    );
  }
}

/** The three ways to give the warm-up's length (compared with a checkpoint's as one). */
export const WARMUP_FLAGS: readonly string[] = [
  "lr-warmup-iters",
  "lr-warmup-samples",
  "lr-warmup-fraction",
];

/**
 * How `agreeWithModelSource` refuses a flag that disagrees with the checkpoint
 * (`--FLAG GIVEN disagrees with WHERE (SAVED); HOW`).
 */
export type Refuse = (
  flag: string,
  given: unknown,
  where: string,
  saved: unknown,
  how: string,
) => never;

/** How `agreeWithModelSource` takes a checkpoint's value for a flag not given. */
export type Adopt = (flag: string, value: number) => void;

/**
 * The warm-up's length against the checkpoint's `saved` schedule: given as
 * any of its flags, it must be the saved one (a fraction, or a number of
 * iterations or samples); not given, it is the saved one. A zero
 * `--lr-warmup-iters` or `--lr-warmup-samples` that is not the saved flag
 * says nothing (Megatron's default, which stands beside a fraction or a
 * warm-up of the other count).
 */
export function agreeWarmup(
  f: FlagValues,
  saved: Record<string, number | string | boolean>,
  where: string,
  refuse: Refuse,
  adopt: Adopt,
): void {
  const savedFlag = ["lr-warmup-fraction", "lr-warmup-samples", "lr-warmup-iters"].find((n) =>
    typeof saved[n] === "number"
  );
  if (!savedFlag) return;
  const v = saved[savedFlag] as number;
  const given =
    ["lr-warmup-fraction", "lr-warmup-samples", "lr-warmup-iters"].find((n) =>
      wasGiven(f, n) && !(n !== savedFlag && n !== "lr-warmup-fraction" && f[n] === 0)
    ) ?? null;
  if (given === null) {
    if (f[savedFlag] !== v) adopt(savedFlag, v);
    return;
  }
  if (given !== savedFlag || f[given] !== v) {
    refuse(
      given,
      f[given],
      where,
      `${savedFlag} ${v}`,
      "drop the flag to continue its learning-rate schedule, or add " +
        "--override-opt-param-scheduler to replace the schedule",
    );
  }
}

/**
 * The flags that say a run is counted in iterations, and those that say it is
 * in samples: each count's length, decay and warm-up, in that order.
 */
const COUNTED_BY: Readonly<Record<"iterations" | "samples", readonly string[]>> = {
  iterations: ["train-iters", "lr-decay-iters", "lr-warmup-iters"],
  samples: ["train-samples", "lr-decay-samples", "lr-warmup-samples"],
};

/**
 * A resumed run counted in samples or in iterations against its checkpoint's
 * schedule (`saved`: its saved flags, `savedCheckpointArgs`), before the
 * schedule's flags are compared one by one:
 * - a checkpoint counted in samples (it saved `--lr-decay-samples`), resumed
 *   with no length given (`--train-samples` or `--train-iters`), takes its
 *   `--train-samples`;
 * - unless `override` (`--override-opt-param-scheduler`), a flag of the other
 *   count given (`--train-iters`, `--lr-decay-iters` or a nonzero
 *   `--lr-warmup-iters` to a checkpoint counted in samples; the samples' to
 *   one counted in iterations) is refused, naming the checkpoint's count;
 * - a run counted in samples keeps the global batch its checkpoint's updates
 *   were counted at (saved, or else the checkpoint's `samples` consumed per
 *   `iteration`; refused where those were not one batch each, left alone
 *   where unknown): not given, it is adopted; given otherwise, refused,
 *   `override` or not. Megatron counts
 *   the samples each update consumed; here the schedule is counted in updates
 *   of one global batch (cli/train_args.ts `lrScheduleOf`), which another batch
 *   would make another schedule.
 */
export function agreeSampleCount(
  f: FlagValues,
  saved: Record<string, number | string | boolean>,
  consumed: { iteration: number; samples?: number },
  override: boolean,
  where: string,
  refuse: Refuse,
  adopt: Adopt,
): void {
  const count = typeof saved["lr-decay-samples"] === "number"
    ? "samples"
    : typeof saved["lr-decay-iters"] === "number"
    ? "iterations"
    : null;
  if (
    count === "samples" && typeof saved["train-samples"] === "number" &&
    !wasGiven(f, "train-samples") && !wasGiven(f, "train-iters")
  ) adopt("train-samples", saved["train-samples"]);
  if (count !== null && !override) {
    const other = count === "samples" ? "iterations" : "samples";
    const flag = COUNTED_BY[other].find((n) =>
      wasGiven(f, n) && !(n.startsWith("lr-warmup-") && f[n] === 0)
    );
    if (flag !== undefined) {
      const decay = count === "samples" ? "lr-decay-samples" : "lr-decay-iters";
      refuse(
        flag,
        f[flag],
        where,
        `a schedule counted in ${count}: ${decay} ${saved[decay]}`,
        `resume it counted in ${count} (${
          count === "samples" ? "--train-samples" : "--train-iters"
        }; the schedule's flags not given continue it), or add --override-opt-param-scheduler ` +
          `and the run's length as ${
            other === "samples" ? "--train-samples S" : "--train-iters N"
          } to replace the schedule with one counted in ${other}`,
      );
    }
  }
  if (f["train-samples"] === undefined) return;
  const { iteration, samples } = consumed;
  const savedBatch = saved["global-batch-size"];
  const batch = typeof savedBatch === "number"
    ? savedBatch
    : samples === undefined || !(iteration > 0)
    ? undefined
    : samples % iteration === 0
    ? samples / iteration
    : null;
  if (batch === undefined) return;
  if (batch === null) {
    throw new UsageError(
      `--train-samples: ${where} trained ${iteration} iterations on ${samples} samples, not ` +
        "one global batch each, and a schedule counted in samples is followed here in updates " +
        "of one global batch: resume it counted in iterations (--train-iters)",
    );
  }
  if (f["global-batch-size"] === batch) return;
  if (!wasGiven(f, "global-batch-size")) return adopt("global-batch-size", batch);
  refuse(
    "global-batch-size",
    f["global-batch-size"],
    where,
    `global batch ${batch}`,
    `a schedule counted in samples is followed here in updates of ${batch} samples, the ` +
      "checkpoint's: drop the flag to resume at that batch (Megatron would count the samples " +
      "of each batch; not implemented)",
  );
}

/**
 * `--init-method-std` against the std a checkpoint's weights were drawn with
 * (`saved`, absent where not recorded): the flag sets a fresh model's init
 * only, so given it must be the saved value; not given, it takes it.
 */
export function agreeInitStd(
  f: FlagValues,
  saved: unknown,
  where: string,
  refuse: Refuse,
  adopt: Adopt,
): void {
  const flag = INIT_STD_FLAG;
  if (typeof saved === "number") {
    if (f[flag] === saved) return;
    if (!wasGiven(f, flag)) return adopt(flag, saved);
    refuse(
      flag,
      f[flag],
      where,
      `weights drawn with std ${saved}`,
      "it sets the init of a fresh model only: drop it to resume",
    );
  }
  if (wasGiven(f, flag)) {
    throw new UsageError(
      `--${flag} ${f[flag]}: ${where} does not record the init std its weights were drawn with ` +
        "(saved before the flag existed, or started from Hugging Face weights), and the flag " +
        "sets the init of a fresh model only: drop it to resume",
    );
  }
}

/**
 * Whether a run given `--load DIR --save DIR` (the same directory, no
 * `--iteration`) finds no checkpoint there yet: the first run of a restartable
 * job, which trains from scratch, as Megatron's does (its scripts pass the
 * same directory to both so that one command starts and resumes the job). A
 * `--load` elsewhere without a checkpoint stays an error: a mistyped path
 * must not start a new run.
 */
export async function firstRunOfRestartableJob(
  load: string | undefined,
  save: string | undefined,
  iteration: number | undefined,
): Promise<boolean> {
  if (load === undefined || save === undefined || iteration !== undefined) return false;
  if (resolve(load) !== resolve(save)) return false;
  return await readLatest(load) === null;
}
