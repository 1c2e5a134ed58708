/**
 * Loss scaling for fp16 training, with Megatron's semantics: the loss is
 * multiplied by the scale before backward, so small gradients survive fp16, and
 * the optimizer divides it out. A step whose gradients hold an inf or NaN is
 * skipped. The dynamic scaler (Megatron's `DynamicGradScaler`) then counts its
 * hysteresis down and, once it is spent, halves the scale (never below the
 * minimum); after `window` clean steps in a row the scale doubles and the
 * hysteresis is restored. bf16 keeps f32's exponent range and needs no scaler.
 * Pure host state: the trainer reads the found-inf flag with the loss.
 * @module
 */

/** The scaler state a checkpoint keeps (resume is exact). */
export interface LossScalerState {
  /** Current scale. */
  scale: number;
  /** Clean steps since the last overflow or growth. */
  growthTracker: number;
  /** Overflows still tolerated before the scale halves. */
  hysteresisTracker: number;
  /** Set where the scale was fixed (`--loss-scale S`): not a dynamic scaler's to go on from. */
  fixed?: boolean;
}

/** Settings of a {@link LossScaler}. */
export interface LossScalerOptions {
  /** Megatron's `--loss-scale`: a fixed scale (no dynamic changes). */
  fixed?: number;
  /** `--initial-loss-scale` (default 2^32). */
  initial?: number;
  /** `--min-loss-scale` (default 1). */
  min?: number;
  /** `--loss-scale-window`: clean steps before the scale doubles (default 1000). */
  window?: number;
  /** `--hysteresis`: overflowing steps tolerated before the scale halves (default 2). */
  hysteresis?: number;
}

/**
 * The largest loss scale, and 1 / the smallest: the scale multiplies the loss and
 * its reciprocal the gradients' norm and update in f32 on the GPU, so both must be
 * normal f32s (2^-126 to 2^126). A dynamic scale stops growing here (Megatron's has
 * no bound but f32's, where the scaled loss becomes infinite).
 */
export const MAX_LOSS_SCALE = 2 ** 126;

/** A dynamic {@link LossScaler}'s settings where none are given: Megatron's. */
export const LOSS_SCALER_DEFAULTS = {
  initial: 2 ** 32,
  min: 1,
  window: 1000,
  hysteresis: 2,
} as const;

/** A fixed or dynamic loss scale. */
export class LossScaler {
  /** Whether the scale adapts (false with a fixed `--loss-scale`). */
  readonly dynamic: boolean;
  /** The smallest scale the dynamic scaler goes down to. */
  readonly min: number;
  /** Clean steps before the scale doubles. */
  readonly window: number;
  /** Overflowing steps tolerated before the scale halves. */
  readonly hysteresis: number;
  #scale: number;
  #growth = 0;
  #hyst: number;

  /** A scaler with `opts` (Megatron's defaults). */
  constructor(opts: LossScalerOptions = {}) {
    this.dynamic = opts.fixed === undefined;
    this.#scale = opts.fixed ?? opts.initial ?? LOSS_SCALER_DEFAULTS.initial;
    this.min = opts.min ?? LOSS_SCALER_DEFAULTS.min;
    this.window = opts.window ?? LOSS_SCALER_DEFAULTS.window;
    this.hysteresis = opts.hysteresis ?? LOSS_SCALER_DEFAULTS.hysteresis;
    this.#hyst = this.hysteresis;
    const scales = [["loss scale", this.#scale], ["minimum loss scale", this.min]] as const;
    for (const [what, v] of scales) {
      if (!(v >= 1 / MAX_LOSS_SCALE && v <= MAX_LOSS_SCALE)) {
        throw new RangeError(`the ${what} must be in [2^-126, 2^126], got ${v}`);
      }
    }
    if (this.dynamic && this.min > this.#scale) {
      throw new RangeError(
        `the minimum loss scale ${this.min} is above the initial scale ${this.#scale}`,
      );
    }
    for (const [name, v] of [["window", this.window], ["hysteresis", this.hysteresis]] as const) {
      if (!(Number.isInteger(v) && v >= 1)) {
        throw new RangeError(`the loss-scale ${name} must be an integer ≥ 1, got ${v}`);
      }
    }
  }

  /** The scale the next step multiplies its loss by. */
  get scale(): number {
    return this.#scale;
  }

  /** Records one step: `foundInf` says its gradients overflowed (and it was skipped). */
  update(foundInf: boolean): void {
    if (!this.dynamic) return;
    if (foundInf) {
      this.#growth = 0;
      this.#hyst--;
      if (this.#hyst <= 0) this.#scale = Math.max(this.#scale / 2, this.min);
    } else {
      this.#growth++;
      // At or past: a state restored under a longer window grows at the next clean step.
      if (this.#growth >= this.window) {
        this.#growth = 0;
        this.#hyst = this.hysteresis;
        this.#scale = Math.min(this.#scale * 2, MAX_LOSS_SCALE);
      }
    }
  }

  /** The state to save. */
  state(): LossScalerState {
    return {
      scale: this.#scale,
      growthTracker: this.#growth,
      hysteresisTracker: this.#hyst,
      ...(this.dynamic ? {} : { fixed: true }),
    };
  }

  /**
   * Restores a saved state (a fixed scale keeps its own value). This scaler's
   * settings apply from the next step: a scale under its minimum is raised to
   * it, a hysteresis count over its hysteresis is cut to it, and a growth count
   * at or past its window doubles the scale at the next clean step.
   */
  restore(s: LossScalerState): void {
    // A fixed scale keeps its value; a dynamic one starts afresh after a fixed one (a fixed
    // 1e30 went on as a dynamic scale that halved from there, unsaid).
    if (!this.dynamic || s?.fixed === true) return;
    if (
      !(typeof s?.scale === "number" && s.scale > 0 && Number.isFinite(s.scale)) ||
      !Number.isInteger(s.growthTracker) || !Number.isInteger(s.hysteresisTracker)
    ) {
      throw new RangeError(`not a loss-scaler state: ${JSON.stringify(s)}`);
    }
    this.#scale = Math.min(Math.max(s.scale, this.min), MAX_LOSS_SCALE);
    this.#growth = s.growthTracker;
    this.#hyst = Math.min(s.hysteresisTracker, this.hysteresis);
  }
}
