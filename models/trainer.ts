/**
 * The training step shared by every model and parallel layout: micro-batches
 * with gradient accumulation, optional data-parallel gradient averaging,
 * global-norm clipping on the GPU, AdamW, and one host read per step (the loss
 * and the gradient norm together).
 * @module
 */

import { backward, zeroGrad } from "../core/autograd.ts";
import type { Device } from "../core/device.ts";
import type { ParamInfo } from "../core/nn.ts";
import {
  axpyInPlace,
  concat,
  full,
  type HalfFormat,
  packHalf,
  packHalfInto,
  roundHalfInPlace,
} from "../core/ops/mod.ts";
import {
  AdamW,
  type AdamWConfig,
  checkLrSchedule,
  clipCoefficient,
  learningRate,
  type LrSchedule,
} from "../core/optim.ts";
import { packSaved, type Tensor, tidy } from "../core/tensor.ts";
import type { LossScaler } from "./loss_scale.ts";

/** What a model offers the trainer. */
export interface Trainable {
  /** Parameters with their optimizer/parallel facts. */
  namedParams(): [string, ParamInfo][];
  /** Sets training mode. */
  train(on?: boolean): unknown;
  /** Whether the model is in training mode (dropout on); {@link Trainer.evaluate} restores it. */
  readonly training?: boolean;
  /** How the model is split (absent: not split); the trainer checks its hooks against it. */
  readonly parallel?: { readonly tpSize: number };
}

/** Hooks a parallel layout plugs in (all optional; serial training needs none). */
export interface ParallelHooks {
  /**
   * Ranks the hooks reduce over (tensor- × data-parallel; `hybridHooks` sets
   * it). Absent: more than one where any reducing hook is given.
   */
  readonly ranks?: number;
  /** Averages gradients over the data-parallel group, in place (after backward). */
  allReduceGradients?(params: readonly Tensor[]): Promise<void>;
  /**
   * The overlapped alternative to {@link ParallelHooks.allReduceGradients}
   * (`--overlap-grad-reduce`): called before the last micro-batch's backward,
   * whose leaves are reported to `onLeafGrad`; `prepare` is applied to each
   * gradient before it is sent (mixed precision's rounding); `finish` is
   * awaited before the optimizer. If the step fails first, `settle` (where
   * given) is awaited instead: it waits for the reductions already started, so
   * none writes a gradient after the step is abandoned. Undefined (or null
   * returned): not overlapped.
   */
  beginGradReduce?(
    params: readonly Tensor[],
    prepare?: (grad: Tensor) => void,
  ): { onLeafGrad(leaf: Tensor): void; finish(): Promise<void>; settle?(): Promise<void> } | null;
  /**
   * Turns this rank's squared-norm contribution into the global one (sum over
   * the model-parallel group). The trainer passes only the parameters this rank
   * should count (see {@link TrainerOptions.countsInNorm}).
   */
  reduceNormSquared?(sq: Tensor): Promise<Tensor>;
  /** Averages a loss over the data-parallel group (for logging). */
  averageLoss?(loss: Tensor): Promise<Tensor>;
}

/** `loss` if it is one number, else an error naming `op` and its shape (logits, say). */
/**
 * `out`'s loss and parts (checked scalars), the parts' names against `names`
 * (those of an earlier micro-batch) where given.
 */
function splitLoss(
  op: string,
  out: StepLoss,
  names?: readonly string[],
): { loss: Tensor; parts?: [string, Tensor][] } {
  const withParts = out as Partial<LossParts>;
  if (withParts.parts === undefined || withParts.loss === undefined) {
    if (names?.length) {
      throw new Error(`${op}: a micro-batch's loss has no parts, an earlier one's had`);
    }
    return { loss: scalarLoss(op, out as Tensor) };
  }
  const parts = Object.entries(withParts.parts).map(([n, t]): [string, Tensor] => [
    n,
    scalarLoss(`${op} (part ${JSON.stringify(n)})`, t),
  ]);
  const got = parts.map(([n]) => n).join(", ");
  if (names !== undefined && got !== names.join(", ")) {
    throw new Error(
      `${op}: a micro-batch's loss parts are ${got}, an earlier one's ${names.join(", ")}`,
    );
  }
  return { loss: scalarLoss(op, withParts.loss), parts };
}

/**
 * A pass's loss parts summed over its batches (a step's micro-batches, an
 * evaluation's batches): the sums are made at the first batch with parts, in
 * the scope that is current then (the pass's).
 */
class PartSums {
  #sums: [string, Tensor][] | undefined;

  /** Batch `i`'s loss and parts ({@link splitLoss}), checked against the earlier batches'. */
  split(op: string, out: StepLoss, i: number): { loss: Tensor; parts?: [string, Tensor][] } {
    return splitLoss(op, out, this.#sums?.map(([n]) => n) ?? (i > 0 ? [] : undefined));
  }

  /** Adds a batch's `parts` times `weight`. */
  add(device: Device, parts: [string, Tensor][] | undefined, weight: number): void {
    if (!parts) return;
    this.#sums ??= parts.map(([n]) => [n, full(device, [1], 0)]);
    parts.forEach(([, t], k) => axpyInPlace(this.#sums![k][1], t, weight));
  }

  /** `loss` and the sums after it in one tensor: one average over replicas, one read. */
  after(loss: Tensor): Tensor {
    return this.#sums ? concat([loss, ...this.#sums.map(([, t]) => t)], 0) : loss;
  }

  /** The parts' values read back from {@link PartSums.after}'s tensor (`values`), if any. */
  read(values: Float32Array): { parts?: Record<string, number> } {
    return this.#sums
      ? { parts: Object.fromEntries(this.#sums.map(([n], k) => [n, values[k + 1]])) }
      : {};
  }
}

function scalarLoss(op: string, loss: Tensor): Tensor {
  if (loss.size !== 1) {
    throw new Error(
      `${op}: the loss function must return a scalar loss (one element), got a tensor of ` +
        `shape [${loss.shape.join(", ")}]`,
    );
  }
  return loss;
}

/** What {@link ParallelHooks.beginGradReduce} returns. */
type GradReductionHandle = ReturnType<NonNullable<ParallelHooks["beginGradReduce"]>>;

/** The global gradient-norm clip of a {@link Trainer} given none: Megatron's `--clip-grad` default. */
export const DEFAULT_CLIP_GRAD = 1;

/** Settings of a {@link Trainer}. */
export interface TrainerOptions {
  /** Learning-rate schedule. */
  schedule: LrSchedule;
  /** Global gradient-norm clip (≤ 0: off; default {@link DEFAULT_CLIP_GRAD}). */
  clipGrad?: number;
  /** AdamW settings. */
  adam?: AdamWConfig;
  /** Parallel hooks. */
  hooks?: ParallelHooks;
  /** Which parameters count in the gradient norm on this rank (default: all). */
  countsInNorm?: (p: ParamInfo) => boolean;
  /**
   * Mixed precision: `half` gives every 2-D parameter (the matmul weights) a
   * 16-bit copy that the matmul kernels read (refreshed after each update and
   * before each step or evaluation, so loaded weights are picked up; the f32
   * master weights and AdamW moments stay f32) and rounds every gradient to that
   * format after backward (an fp16 overflow becomes inf); `scaler` scales the loss
   * before backward, divides the scale out in the clipping coefficient, and skips
   * any step whose gradients hold an inf or NaN (fp16; bf16 needs none);
   * `fp32Gradients` keeps the gradients f32, unrounded (Megatron's
   * `--accumulate-allreduce-grads-in-fp32`, which Megatron forces for bf16).
   */
  precision?: { half?: HalfFormat; scaler?: LossScaler; fp32Gradients?: boolean };
  /**
   * Adds the milliseconds backward spent waiting on gradients whose
   * communication was still in flight (overlapped tensor-parallel `f`; for
   * measurements).
   */
  backwardWaits?: { ms: number };
}

/**
 * A loss with named parts that add up to it (BERT's masked-LM and
 * sentence-order losses, Megatron's `lm loss` and `sop loss`), which
 * {@link Trainer.step} and {@link Trainer.evaluateParts} report apart, read
 * back with the loss. Every micro-batch names the same parts.
 */
export interface LossParts {
  /** The loss backward runs from. */
  loss: Tensor;
  /** Its parts, scalars, by name. */
  parts: Readonly<Record<string, Tensor>>;
}

/** What a loss function gives {@link Trainer.step}: a scalar loss, or one with its parts. */
export type StepLoss = Tensor | LossParts;

/** The numbers one optimizer step reports. */
export interface StepResult {
  /** Mean loss over the step's micro-batches. */
  loss: number;
  /** The means of its parts, where the loss function gave them ({@link LossParts}). */
  parts?: Record<string, number>;
  /**
   * Global gradient norm before clipping; NaN for a skipped step, whose
   * gradients were not finite (Infinity or NaN, by where they overflowed).
   */
  gradNorm: number;
  /** Learning rate used. */
  lr: number;
  /** The loss scale after this step (1 without a scaler). */
  lossScale: number;
  /** Whether the step was skipped (a gradient overflowed; no update was made). */
  skipped: boolean;
}

/** Runs optimizer steps for a model. */
export class Trainer {
  /** The optimizer (its `step` is the number of updates so far). */
  readonly optimizer: AdamW;
  readonly #params: ParamInfo[];
  readonly #normParams: Tensor[];
  /** {@link TrainerOptions.clipGrad}, its default filled in. */
  readonly #clipGrad: number;

  /**
   * A trainer for `model` on `device`. A model split over more than one
   * tensor-parallel rank (its `parallel.tpSize`, or a parameter's
   * {@link ParamInfo.tpSize}, as the parallel layers set it) needs
   * `hooks.reduceNormSquared` and `countsInNorm` (models/parallel/hooks.ts's
   * `hybridHooks` and `countsInNorm`): without them each rank would clip by its
   * own part of the gradient norm.
   */
  constructor(readonly device: Device, readonly model: Trainable, readonly opts: TrainerOptions) {
    checkLrSchedule(opts.schedule);
    const half: unknown = opts.precision?.half;
    if (half !== undefined && half !== "fp16" && half !== "bf16") {
      throw new TypeError(
        `Trainer: precision.half must be "fp16" or "bf16", got ${
          typeof half === "string" ? JSON.stringify(half) : String(half)
        }`,
      );
    }
    const named = model.namedParams();
    // Split as the model says, or as its layers' parameters say (a model of the library's
    // parallel layers need not declare it).
    const tp = named.reduce((t, [, p]) => Math.max(t, p.tpSize ?? 1), model.parallel?.tpSize ?? 1);
    if (tp > 1 && (!opts.hooks?.reduceNormSquared || !opts.countsInNorm)) {
      throw new Error(
        `Trainer: the model is split over ${tp} tensor-parallel ranks; pass ` +
          `hooks: hybridHooks(device, { tpGroup, dpGroup }) and countsInNorm: countsInNorm(tpRank), ` +
          `or each rank clips by its own part of the gradient norm`,
      );
    }
    const clip = this.#clipGrad = opts.clipGrad ?? DEFAULT_CLIP_GRAD;
    if (!(clip <= 0 || clip > 0)) {
      throw new RangeError(`Trainer: clipGrad must be a number (≤ 0: off), got ${clip}`);
    }
    const elsewhere = named.find(([, p]) => p.tensor.device !== device);
    if (elsewhere) {
      throw new Error(
        `Trainer: the model's parameter ${elsewhere[0]} is on another device than the ` +
          "trainer's; create the trainer on the model's device",
      );
    }
    this.#params = named.map(([, p]) => p);
    this.optimizer = new AdamW(this.#params, opts.adam);
    const counts = opts.countsInNorm ?? (() => true);
    this.#normParams = this.#params.filter(counts).map((p) => p.tensor);
  }

  /**
   * Packs the f32 master weights into their 16-bit copies (mixed precision;
   * creates them the first time). A no-op without `precision.half`.
   */
  refreshHalfCopies(): void {
    const half = this.opts.precision?.half;
    if (!half) return;
    for (const p of this.#params) {
      const t = p.tensor;
      if (t.rank !== 2) continue;
      if (t.halfCopy) packHalfInto(t.halfCopy.words, t, half);
      else t.halfCopy = { words: packHalf(t, half).keep(), format: half };
    }
  }

  /**
   * Frees what the trainer holds on the GPU (the AdamW moments and the 16-bit
   * weight copies of mixed precision); the model's own tensors stay (dispose
   * the model for those). A later {@link Trainer.step} starts the moments anew.
   */
  dispose(): void {
    this.optimizer.resetState(this.optimizer.step);
    for (const p of this.#params) {
      p.tensor.halfCopy?.words.dispose();
      p.tensor.halfCopy = null;
    }
  }

  /** Updates done so far. */
  get iteration(): number {
    return this.optimizer.step;
  }

  /**
   * One optimizer step over `microBatches` micro-batches: `lossOf(i)` builds
   * micro-batch i's loss (inside a scope that is freed right after its backward).
   * A step that throws leaves no gradient behind; with hooks that reduce over
   * other ranks (a distributed job), it also ends this trainer's stepping and
   * evaluating: the other ranks went on into its collectives.
   */
  async step(
    microBatches: number,
    lossOf: (i: number) => StepLoss | Promise<StepLoss>,
  ): Promise<StepResult> {
    if (!Number.isInteger(microBatches) || microBatches < 1) {
      throw new Error(`Trainer.step: micro-batches must be an integer ≥ 1, got ${microBatches}`);
    }
    this.#refuseOutOfStep("Trainer.step");
    return await this.device.exclusive(
      "Trainer.step",
      () => this.#stepExclusive(microBatches, lossOf),
    );
  }

  async #stepExclusive(
    microBatches: number,
    lossOf: (i: number) => StepLoss | Promise<StepLoss>,
  ): Promise<StepResult> {
    const device = this.device;
    this.model.train(true);
    const lr = learningRate(this.optimizer.step, this.opts.schedule);
    const { half, scaler } = this.opts.precision ?? {};
    const scale = scaler?.scale ?? 1;
    this.refreshHalfCopies();
    const savedAs = device.saveActivationsAs;
    device.saveActivationsAs = half ?? null;
    // The weights hold still from here to the end of backward: on a CPU adapter
    // each is copied into a stream texture once for its forward and backward
    // reads, not once per read (Device.keepStreamTextures).
    if (device.isSoftware) device.keepStreamTextures(this.#params.map((p) => p.tensor.buffer));
    try {
      return await this.#step(microBatches, lossOf, lr, scale);
    } finally {
      device.saveActivationsAs = savedAs;
      device.releaseStreamTextures();
    }
  }

  async #step(
    microBatches: number,
    lossOf: (i: number) => StepLoss | Promise<StepLoss>,
    lr: number,
    scale: number,
  ): Promise<StepResult> {
    const started: { reduction: GradReductionHandle } = { reduction: null };
    try {
      return await this.#accumulateAndUpdate(
        microBatches,
        lossOf,
        lr,
        scale,
        (r) => started.reduction = r,
      );
    } catch (e) {
      // A step that fails leaves no gradient behind: the next step would add
      // this one's partial sums into its own.
      await started.reduction?.settle?.();
      zeroGrad(this.#params.map((p) => p.tensor));
      // With collectives, the other ranks went on into this step's: this rank's next one would
      // pair with theirs of this step (collectives match by order), training on mixed steps.
      if (this.#collective) this.#failedStep = e;
      throw e;
    }
  }

  /** Whether the hooks take part in collectives with other ranks. */
  get #collective(): boolean {
    const h = this.opts.hooks;
    const reduces = !!(
      h?.allReduceGradients || h?.beginGradReduce || h?.reduceNormSquared || h?.averageLoss
    );
    return reduces && (h?.ranks ?? 2) > 1;
  }

  /** The error of a step that failed on this rank of a job of several, or null. */
  #failedStep: unknown = null;

  /** Refuses more work after a failed step of a job of several ranks (see {@link Trainer.step}). */
  #refuseOutOfStep(op: string): void {
    if (this.#failedStep === null) return;
    const why = this.#failedStep instanceof Error
      ? this.#failedStep.message
      : String(this.#failedStep);
    throw new Error(
      `${op}: an earlier step failed on this rank (${why}); the other ranks of the job went on ` +
        "into that step's collectives, so this rank's next one would pair with theirs and train " +
        "on mixed steps: end the job on every rank and resume from the last checkpoint",
    );
  }

  /** {@link Trainer.step}'s work: backward over the micro-batches, reduce, clip, update. */
  async #accumulateAndUpdate(
    microBatches: number,
    lossOf: (i: number) => StepLoss | Promise<StepLoss>,
    lr: number,
    scale: number,
    onReduction: (r: GradReductionHandle) => void,
  ): Promise<StepResult> {
    const device = this.device;
    const params = this.#params.map((p) => p.tensor);
    const { half, scaler } = this.opts.precision ?? {};
    // Mixed precision rounds each gradient to the weights' 16-bit format before
    // it is reduced: per bucket when the reduction overlaps backward, else all
    // at once after it.
    const roundGradient = half && !this.opts.precision?.fp32Gradients
      ? (g: Tensor) => roundHalfInPlace(g, half)
      : undefined;
    return await tidy(device, async () => {
      const lossSum = full(device, [1], 0);
      const partSums = new PartSums();
      const inv = 1 / microBatches;
      const hooks = this.opts.hooks;
      let reduction: GradReductionHandle = null;
      for (let i = 0; i < microBatches; i++) {
        // Overlapped data-parallel reduction: buckets start during the last backward.
        if (i === microBatches - 1 && hooks?.beginGradReduce) {
          reduction = hooks.beginGradReduce(params, roundGradient);
          onReduction(reduction);
        }
        const onLeafGrad = reduction ? reduction.onLeafGrad : undefined;
        // The micro-batch's parts (scalars) outlive its scope, to be summed in this one.
        const parts = await tidy(device, async () => {
          const { loss, parts } = partSums.split("Trainer.step", await lossOf(i), i);
          packSaved(device, [loss]);
          axpyInPlace(lossSum, loss, inv);
          await backward(loss, full(device, [1], inv * scale), {
            onLeafGrad,
            waitTimer: this.opts.backwardWaits,
          });
          return parts;
        });
        partSums.add(device, parts, inv);
      }
      if (!params.some((p) => p.grad)) {
        throw new Error(
          "Trainer.step: the loss reached none of this trainer's parameters " +
            "(is lossOf building another model's loss?)",
        );
      }
      if (reduction) await reduction.finish();
      else {
        if (roundGradient) { for (const p of params) if (p.grad) roundGradient(p.grad); }
        if (hooks?.allReduceGradients) await hooks.allReduceGradients(params);
      }
      // The gradients hold still from here to the update: the norm's and the
      // update's reads of each share one stream-texture copy, in the textures the
      // weights' forward and backward reads used (the update reads the weights
      // through a scratch copy), so that the kept textures cost the model's size once.
      if (device.isSoftware) {
        device.recycleStreamTextures();
        device.keepStreamTextures(params.flatMap((p) => p.grad ? [p.grad.buffer] : []));
      }
      // An inf/NaN gradient on any rank makes the global squared norm inf/NaN on every
      // rank (the data-parallel all-reduce sums gradients, the model-parallel one sums
      // the squares): all ranks see the same found-inf flag and skip together.
      // The squares are of the unscaled gradients: a scaled norm past 1.8e19 would
      // overflow f32 in the sum with every gradient finite.
      let sq = this.optimizer.gradSumSquares(this.#normParams, 1 / scale);
      if (this.opts.hooks?.reduceNormSquared) sq = await this.opts.hooks.reduceNormSquared(sq);
      const coef = clipCoefficient(sq, this.#clipGrad, { scale, skipNonFinite: !!scaler });
      this.optimizer.update(lr, coef);
      device.recycleStreamTextures(); // the next step's weights take the gradients' textures
      this.refreshHalfCopies();
      zeroGrad(params);
      const sums = partSums.after(lossSum);
      const reported = this.opts.hooks?.averageLoss
        ? await this.opts.hooks.averageLoss(sums)
        : sums;
      const [l, cb] = await device.readMany([reported.binding, coef.binding]);
      const c = new Float32Array(cb);
      const skipped = c[2] !== 0;
      if (skipped) this.optimizer.unstep();
      scaler?.update(skipped);
      const means = new Float32Array(l);
      return {
        loss: means[0],
        ...partSums.read(means),
        gradNorm: skipped ? NaN : c[1],
        lr,
        lossScale: scaler?.scale ?? 1,
        skipped,
      };
    });
  }

  /**
   * Mean of `lossOf(i)` over `n` batches without gradients (one host read): the
   * sum of the losses times `weight` (default 1/n; a function gives each batch
   * its own, e.g. its share of the rows when the last batch is short), then the
   * hooks' average over data-parallel replicas. Replicas that split the
   * validation batches among them pass `weight` = DP size / (batches over all
   * replicas), so the average of their sums is the mean over all batches. The
   * model runs in evaluation mode (no dropout) and is left in the mode it was in.
   */
  async evaluate(
    n: number,
    lossOf: (i: number) => StepLoss | Promise<StepLoss>,
    weight: number | ((i: number) => number) = 1 / n,
  ): Promise<number> {
    return (await this.evaluateParts(n, lossOf, weight)).loss;
  }

  /**
   * {@link Trainer.evaluate}, with the means of the loss's parts where `lossOf`
   * gives them ({@link LossParts}), in the same read.
   */
  async evaluateParts(
    n: number,
    lossOf: (i: number) => StepLoss | Promise<StepLoss>,
    weight: number | ((i: number) => number) = 1 / n,
  ): Promise<{ loss: number; parts?: Record<string, number> }> {
    this.#refuseOutOfStep("Trainer.evaluate");
    // 0 is allowed where replicas average the loss: a data-parallel replica may hold no
    // validation batch (its sum is 0). Alone, 0 batches would report a loss of 0.
    const least = this.opts.hooks?.averageLoss ? 0 : 1;
    if (!Number.isInteger(n) || n < least) {
      throw new Error(
        `Trainer.evaluate: batches must be an integer ≥ ${least}${
          least ? " (a trainer without data-parallel hooks has no replica to average with)" : ""
        }, got ${n}`,
      );
    }
    return await this.device.exclusive(
      "Trainer.evaluate",
      () => this.#evaluateExclusive(n, lossOf, weight),
    );
  }

  async #evaluateExclusive(
    n: number,
    lossOf: (i: number) => StepLoss | Promise<StepLoss>,
    weight: number | ((i: number) => number),
  ): Promise<{ loss: number; parts?: Record<string, number> }> {
    const weightOf = typeof weight === "number" ? () => weight : weight;
    const device = this.device;
    const was = this.model.training ?? true;
    this.model.train(false);
    this.refreshHalfCopies();
    try {
      return await tidy(device, async () => {
        const total = full(device, [1], 0);
        const partSums = new PartSums();
        await device.noGrad(async () => {
          for (let i = 0; i < n; i++) {
            // The batch's parts (scalars) outlive its scope, to be summed in this one.
            const parts = await tidy(device, async () => {
              const { loss, parts } = partSums.split("Trainer.evaluate", await lossOf(i), i);
              axpyInPlace(total, loss, weightOf(i));
              return parts;
            });
            partSums.add(device, parts, weightOf(i));
          }
        });
        const sums = partSums.after(total);
        const t = this.opts.hooks?.averageLoss ? await this.opts.hooks.averageLoss(sums) : sums;
        const [read] = await device.readMany([t.binding]);
        const means = new Float32Array(read);
        return { loss: means[0], ...partSums.read(means) };
      });
    } finally {
      this.model.train(was);
    }
  }
}
