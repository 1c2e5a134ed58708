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
 * `--load` continues the saved schedule (cli/train_config.ts `agreeWithModelSource`).
 * The warm-up is `--lr-warmup-iters` or `--lr-warmup-fraction`, compared as one.
 */
export const SCHEDULE_FLAGS: readonly string[] = [
  "lr",
  "min-lr",
  "lr-warmup-iters",
  "lr-warmup-fraction",
  "lr-warmup-init",
  "lr-decay-iters",
  "lr-decay-style",
];

/** The flag of the init std, saved in checkpoints where known (`checkpointArgs`). */
export const INIT_STD_FLAG = "init-method-std";

/**
 * The warm-up flags, as Megatron checks them: `--lr-warmup-fraction` below 1
 * (the warm-up ends before the decay does) and not beside a nonzero
 * `--lr-warmup-iters`; `--lr-warmup-init` not above `--lr`.
 */
export function checkWarmup(f: FlagValues): void {
  const fraction = f["lr-warmup-fraction"] as number | undefined;
  if (fraction !== undefined && !(fraction < 1)) {
    throw new UsageError(
      `--lr-warmup-fraction must be below 1 (a share of --lr-decay-iters), got ${fraction}`,
    );
  }
  const iters = f["lr-warmup-iters"];
  if (fraction !== undefined && wasGiven(f, "lr-warmup-iters") && iters !== 0) {
    throw new UsageError(
      `give either --lr-warmup-fraction ${fraction} or --lr-warmup-iters ${iters}, not both ` +
        "(as Megatron: only --lr-warmup-iters 0 goes with a fraction)",
    );
  }
  const init = f["lr-warmup-init"] as number;
  if (init > (f.lr as number)) {
    throw new UsageError(
      `--lr-warmup-init ${init} is above --lr ${f.lr} (the warm-up rises from it to --lr)`,
    );
  }
}

/** The two ways to give the warm-up's length (compared with a checkpoint's as one). */
export const WARMUP_FLAGS: readonly string[] = ["lr-warmup-iters", "lr-warmup-fraction"];

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
 * either flag, it must be the saved one (a fraction or a number of
 * iterations); not given, it is the saved one.
 */
export function agreeWarmup(
  f: FlagValues,
  saved: Record<string, number | string | boolean>,
  where: string,
  refuse: Refuse,
  adopt: Adopt,
): void {
  const [iters, fraction] = [saved["lr-warmup-iters"], saved["lr-warmup-fraction"]];
  const savedFlag = typeof fraction === "number"
    ? "lr-warmup-fraction"
    : typeof iters === "number"
    ? "lr-warmup-iters"
    : null;
  if (!savedFlag) return;
  const v = saved[savedFlag] as number;
  const given = wasGiven(f, "lr-warmup-fraction")
    ? "lr-warmup-fraction"
    : wasGiven(f, "lr-warmup-iters")
    ? "lr-warmup-iters"
    : null;
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
