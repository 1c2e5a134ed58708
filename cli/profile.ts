/**
 * `deno task profile [train flags]`: a few training steps of the GPT the train
 * flags describe (random tokens, the same {@link Trainer} step as `deno task
 * train`), with per-kernel GPU time (the adapter's `timestamp-query` where it
 * has it, else each dispatch replayed alone with a sync), dispatches, submits,
 * host syncs and bytes read back per step, and each kernel family's share.
 * @module
 */

import { NOOP_KERNEL } from "../kernels/kernel.ts";
import process from "node:process";
import {
  DistConfigError,
  type Launcher,
  localDistConfig,
  parseDuration,
  parseLauncher,
} from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";
import type { ProcessGroup } from "../collectives/group.ts";
import { Device } from "../core/device.ts";
import { defaultBackendFor, parseBackend } from "../core/gpu.ts";
import { DeviceProfiler, type KernelStat, type ProfileMode } from "../core/profiler.ts";
import { preferWideVectors } from "../core/simd.ts";
import { TokenIds } from "../core/token_ids.ts";
import { DataRng } from "../data/rng.ts";
import { Gpt } from "../models/gpt.ts";
import {
  bytesSent,
  type CommTimer,
  countedGroup,
  countsInNorm,
  hybridHooks,
  noCommBytes,
  splitCommWaits,
  timedGroup,
} from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import type { TpGroup } from "../models/parallel/mappings.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer } from "../models/trainer.ts";
import { handled } from "./errors.ts";
import { type FlagSpec, type FlagValues, parseCommandLine, UsageError } from "./flags.ts";
import { attachTuner, autotuneArgs, describeTuning } from "./autotune.ts";
import { counted } from "./log.ts";
import { runPinnedProcs } from "./pinned_procs.ts";
import { checkModelFlags, checkStepFlags, gptConfigFromFlags } from "./train_config.ts";
import { checkModelFitsHost, checkRankCount, paramShapeOf } from "./limits.ts";
import { TRAIN_FLAGS } from "./train_flags.ts";

const PROFILE_FLAGS: Record<string, FlagSpec> = {
  // Training's --model, narrowed to what the profile runs.
  "model": { ...TRAIN_FLAGS["model"], choices: ["gpt"], help: "model family (GPT only)" },
  "steps": { type: "int", default: 3, min: 1, help: "profiled steps", group: "Profile" },
  "warmup": { type: "int", default: 2, min: 0, help: "untimed steps first (compilation)" },
  "vocab-size": { type: "int", default: 256, min: 2, help: "vocabulary (tokens are random)" },
  "timing": {
    type: "string",
    default: "auto",
    choices: ["auto", "timestamp", "sync"],
    help:
      "timestamp-query, or each dispatch replayed alone with a sync (auto: timestamp if offered)",
  },
  "multi-tensor-adam": {
    type: "boolean",
    help: "AdamW over several tensors per dispatch (AdamWConfig.multiTensor)",
  },
  "top": { type: "int", default: 15, min: 0, help: "kernels listed (by time)" },
  "json": {
    type: "boolean",
    help: "one JSON object instead of tables (with --tp N > 1, an array of one per rank)",
  },
};

/**
 * The train flags a profile applies: the GPT's shape and settings, the batch,
 * the optimizer step's learning rate and clipping, the devices and tensor
 * parallelism, and matmul tuning. It runs fp32 on random tokens, one
 * micro-batch, no data parallelism, so the other train flags would change
 * nothing; they are not accepted.
 */
export const PROFILED_TRAIN_FLAGS: readonly string[] = [
  "model",
  "num-layers",
  "hidden-size",
  "num-attention-heads",
  "ffn-hidden-size",
  "seq-length",
  "max-position-embeddings",
  "hidden-dropout",
  "attention-dropout",
  "recompute-activations",
  "use-flash-attn",
  "no-flash-attn",
  "micro-batch-size",
  "lr",
  "clip-grad",
  "seed",
  "backend",
  "tensor-model-parallel-size",
  "overlap-tp-comm",
  "launcher",
  "dist-timeout",
  "no-matmul-autotune",
  "matmul-autotune-budget",
  "matmul-tuning-cache",
  "debug",
];

/** How long a rank waits for a peer by default (train's is 300s). */
const PROFILE_DIST_TIMEOUT = "30m";

/** Why the profile refuses the other train flags. */
const NOT_PROFILED = "a train flag profile does not apply (it runs fp32 steps of one " +
  "micro-batch of random tokens: no data parallelism, checkpoints or logs)";

/**
 * The profile's flags: the train flags it applies, then its own; the other
 * train flags are refused, saying so ({@link NOT_PROFILED}).
 */
const SPECS: Record<string, FlagSpec> = {
  ...Object.fromEntries(
    Object.entries(TRAIN_FLAGS).map(([n, s]) => [n, { ...s, refused: NOT_PROFILED }]),
  ),
  ...Object.fromEntries(PROFILED_TRAIN_FLAGS.map((n) => [n, TRAIN_FLAGS[n]])),
  "dist-timeout": {
    ...TRAIN_FLAGS["dist-timeout"],
    help: `wait for a peer this long before failing (e.g. 60s; default ${PROFILE_DIST_TIMEOUT} ` +
      "here: ranks tune their matmuls in the warm-up, minutes at GPT-2's sizes)",
  },
  ...PROFILE_FLAGS,
};

const USAGE = `Usage: deno task profile [train flags] [profile flags]

Runs --warmup untimed and --steps profiled training steps of the GPT that the
train flags describe, on random tokens, and reports per step: dispatches,
submits, host syncs, bytes read back, the plain step time, and GPU time per
kernel and per kernel family. With --tensor-model-parallel-size N each rank has
its own device, as in training: a Worker of this process (on Deno's WebGPU unless
--backend says otherwise: Dawn serialises the devices of one process), or with
--launcher procs a process of its own, pinned to its own core where taskset
works (any backend; Dawn by default). Rank 0's tables are printed, then each
rank's step time, GPU time and time in collectives (timed after a device sync
each, in the profiled steps only), split into waiting for a slower rank to
arrive and the exchanges themselves (per call, the least time any rank took:
the last to arrive waits for nobody). It runs fp32, one micro-batch, no data
parallelism, so it takes only the train flags listed below.`;

/** Kernel families, in report order. */
export const FAMILIES = [
  "matmul",
  "attention",
  "layernorm",
  "softmax/xent",
  "elementwise",
  "embedding",
  "optimizer",
  "transfers",
  "other",
] as const;

/** A kernel family. */
export type Family = typeof FAMILIES[number];

/**
 * The family of a kernel key. Attention is its batched matmuls (both operands
 * batched: q·kᵀ, p·v and their gradients) and the masked softmax, or the fused
 * attention kernels. The fused residual + layer norm (`resnorm`) counts as layer
 * norm, the fused token + position embedding (`embedpos`) as embedding. The
 * device's copies and clears (`transfer:…`: buffers into stream textures,
 * buffer to buffer, zeroing) are transfers, timed in sync mode only.
 */
export function familyOf(key: string): Family {
  if (key.startsWith("transfer:")) return "transfers";
  if (key.startsWith("matmul")) return /\/a1.*\/b1/.test(key) ? "attention" : "matmul";
  if (key.startsWith("softmax") || key.startsWith("attention:")) return "attention";
  if (key.startsWith("layernorm") || key.startsWith("resnorm")) return "layernorm";
  if (key.startsWith("xent")) return "softmax/xent";
  if (key.startsWith("embedding") || key.startsWith("embedpos")) return "embedding";
  // every pass of the gradient norm's sum of squares (the first squares, the later fold)
  if (/^(adamw|clipcoef|reduce:sumsq:)/.test(key)) return "optimizer";
  if (
    /^(map:|axpy|fill|copy|dropout|residual|random|colsum|reduce|pack_half|unpack_half|round_half|sum_packed|texture\/)/
      .test(key)
  ) {
    return "elementwise";
  }
  return "other";
}

/** One kernel's row: per-step averages. */
export interface KernelRow {
  /** Pipeline key. */
  key: string;
  /** Its family. */
  family: Family;
  /** Dispatches per step (for a transfer: copies or clears). */
  dispatches: number;
  /** GPU milliseconds per step. */
  ms: number;
  /** Share of all kernels' GPU time, percent. */
  share: number;
}

/** The profile of a run. */
export interface Profile {
  /** Backend, adapter and timing method. */
  backend: string;
  /** Adapter description. */
  adapter: string;
  /** How kernels were timed. */
  timing: ProfileMode;
  /** Model and batch shape. */
  model: Record<string, number>;
  /** Steps profiled. */
  steps: number;
  /** Tensor-parallel size. */
  tp: number;
  /** This rank's position in its TP group. */
  rank: number;
  /** Its collectives per profiled step (TP > 1 only). */
  comm?: CommProfile;
  /** Per-step counts (from unprofiled steps). */
  perStep: {
    dispatches: number;
    submits: number;
    hostSyncs: number;
    bytesRead: number;
    /** Bind groups made (the rest reuse an earlier step's: `Device.dispatch`'s cache). */
    bindGroups: number;
    /** Buffer-to-texture copies filling stream textures (CPU adapters). */
    textureCopies: number;
    /** Bytes those copies moved. */
    textureCopyBytes: number;
    /** Stream-texture reads answered from a texture the step kept (no copy). */
    keptTextureHits: number;
    /**
     * Stream-texture reads answered from a scratch texture still holding the
     * range (no copy; `Device.scratchTextureHits`).
     */
    scratchTextureHits: number;
    /** Wall milliseconds of an unprofiled step (median). */
    wallMs: number;
    /** Tokens per second of an unprofiled step. */
    tokensPerSec: number;
    /**
     * CPU milliseconds the process spent in an unprofiled step (median; all its
     * threads: on a CPU adapter the kernels run on the process's own threads).
     * Less moved than wall time by other load on a shared machine.
     */
    cpuMs: number;
    /**
     * Milliseconds inside submit calls (median): on a backend whose submit runs
     * the work before it returns (Dawn's GL backend), the GPU's time, which the
     * host's own work then cannot overlap.
     */
    inSubmitMs: number;
    /** Milliseconds from the step's start to its last submit (host recording; median). */
    hostUntilSubmitMs: number;
    /** Sum of the kernels' and transfers' GPU time per step (profiled steps), ms. */
    kernelMs: number;
    /** Wall milliseconds of a profiled step (median; timing adds its own cost). */
    profiledWallMs: number;
  };
  /** GPU time of a one-workgroup no-op dispatch timed the same way (the per-dispatch floor), ms. */
  noopDispatchMs: number;
  /** Sync timing: median cost of an empty submit+wait subtracted from each dispatch, ms. */
  syncOverheadMs?: number;
  /**
   * Sync timing: what was taken off each replayed item besides, the excess of
   * the items timed alone over the step replayed in one submit, spread evenly
   * (mean over the profiled steps), µs.
   */
  syncExcessUs?: number;
  /** Per family, in {@link FAMILIES} order (families with no dispatch left out). */
  families: { family: Family; dispatches: number; ms: number; share: number }[];
  /** Per kernel, by time, descending. */
  kernels: KernelRow[];
  /** Distinct pipelines. */
  pipelines: number;
  /**
   * Loss of the first measured step, after the warm-up and before any replay
   * (a sanity check, the same whatever the timing).
   */
  loss: number;
  /** This rank's device memory. */
  memory: {
    /**
     * The buffer pool's peak since the device was made, in bytes (weights,
     * gradients, AdamW moments and activations; `BufferPool.peakBytes`).
     */
    peakBufferBytes: number;
    /**
     * Bytes of the stream textures kept for the weights and then the gradients
     * (CPU adapters; 0 elsewhere: `Device.keptTextureBytes`).
     */
    keptTextureBytes: number;
    /**
     * Bytes of the scratch stream textures operands are copied into (CPU
     * adapters; 0 elsewhere: `Device.scratchTextureBytes`).
     */
    scratchTextureBytes: number;
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** A rank's groups when the profile runs tensor-parallel (one Worker per rank). */
export interface ProfileRanks {
  /** This rank's tensor-parallel group. */
  tpGroup: TpGroup;
  /** Its data-parallel group (of one: the profile runs TP only). */
  dpGroup: ProcessGroup;
  /** This rank's position in the TP group. */
  tpRank: number;
}

/** The collectives of a profiled step, on one rank, per step. */
export interface CommProfile {
  /** Collectives per step (TP f/g all-reduces, the vocab-parallel loss's, the norm's). */
  calls: number;
  /** Bytes this rank sends per step, as a ring moves them (`countedGroup`). */
  bytes: number;
  /**
   * Host milliseconds per step inside the collectives, each after a device sync
   * (untimed): moving the data and waiting for the slower peer, not queued compute.
   */
  ms: number;
  /** Each profiled collective's milliseconds, every profiled step, in call order. */
  callMs?: number[];
  /**
   * Of `ms`, the part spent waiting for a slower rank to arrive (per step; set
   * once every rank's `callMs` is known, see `splitCommWaits`).
   */
  waitMs?: number;
  /** Of `ms`, the exchanges themselves: per call, the least time any rank took (per step). */
  exchangeMs?: number;
}

/**
 * The TP group with its collectives timed (after a device sync) and counted
 * while `metering.on`; plain otherwise, so unprofiled steps run as in training.
 */
function meteredGroup(group: TpGroup, device: Device) {
  const timer: CommTimer = { ms: 0, calls: [] };
  const bytes = noCommBytes();
  const metered = timedGroup(countedGroup(group, bytes), timer, device);
  const metering = { on: false, timer, bytes };
  const tpGroup: TpGroup & { untimed: TpGroup } = {
    size: group.size,
    rank: group.rank,
    // overlapped collectives (--overlap-tp-comm) bypass the timing: the trainer times their exposed wait
    untimed: group,
    allReduce: (x, op) => metering.on ? metered.allReduce(x, op) : group.allReduce(x, op),
    allGather:
      ((x: Parameters<TpGroup["allGather"]>[0]) =>
        metering.on ? metered.allGather(x) : group.allGather(x)) as TpGroup["allGather"],
    ...(group.allReduceHalf
      ? {
        allReduceHalf: (x, codec, op) =>
          metering.on ? metered.allReduceHalf!(x, codec, op) : group.allReduceHalf!(x, codec, op),
      } satisfies Pick<TpGroup, "allReduceHalf">
      : {}),
  };
  return { tpGroup, metering };
}

/** Runs the profile the flags describe on `device` (one rank of a TP group with `ranks`). */
export async function profileRun(
  device: Device,
  f: Record<string, unknown>,
  ranks?: ProfileRanks,
): Promise<Profile> {
  const vocab = f["vocab-size"] as number;
  const cfg = gptConfigFromFlags(f as never, vocab);
  const tp = ranks?.tpGroup.size ?? 1;
  checkModelFitsHost(device, paramShapeOf(cfg), tp, tp, "--tensor-model-parallel-size");
  const B = f["micro-batch-size"] as number, T = f["seq-length"] as number;
  const steps = f.steps as number, warmup = f.warmup as number;
  let timing = f.timing as string;
  const hasTs = device.gpu.features.has("timestamp-query");
  if (timing === "auto") timing = hasTs ? "timestamp" : "sync";
  if (timing === "timestamp" && !hasTs) {
    throw new UsageError("profile: this adapter has no timestamp-query (use --timing sync)");
  }
  const seed = f.seed as number;
  const metered = ranks && ranks.tpGroup.size > 1 ? meteredGroup(ranks.tpGroup, device) : null;
  const gpt = metered
    ? new Gpt(
      new TensorParallelLayers(device, metered.tpGroup, { overlapComm: !!f["overlap-tp-comm"] }),
      cfg,
      { seed, rng: new RngTracker(seed, ranks!.tpRank, 0) },
    )
    : Gpt.serial(device, cfg, seed);
  const trainer = new Trainer(device, gpt, {
    schedule: { lr: f.lr as number, decayIters: 1000, style: "constant" },
    clipGrad: f["clip-grad"] as number,
    adam: { multiTensor: !!f["multi-tensor-adam"] },
    hooks: metered
      ? hybridHooks(device, { tpGroup: metered.tpGroup, dpGroup: ranks!.dpGroup })
      : undefined,
    countsInNorm: metered ? countsInNorm(ranks!.tpRank) : undefined,
    backwardWaits: metered?.metering.timer,
  });
  const rng = new DataRng(7);
  const tokens = () => Int32Array.from({ length: B * T }, () => rng.nextInt(vocab));
  // The loss reported is the first measured step's: sync mode's replays run each step's
  // kernels again, AdamW's in-place update among them, so later steps' weights differ from
  // training's.
  let firstLoss: number | undefined;
  const step = async () =>
    (await trainer.step(1, () =>
      gpt.loss(
        TokenIds.fromHost(device, tokens(), [B, T]),
        TokenIds.fromHost(device, tokens(), [B, T]),
      ))).loss;
  const tuner = attachTuner(device, autotuneArgs(f as FlagValues));
  for (let i = 0; i < warmup; i++) {
    await step();
    if (tuner?.pending) {
      const t0 = performance.now();
      const found = await tuner.tune();
      console.error(describeTuning(
        found,
        (performance.now() - t0) / 1000,
        tuner.saveError,
        tuner.deferred,
      ));
    }
  }
  // Unprofiled and profiled steps alternate, so that both see the same load on a
  // shared machine: the unprofiled ones give the counts and the plain step time.
  const wall: number[] = [], record: number[] = [], cpu: number[] = [], inSubmit: number[] = [];
  const counts = {
    dispatches: 0,
    submits: 0,
    hostSyncs: 0,
    bytesRead: 0,
    bindGroups: 0,
    textureCopies: 0,
    textureCopyBytes: 0,
    keptTextureHits: 0,
    scratchTextureHits: 0,
  };
  const prof = new DeviceProfiler(timing as ProfileMode);
  const profWall: number[] = [];
  const comm: CommProfile = { calls: 0, bytes: 0, ms: 0 };
  const callMs: number[] = [];
  let overhead: number | undefined;
  const excessUs: number[] = [];
  const total = new Map<string, KernelStat>();
  for (let i = 0; i < steps; i++) {
    const d0 = device.dispatches, s0 = device.submits, h0 = device.hostSyncs, b0 = device.bytesRead;
    const g0 = device.bindGroupsMade, c0 = device.textureCopies;
    const cb0 = device.textureCopyBytes, k0 = device.keptTextureHits;
    const sk0 = device.scratchTextureHits;
    let lastSubmit = NaN, submitting = 0;
    const flush = device.flush;
    device.flush = () => {
      lastSubmit = performance.now();
      flush.call(device);
      submitting += performance.now() - lastSubmit;
    };
    const cpu0 = process.cpuUsage();
    let t0 = performance.now();
    try {
      const loss = await step();
      firstLoss ??= loss;
    } finally {
      device.flush = flush;
    }
    const t1 = performance.now();
    const used = process.cpuUsage(cpu0);
    cpu.push((used.user + used.system) / 1000);
    wall.push(t1 - t0);
    record.push(lastSubmit - t0);
    inSubmit.push(submitting);
    counts.dispatches += device.dispatches - d0;
    counts.submits += device.submits - s0;
    counts.hostSyncs += device.hostSyncs - h0;
    counts.bytesRead += device.bytesRead - b0;
    counts.bindGroups += device.bindGroupsMade - g0;
    counts.textureCopies += device.textureCopies - c0;
    counts.textureCopyBytes += device.textureCopyBytes - cb0;
    counts.keptTextureHits += device.keptTextureHits - k0;
    counts.scratchTextureHits += device.scratchTextureHits - sk0;

    prof.reset();
    device.profiler = prof;
    if (metered) metered.metering.on = true;
    const comm0 = metered && {
      ...metered.metering.bytes,
      ms: metered.metering.timer.ms,
      timed: metered.metering.timer.calls!.length,
    };
    t0 = performance.now();
    try {
      await step();
    } finally {
      device.profiler = null;
      if (metered) metered.metering.on = false;
    }
    if (metered && comm0) {
      const m = metered.metering;
      comm.calls += m.bytes.calls - comm0.calls;
      comm.bytes += bytesSent(m.bytes) - bytesSent(comm0);
      comm.ms += m.timer.ms - comm0.ms;
      callMs.push(...m.timer.calls!.slice(comm0.timed));
    }
    profWall.push(performance.now() - t0);
    if (prof.mode === "timestamp") await prof.collect();
    else {
      overhead = (await prof.replay(device.gpu)) / 1e6;
      excessUs.push(prof.excessNs / 1e3);
    }
    for (const s of [...prof.kernels.values(), ...prof.transfers.values()]) {
      const t = total.get(s.key) ?? { key: s.key, dispatches: 0, workgroups: 0, ns: 0, timed: 0 };
      t.dispatches += s.dispatches;
      t.workgroups += s.workgroups;
      t.ns += s.ns;
      t.timed += s.timed;
      total.set(s.key, t);
    }
  }
  prof.destroy();
  const pipelines = device.pipelineCount;
  const noopDispatchMs = await noopDispatch(device, prof.mode);
  const allNs = [...total.values()].reduce((a, s) => a + s.ns, 0);
  const share = (ns: number) => (allNs > 0 ? (100 * ns) / allNs : 0);
  const kernels: KernelRow[] = [...total.values()].map((s) => ({
    key: s.key,
    family: familyOf(s.key),
    dispatches: s.dispatches / steps,
    ms: s.ns / 1e6 / steps,
    share: share(s.ns),
  })).sort((a, b) => b.ms - a.ms || b.dispatches - a.dispatches);
  const families = FAMILIES.map((family) => {
    const ks = kernels.filter((k) => k.family === family);
    const ms = ks.reduce((a, k) => a + k.ms, 0);
    return {
      family,
      dispatches: ks.reduce((a, k) => a + k.dispatches, 0),
      ms,
      share: allNs > 0 ? (100 * ms * 1e6 * steps) / allNs : 0,
    };
  }).filter((x) => x.dispatches > 0);
  const wallMs = median(wall);
  return {
    backend: device.backend,
    adapter: device.summary().name,
    timing: prof.mode,
    model: {
      vocab,
      layers: cfg.numLayers,
      hidden: cfg.hiddenSize,
      heads: cfg.numHeads,
      seq: T,
      batch: B,
      params: gpt.numParams(),
    },
    steps,
    tp: ranks?.tpGroup.size ?? 1,
    rank: ranks?.tpRank ?? 0,
    comm: metered
      ? { calls: comm.calls / steps, bytes: comm.bytes / steps, ms: comm.ms / steps, callMs }
      : undefined,
    perStep: {
      dispatches: counts.dispatches / steps,
      submits: counts.submits / steps,
      hostSyncs: counts.hostSyncs / steps,
      bytesRead: counts.bytesRead / steps,
      bindGroups: counts.bindGroups / steps,
      textureCopies: counts.textureCopies / steps,
      textureCopyBytes: counts.textureCopyBytes / steps,
      keptTextureHits: counts.keptTextureHits / steps,
      scratchTextureHits: counts.scratchTextureHits / steps,
      wallMs,
      tokensPerSec: (B * T * 1000) / wallMs,
      cpuMs: median(cpu),
      hostUntilSubmitMs: median(record),
      inSubmitMs: median(inSubmit),
      kernelMs: allNs / 1e6 / steps,
      profiledWallMs: median(profWall),
    },
    syncOverheadMs: overhead,
    syncExcessUs: excessUs.length
      ? excessUs.reduce((a, b) => a + b, 0) / excessUs.length
      : undefined,
    noopDispatchMs,
    families,
    kernels,
    pipelines,
    loss: firstLoss ?? NaN,
    memory: {
      peakBufferBytes: device.pool.peakBytes,
      keptTextureBytes: device.keptTextureBytes,
      scratchTextureBytes: device.scratchTextureBytes,
    },
  };
}

/** No-op dispatches recorded together in each of {@link noopDispatch}'s samples. */
const NOOP_BATCH = 16;

/** Median GPU time of a one-workgroup dispatch that writes one word, timed by `mode`, in ms. */
async function noopDispatch(device: Device, mode: ProfileMode): Promise<number> {
  const kernel = NOOP_KERNEL;
  const buffer = device.gpu.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
  const times: number[] = [];
  try {
    for (let i = 0; i < 31; i++) {
      const prof = new DeviceProfiler(mode);
      device.profiler = prof;
      try {
        // Several in one step, as a step's are: in sync mode the excess of the ones timed
        // alone over all of them replayed in one submit is taken off, as it is off a step's.
        for (let d = 0; d < NOOP_BATCH; d++) {
          device.dispatch(kernel, [{ buffer, size: 16 }], null, [1]);
        }
        device.flush();
      } finally {
        device.profiler = null;
      }
      try {
        if (mode === "timestamp") await prof.collect();
        else await prof.replay(device.gpu);
      } finally {
        prof.destroy();
      }
      const stat = prof.kernels.get(kernel.key)!;
      times.push(stat.ns / 1e6 / stat.dispatches);
    }
    await device.sync();
  } finally {
    buffer.destroy();
  }
  return median(times);
}

/** The profile as Markdown tables (the `top` slowest kernels). */
export function formatProfile(p: Profile, top = 15): string {
  const m = p.model, s = p.perStep;
  const f1 = (x: number) => x.toFixed(1), f2 = (x: number) => x.toFixed(2);
  const mib = (bytes: number) => `${f1(bytes / 2 ** 20)} MiB`;
  const sync = p.timing === "sync";
  // timestamp-query times compute passes only: copies and clears have counts, no times
  const untimed = (family: Family) => !sync && family === "transfers";
  const lines = [
    `- ${p.backend}: ${p.adapter}; kernels timed by ${
      !sync
        ? "timestamp-query (one pass per dispatch)"
        : `replaying each dispatch alone with a sync (minus ${
          f2(p.syncOverheadMs ?? 0)
        } ms of empty submit+wait, and ${
          f1(p.syncExcessUs ?? 0)
        } µs each: the excess of the parts timed alone over the step replayed in one submit)`
    }`,
    `- GPT vocab ${m.vocab}, ${counted(m.layers, "layer")}, hidden ${m.hidden}, ` +
    `${counted(m.heads, "head")}, ` +
    `seq ${m.seq}, batch ${m.batch} (${m.params} params); ${
      counted(p.steps, "profiled step")
    }, loss ${f2(p.loss)} (the first measured step's)`,
    `- per step: ${s.dispatches} dispatches (${Math.round(s.bindGroups)} new bind groups), ` +
    `${s.textureCopies} texture copies (${mib(s.textureCopyBytes)}; ${s.keptTextureHits} reads ` +
    `from kept textures, ${s.scratchTextureHits} from scratch textures still holding them), ${
      counted(s.submits, "submit")
    }, ${counted(s.hostSyncs, "host sync")}, ` +
    `${s.bytesRead} bytes read back, ${p.pipelines} pipelines in all`,
    `- memory: buffers ${mib(p.memory.peakBufferBytes)} at most, kept stream textures ` +
    `${mib(p.memory.keptTextureBytes)}, scratch stream textures ` +
    `${mib(p.memory.scratchTextureBytes)}`,
    `- step wall ${f1(s.wallMs)} ms unprofiled (${Math.round(s.tokensPerSec)} tokens/s; ` +
    `${f1(s.cpuMs)} ms of CPU time, all threads); ` +
    (sync
      ? `kernels' and transfers' GPU time ${f1(s.kernelMs)} ms = ${
        f1((100 * s.kernelMs) / s.wallMs)
      }% of the step wall (each replayed alone, less an even share of what the parts took ` +
        `beyond the whole: a small kernel's time is the coarsest); `
      : `kernels' GPU time ${f1(s.kernelMs)} ms = ${
        f1((100 * s.kernelMs) / s.wallMs)
      }% of the step wall (timestamp-query times compute passes: the copies and clears ` +
        `are counted, not timed); `) +
    `${
      f1(s.hostUntilSubmitMs)
    } ms from the step's start to its last submit (host work: building the graph, recording; ` +
    `with several submits the earlier batches run meanwhile); ${
      f1(s.inSubmitMs)
    } ms inside submit calls${
      sync && p.backend === "dawn"
        ? ` (Dawn's GL backend runs the work inside submit: the rest of the wall, ${
          f1(s.wallMs - s.inSubmitMs)
        } ms, is host work the GPU does not overlap)`
        : ""
    }`,
    ...(p.comm
      ? [
        `- collectives (rank ${p.rank} of TP=${p.tp}, each timed after a device sync): ${p.comm.calls} per step, ` +
        `${Math.round(p.comm.bytes)} bytes sent, ${f1(p.comm.ms)} ms in them (${
          f1((100 * p.comm.ms) / p.perStep.profiledWallMs)
        }% of the profiled step's wall)` + (p.comm.waitMs === undefined
          ? ""
          : `: ${f1(p.comm.waitMs)} ms waiting for a slower rank to arrive, ${
            f1(p.comm.exchangeMs!)
          } ms the exchanges themselves (per call, the least time any rank took)`),
      ]
      : []),
    `- a one-workgroup no-op dispatch takes ${f1(p.noopDispatchMs * 1000)} µs of GPU time: ` +
    `× ${s.dispatches} dispatches = ${f1(p.noopDispatchMs * s.dispatches)} ms per step (${
      f1((100 * p.noopDispatchMs * s.dispatches) / s.wallMs)
    }% of the step wall)`,
    "",
    "| family | dispatches/step | GPU ms/step | share |",
    "| --- | ---: | ---: | ---: |",
    ...p.families.map((x) =>
      untimed(x.family)
        ? `| ${x.family} | ${x.dispatches} | untimed | – |`
        : `| ${x.family} | ${x.dispatches} | ${f2(x.ms)} | ${f1(x.share)}% |`
    ),
    "",
    "| kernel | family | dispatches/step | GPU ms/step | µs/dispatch | share |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
    ...p.kernels.slice(0, top).map((k) =>
      untimed(k.family)
        ? `| \`${k.key}\` | ${k.family} | ${k.dispatches} | untimed | – | – |`
        : `| \`${k.key}\` | ${k.family} | ${k.dispatches} | ${f2(k.ms)} | ${
          f1((k.ms * 1000) / k.dispatches)
        } | ${f1(k.share)}% |`
    ),
  ];
  return lines.join("\n");
}

/**
 * Sets each rank's `comm.waitMs` and `comm.exchangeMs` from every rank's
 * profiled call times; leaves them unset where `splitCommWaits` cannot tell.
 */
export function addCommSplit(ps: Profile[]): void {
  splitCommWaits(ps.map((p) => p.comm?.callMs ?? []))?.forEach((split, r) => {
    const comm = ps[r].comm!;
    comm.waitMs = split.waitMs / ps[r].steps;
    comm.exchangeMs = split.exchangeMs / ps[r].steps;
  });
}

/** One line per rank: step time, GPU time and collectives (a TP run). */
export function formatRanks(ps: Profile[]): string {
  const f1 = (x: number) => x.toFixed(1);
  const opt = (x: number | undefined) => (x === undefined ? "–" : f1(x));
  return [
    "| rank | step wall ms | kernels' GPU ms | in collectives ms | of it waiting | of it exchanging | collectives | bytes sent |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...ps.map((p) =>
      `| ${p.rank} | ${f1(p.perStep.wallMs)} | ${f1(p.perStep.kernelMs)} | ${
        f1(p.comm?.ms ?? 0)
      } | ${opt(p.comm?.waitMs)} | ${opt(p.comm?.exchangeMs)} | ${p.comm?.calls ?? 0} | ${
        Math.round(p.comm?.bytes ?? 0)
      } |`
    ),
  ].join("\n");
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, SPECS, USAGE);
  if (typeof f === "number") return f;
  const tp = f["tensor-model-parallel-size"] as number;
  checkModelFlags(f, tp);
  checkStepFlags(f, tp);
  checkRankCount(tp, "--tensor-model-parallel-size");
  // llvmpipe's vector width for this model, as train picks it (rank processes inherit it).
  await preferWideVectors({ hiddenSize: f["hidden-size"] as number });
  if (tp > 1) {
    const ps = await profileRanks(tp, f);
    if (!ps) return 1;
    addCommSplit(ps);
    warnIfDiverged(ps[0]);
    if (f.json) console.log(JSON.stringify(ps));
    else {
      console.log(`## rank 0 of TP=${tp}\n\n${formatProfile(ps[0], f.top as number)}`);
      console.log(`\n## every rank, per step\n\n${formatRanks(ps)}`);
    }
    return 0;
  }
  const device = await Device.create(
    f.backend ? { backend: parseBackend(f.backend as string) } : {},
  );
  try {
    const p = await profileRun(device, f);
    warnIfDiverged(p);
    console.log(f.json ? JSON.stringify(p) : formatProfile(p, f.top as number));
  } finally {
    await device.close();
  }
  return 0;
}

/** Says so on stderr where the profiled model's loss is not finite: its kernels timed NaNs. */
function warnIfDiverged(p: Profile): void {
  if (Number.isFinite(p.loss)) return;
  console.error(
    `warning: the loss is ${p.loss}: the model diverged (its learning rate?), and the times ` +
      "below are of arithmetic on non-finite numbers",
  );
}

/** The tag of the result line a rank process prints (`--launcher procs`). */
export const PROFILE_RESULT_TAG = "PROFILE_RESULT";

/**
 * Profiles the `tp` ranks, one device each: Workers of this process, or with
 * `--launcher procs` one pinned process per rank (cli/pinned_procs.ts). Null
 * when a Worker failed (its error printed).
 */
async function profileRanks(tp: number, f: FlagValues): Promise<Profile[] | null> {
  let launcher: Launcher;
  let timeoutMs: number;
  try {
    launcher = parseLauncher(f.launcher as string | undefined);
    // Ranks tune their matmuls in the warm-up, each at its own pace (minutes at GPT-2's sizes).
    timeoutMs = parseDuration((f["dist-timeout"] as string | undefined) ?? PROFILE_DIST_TIMEOUT);
  } catch (e) {
    if (e instanceof DistConfigError) throw new UsageError(`profile: ${e.message}`);
    throw e;
  }
  if (launcher === "procs") {
    return await runPinnedProcs<Profile>({
      ranks: tp,
      worker: PROFILE_WORKER,
      args: [JSON.stringify(f), "--print"],
      tag: PROFILE_RESULT_TAG,
      distTimeout: `${timeoutMs}ms`,
    });
  }
  // Several devices in one process: Deno's WebGPU unless named (as `deno task train` does).
  const flags = { ...f, backend: f.backend ?? defaultBackendFor(tp) };
  const res = await runWorkers(localDistConfig(tp, timeoutMs), PROFILE_WORKER, [
    JSON.stringify(flags),
  ]);
  if (!res.ok) {
    for (const r of res.ranks) if (!r.ok) console.error(`rank ${r.rank}: ${r.error}`);
    return null;
  }
  return res.ranks.map((r) => r.result as Profile);
}

const PROFILE_WORKER = new URL("./profile_worker.ts", import.meta.url);

/** Entry point: returns the exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

if (import.meta.main) Deno.exit(await main(Deno.args));
