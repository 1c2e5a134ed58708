/**
 * AdamW with decoupled weight decay, global-norm gradient clipping computed on
 * the GPU (no host round trip per step), and learning-rate schedules.
 * @module
 */

import {
  ADAMW_COEF_BYTES,
  adamwDispatch,
  adamwKernel,
  adamwMultiDispatch,
  adamwMultiKernel,
  type AdamWStep,
  adamwTextureKernel,
  clipCoefKernel,
  clipCoefParams,
} from "../kernels/adamw.ts";
import type { BufferBinding, Device } from "./device.ts";
import type { ParamInfo } from "./nn.ts";
import { elementWindows, full, reduceInto } from "./ops/mod.ts";
import { streamTextures } from "./ops/streams.ts";
import {
  allHaveGrads,
  BUCKET_ELEMENTS,
  type BucketMember,
  gatherGrads,
  gatherSomeGrads,
  gatherWeights,
  type ParamBucket,
  planBuckets,
  scatterWeights,
} from "./param_buckets.ts";
import { Tensor } from "./tensor.ts";
import { subBinding } from "./windows.ts";

/** AdamW hyper-parameters. */
export interface AdamWConfig {
  /** First-moment decay, in [0, 1) (default 0.9). */
  beta1?: number;
  /** Second-moment decay, in [0, 1) (default 0.999; Megatron's GPT uses 0.95). */
  beta2?: number;
  /** Denominator epsilon, a positive normal f32 (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay ≥ 0 for parameters that take it (default 0.01, as the paper). */
  weightDecay?: number;
  /**
   * Update several tensors per dispatch: as many as the adapter's
   * `maxStorageBuffersPerShaderStage` binds (4 buffers each; the clipping
   * coefficient is a uniform): 8 on lavapipe, 4 on Dawn's GL. Default false (one dispatch per
   * tensor): on both software adapters the multi-tensor kernel measured about 2×
   * slower per element than the per-tensor one, more than the dispatches it saves.
   * Turns flat buckets off unless {@link AdamWConfig.bucketElements} is given.
   */
  multiTensor?: boolean;
  /**
   * Parameters whose sizes divide by 4 are updated in flat buckets of up to this
   * many elements (core/param_buckets.ts): weights and gradients copied end to
   * end, one dispatch per bucket, the moments kept flat; the same bits as one
   * dispatch per tensor. Default {@link BUCKET_ELEMENTS} (2²²); 0: one dispatch per
   * tensor.
   */
  bucketElements?: number;
}

interface Entry {
  state: BufferBinding[];
  n: number;
  decay: number;
}

/** A bucket's flat moments. */
interface BucketState {
  m: Tensor;
  v: Tensor;
}

/**
 * The squared L2 norm of the gradients of `params` (those that have one), each
 * element multiplied by `mul` first (default 1; 1/loss scale for gradients that
 * carry one), as a one-element tensor, summed in fixed order. The caller picks
 * which parameters contribute (tensor parallelism counts replicated ones once:
 * {@link AdamW.gradSumSquares} with the trainer's `countsInNorm`).
 */
export function gradSumSquares(device: Device, params: readonly Tensor[], mul = 1): Tensor {
  const grads = params.flatMap((p) => p.grad ? [p.grad] : []);
  return sumOfParts(device, grads.length, (parts) => {
    grads.forEach((g, i) => reduceInto(g, "sumsq", parts, i, mul));
  });
}

/**
 * The sum of `count` partial values that `fill` writes into a `[count]`
 * tensor (in fixed order), as a one-element tensor: 0 when `count` is 0.
 */
function sumOfParts(device: Device, count: number, fill: (parts: Tensor) => void): Tensor {
  if (count === 0) return full(device, [1], 0);
  const parts = Tensor.empty(device, [count]);
  fill(parts);
  const total = Tensor.empty(device, [1]);
  reduceInto(parts, "sum", total);
  parts.dispose();
  return total;
}

/** Loss scaling seen by {@link clipCoefficient}. */
export interface ClipScaling {
  /**
   * The loss scale the gradients carry (default 1); the coefficient divides it
   * out. The squared norm is the unscaled gradients' (`gradSumSquares(…, 1/scale)`):
   * the squares of scaled gradients pass f32's range at a scaled norm of 1.8e19,
   * with every gradient finite, and would read as an overflow.
   */
  scale?: number;
  /** Flag a non-finite norm (an inf/NaN gradient) so the update is skipped (default false). */
  skipNonFinite?: boolean;
}

/**
 * From the squared norm of the unscaled gradients, for gradients that carry a
 * loss scale `s` (default 1): the coefficient to multiply them by, the norm,
 * and the found-inf flag:
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

/** float32's smallest normal number, 2^-126: below it a GPU may flush a value to 0. */
export const F32_MIN_NORMAL = 2 ** -126;
/** float32's largest finite number. */
export const F32_MAX = (2 - 2 ** -23) * 2 ** 127;

/**
 * Throws a RangeError naming the first bad AdamW hyper-parameter (PyTorch's
 * `torch.optim.AdamW` checks, plus finiteness): betas in [0, 1), weight decay
 * finite and ≥ 0, bucketElements a non-negative integer, and eps a positive
 * normal f32 (stricter than PyTorch's eps ≥ 0: where a gradient is 0, the
 * vocabulary's padding rows, √v̂ is 0 and eps alone divides, so 0 gives NaN).
 */
function checkAdamW(c: Required<Omit<AdamWConfig, "multiTensor">>): void {
  const bad = (what: string, v: number, want: string) =>
    new RangeError(`AdamW: ${what} must be ${want}, got ${v}`);
  if (!(c.beta1 >= 0 && c.beta1 < 1)) throw bad("beta1", c.beta1, "in [0, 1)");
  if (!(c.beta2 >= 0 && c.beta2 < 1)) throw bad("beta2", c.beta2, "in [0, 1)");
  if (!(c.eps >= F32_MIN_NORMAL && c.eps <= F32_MAX)) {
    throw bad("eps", c.eps, "a positive number in f32's range (1.175e-38 to 3.403e+38)");
  }
  if (!(Number.isFinite(c.weightDecay) && c.weightDecay >= 0)) {
    throw bad("weightDecay", c.weightDecay, "a finite number ≥ 0");
  }
  if (!(Number.isInteger(c.bucketElements) && c.bucketElements >= 0)) {
    throw bad("bucketElements", c.bucketElements, "an integer ≥ 0 (0: no buckets)");
  }
}

/**
 * AdamW's hyper-parameters where a config leaves them out: Megatron's and
 * PyTorch's betas and eps, and Megatron's weight decay (0.01).
 */
export const ADAMW_DEFAULTS = {
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
} as const;

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
  /** Most elements per flat bucket; 0 when off (see {@link AdamWConfig.bucketElements}). */
  readonly bucketElements: number;
  /** Moments of the parameters updated one tensor at a time (created on first step). */
  readonly #moments: Map<Tensor, { m: Tensor; v: Tensor }> = new Map();
  /** The buckets, planned on first use. */
  #plan: { buckets: ParamBucket[]; single: ParamInfo[] } | null = null;
  /** Each bucket's flat moments (created on first step). */
  readonly #bucketState: Map<ParamBucket, BucketState> = new Map();
  /** The bucket and offset of each bucketed parameter. */
  readonly #placeOf: Map<Tensor, { bucket: ParamBucket; offset: number }> = new Map();
  /** Per bucket with gaps, the flat gradient buffer kept across steps. */
  readonly #gradScratch: Map<ParamBucket, Tensor> = new Map();
  /** The uniform copy of the clipping coefficient the kernels bind (one per device). */
  #coefBlock: { device: Device; buffer: GPUBuffer } | null = null;
  /** The tensors of {@link AdamW.params} (made on first use). */
  #owned: Set<Tensor> | null = null;

  /** An optimizer for `params` (from `Module.namedParams`). */
  constructor(readonly params: readonly ParamInfo[], config: AdamWConfig = {}) {
    this.beta1 = config.beta1 ?? ADAMW_DEFAULTS.beta1;
    this.beta2 = config.beta2 ?? ADAMW_DEFAULTS.beta2;
    this.eps = config.eps ?? ADAMW_DEFAULTS.eps;
    this.weightDecay = config.weightDecay ?? ADAMW_DEFAULTS.weightDecay;
    this.multiTensor = config.multiTensor ?? false;
    this.bucketElements = config.bucketElements ?? (this.multiTensor ? 0 : BUCKET_ELEMENTS);
    checkAdamW(this);
  }

  /** Whether several tensors are updated per dispatch (see {@link AdamWConfig.multiTensor}). */
  readonly multiTensor: boolean;

  /** The bucket plan (made on first use, from the device of the first parameter). */
  #buckets(): { buckets: ParamBucket[]; single: ParamInfo[] } {
    if (this.#plan) return this.#plan;
    if (this.bucketElements <= 0 || this.params.length === 0) {
      this.#plan = { buckets: [], single: [...this.params] };
    } else {
      this.#plan = planBuckets(this.params[0].tensor.device, this.params, this.bucketElements);
    }
    for (const bucket of this.#plan.buckets) {
      for (const m of bucket.members) this.#placeOf.set(m.tensor, { bucket, offset: m.offset });
    }
    return this.#plan;
  }

  /**
   * The gradients of `b`'s members end to end (a tensor the caller disposes).
   * A bucket with gaps between members gathers into a buffer it keeps, whose
   * gaps are zeroed once, not in every step (on Dawn's GL backend zeroing costs
   * a kernel over the whole bucket: 5.5 ms of the weak-scaling ladder's
   * 2-rank step, three 12 MB buckets).
   */
  #gatherGrads(device: Device, b: ParamBucket): Tensor {
    if (!b.padded) return gatherGrads(device, b, Tensor.empty(device, [b.size]));
    let kept = this.#gradScratch.get(b);
    if (!kept) this.#gradScratch.set(b, kept = full(device, [b.size], 0).keep());
    return gatherGrads(device, b, kept).view();
  }

  /** The flat moments of `b`, zero when first asked for. */
  #stateOf(b: ParamBucket): BucketState {
    let st = this.#bucketState.get(b);
    if (!st) {
      const device = b.members[0].tensor.device;
      st = { m: full(device, [b.size], 0).keep(), v: full(device, [b.size], 0).keep() };
      this.#bucketState.set(b, st);
    }
    return st;
  }

  /** Bindings of `t`'s moments, creating them (zero) when absent. */
  #momentBindings(t: Tensor): { m: BufferBinding; v: BufferBinding } {
    this.#buckets();
    const place = this.#placeOf.get(t);
    if (place) {
      const st = this.#stateOf(place.bucket);
      return {
        m: subBinding(st.m.binding, place.offset, t.size),
        v: subBinding(st.v.binding, place.offset, t.size),
      };
    }
    let st = this.#moments.get(t);
    if (!st) {
      st = { m: full(t.device, t.shape, 0).keep(), v: full(t.device, t.shape, 0).keep() };
      this.#moments.set(t, st);
    }
    return { m: st.m.binding, v: st.v.binding };
  }

  /** Whether `t` has moments (it was updated, or they were loaded). */
  hasMoments(t: Tensor): boolean {
    this.#buckets();
    const place = this.#placeOf.get(t);
    return place ? this.#bucketState.has(place.bucket) : this.#moments.has(t);
  }

  /** The first and second moments of each of `ts` (all must have them), read back in one sync. */
  async readMoments(ts: readonly Tensor[]): Promise<{ m: Float32Array; v: Float32Array }[]> {
    if (ts.length === 0) return [];
    for (const t of ts) {
      if (!this.hasMoments(t)) throw new Error(`readMoments: "${t.name ?? "a tensor"}" has none`);
    }
    const bindings = ts.flatMap((t) => {
      const b = this.#momentBindings(t);
      return [b.m, b.v];
    });
    const bufs = await ts[0].device.readMany(bindings);
    return ts.map((_, i) => ({
      m: new Float32Array(bufs[2 * i]),
      v: new Float32Array(bufs[2 * i + 1]),
    }));
  }

  /** Whether `t` is the tensor of one of this optimizer's {@link AdamW.params}. */
  owns(t: Tensor): boolean {
    this.#owned ??= new Set(this.params.map((p) => p.tensor));
    return this.#owned.has(t);
  }

  /**
   * Sets `t`'s moments from host values (e.g. from a checkpoint); `t` must be one
   * of this optimizer's parameters.
   */
  setMoments(t: Tensor, m: Float32Array, v: Float32Array): void {
    if (!this.owns(t)) {
      throw new TypeError(
        `setMoments: "${t.name ?? String(t)}" is not a parameter of this optimizer`,
      );
    }
    for (const x of [m, v]) {
      if (x.length !== t.size) {
        throw new Error(`setMoments: ${x.length} values for a tensor of ${t.size} elements`);
      }
    }
    const b = this.#momentBindings(t);
    t.device.upload(b.m.buffer, m, b.m.offset ?? 0);
    t.device.upload(b.v.buffer, v, b.v.offset ?? 0);
  }

  /**
   * Frees every moment, the flat gradient scratch of each bucket and the
   * coefficient's uniform buffer, and sets the step count (before loading a
   * checkpoint's; `Trainer.dispose`).
   */
  resetState(step = 0): void {
    for (const st of [...this.#moments.values(), ...this.#bucketState.values()]) {
      st.m.dispose();
      st.v.dispose();
    }
    for (const t of this.#gradScratch.values()) t.dispose();
    this.#retireCoefBlock();
    this.#moments.clear();
    this.#bucketState.clear();
    this.#gradScratch.clear();
    this.step = step;
  }

  /**
   * The squared L2 norm of the gradients of `params` (default: all of this
   * optimizer's that have one), as a one-element tensor: like the free
   * {@link gradSumSquares}, with one reduction per flat bucket whose members all
   * have gradients (over the counted ones, packed, when only some count: a
   * tensor-parallel rank other than 0 counts only its sharded parameters, and
   * so runs as many reductions as rank 0), the other tensors one each. `mul`
   * multiplies each element before it is squared (1/loss scale).
   */
  gradSumSquares(params?: readonly Tensor[], mul = 1): Tensor {
    const counted = new Set(params ?? this.params.map((p) => p.tensor));
    const device = this.params[0]?.tensor.device;
    if (!device) throw new Error("gradSumSquares: the optimizer has no parameters");
    const flat: { bucket: ParamBucket; members: BucketMember[] }[] = [];
    const inFlat = new Set<Tensor>();
    for (const b of this.#buckets().buckets) {
      if (!allHaveGrads(b)) continue;
      for (const m of b.members) inFlat.add(m.tensor);
      const members = b.members.filter((m) => counted.has(m.tensor));
      if (members.length > 0) flat.push({ bucket: b, members });
    }
    const rest = [...counted].filter((t) => t.grad && !inFlat.has(t));
    return sumOfParts(device, flat.length + rest.length, (parts) => {
      flat.forEach(({ bucket, members }, i) => {
        const g = members.length === bucket.members.length
          ? this.#gatherGrads(device, bucket)
          : gatherSomeGrads(device, members);
        reduceInto(g, "sumsq", parts, i, mul);
        g.dispose();
      });
      rest.forEach((t, i) => reduceInto(t.grad!, "sumsq", parts, flat.length + i, mul));
    });
  }

  /**
   * One update with learning rate `lr`; gradients are multiplied by `coef[0]`
   * (`coef`: the 3 values of {@link clipCoefficient}), or by 1 if absent.
   * When `coef[2] ≠ 0` the kernels change nothing (a skipped step); the caller,
   * who learns it when it reads `coef` back, then calls {@link unstep}.
   */
  update(lr: number, coef?: Tensor): void {
    if (this.params.length === 0) return;
    const device = this.params[0].tensor.device;
    const one = coef ? null : Tensor.fromArray(device, [1, 0, 0]);
    const c = this.#coefUniform(device, coef ?? one!);
    this.step++;
    const entries: Entry[] = [];
    const plan = this.#buckets();
    const perTensor = [...plan.single];
    const step = (weightDecay: number) => ({
      lr,
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      weightDecay,
      step: this.step,
    });
    for (const b of plan.buckets) {
      if (!allHaveGrads(b)) {
        // A member without a gradient is left alone, as PyTorch's AdamW does:
        // this step updates the bucket's members one by one.
        for (const m of b.members) perTensor.push(this.params.find((p) => p.tensor === m.tensor)!);
        continue;
      }
      const st = this.#stateOf(b);
      const weights = gatherWeights(device, b);
      const grads = this.#gatherGrads(device, b);
      this.#dispatch(
        device,
        {
          state: [weights.binding, grads.binding, st.m.binding, st.v.binding],
          n: b.size,
          decay: this.weightDecay,
        },
        step(this.weightDecay),
        c,
        b.decayEnd,
      );
      scatterWeights(device, b, weights);
      weights.dispose();
      grads.dispose();
    }
    for (const p of perTensor) {
      const t = p.tensor;
      if (!t.grad) continue;
      const mv = this.#momentBindings(t);
      for (const [s, n] of elementWindows(device, t.size)) {
        const state = [t.binding, t.grad.binding, mv.m, mv.v].map((x) => subBinding(x, s, n));
        entries.push({ state, n, decay: p.decay ? this.weightDecay : 0 });
      }
    }
    this.#updateEntries(device, entries, c, step);
    one?.dispose();
  }

  /**
   * `coef`'s three values copied (on the device, after whatever wrote them) into
   * the uniform buffer the kernels read them from ({@link ADAMW_COEF_BYTES}).
   */
  #coefUniform(device: Device, coef: Tensor): BufferBinding {
    if (coef.size !== 3 || coef.dtype !== "f32") {
      throw new Error(`AdamW.update: coef must be 3 f32 values, got ${coef.size} ${coef.dtype}`);
    }
    if (this.#coefBlock?.device !== device) {
      this.#retireCoefBlock();
      const buffer = device.gpu.createBuffer({
        size: ADAMW_COEF_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      this.#coefBlock = { device, buffer };
    }
    const { buffer } = this.#coefBlock;
    device.copy(coef.buffer, coef.binding.offset ?? 0, buffer, 0, coef.byteLength);
    return { buffer, size: ADAMW_COEF_BYTES };
  }

  /** Frees the coefficient's uniform buffer once the work that binds it is submitted. */
  #retireCoefBlock(): void {
    this.#coefBlock?.device.retire(this.#coefBlock.buffer);
    this.#coefBlock = null;
  }

  /** The per-tensor (or multi-tensor) dispatches over `entries`. */
  #updateEntries(
    device: Device,
    entries: Entry[],
    c: BufferBinding,
    step: (weightDecay: number) => AdamWStep,
  ): void {
    for (const group of this.#groups(device, entries)) {
      if (group.length === 1) {
        const [e] = group;
        this.#dispatch(device, e, step(e.decay), c);
        continue;
      }
      const d = adamwMultiDispatch(group.map((e) => e.n), group.map((e) => e.decay), step(0));
      device.dispatch(
        adamwMultiKernel(group.length),
        [...group.flatMap((e) => e.state), c],
        d.params,
        d.workgroups,
      );
    }
  }

  /**
   * One single-tensor dispatch over `e` (param, grad, m, v), weight decay on
   * its first `decayEnd` elements (default all): as vec4 when its size allows,
   * on CPU adapters reading through stream textures.
   */
  #dispatch(device: Device, e: Entry, s: AdamWStep, c: BufferBinding, decayEnd = e.n): void {
    const width = e.n % 4 === 0 && decayEnd % 4 === 0 ? 4 : 1;
    const d = adamwDispatch(e.n, s, width, decayEnd);
    const views = width === 4
      ? streamTextures(device, e.state.map((binding) => ({ binding, vec4s: e.n / 4 })))
      : null;
    if (views) {
      const [param, , m, v] = e.state;
      device.dispatch(adamwTextureKernel(), [...views, param, m, v, c], d.params, d.workgroups);
    } else {
      device.dispatch(adamwKernel(width), [...e.state, c], d.params, d.workgroups);
    }
  }

  /**
   * Consecutive runs of `entries` that one dispatch can update: at most what the
   * adapter binds, and no buffer twice (a writable binding may not alias another).
   */
  #groups(device: Device, entries: Entry[]): Entry[][] {
    // Four storage bindings a tensor, then the coefficient and the params: within the adapter's
    // storage buffers per stage and its binding indices (maxBindingsPerBindGroup, 1000 by default).
    const perDispatch = this.multiTensor
      ? Math.min(
        Math.floor(device.limits.maxStorageBuffersPerShaderStage / 4),
        Math.floor(((device.limits.maxBindingsPerBindGroup ?? 1000) - 2) / 4),
      )
      : 1;
    const groups: Entry[][] = [];
    let cur: Entry[] = [];
    let used = new Set<GPUBuffer>();
    for (const e of entries) {
      const bufs = e.state.map((b) => b.buffer);
      if (cur.length >= perDispatch || bufs.some((b) => used.has(b))) {
        if (cur.length) groups.push(cur);
        cur = [];
        used = new Set();
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
  /**
   * Linear warm-up iterations from `initLr` to `lr`, as Megatron's: the first
   * update (iteration 0) runs at `initLr` and iteration `warmupIters` at `lr`.
   * Any finite number ≥ 0: Megatron's `--lr-warmup-fraction F` makes it
   * F × the decay length, rarely a whole number.
   */
  warmupIters?: number;
  /** Where the warm-up starts (Megatron's `--lr-warmup-init`; default 0, at most `lr`). */
  initLr?: number;
  /**
   * Iteration at which the decay reaches `minLr`, warm-up included (Megatron's
   * `--lr-decay-iters`; the training CLI passes the training length). Any
   * finite number ≥ 0: a schedule Megatron counts in samples
   * (`--lr-decay-samples D` at a global batch of G) ends at D / G, rarely a
   * whole number.
   */
  decayIters: number;
  /** Shape of the decay after warm-up (default "cosine"; see {@link LrDecayStyle}). */
  style?: LrDecayStyle;
  /**
   * With style "WSD": the annealing's length, the last iterations of the decay
   * (Megatron's `--lr-wsd-decay-iters`); any finite number > 0, at most `decayIters`.
   */
  wsdDecayIters?: number;
  /**
   * One step of Megatron's scheduler in updates (default 1): it counts samples,
   * so 1 / the global batch. Only "inverse-square-root" without a warm-up
   * depends on it, through Megatron's floor of one step: its first updates run
   * at `lr`·√(step / iter), not `lr` / √iter.
   */
  stepIters?: number;
  /** With style "WSD": the annealing's shape (Megatron's `--lr-wsd-decay-style`; default "exponential"). */
  wsdStyle?: WsdDecayStyle;
}

/**
 * The decay styles of Megatron's `--lr-decay-style`: "cosine" and "linear" from
 * `lr` to `minLr`; "constant" (`lr` throughout, after the warm-up);
 * "inverse-square-root" (`lr`·√warmupIters / √iter, never below `minLr`;
 * see {@link LrSchedule.stepIters} for no warm-up); "WSD", warm-up, stable, decay (`lr` until the last `wsdDecayIters`
 * of the decay, which anneal to `minLr` in the `wsdStyle` shape).
 */
export type LrDecayStyle = "cosine" | "linear" | "constant" | "inverse-square-root" | "WSD";

/** The decay styles, in the order of {@link LrDecayStyle}. */
export const LR_DECAY_STYLES: readonly LrDecayStyle[] = [
  "cosine",
  "linear",
  "constant",
  "inverse-square-root",
  "WSD",
];

/** The annealing shapes of a "WSD" schedule (Megatron's `--lr-wsd-decay-style`). */
export type WsdDecayStyle = "exponential" | "linear" | "cosine" | "minus_sqrt";

/** The annealing shapes, in the order of {@link WsdDecayStyle}. */
export const WSD_DECAY_STYLES: readonly WsdDecayStyle[] = [
  "exponential",
  "linear",
  "cosine",
  "minus_sqrt",
];

/**
 * Throws a clear error for a schedule {@link learningRate} cannot follow: a
 * negative or non-finite rate, a warm-up start or final rate above `lr`, a warm-up or decay
 * length that is not a finite number ≥ 0 (both may end between two updates),
 * an unknown style.
 */
export function checkLrSchedule(s: LrSchedule): void {
  if (typeof s !== "object" || s === null) {
    throw new Error(`LrSchedule: expected an object, got ${s}`);
  }
  const rate = (name: string, v: unknown) => {
    if (typeof v !== "number" || !(Number.isFinite(v) && v >= 0)) {
      throw new Error(`LrSchedule: ${name} must be a finite number ≥ 0, got ${v}`);
    }
  };
  rate("lr", s.lr);
  rate("minLr", s.minLr ?? 0);
  rate("initLr", s.initLr ?? 0);
  if ((s.minLr ?? 0) > s.lr) {
    // Megatron's OptimizerParamScheduler asserts max_lr >= min_lr.
    throw new RangeError(
      `LrSchedule: minLr ${s.minLr} is above lr ${s.lr} (the decay falls from lr to minLr)`,
    );
  }
  if ((s.initLr ?? 0) > s.lr) {
    throw new Error(`LrSchedule: initLr ${s.initLr} is above lr ${s.lr} (the warm-up rises to lr)`);
  }
  rate("warmupIters", s.warmupIters ?? 0);
  const style = s.style ?? "cosine";
  if (style !== "constant") rate("decayIters", s.decayIters);
  if (!LR_DECAY_STYLES.includes(style)) {
    throw new Error(
      `LrSchedule: style must be one of ${LR_DECAY_STYLES.join(", ")}, got ${s.style}`,
    );
  }
  const step = s.stepIters ?? 1;
  if (!(typeof step === "number" && step > 0 && step <= 1)) {
    throw new Error(`LrSchedule: stepIters must be a number in (0, 1], got ${s.stepIters}`);
  }
  if (style === "WSD") {
    const w = s.wsdDecayIters;
    if (typeof w !== "number" || !(w > 0 && w <= s.decayIters)) {
      // Megatron asserts the length is given; past the decay's start it would anneal from above lr.
      throw new Error(
        `LrSchedule: style "WSD" needs wsdDecayIters, a number in (0, decayIters ${s.decayIters}], ` +
          `got ${w}`,
      );
    }
    if (!WSD_DECAY_STYLES.includes(s.wsdStyle ?? "exponential")) {
      throw new Error(
        `LrSchedule: wsdStyle must be one of ${WSD_DECAY_STYLES.join(", ")}, got ${s.wsdStyle}`,
      );
    }
  }
}

/**
 * The learning rate of update `iter` (0-based: the updates applied before it),
 * as Megatron's `OptimizerParamScheduler.get_lr` at `num_steps = iter` (counted
 * in iterations here, in samples there): `initLr + (lr − initLr)·iter/warmupIters`
 * up to and including `warmupIters`, then the decay from `lr` at `warmupIters`
 * to `minLr` at `decayIters`, and `minLr` after (`lr` throughout for "constant";
 * {@link LrDecayStyle} gives each style's shape).
 *
 * A schedule Megatron counts in samples (`--train-samples`, warm-up W and decay
 * D samples, global batch G: its `num_steps` is `iter`·G) is this one with
 * `warmupIters` W / G and `decayIters` D / G. For whole W and D the
 * comparisons are then Megatron's exactly: `iter` ≤ W / G exactly when
 * `iter`·G ≤ W, and `iter` > D / G exactly when `iter`·G > D (an integer
 * against a quotient that is either a whole number, exact in floating point, or
 * at least 1 / G away from one, far beyond its rounding); the rate equals
 * Megatron's `get_lr` to float rounding.
 */
export function learningRate(iter: number, s: LrSchedule): number {
  checkLrSchedule(s); // a few comparisons: a bad schedule is refused wherever it is used
  const warm = s.warmupIters ?? 0;
  const minLr = s.minLr ?? 0;
  const init = s.initLr ?? 0;
  if (warm > 0 && iter <= warm) return init + ((s.lr - init) * iter) / warm;
  const style = s.style ?? "cosine";
  if (style === "constant") return s.lr;
  if (iter > s.decayIters) return minLr;
  if (style === "inverse-square-root") {
    const step = s.stepIters ?? 1;
    return Math.max(
      minLr,
      (s.lr * Math.sqrt(Math.max(warm, step))) / Math.sqrt(Math.max(iter, step)),
    );
  }
  if (style === "WSD") {
    // Stable at lr until the annealing, the decay's last wsdDecayIters.
    const annealStart = s.decayIters - s.wsdDecayIters!;
    if (iter <= annealStart) return s.lr;
    const t = (iter - annealStart) / s.wsdDecayIters!;
    return minLr + (s.lr - minLr) * wsdCoefficient(s.wsdStyle ?? "exponential", t);
  }
  // Past the warm-up and within the decay: decayIters > warm, but for iteration 0 of a schedule
  // without warm-up or decay length, which starts at lr.
  const span = s.decayIters - warm;
  const t = span > 0 ? Math.max(0, (iter - warm) / span) : 0;
  const f = style === "linear" ? 1 - t : 0.5 * (1 + Math.cos(Math.PI * t));
  return minLr + (s.lr - minLr) * f;
}

/** The share of `lr − minLr` left a fraction `t` into a WSD annealing (Megatron's shapes). */
function wsdCoefficient(style: WsdDecayStyle, t: number): number {
  switch (style) {
    case "linear":
      return 1 - t;
    case "cosine":
      return 0.5 * (1 + Math.cos(Math.PI * t));
    case "exponential":
      return 2 * 0.5 ** t - 1;
    case "minus_sqrt":
      return 1 - Math.sqrt(t);
  }
}
