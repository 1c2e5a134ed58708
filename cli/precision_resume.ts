/**
 * A run resumed with `--load` in another precision than its checkpoint's, or
 * with another kind of loss scale, goes on (the checkpoint holds f32 weights and
 * AdamW moments whatever the precision) and says what it keeps and what it
 * drops, as Megatron warns when it skips a saved grad scaler: without a word, an
 * fp16 run's scaler was dropped by a bf16 resume, and a bf16 checkpoint resumed
 * with `--fp16` started its scale afresh at 2^32.
 * @module
 */

import type { LossScaler, LossScalerState } from "../models/loss_scale.ts";

/** A run's arithmetic: f32 throughout, or 16-bit weights, gradients and traffic. */
export type Precision = "fp32" | "bf16" | "fp16";

/** The checkpoint args that record the precision (`checkpointArgs`). */
export function precisionArgs(half: "fp16" | "bf16" | undefined): Record<string, boolean> {
  return { fp16: half === "fp16", bf16: half === "bf16" };
}

/** The precision a checkpoint's args record, or undefined where they predate the record. */
export function savedPrecision(args: Record<string, unknown> | undefined): Precision | undefined {
  if (typeof args?.fp16 !== "boolean" || typeof args?.bf16 !== "boolean") return undefined;
  return args.fp16 ? "fp16" : args.bf16 ? "bf16" : "fp32";
}

/** What the resuming run is. */
export interface ResumingRun {
  /** Its precision. */
  precision: Precision;
  /** Its loss scaler (fp16), restored here where it continues the saved one. */
  scaler?: LossScaler;
  /** `--initial-loss-scale`, where the command line gave it. */
  initialLossScale?: number;
}

/**
 * Restores `run.scaler` from the checkpoint's `lossScaler` where it goes on
 * from it (a dynamic scale from a dynamic one), and returns the lines the run
 * logs about its precision and loss scale against the checkpoint's: none when
 * both are the same kind.
 */
export function resumePrecision(
  saved: { precision?: Precision; lossScaler?: LossScalerState },
  run: ResumingRun,
): string[] {
  const lines: string[] = [];
  if (saved.precision !== undefined && saved.precision !== run.precision) {
    lines.push(
      `precision: the checkpoint trained in ${saved.precision}, this run in ${run.precision} ` +
        `(its f32 weights and AdamW moments go on)`,
    );
  }
  const st = saved.lossScaler;
  const scaler = run.scaler;
  if (st) {
    const what = st.fixed ? `fixed scale, ${st.scale}` : `dynamic scale, ${st.scale}`;
    if (!scaler) {
      lines.push(
        `loss scale: the checkpoint's ${what}, is not used: this ${run.precision} run scales ` +
          `no loss`,
      );
    } else if (!scaler.dynamic) {
      if (!st.fixed) {
        lines.push(
          `loss scale: fixed at --loss-scale ${scaler.scale}; the checkpoint's ${what}, is not used`,
        );
      }
    } else if (st.fixed) {
      lines.push(
        `loss scale: the checkpoint's was fixed (--loss-scale ${st.scale}); this run's dynamic ` +
          `scale starts at --initial-loss-scale ${scaler.scale}`,
      );
    } else {
      scaler.restore(st);
      if (run.initialLossScale !== undefined) {
        lines.push(
          `--initial-loss-scale ${run.initialLossScale} starts a fresh run's scale: this one ` +
            `continues the checkpoint's, ${scaler.scale} (--loss-scale S fixes one instead)`,
        );
      }
    }
  } else if (scaler?.dynamic) {
    lines.push(
      `loss scale: the checkpoint has none (it was ${
        saved.precision ? `a ${saved.precision} run` : "not an fp16 run"
      }); this run's dynamic scale starts at --initial-loss-scale ${scaler.scale}`,
    );
  }
  return lines;
}
