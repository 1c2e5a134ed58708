/**
 * AdamW with decoupled weight decay, global-norm gradient clipping computed on
 * the GPU (no host round trip per step), and learning-rate schedules.
 * @module
 */

import {
  adamwDispatch,
  adamwKernel,
  adamwMultiDispatch,
  adamwMultiKernel,
  adamwTextureKernel,
  clipCoefKernel,
  clipCoefParams,
} from "../kernels/adamw.ts";
import type { BufferBinding, Device } from "./device.ts";
import type { ParamInfo } from "./nn.ts";
import { elementWindows, full, reduceInto } from "./ops/mod.ts";
import { streamTextures } from "./ops/streams.ts";
import { Tensor } from "./tensor.ts";
import { subBinding } from "./windows.ts";

/** AdamW hyper-parameters. */
export interface AdamWConfig {
  /** First-moment decay (default 0.9). */
  beta1?: number;
  /** Second-moment decay (default 0.999; Megatron's GPT uses 0.95). */
  beta2?: number;
  /** Denominator epsilon (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay for parameters that take it (default 0.01, as the paper). */
  weightDecay?: number;
  /**
   * Update several tensors per dispatch: as many as the adapter's
   * `maxStorageBuffersPerShaderStage` binds (4 buffers each, plus the clipping
   * coefficient): 7 on lavapipe, 3 on Dawn's GL. Default false (one dispatch per
   * tensor): on both software adapters the multi-tensor kernel measured about 2×
   * slower per element than the per-tensor one, more than the dispatches it saves.
   */
  multiTensor?: boolean;
}

interface Entry {
  state: BufferBinding[];
  n: number;
  decay: number;
}

/**
 * The squared L2 norm of all gradients, as a one-element tensor, summed in fixed
 * order. `count` filters which parameters contribute (tensor parallelism counts
 * replicated ones once).
 */
export function gradSumSquares(device: Device, params: readonly Tensor[]): Tensor {
  const withGrad = params.filter((p) => p.grad);
  const parts = Tensor.empty(device, [Math.max(withGrad.length, 1)]);
  if (withGrad.length === 0) return full(device, [1], 0);
  withGrad.forEach((p, i) => reduceInto(p.grad!, "sumsq", parts, i));
  const total = Tensor.empty(device, [1]);
  reduceInto(parts, "sum", total);
  parts.dispose();
  return total;
}

/** Loss scaling seen by {@link clipCoefficient}. */
export interface ClipScaling {
  /** The loss scale the gradients carry (default 1); the coefficient divides it out. */
  scale?: number;
  /** Flag a non-finite norm (an inf/NaN gradient) so the update is skipped (default false). */
  skipNonFinite?: boolean;
}

/**
 * From a squared norm of gradients that carry a loss scale `s` (default 1): the
 * coefficient to multiply them by, the true norm, and the found-inf flag:
 * `[min(1, maxNorm/(norm+1e-6))/s, norm, found]` (clipping off when `maxNorm ≤ 0`;
 * `found` is 1 when `skipNonFinite` and the norm is inf or NaN: {@link AdamW.update}
 * then leaves everything unchanged).
 */
export function clipCoefficient(sumsq: Tensor, maxNorm: number, scaling: ClipScaling = {}): Tensor {
  const out = Tensor.empty(sumsq.device, [3]);
  const params = clipCoefParams(maxNorm, 1 / (scaling.scale ?? 1), scaling.skipNonFinite ?? false);
  sumsq.device.dispatch(clipCoefKernel(), [sumsq.binding, out.binding], params, [1, 1, 1]);
  return out;
}

/** AdamW over a fixed list of parameters; state lives on the GPU. */
export class AdamW {
  /** Steps taken. */
  step = 0;
  /** First-moment decay. */
  readonly beta1: number;
  /** Second-moment decay. */
  readonly beta2: number;
  /** Denominator epsilon. */
  readonly eps: number;
  /** Decoupled weight decay. */
  readonly weightDecay: number;
  /** First and second moments per parameter (created on first step). */
  readonly moments: Map<Tensor, { m: Tensor; v: Tensor }> = new Map();

  /** An optimizer for `params` (from `Module.namedParams`). */
  constructor(readonly params: readonly ParamInfo[], config: AdamWConfig = {}) {
    this.beta1 = config.beta1 ?? 0.9;
    this.beta2 = config.beta2 ?? 0.999;
    this.eps = config.eps ?? 1e-8;
    this.weightDecay = config.weightDecay ?? 0.01;
    this.multiTensor = config.multiTensor ?? false;
  }

  /** Whether several tensors are updated per dispatch (see {@link AdamWConfig.multiTensor}). */
  readonly multiTensor: boolean;

  /**
   * One update with learning rate `lr`; gradients are multiplied by `coef[0]`
   * (the clipping coefficient from {@link clipCoefficient}), or by 1 if absent.
   * When `coef[2] ≠ 0` the kernels change nothing (a skipped step); the caller,
   * who learns it when it reads `coef` back, then calls {@link unstep}.
   */
  update(lr: number, coef?: Tensor): void {
    if (this.params.length === 0) return;
    const device = this.params[0].tensor.device;
    this.step++;
    const one = coef ? null : Tensor.fromArray(device, [1, 0, 0]);
    const c = coef ?? one!;
    const entries: Entry[] = [];
    for (const p of this.params) {
      const t = p.tensor;
      if (!t.grad) continue;
      let st = this.moments.get(t);
      if (!st) {
        st = { m: full(device, t.shape, 0).keep(), v: full(device, t.shape, 0).keep() };
        this.moments.set(t, st);
      }
      for (const [s, n] of elementWindows(device, t.size)) {
        const state = [t, t.grad, st.m, st.v].map((x) => subBinding(x.binding, s, n));
        entries.push({ state, n, decay: p.decay ? this.weightDecay : 0 });
      }
    }
    const step = (weightDecay: number) => ({
      lr,
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      weightDecay,
      step: this.step,
    });
    for (const group of this.#groups(device, entries, c.binding.buffer)) {
      if (group.length === 1) {
        const [e] = group;
        const width = e.n % 4 === 0 ? 4 : 1;
        const d = adamwDispatch(e.n, step(e.decay), width);
        const views = width === 4
          ? streamTextures(device, e.state.map((binding) => ({ binding, vec4s: e.n / 4 })))
          : null;
        if (views) {
          const [param, , m, v] = e.state;
          const bufs = [...views, param, m, v, c.binding];
          device.dispatch(adamwTextureKernel(), bufs, d.params, d.workgroups);
        } else {
          device.dispatch(adamwKernel(width), [...e.state, c.binding], d.params, d.workgroups);
        }
        continue;
      }
      const d = adamwMultiDispatch(group.map((e) => e.n), group.map((e) => e.decay), step(0));
      device.dispatch(
        adamwMultiKernel(group.length),
        [...group.flatMap((e) => e.state), c.binding],
        d.params,
        d.workgroups,
      );
    }
    one?.dispose();
  }

  /**
   * Consecutive runs of `entries` that one dispatch can update: at most what the
   * adapter binds, and no buffer twice (a writable binding may not alias another).
   */
  #groups(device: Device, entries: Entry[], coef: GPUBuffer): Entry[][] {
    const perDispatch = this.multiTensor
      ? Math.floor((device.limits.maxStorageBuffersPerShaderStage - 1) / 4)
      : 1;
    const groups: Entry[][] = [];
    let cur: Entry[] = [];
    let used = new Set<GPUBuffer>([coef]);
    for (const e of entries) {
      const bufs = e.state.map((b) => b.buffer);
      if (cur.length >= perDispatch || bufs.some((b) => used.has(b))) {
        if (cur.length) groups.push(cur);
        cur = [];
        used = new Set([coef]);
      }
      cur.push(e);
      for (const b of bufs) used.add(b);
    }
    if (cur.length) groups.push(cur);
    return groups;
  }

  /** Takes back the step count of an update the GPU skipped (found-inf flag set). */
  unstep(): void {
    this.step--;
  }
}

/** Learning-rate schedule settings (Megatron's names). */
export interface LrSchedule {
  /** Peak learning rate. */
  lr: number;
  /** Final learning rate (default 0). */
  minLr?: number;
  /** Linear warm-up iterations from 0 to `lr`. */
  warmupIters?: number;
  /** Iterations over which to decay (default: the training length). */
  decayIters: number;
  /** Shape of the decay after warm-up. */
  style?: "cosine" | "linear" | "constant";
}

/** The learning rate at iteration `iter` (0-based). */
export function learningRate(iter: number, s: LrSchedule): number {
  const warm = s.warmupIters ?? 0;
  const minLr = s.minLr ?? 0;
  if (warm > 0 && iter < warm) return (s.lr * (iter + 1)) / warm;
  const style = s.style ?? "cosine";
  if (style === "constant") return s.lr;
  const span = Math.max(1, s.decayIters - warm);
  const t = Math.min(1, Math.max(0, (iter - warm) / span));
  const f = style === "linear" ? 1 - t : 0.5 * (1 + Math.cos(Math.PI * t));
  return minLr + (s.lr - minLr) * f;
}
