/**
 * Megatron's learning rate, written in the tests from its source (not from
 * core/optim.ts), for checking the project's schedule against it.
 * @module
 */

/** Megatron's scheduler settings, in its own units (samples, or iterations × global batch). */
export interface MegatronLrOptions {
  maxLr: number;
  minLr: number;
  initLr: number;
  warmupSteps: number;
  decaySteps: number;
  style: "cosine" | "linear" | "constant" | "inverse-square-root" | "WSD";
  /** WSD's annealing length (`wsd_decay_steps`, in the same units). */
  wsdDecaySteps?: number;
  /** WSD's annealing shape (`lr_wsd_decay_style`). */
  wsdStyle?: "exponential" | "linear" | "cosine" | "minus_sqrt";
}

/**
 * `OptimizerParamScheduler.get_lr` (megatron/core/optimizer_param_scheduler.py)
 * after `numSteps` steps (samples consumed by the updates so far: its
 * scheduler steps by the global batch; get_optimizer_param_scheduler sets
 * `lr_decay_steps = lr_decay_samples` or `lr_decay_iters × global batch`, and
 * `lr_warmup_steps` likewise or `lr_warmup_fraction × lr_decay_steps`).
 */
export function megatronGetLr(numSteps: number, o: MegatronLrOptions): number {
  // Linear warm-up for the initial part.
  if (o.warmupSteps > 0 && numSteps <= o.warmupSteps) {
    return o.initLr + (o.maxLr - o.initLr) * numSteps / o.warmupSteps;
  }
  if (o.style === "constant") return o.maxLr;
  // Past lr_decay_steps: min_lr.
  if (numSteps > o.decaySteps) return o.minLr;
  if (o.style === "inverse-square-root") {
    const warm = Math.max(o.warmupSteps, 1), steps = Math.max(numSteps, 1);
    return Math.max(o.minLr, o.maxLr * warm ** 0.5 / steps ** 0.5);
  }
  if (o.style === "WSD") {
    const start = o.decaySteps - o.wsdDecaySteps!;
    if (numSteps <= start) return o.maxLr;
    const r = (numSteps - start) / o.wsdDecaySteps!;
    const coeff = o.wsdStyle === "linear"
      ? 1 - r
      : o.wsdStyle === "cosine"
      ? 0.5 * (Math.cos(Math.PI * r) + 1)
      : o.wsdStyle === "minus_sqrt"
      ? 1 - Math.sqrt(r)
      : 2 * Math.pow(0.5, r) - 1;
    return o.minLr + coeff * (o.maxLr - o.minLr);
  }
  const ratio = (numSteps - o.warmupSteps) / (o.decaySteps - o.warmupSteps);
  if (!(ratio >= 0 && ratio <= 1)) throw new Error(`decay ratio ${ratio} outside [0, 1]`);
  const coeff = o.style === "linear" ? 1 - ratio : 0.5 * (Math.cos(Math.PI * ratio) + 1);
  return o.minLr + coeff * (o.maxLr - o.minLr);
}
