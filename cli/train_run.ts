/**
 * One rank's training run, as each Worker of `deno task train` runs it (one
 * for a single-rank run; a library program may call it on its own thread): set up, optionally load, then a loop of step, log,
 * evaluate, save and check for signals. What differs between GPT and BERT is a
 * {@link Task} (cli/tasks/). Rank 0 prints; every rank computes.
 * @module
 */

import { attachTuner, firstTuningStep, tuneDuringRun } from "./autotune.ts";
import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import type { LrSchedule } from "../core/optim.ts";
import { enableF16Arithmetic } from "../core/ops/f16_arithmetic.ts";
import { dawnGPU, parseBackend } from "../core/gpu.ts";
import {
  loadCheckpoint,
  readLatest,
  restoreRngOffsets,
  rngOffsets,
  saveCheckpoint,
} from "../models/checkpoint/mod.ts";
import type { RngOffsets } from "../models/checkpoint/gpt.ts";
import { trainingFlops } from "../models/flops.ts";
import { type CommTimer, countsInNorm, hybridHooks, timedGroup } from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { LossScaler, type LossScalerState } from "../models/loss_scale.ts";
import { type StepResult, Trainer } from "../models/trainer.ts";
import { DEFAULT_CORPUS_PATH } from "../data/corpus.ts";
import { RunError } from "./errors.ts";
import {
  checkAttentionFits,
  checkModelFitsHost,
  modelWithinLimits,
  ranksSharingHost,
  withinLimits,
} from "./limits.ts";
import { fusedAttentionRuns } from "../core/ops/attention.ts";
import {
  counted,
  formatLogLine,
  formatValidationLines,
  JsonLog,
  Progress,
  stderrProgress,
} from "./log.ts";
import { checkSameData } from "./same_data.ts";
import { checkSameFlags } from "./same_flags.ts";
import { checkSameLoad, checkSharedSave } from "./same_checkpoint.ts";
import { SIGNAL_NUMBERS, signalOfNumber, type StopRequest } from "./signals.ts";
import { bertTaskData } from "./tasks/bert.ts";
import { gptTaskData } from "./tasks/gpt.ts";
import { fullParamCount, type RankLog, type Task, type TaskData } from "./tasks/task.ts";
import { lrScheduleOf, type TrainArgs, trainItersOf } from "./train_args.ts";
import { firstRunOfRestartableJob, INIT_STD_FLAG } from "./resume_flags.ts";
import { loggedConfig } from "./train_config.ts";
import { checkpointArgs } from "./model_source.ts";
import { resumePrecision, savedPrecision } from "./precision_resume.ts";

/** What a run reports back (rank 0's view). */
export interface TrainSummary {
  /** Last validation loss. */
  valLoss: number;
  /** Mean training loss of the last logging window. */
  trainLoss: number;
  /** Mean ms per step over the run (excluding the first, which compiles pipelines). */
  msPerStep: number;
  /** Mean share of step time spent in collectives. */
  commShare: number;
  /** Parameters of the full model. */
  params: number;
}

/**
 * Trains on this rank. `dist` is null for one rank trained without a launch
 * (a program of the library's own; `deno task train` runs every rank in a Worker).
 * `stop` says when a signal asks the run to stop (cli/signals.ts): with
 * `--save`, every rank stops after the same step, saves there and returns.
 * `--exit-interval` and `--exit-duration-in-mins` stop it the same way
 * (saved with `--save`, else not), after that step's validation.
 */
export async function trainRank(
  a: TrainArgs,
  dist: WorkerContext | null,
  stop: StopRequest | null = null,
): Promise<TrainSummary> {
  // Nodes started with other flags stop here, before any data or device (a run of one rank
  // has no other to differ from).
  const several = dist !== null && dist.group.size > 1;
  if (several) await checkSameFlags(dist.group, a.flags);
  // ... and with a --save that is not one directory for all, before an hour of training.
  if (several && a.save) await checkSharedSave(dist.group, a.save);
  // Data first: errors here should not cost a device.
  return a.model.family === "bert"
    ? await runTask(a, await readOnEveryRank(await bertTaskData(a), dist), dist, stop)
    : await runTask(a, await readOnEveryRank(await gptTaskData(a), dist), dist, stop);
}

/** `data`, once every rank has found that it read the same tokens as the others. */
async function readOnEveryRank<B>(
  data: TaskData<B>,
  dist: WorkerContext | null,
): Promise<TaskData<B>> {
  // The streams' hashes (16.9 s a rank for a 17 GB .bin): only where there is another to compare.
  if (dist && dist.group.size > 1) await checkSameData(dist.group, await data.fingerprints());
  return data;
}

/** Where this rank sits: world = TP × DP. */
interface Layout {
  world: number;
  dp: number;
  tpRank: number;
  dpRank: number;
  groups: ReturnType<typeof parallelGroups> | null;
  log: RankLog;
}

/**
 * Validation micro-batches per evaluation at a global batch of `gb`:
 * `--eval-iters` global batches, as Megatron counts them.
 */
function validationBatchesOf(a: TrainArgs, gb: number): number {
  return a.evalIters * (gb / a.microBatch);
}

/** Sequences per step over all ranks: `--global-batch-size`, default micro-batch × DP. */
function globalBatchOf(a: TrainArgs, L: Layout): number {
  return a.globalBatch ?? a.microBatch * L.dp;
}

function layoutOf(a: TrainArgs, dist: WorkerContext | null): Layout {
  const world = dist?.world ?? 1;
  const groups = dist ? parallelGroups(dist.group, a.tp) : null;
  const isLogger = (dist?.rank ?? 0) === 0;
  return {
    world,
    dp: world / a.tp,
    tpRank: groups?.position.tpRank ?? 0,
    dpRank: groups?.position.dpRank ?? 0,
    groups,
    log: { isLogger, say: (s) => isLogger && console.log(s) },
  };
}

async function openDevice(a: TrainArgs, dist: WorkerContext | null): Promise<Device> {
  const backend = parseBackend(a.backend);
  const provider = backend === "dawn" && dist?.device.dawnOptions
    ? await dawnGPU(dist.device.dawnOptions)
    : undefined;
  const device = await Device.create({ backend, provider });
  dist?.deviceAcquired();
  if (a.precision.f16Arithmetic) {
    await enableF16Arithmetic(device).catch((e) => {
      throw new RunError(`--f16-arithmetic: ${e.message}; run without it`);
    });
  }
  return device;
}

/** The model's layer factory, the trainer, and the collectives' timer. */
async function setUp<B>(a: TrainArgs, L: Layout, device: Device, data: TaskData<B>) {
  const timer: CommTimer = { ms: 0 };
  const g = L.groups;
  const tpGroup = g ? (a.measureComm ? timedGroup(g.tpGroup, timer, device) : g.tpGroup) : null;
  const parallel = tpGroup
    ? new TensorParallelLayers(device, tpGroup, {
      wire: a.precision.half,
      overlapComm: a.overlap.tpComm,
    })
    : TensorParallelLayers.single(device);
  const rng = new RngTracker(a.seed, L.tpRank, L.dpRank);
  const task = await data.build({
    parallel,
    rng,
    tpRank: L.tpRank,
    dp: L.dp,
    validationBatches: validationBatchesOf(a, globalBatchOf(a, L)),
  });
  const pr = a.precision;
  const scaler = pr.half === "fp16"
    ? new LossScaler({
      fixed: pr.lossScale,
      initial: pr.initialLossScale,
      min: pr.minLossScale,
      window: pr.lossScaleWindow,
      hysteresis: pr.hysteresis,
    })
    : undefined;
  const trainer = new Trainer(device, task.model, {
    // A schedule counted in samples is followed in updates of one global batch.
    schedule: lrScheduleOf(a, globalBatchOf(a, L)),
    clipGrad: a.clipGrad,
    adam: a.adam,
    hooks: g
      ? hybridHooks(
        device,
        { tpGroup: tpGroup!, dpGroup: g.dpGroup },
        a.measureComm ? timer : undefined,
        pr.accumulateFp32 ? undefined : pr.half,
        { overlap: a.overlap.gradReduce, bucketSize: a.overlap.bucketSize },
      )
      : undefined,
    countsInNorm: countsInNorm(L.tpRank),
    // --accumulate-allreduce-grads-in-fp32: gradients f32, unrounded, and f32 on the wire
    // (it only changed the wire: at DP 2 that was bit-identical, at DP 1 nothing).
    precision: { half: pr.half, scaler, fp32Gradients: pr.accumulateFp32 },
  });
  return { task, trainer, timer };
}

/** The saved trainer state of a checkpoint. */
interface SavedState {
  sampler?: unknown;
  rng?: RngOffsets;
  /** The fp16 loss scaler's state. */
  lossScaler?: LossScalerState;
  /** Iterations skipped so far (overflowing gradients). */
  skipped?: number;
  /** Tokens trained on up to the checkpoint, over every batch size the run had. */
  consumedTokens?: number;
  /** Sequences trained on up to the checkpoint (absent before 2026-12-05: tokens / sequence length). */
  consumedSamples?: number;
  /** The flags saved with it (`checkpointArgs`). */
  args?: Record<string, unknown>;
}

/** What a run has trained on so far: it goes on from a loaded checkpoint's count. */
interface Consumed {
  tokens: number;
  samples: number;
}

/**
 * Loads `a.load` into the task's model, the optimizer and the sampler; returns
 * the iteration, and the init std its weights were drawn with where it records one.
 */
async function load<B>(
  a: TrainArgs,
  L: Layout,
  task: Task<B>,
  trainer: Trainer,
  setSkipped: (n: number) => void,
  setConsumed: (c: Consumed) => void,
): Promise<{ iteration: number; initStd?: number }> {
  const r = await loadCheckpoint(a.load!, {
    iteration: a.loadIteration,
    params: task.model.namedParams(),
    optimizer: trainer.optimizer,
    tp: a.tp,
    tpRank: L.tpRank,
    ...task.checkpointInfo,
    progress: L.log.isLogger ? stderrProgress("loading checkpoint") : undefined,
  });
  const st = r.state as SavedState;
  if (st.sampler) task.restoreSampler(st.sampler);
  if (st.rng) restoreRngOffsets(task.model, st.rng);
  if (typeof st.skipped === "number") setSkipped(st.skipped);
  const resumed = resumePrecision(
    { precision: savedPrecision(st.args), lossScaler: st.lossScaler },
    {
      precision: a.precision.half ?? "fp32",
      scaler: trainer.opts.precision?.scaler,
      initialLossScale: a.precision.initialLossScaleGiven
        ? a.precision.initialLossScale
        : undefined,
    },
  );
  for (const line of resumed) L.log.say(line);
  if (typeof st.consumedTokens === "number") {
    setConsumed({
      tokens: st.consumedTokens,
      samples: typeof st.consumedSamples === "number"
        ? st.consumedSamples
        : Math.round(st.consumedTokens / a.seqLength),
    });
  }
  L.log.say(
    `loaded ${r.path} (iteration ${r.iteration})${r.notes.length ? `: ${r.notes.join("; ")}` : ""}`,
  );
  const initStd = st.args?.[INIT_STD_FLAG];
  return { iteration: r.iteration, initStd: typeof initStd === "number" ? initStd : undefined };
}

/**
 * Saves iteration `it` to `a.save` (every rank its shards, rank 0 the rest),
 * with the init std the weights were drawn with where known (`initStd`).
 */
async function save<B>(
  a: TrainArgs,
  L: Layout,
  dist: WorkerContext | null,
  task: Task<B>,
  trainer: Trainer,
  it: number,
  consumed: Consumed,
  skipped: number,
  initStd: number | undefined,
): Promise<void> {
  if (L.log.isLogger) await task.saveExtras(a.save!);
  await saveCheckpoint(a.save!, {
    iteration: it,
    params: task.model.namedParams(),
    optimizer: trainer.optimizer,
    tp: a.tp,
    tpRank: L.tpRank,
    dp: L.dp,
    dpRank: L.dpRank,
    barrier: dist ? () => dist.group.barrier() : undefined,
    ...task.checkpointInfo,
    progress: L.log.isLogger ? stderrProgress("saving checkpoint") : undefined,
    state: {
      consumedTokens: consumed.tokens,
      consumedSamples: consumed.samples,
      sampler: task.samplerState(),
      rng: rngOffsets(task.model),
      ...(trainer.opts.precision?.scaler
        ? { lossScaler: trainer.opts.precision.scaler.state() }
        : {}),
      skipped,
      seed: a.seed,
      args: checkpointArgs(a, initStd, globalBatchOf(a, L)),
    },
  });
}

/**
 * The signal that stops the run after this step and the minutes since the
 * earliest rank started, the same on every rank: with `--save` (signals) or
 * `--exit-duration-in-mins`, the ranks agree after every step in one
 * all-reduce of `flag` (two numbers), the maximum of their signals and of
 * their `minutes`.
 */
async function agreedStop(
  stop: StopRequest | null,
  flag: Float32Array | null,
  dist: WorkerContext | null,
  minutes: number,
): Promise<{ signal: Deno.Signal | null; minutes: number }> {
  // Let the event loop run the signal listeners (GPU waits may not reach it).
  await new Promise((res) => setTimeout(res, 0));
  let n = stop?.signal ? SIGNAL_NUMBERS[stop.signal] : 0;
  if (flag && dist) {
    flag[0] = n;
    flag[1] = minutes;
    await dist.group.allReduce(flag, "max");
    n = flag[0];
    minutes = flag[1];
  }
  return { signal: signalOfNumber(n), minutes };
}

/**
 * Why Megatron's exit flags stop a run after iteration `it` of `iters`, as the
 * end of the line that says so (` (--exit-interval 40)`), or null: `minutes`
 * (agreed by the ranks: since the earliest started) past
 * `--exit-duration-in-mins`, or `it` a multiple of `--exit-interval`. The last
 * iteration ends the run as usual.
 */
export function exitReason(
  a: Pick<TrainArgs, "exitInterval" | "exitDurationMins">,
  it: number,
  iters: number,
  minutes: number,
): string | null {
  if (it >= iters) return null;
  const m = a.exitDurationMins;
  if (m !== undefined && minutes > m) {
    // Enough digits that the time shown is past the limit, not rounded onto it.
    let digits = 3;
    while (digits < 12 && !(Number(minutes.toPrecision(digits)) > m)) digits++;
    const shown = Number(minutes.toPrecision(digits));
    return `, ${shown} minutes after the start (--exit-duration-in-mins ${m})`;
  }
  const n = a.exitInterval;
  return n !== undefined && it % n === 0 ? ` (--exit-interval ${n})` : null;
}

/**
 * The steps a run will take after iteration `it` (each about `stepMs`): to
 * `iters`, or fewer where `--exit-interval` or `--exit-duration-in-mins` (this
 * rank's clock) stops it first. What the matmul tuning may take a share of.
 */
function stepsLeft(
  a: Pick<TrainArgs, "exitInterval" | "exitDurationMins">,
  it: number,
  iters: number,
  stepMs: number,
): number {
  const n = a.exitInterval;
  const left = Math.min(iters, n !== undefined ? Math.ceil(it / n) * n : iters) - it;
  if (a.exitDurationMins === undefined) return left;
  const msLeft = a.exitDurationMins * 60_000 - performance.now();
  return Math.min(left, Math.max(0, Math.floor(msLeft / stepMs)));
}

/**
 * The lines a run says before its first step: the device, the task's own
 * lines (`described`: model and data), the parallel layout, the length and the
 * validation.
 */
function runHeader(r: {
  a: TrainArgs;
  device: ReturnType<Device["summary"]>;
  described: string[];
  world: number;
  dp: number;
  iters: number;
  gb: number;
  accum: number;
  nVal: number;
}): string[] {
  const { a, device: s, described, world, dp, iters, gb, accum, nVal } = r;
  const lines = [
    `device: ${s.backend} | ${s.name}${
      s.isFallback ? ` (software${s.softwareLanes === 16 ? ", 512-bit vectors" : ""})` : ""
    }${world > 1 ? ` | ${world} ranks` : ""}`,
    ...described,
    `parallel: tensor ${a.tp} × data ${dp} | training: ${counted(iters, "step")} ` +
    `× ${gb} sequences ` +
    (a.trainSamples !== undefined ? `(--train-samples ${a.trainSamples}) ` : "") +
    `(${accum} micro-batch${accum > 1 ? "es" : ""} of ${a.microBatch} per rank) | validation: ` +
    (nVal > 0
      ? `${nVal} batch${nVal === 1 ? "" : "es"} of ${a.microBatch}${
        nVal < validationBatchesOf(a, gb)
          ? ` (all the validation data holds; --eval-iters ${a.evalIters} × ${gb} sequences)`
          : ""
      }${dp > 1 ? ` split over the ${dp} data-parallel ranks` : ""}`
      : "off (--eval-iters 0)"),
  ];
  return lines;
}

/**
 * The line a resumed run says where its global batch is not the one its
 * checkpoint trained at (the `samples` its `iterations` consumed, evenly), or
 * null: Megatron lets a run go on at another batch, but a layout flag dropped
 * or a `--micro-batch-size` taken from the checkpoint can change it unasked.
 */
export function globalBatchChange(iterations: number, samples: number, gb: number): string | null {
  if (iterations <= 0 || samples % iterations !== 0) return null;
  const before = samples / iterations;
  if (before === gb) return null;
  return `global batch: the checkpoint's ${counted(iterations, "iteration")} took ${before} ` +
    `sequences each; this run takes ${gb} (--global-batch-size, or --micro-batch-size × the ` +
    "data-parallel size): the steps go on counting, each of another size";
}

/**
 * The line a run says where its schedule will not do what a reader expects,
 * or null: the default warm-up outlasting the decay of a run from its start,
 * or a resumed run (from iteration `start`) whose schedule, `taken` updates in
 * (fp16's skipped steps do not advance it; default `start - 1`), is already
 * past the decay's end, so that every step runs at the final rate (or, with a
 * warm-up longer than the decay, still warming up: it comes first).
 */
export function scheduleWarning(
  sched: LrSchedule,
  start: number,
  taken = start - 1,
): string | null {
  if ((sched.style ?? "cosine") === "constant") return null;
  const warm = sched.warmupIters ?? 0;
  if (start > 1 && warm >= sched.decayIters && taken < warm) {
    // The warm-up outlasts the decay, and comes first: the rate is still rising.
    return `learning rate: this run starts at iteration ${start}, within a warm-up of ${warm} ` +
      `steps that is not shorter than the decay (${sched.decayIters} steps): the ` +
      `rate rises toward --lr ${sched.lr} until step ${warm}, then runs at --min-lr ` +
      `${sched.minLr ?? 0}; give --lr-decay-iters N with --override-opt-param-scheduler to ` +
      "decay over more steps";
  }
  if (taken >= sched.decayIters) {
    const at = taken === start - 1
      ? ""
      : ` (its schedule at step ${taken}: skipped steps do not count)`;
    return `learning rate: this run starts at iteration ${start}${at}, past the end of the ` +
      `schedule's decay (${sched.decayIters} steps): every step runs at --min-lr ` +
      `${sched.minLr ?? 0}; give --lr-decay-iters N with --override-opt-param-scheduler ` +
      "to decay over more steps";
  }
  if (start === 1 && warm > 0 && warm >= sched.decayIters) {
    // A warm-up given on the command line is refused at this length; the default is not.
    return `learning rate: the default warm-up of ${warm} steps is not shorter than the decay ` +
      `(${sched.decayIters} steps): the rate rises toward --lr ${sched.lr} for the whole run ` +
      "and never decays; give --lr-warmup-iters N (or --lr-warmup-fraction) for a shorter one";
  }
  return null;
}

/**
 * The `--log-json` record of iteration `it`: the step's result `r`, its time,
 * `tokens` per step, the tokens consumed so far and, where it evaluated, the
 * validation loss (and a language model's perplexity). A loss's parts (BERT's
 * `lm loss` and `sop loss`) are fields of their own (`lm_loss`, `val_lm_loss`).
 */
function stepRecord(
  it: number,
  r: StepResult,
  ms: number,
  tokens: number,
  consumedTokens: number,
  valLoss: number | undefined,
  lossName: string,
  valParts?: Record<string, number>,
): Record<string, unknown> {
  const fields = (prefix: string, parts: Record<string, number> | undefined) =>
    Object.fromEntries(Object.entries(parts ?? {}).map(([n, v]) => [prefix + jsonName(n), v]));
  return {
    iteration: it,
    loss: r.loss,
    ...fields("", r.parts),
    lr: r.lr,
    grad_norm: r.gradNorm,
    loss_scale: r.lossScale,
    skipped: r.skipped,
    tokens_per_s: tokens / (ms / 1000),
    ms_per_iter: ms,
    consumed_tokens: consumedTokens,
    ...(valLoss !== undefined ? { val_loss: valLoss } : {}),
    ...(valLoss !== undefined && lossName === "lm loss" ? { val_ppl: Math.exp(valLoss) } : {}),
    ...fields("val_", valParts),
  };
}

/** A loss part's name as a JSON field: `lm loss` → `lm_loss`. */
function jsonName(name: string): string {
  return name.replace(/[^A-Za-z0-9]+/g, "_");
}

/** Sums over the steps of one logging window. */
class LogWindow {
  start = performance.now();
  loss = 0;
  /** The sums of the loss's parts (BERT's `lm loss`, `sop loss`), where it has them. */
  parts: Record<string, number> | null = null;
  steps = 0;
  comm = 0;
  skipped = 0;
  nan = 0;
  lastNorm: number | null = null;

  /**
   * Adds a step. As Megatron's `training_log`: a skipped step's loss stays out of
   * the mean (and counts as a nan iteration where it is not finite), and the
   * line's gradient norm is the last step's, none where it was skipped.
   */
  add(
    loss: number,
    norm: number,
    comm: number,
    skipped = false,
    parts?: Record<string, number>,
  ): void {
    if (skipped) {
      this.skipped++;
      if (!Number.isFinite(loss)) this.nan++;
    } else {
      this.loss += loss;
      for (const [n, v] of Object.entries(parts ?? {})) {
        (this.parts ??= {})[n] = (this.parts[n] ?? 0) + v;
      }
    }
    this.lastNorm = skipped ? null : norm;
    this.comm += comm;
    this.steps++;
  }

  /** The window's line fields and comm share; then starts a new window. */
  close(): {
    msPerIter: number;
    loss: number | null;
    parts: Record<string, number> | null;
    gradNorm: number | null;
    commShare: number;
    skipped: number;
    nan: number;
  } {
    const msPerIter = (performance.now() - this.start) / this.steps;
    const clean = this.steps - this.skipped;
    const out = {
      msPerIter,
      loss: clean > 0 ? this.loss / clean : null, // every step skipped: no loss to show
      parts: clean > 0 && this.parts
        ? Object.fromEntries(Object.entries(this.parts).map(([n, v]) => [n, v / clean]))
        : null,
      gradNorm: this.lastNorm,
      commShare: this.comm / (msPerIter * this.steps),
      skipped: this.skipped,
      nan: this.nan,
    };
    this.start = performance.now();
    this.loss =
      this.steps =
      this.comm =
      this.skipped =
      this.nan =
        0;
    this.lastNorm = null;
    this.parts = null;
    return out;
  }
}

async function runTask<B>(
  a: TrainArgs,
  data: TaskData<B>,
  dist: WorkerContext | null,
  stop: StopRequest | null,
): Promise<TrainSummary> {
  const device = await openDevice(a, dist);
  try {
    return await trainOn(device, a, data, dist, stop);
  } finally {
    // After trainOn has returned, so that its tensors are garbage (Device.close).
    await device.close();
  }
}

/** The training loop of {@link runTask} on its device. */
async function trainOn<B>(
  device: Device,
  a: TrainArgs,
  data: TaskData<B>,
  dist: WorkerContext | null,
  stop: StopRequest | null,
): Promise<TrainSummary> {
  const L = layoutOf(a, dist);
  const { dp, dpRank, world, log } = L;
  const say = log.say;
  const T = a.seqLength, mb = a.microBatch;
  const gb = globalBatchOf(a, L);
  // --train-samples S: ⌊S / global batch⌋ steps, as Megatron's.
  const iters = trainItersOf(a, gb);
  const accum = gb / (mb * dp);
  const tuner = attachTuner(device, a.autotune);
  // Fused attention keeps no [batch, heads, T, T] scores; the unfused path (--no-flash-attn, or
  // a shape the fused kernels cannot run) holds them in one binding.
  const attentionShape = { microBatch: mb, headsPerRank: data.numHeads / a.tp, seqLength: T };
  const fused = a.model.fusedAttention && fusedAttentionRuns(device, {
    batch: mb,
    seqLength: T,
    heads: attentionShape.headsPerRank,
    headDim: data.headDim,
  });
  if (!fused) checkAttentionFits(device, attentionShape);
  // On a software adapter the model's weights, gradients and moments are host memory: a model past
  // it is refused now, not killed for memory mid-build (the ranks of this process share it).
  checkModelFitsHost(device, data.paramShape, a.tp, ranksSharingHost(dist?.ranksInProcess ?? 1));
  const { task, trainer, timer } = await modelWithinLimits(() => setUp(a, L, device, data));
  const model = task.model;
  const flopsPerIter = trainingFlops(
    { ...task.shape, paddedVocab: model.paddedVocab, seqLength: T },
    gb * T,
    a.model.recomputeActivations,
    task.headShare,
  );
  // Validation: each data-parallel rank evaluates its share of the batches,
  // each batch's mean loss weighted by its rows (a short last batch counts for
  // its rows only); the average over replicas of (Σ loss·rows × DP / all rows)
  // is the mean over every validation row (over every masked token for BERT's
  // MLM loss, whose batches divide by the whole set's count).
  const valShare = task.validation.filter((_, i) => i % dp === dpRank);
  // Each batch whole, the validation set as the "step": a loss averaged over a varying
  // count (BERT's masked tokens) divides by the count over every validation batch.
  const wholeBatch = (b: B) => ({
    lo: 0,
    rows: task.rowsOf(b),
    ranks: 1,
    step: task.validation,
  });
  const valRows = task.validation.reduce((n, b) => n + task.rowsOf(b), 0);
  const evaluate = () =>
    trainer.evaluateParts(
      valShare.length,
      (i) => task.loss(valShare[i], wholeBatch(valShare[i])),
      (i) => task.rowsOf(valShare[i]) * dp / valRows,
    );

  const s = device.summary();
  const nVal = task.validation.length;
  // --eval-iters 0: no validation at all (every token of the data can train).
  const validating = nVal > 0;
  const described = task.describe();
  runHeader({ a, device: s, described, world, dp, iters, gb, accum, nVal }).forEach(say);

  let skippedTotal = 0;
  // Counted from the checkpoint's own count: a resumed run may have another global batch.
  let base: Consumed = { tokens: 0, samples: 0 };
  // --load and --save the same directory with no checkpoint in it yet: the job's first run.
  const fresh = await firstRunOfRestartableJob(a.load, a.save, a.loadIteration);
  if (dist && a.load) {
    const it = fresh ? null : a.loadIteration ?? await readLatest(a.load).catch(() => null);
    await checkSameLoad(dist.group, a.load, it);
  }
  const loaded = a.load && !fresh
    ? await load(a, L, task, trainer, (n) => skippedTotal = n, (c) => base = c)
    : null;
  const startIter = loaded ? loaded.iteration + 1 : 1;
  const batchNote = loaded ? globalBatchChange(loaded.iteration, base.samples, gb) : null;
  if (batchNote) say(batchNote);
  // A run with nothing left to train says nothing of its schedule.
  const lrWarning = startIter > iters
    ? null
    : scheduleWarning(trainer.opts.schedule, startIter, trainer.optimizer.step);
  if (lrWarning) say(lrWarning);
  // The std the weights were drawn with, saved with them: this run's draw, what the loaded
  // checkpoint says, or a Hugging Face config's initializer_range (so an export writes it again).
  const initStd = loaded ? loaded.initStd : a.initFromHf ? data.hfInitStd : a.model.initStd;
  const skippedBefore = skippedTotal;
  const consumedAt = (it: number): Consumed => ({
    tokens: base.tokens + (it - startIter + 1) * gb * T,
    samples: base.samples + (it - startIter + 1) * gb,
  });
  // A resumed run appends to its log, dropping what the interrupted run wrote
  // past its checkpoint (those iterations run again).
  await using json = log.isLogger && a.logJson
    ? await JsonLog.open(a.logJson, loaded ? startIter - 1 : undefined, {
      // Flags left out whose defaults follow from others, as this run resolved them; the model's
      // shape as built (from --init-from-hf's config.json, the flags hold their defaults).
      config: {
        "global-batch-size": gb,
        ...(a.trainSamples === undefined
          ? { "lr-decay-iters": trainer.opts.schedule.decayIters }
          : {}),
        ...(a.data.source || a.data.train ? {} : { "data-path": DEFAULT_CORPUS_PATH }),
        "backend": s.backend,
        ...loggedConfig(a),
        "num-layers": task.shape.numLayers,
        "hidden-size": task.shape.hiddenSize,
        "num-attention-heads": task.shape.numHeads,
        "ffn-hidden-size": task.shape.ffnHiddenSize,
        "max-position-embeddings": task.shape.maxPositions,
      },
      // null in JSON where the launch does not say (e.g. torchrun without LOCAL_WORLD_SIZE).
      world: { size: world, tp: a.tp, dp, nodes: dist ? dist.nodes ?? NaN : 1 },
      first_iteration: startIter,
    })
    : null;
  using progress = new Progress(iters, log.isLogger ? undefined : false);
  // The ranks agree after each step whether a signal (with --save) or --exit-duration-in-mins
  // stops the run: one all-reduce of two numbers, none when neither can.
  const timed = a.exitDurationMins !== undefined;
  const agreeing = !!(stop && a.save) || timed;
  const stopFlag = agreeing && dist ? dist.group.alloc(2) : null;
  const from = loaded
    ? `loaded from ${a.load}`
    : a.initFromHf
    ? `loaded from ${a.initFromHf}`
    : `initialized from --seed ${a.seed}`;

  const window = new LogWindow();
  let stoppedBy: Deno.Signal | null = null;
  // Why --exit-interval or --exit-duration-in-mins stops the run after this step (exitReason).
  let exitAfter: string | null = null;
  let prev: { lr: number; gradNorm: number } | null = null;
  let lastVal = NaN, lastTrain = NaN, lastIter = startIter - 1;
  let steadyMs = 0, steadyComm = 0;
  const runStart = performance.now();
  const tuneFrom = firstTuningStep(a.autotune, startIter);
  if (startIter > iters) {
    // Re-running a finished command: nothing to train, but the model it left is evaluated.
    const length = a.trainSamples !== undefined
      ? { flag: "--train-samples", now: `${a.trainSamples} (${iters} iterations of ${gb})` }
      : { flag: "--train-iters", now: `${iters}` };
    say(
      `the checkpoint is at iteration ${startIter - 1}, ${length.flag} ${length.now}: nothing ` +
        `to train (raise ${length.flag} to go on)${validating ? "; evaluating it" : ""}`,
    );
    if (validating) {
      const v = await evaluate();
      lastVal = v.loss;
      if (log.isLogger) {
        for (
          const line of formatValidationLines(startIter - 1, v.parts ?? { [task.lossName]: v.loss })
        ) {
          progress.line(line);
        }
      }
    }
  }
  // Every rank reaches the loop before any counts as started: a signal a moment earlier
  // ends all of them at once (nothing to save), never some in the loop and some not.
  if (dist) await dist.group.barrier();
  stop?.started();
  for (let it = startIter; it <= iters; it++) {
    // Step: `accum` micro-batches, each this rank's rows of a global micro-batch.
    const t0 = performance.now(), c0 = timer.ms;
    // Every global micro-batch of the step, drawn first: a loss averaged over a
    // varying count (BERT's masked tokens) divides by the count over all of them.
    const step = Array.from({ length: accum }, () => task.nextTrainBatch());
    const part = { lo: dpRank * mb, rows: mb, ranks: dp, step };
    const r = await withinLimits(
      () => trainer.step(accum, (i) => task.loss(step[i], part)),
      { microBatch: mb, seqLength: T },
    );
    const ms = performance.now() - t0;
    lastIter = it;
    if (tuner?.pending && (it >= tuneFrom || it === iters)) {
      // The steps so far have used every shape: time their tilings now, once,
      // for as long as the run can afford (the step just taken sizes it).
      // A signal cuts it short (the choices made so far are saved), so the step
      // just taken is saved, or the run exits, without waiting for the rest.
      const signalled = () => stop?.signal != null;
      await tuneDuringRun(tuner, a.autotune, ms, stepsLeft(a, it, iters, ms), say, signalled);
    }
    if (it > startIter) {
      steadyMs += ms;
      steadyComm += timer.ms - c0;
    }
    // A non-finite loss stops the run, unless fp16's scaler skipped the step: then, as
    // Megatron's (which turns its NaN check off under dynamic scaling), the step counts as a
    // nan iteration and the scale comes down.
    if (!Number.isFinite(r.loss) && !r.skipped) {
      throw new RunError(
        nonFiniteLossMessage(r.loss, it, it === startIter, from, prev, a.clipGrad),
      );
    }
    if (!r.skipped) prev = { lr: r.lr, gradNorm: r.gradNorm };
    if (r.skipped) skippedTotal++;
    window.add(r.loss, r.gradNorm, timer.ms - c0, r.skipped, r.parts);
    // Signals (with --save: stop after this step, saved) and the time since the start.
    let minutes = 0;
    if (agreeing) {
      const agreed = await agreedStop(
        a.save ? stop : null,
        stopFlag,
        dist,
        timed ? performance.now() / 60_000 : 0,
      );
      stoppedBy = agreed.signal;
      minutes = agreed.minutes;
    } else if (stop) await new Promise((res) => setTimeout(res, 0));
    // Megatron's exit flags: stop after this step as a signal does, but evaluated as usual.
    if (!stoppedBy) exitAfter = exitReason(a, it, iters, minutes);
    // Evaluate.
    let valLoss: number | undefined;
    let valParts: Record<string, number> | undefined;
    if (validating && !stoppedBy && (it % a.evalInterval === 0 || it === iters)) {
      const v = await evaluate();
      valLoss = lastVal = v.loss;
      valParts = v.parts;
    }
    json?.write(
      stepRecord(it, r, ms, gb * T, consumedAt(it).tokens, valLoss, task.lossName, valParts),
    );
    // Log.
    if (it % a.logInterval === 0 || it === iters || stoppedBy || exitAfter) {
      const w = window.close();
      if (w.loss !== null) lastTrain = w.loss;
      if (log.isLogger) {
        progress.line(
          formatLogLine({
            iteration: it,
            total: iters,
            consumedTokens: consumedAt(it).tokens,
            consumedSamples: consumedAt(it).samples,
            globalBatchSize: gb,
            worldSize: world,
            msPerIter: w.msPerIter,
            tokensPerS: (gb * T) / (w.msPerIter / 1000),
            gflops: flopsPerIter / (w.msPerIter / 1000) / 1e9,
            lr: r.lr,
            loss: w.loss,
            ...(w.parts ? { losses: w.parts } : {}),
            lossScale: r.lossScale,
            gradNorm: w.gradNorm,
            skipped: w.skipped,
            nan: w.nan,
            lossName: task.lossName,
          }) + (a.measureComm ? ` comm: ${(100 * w.commShare).toFixed(1)}% |` : ""),
        );
      }
    }
    if (valLoss !== undefined && log.isLogger) {
      for (const line of formatValidationLines(it, valParts ?? { [task.lossName]: valLoss })) {
        progress.line(line);
      }
    }
    // Save (once, where an interval and a stop fall on one iteration).
    if (a.save && (it % a.saveInterval === 0 || it === iters || stoppedBy || exitAfter)) {
      await save(a, L, dist, task, trainer, it, consumedAt(it), skippedTotal, initStd);
      if (log.isLogger) progress.line(`saved checkpoint at iteration ${it} to ${a.save}`);
      if (agreeing && !stoppedBy && !exitAfter && it < iters) {
        // A signal that came during the save stops the run here, at the iteration just
        // saved, as Megatron's check right after a save does (not after another step and save).
        stoppedBy = (await agreedStop(stop, stopFlag, dist, 0)).signal;
      }
    }
    if (log.isLogger) progress.update(it);
    if (stoppedBy || exitAfter) break;
  }
  stop?.finished();
  progress.done(); // before the summary lines (`using` removes the bar on an error too)
  const done = stoppedBy || exitAfter ? lastIter : iters;
  const summary: TrainSummary = {
    valLoss: lastVal,
    trainLoss: lastTrain,
    msPerStep: steadyMs / Math.max(1, done - startIter),
    commShare: steadyMs > 0 ? steadyComm / steadyMs : 0,
    params: fullParamCount(model, a.tp),
  };
  if (stoppedBy || exitAfter) {
    // A signal stops a run only with --save; the exit flags stop it without (Megatron's do).
    const resume = a.save ? `resume with --load ${a.save}` : "no --save, so nothing is saved";
    say(
      stoppedBy
        ? `\nstopped by ${stoppedBy} after iteration ${lastIter}; ${resume}`
        : `\nexiting after iteration ${lastIter}${exitAfter}; ${resume}`,
    );
    return summary;
  }
  const trained = Math.max(0, iters - startIter + 1);
  const skippedNow = skippedTotal - skippedBefore;
  say(
    `\ntrained ${counted(trained, "step")} in ${
      ((performance.now() - runStart) / 1000).toFixed(1)
    } s` +
      // fp16's scaler skips a step whose gradients overflowed: say how many made no update.
      (skippedNow > 0
        ? ` (${skippedNow} of them skipped, their gradients past fp16's range at the loss scale` +
          (skippedNow === trained ? ": the weights did not change" : "") + ")"
        : ""),
  );
  await task.report(lastVal, a, log);
  return summary;
}

/** Matches every {@link nonFiniteLossMessage} (what a caller of `train` looks for in its error). */
export const NON_FINITE_LOSS = /the loss (is|became) (NaN|-?Infinity)/;

/**
 * Why the loss is not finite, with what points at the cause: the iteration; at
 * the first step (before any update) the starting weights; after that the
 * previous step's learning rate and gradient norm (and whether it was clipped).
 */
export function nonFiniteLossMessage(
  loss: number,
  it: number,
  first: boolean,
  from: string,
  prev: { lr: number; gradNorm: number } | null,
  clip: number,
): string {
  const e = (x: number) => x.toExponential(2).toUpperCase();
  if (first || !prev) {
    return `the loss is ${loss} at iteration ${it}, the first step, before any update: the ` +
      `starting weights (${from}) overflow in the forward pass; check them, or the data`;
  }
  const norm = Number.isFinite(prev.gradNorm) ? e(prev.gradNorm) : String(prev.gradNorm);
  const exploded = !Number.isFinite(prev.gradNorm) || prev.gradNorm > 1e3;
  const clipped = clip > 0 ? `clipped to ${clip}` : "not clipped";
  return `the loss became ${loss} at iteration ${it}, after the update of iteration ${it - 1} ` +
    `(learning rate ${e(prev.lr)}, gradient norm ${norm}, ${clipped}): ` +
    (exploded
      ? `the gradients exploded; lower --lr${clip > 0 ? "" : " or clip them (--clip-grad 1)"}`
      : `the learning rate is too high for these weights; lower --lr or warm up longer ` +
        `(--lr-warmup-iters)`);
}
