/**
 * The trainer hooks of hybrid TP × DP training: gradients averaged over the
 * data-parallel group in buckets (models/parallel/overlap.ts; one flat
 * all-reduce by default, optionally overlapped with backward), the gradient norm summed over the
 * tensor-parallel group with replicated parameters counted once, and the logged
 * loss averaged over data-parallel replicas.
 * @module
 */

import type { ProcessGroup } from "../../collectives/group.ts";
import type { Device } from "../../core/device.ts";
import type { ParamInfo } from "../../core/nn.ts";
import { clone } from "../../core/ops/mod.ts";
import type { Tensor } from "../../core/tensor.ts";
import type { HalfFormat } from "../../core/half.ts";
import { allReduceHalfAvg } from "../../collectives/half_sum.ts";
import type { ParallelHooks } from "../trainer.ts";
import { halfCodec } from "./half_codec.ts";
import { averageOver, type DpGroup, GradBuckets } from "./overlap.ts";

/** The groups of one rank. */
export interface HybridGroups {
  /** Tensor-parallel group. */
  tpGroup: Pick<ProcessGroup, "size" | "rank" | "allReduce">;
  /** Data-parallel group (`allGather` for 16-bit gradients on the wire). */
  dpGroup: DpGroup;
}

/** Time spent inside collectives, for the scaling benchmark. */
export interface CommTimer {
  /** Milliseconds spent in communication so far. */
  ms: number;
  /**
   * When present, each timed collective's milliseconds, in call order: every
   * rank of a group issues the same collectives in the same order, so entry `i`
   * is the same call on each (see {@link splitCommWaits}).
   */
  calls?: number[];
}

/** A rank's time in collectives split by {@link splitCommWaits}. */
export interface CommSplit {
  /** Milliseconds this rank waited for a slower member to arrive. */
  waitMs: number;
  /** Milliseconds of the exchanges themselves: per call, the least any member took. */
  exchangeMs: number;
}

/**
 * Splits each member's time in the same collectives (`calls[r][i]`: member
 * `r`'s milliseconds in its `i`-th call, timed from after a device sync) into
 * waiting and exchange, without comparing clocks: the member that arrives last
 * at a call waits for nobody, so the least time any member took is the
 * exchange itself, and the rest of each member's time is spent waiting for the
 * slowest one to arrive. Null unless there are two members or more and each
 * timed the same number of calls, at least one (else index `i` would not name
 * the same call on each).
 */
export function splitCommWaits(calls: readonly (readonly number[])[]): CommSplit[] | null {
  const n = calls[0]?.length ?? 0;
  if (calls.length < 2 || n === 0 || calls.some((c) => c.length !== n)) return null;
  const out = calls.map(() => ({ waitMs: 0, exchangeMs: 0 }));
  for (let i = 0; i < n; i++) {
    const least = Math.min(...calls.map((c) => c[i]));
    calls.forEach((c, r) => {
      out[r].exchangeMs += least;
      out[r].waitMs += c[i] - least;
    });
  }
  return out;
}

/** How data-parallel gradients are averaged (see models/parallel/overlap.ts). */
export interface GradReduceOptions {
  /**
   * Elements per all-reduce bucket (Megatron's `--ddp-bucket-size`; default
   * {@link DEFAULT_DDP_BUCKET_SIZE}: one bucket for every model here, the
   * former single flat all-reduce).
   */
  bucketSize?: number;
  /**
   * Start each bucket's all-reduce during the last micro-batch's backward, as
   * soon as its gradients are final (Megatron's `--overlap-grad-reduce`).
   */
  overlap?: boolean;
}

/** Megatron's default bucket size (40M elements). */
export const DEFAULT_DDP_BUCKET_SIZE = 40_000_000;

/** Trainer hooks for `groups` (all no-ops for groups of one). */
export function hybridHooks(
  device: Device,
  groups: HybridGroups,
  timer?: CommTimer,
  /** Mixed precision: average the DP gradients with 16-bit values on the wire. */
  dpWire?: HalfFormat,
  reduce: GradReduceOptions = {},
): ParallelHooks {
  const timed = async <T>(f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      if (timer) timer.ms += performance.now() - t0;
    }
  };
  const dp = groups.dpGroup;
  const buckets = new GradBuckets(
    device,
    dp,
    reduce.bucketSize ?? DEFAULT_DDP_BUCKET_SIZE,
    averageOver(
      dp,
      dpWire
        ? { format: dpWire, run: (f, fmt) => allReduceHalfAvg(dp as never, f, halfCodec(fmt)) }
        : undefined,
    ),
  );
  return {
    ranks: groups.tpGroup.size * dp.size,
    async allReduceGradients(params: readonly Tensor[], prepare?: (g: Tensor) => void) {
      if (dp.size === 1) return;
      await timed(() => buckets.reduceAll(params, prepare));
    },
    beginGradReduce: reduce.overlap && dp.size > 1
      ? (params: readonly Tensor[], prepare?: (g: Tensor) => void) => {
        const r = buckets.begin(params, prepare);
        // Only the wait after backward is exposed communication.
        return { onLeafGrad: r.onLeafGrad, finish: () => timed(r.finish), settle: r.settle };
      }
      : undefined,
    async reduceNormSquared(sq: Tensor) {
      if (groups.tpGroup.size > 1) await timed(() => groups.tpGroup.allReduce(sq, "sum"));
      return sq;
    },
    async averageLoss(loss: Tensor) {
      if (dp.size === 1) return loss;
      const c = clone(loss);
      await timed(() => dp.allReduce(c, "avg"));
      return c;
    },
  };
}

/**
 * Whether a parameter counts in this rank's share of the gradient norm:
 * sharded ones always, replicated ones only on TP rank 0 (they are identical
 * on every rank and must be counted once).
 */
export function countsInNorm(tpRank: number): (p: ParamInfo) => boolean {
  return (p) => p.partitionDim !== null || tpRank === 0;
}

/**
 * Wraps a group so every collective's time is added to `timer`. The device is
 * synchronised first (untimed), so the time is communication, not queued compute.
 */
export function timedGroup<
  G extends Pick<ProcessGroup, "size" | "rank" | "allReduce" | "allGather">,
>(
  group: G,
  timer: CommTimer,
  device: Device,
): G {
  const time = async <T>(f: () => Promise<T>): Promise<T> => {
    await device.sync();
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      const ms = performance.now() - t0;
      timer.ms += ms;
      timer.calls?.push(ms);
    }
  };
  return {
    ...group,
    size: group.size,
    rank: group.rank,
    // Overlapped collectives (models/parallel/overlap.ts) use the group itself: a
    // sync before each would serialise them; their exposed wait is timed by the engine.
    untimed: group,
    allReduce: (x: Parameters<G["allReduce"]>[0], op?: Parameters<G["allReduce"]>[1]) =>
      time(() => group.allReduce(x, op)),
    allGather: (x: Parameters<G["allGather"]>[0]) => time(() => group.allGather(x)),
    ...forwardHalf(group, (run) => (x, codec, op) => time(() => run(x, codec, op))),
  } as G;
}

type AllReduceHalf = ProcessGroup["allReduceHalf"];

/**
 * `{ allReduceHalf: wrap(group's) }` where `group` has one (a class method,
 * which spreading the group does not copy), else nothing.
 */
function forwardHalf(
  group: object,
  wrap: (run: AllReduceHalf) => AllReduceHalf,
): { allReduceHalf?: AllReduceHalf } {
  const own = (group as Partial<Pick<ProcessGroup, "allReduceHalf">>).allReduceHalf;
  return own ? { allReduceHalf: wrap(own.bind(group)) } : {};
}

/**
 * Bytes one rank sends through a group's collectives, as a ring would move
 * them: an all-reduce of B bytes sends 2(p−1)/p·B, an all-gather of a B-byte
 * part (p−1)·B (at p = 2 both are B). For measurements (`bench/mixed_precision.ts --tp 2`,
 * `--dp 2`).
 */
export interface CommBytes {
  /** Bytes sent by all-reduces. */
  allReduce: number;
  /** Bytes sent by all-gathers (mixed precision's 16-bit f/g all-reduces at two ranks). */
  allGather: number;
  /**
   * Bytes sent by 16-bit all-reduces (`allReduceHalf`, as a ring moves them:
   * mixed precision's f/g and data-parallel wire beyond two ranks).
   */
  half: number;
  /** Collectives counted. */
  calls: number;
}

/** A {@link CommBytes} with nothing counted yet. */
export function noCommBytes(): CommBytes {
  return { allReduce: 0, allGather: 0, half: 0, calls: 0 };
}

/** The bytes `c` counts, all collectives together. */
export function bytesSent(c: CommBytes): number {
  return c.allReduce + c.allGather + c.half;
}

/**
 * Wraps a group so the bytes each collective sends from this rank are added to
 * `counter` (a data-parallel group's `alloc`, a method, is passed through).
 */
export function countedGroup<
  G extends Pick<ProcessGroup, "size" | "rank" | "allReduce" | "allGather">,
>(group: G, counter: CommBytes): G {
  const p = group.size;
  // a host array's bytes, or a GPU tensor's (read as f32)
  const bytesOf = (x: unknown) =>
    ArrayBuffer.isView(x) ? x.byteLength : 4 * (x as { size: number }).size;
  const alloc = (group as Partial<Pick<ProcessGroup, "alloc">>).alloc;
  return {
    ...group,
    ...(alloc ? { alloc: (n: number) => alloc.call(group, n) } : {}),
    size: group.size,
    rank: group.rank,
    allReduce: (x: Parameters<G["allReduce"]>[0], op?: Parameters<G["allReduce"]>[1]) => {
      counter.calls++;
      counter.allReduce += (2 * (p - 1) / p) * bytesOf(x);
      return group.allReduce(x, op);
    },
    allGather: (x: Parameters<G["allGather"]>[0]) => {
      counter.calls++;
      counter.allGather += (p - 1) * bytesOf(x);
      return group.allGather(x);
    },
    ...forwardHalf(group, (run) => (x, codec, op) => {
      counter.calls++;
      counter.half += (2 * (p - 1) / p) * x.byteLength;
      return run(x, codec, op);
    }),
  } as G;
}
