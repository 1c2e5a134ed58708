/**
 * Communication overlapped with backward compute (issue #13), bit-identical to
 * the plain path:
 *
 * - **Tensor parallelism** ({@link overlappedColumnLinear}, `--overlap-tp-comm`):
 *   the column-parallel linear and its `f` become one autograd node whose
 *   backward computes the input gradient dX first, *starts* `f`'s all-reduce of
 *   it (the clone and the copy to a staging buffer are recorded and submitted,
 *   the readback is in flight; the host exchange and the upload follow when it
 *   lands), then records and submits the weight and bias gradients, and hands
 *   the engine a pending dX (core/autograd.ts awaits it only when dX is
 *   consumed). On one queue the readback of dX resolves as soon as the
 *   submission holding it is done, so the exchange runs on the host while the
 *   device computes dW. The gradients are computed by the matmul op's own
 *   backward (called twice, once per operand), so the numbers are those of
 *   `linear(f(x), W, b)`.
 * - **Data parallelism** ({@link GradBuckets}, `--overlap-grad-reduce`, after
 *   Megatron's option of that name): parameters are grouped in buckets of about
 *   `--ddp-bucket-size` elements, in reverse order of registration (the order
 *   backward finishes them). During the last micro-batch's backward the engine
 *   reports each leaf whose gradient is final; once every parameter of a bucket
 *   was reported, the bucket's readback starts and its all-reduce follows on the
 *   host while backward goes on; the optimizer waits for all. Without overlap the
 *   same buckets are all-reduced after backward, so both paths sum the same
 *   vectors the same way.
 *
 * Collectives issued here run their host exchanges in issue order per device
 * ({@link commQueue}): every rank issues them in the same order, so ranks that
 * block their thread while waiting (shared-memory groups) cannot wait on each
 * other in a cycle when a tensor- and a data-parallel exchange are both in flight.
 * @module
 */

import type { ProcessGroup } from "../../collectives/group.ts";
import { record } from "../../core/autograd.ts";
import type { Device } from "../../core/device.ts";
import * as ops from "../../core/ops/mod.ts";
import { denseGrad, type PendingGrad, type Tensor } from "../../core/tensor.ts";
import type { HalfFormat } from "../../core/half.ts";
import { copyToRegion, type TpGroup } from "./mappings.ts";
import { commQueue } from "./comm_queue.ts";

export { CommQueue, commQueue } from "./comm_queue.ts";

/**
 * `linear(f(x), weight, bias)` (`f`: identity forward, all-reduce of the input
 * gradient over `group` backward) whose backward overlaps `f`'s all-reduce with
 * the weight-gradient kernels (see the module doc). Same values as the
 * unfused composition, which it falls back to for a group of one or without
 * gradients.
 */
export function overlappedColumnLinear(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  group: TpGroup,
): Tensor {
  return overlappedColumnParallel(
    x,
    weight,
    bias,
    group,
    (a, w, b) => ops.linear(a, w, b),
    (y) => y,
  );
}

/**
 * `fn(f(x), weight, bias)` for a linear-like `fn` (`ops.linear`, `ops.linearGelu`)
 * whose result's `output` carries one autograd node over exactly `(x, weight,
 * bias)` that differentiates only the operands flagged `requiresGrad`: its
 * backward is run twice, input gradient first (whose all-reduce then starts),
 * weight and bias gradients second, so the values are `fn`'s own.
 */
export function overlappedColumnParallel<T>(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  group: TpGroup,
  fn: (x: Tensor, weight: Tensor, bias: Tensor | undefined) => T,
  output: (r: T) => Tensor,
): T {
  const device = x.device;
  const needsGrad = x.requiresGrad || weight.requiresGrad || !!bias?.requiresGrad;
  if (group.size === 1 || !device.gradEnabled || !needsGrad) {
    return fn(copyToRegion(x, group), weight, bias);
  }
  // `fn` records its node over views of our own, whose requiresGrad flags select
  // which operands its backward differentiates on each call. The weight's 16-bit
  // copy (mixed precision) is lent to its view only while `fn` runs (a view's
  // dispose would free it).
  const xd = x.view(), wd = weight.view(), bd = bias?.view();
  xd.requiresGrad = true;
  wd.halfCopy = weight.halfCopy;
  let r: T;
  try {
    r = fn(xd, wd, bd);
  } finally {
    wd.halfCopy = null;
  }
  const y = output(r);
  const inner = y.node;
  if (!inner || inner.inputs[0] !== xd || inner.inputs[1] !== wd) {
    throw new Error(
      "overlappedColumnParallel: the op did not record one node over (x, weight, bias)",
    );
  }
  const inputs = bias ? [x, weight, bias] : [x, weight];
  record(y, "column-parallel linear (overlapped f)", inputs, async (g) => {
    let dx: PendingGrad | null = null;
    if (x.requiresGrad) {
      xd.requiresGrad = true;
      wd.requiresGrad = false;
      if (bd) bd.requiresGrad = false;
      const [gx] = await inner.backward(g);
      if (gx instanceof Promise) {
        throw new Error("the linear's backward returned a pending gradient");
      }
      const dense = gx && denseGrad(gx);
      dx = dense ? startAllReduce(dense, group) : null;
      dense?.dispose();
    }
    xd.requiresGrad = false;
    wd.requiresGrad = weight.requiresGrad;
    if (bd) bd.requiresGrad = bias!.requiresGrad;
    const grads = weight.requiresGrad || bias?.requiresGrad
      ? await inner.backward(g)
      : [null, null, null];
    device.flush(); // dW, db start now; the engine awaits dx when it needs it
    return [dx, grads[1], bias ? grads[2] : null].slice(0, inputs.length);
  });
  return r;
}

/**
 * Starts the sum all-reduce of `x` over `group` into a fresh tensor (`x` may be
 * freed once this returns): the clone, the readback's copy and submit happen
 * now (when no earlier overlapped collective of this device is still running),
 * the host exchange and the upload when the readback lands.
 */
export function startAllReduce(x: Tensor, timedOrPlain: TpGroup): Promise<Tensor> {
  // A hooks.ts `timedGroup` syncs the device before each collective, which would
  // serialise the overlap: use the group it wraps (the engine times the exposed wait).
  const group = (timedOrPlain as { untimed?: TpGroup }).untimed ?? timedOrPlain;
  const out = ops.clone(x);
  if (group.size === 1) return Promise.resolve(out);
  // Not `allReduced`: inside the queue it would wait for itself.
  return commQueue(x.device).run(async () => {
    await group.allReduce(out, "sum");
    return out;
  });
}

/** The data-parallel group as the bucketed all-reduce uses it. */
export type DpGroup = Pick<ProcessGroup, "size" | "rank" | "allReduce" | "alloc"> & {
  allGather?: ProcessGroup["allGather"];
  allReduceHalf?: ProcessGroup["allReduceHalf"];
};

/** How a bucket's host vector is averaged over the group (fp32 or a 16-bit wire). */
export type AverageFn = (flat: Float32Array) => Promise<void>;

/**
 * Parameters grouped in buckets of at least `bucketSize` elements (the last
 * one may be smaller), cut walking the parameters from the last registered to
 * the first (about the order their gradients become final in backward) and
 * listed in that order; each bucket lists its parameters in registration order. With `bucketSize` ≥ the
 * total there is one bucket, exactly the former flat all-reduce.
 */
export function bucketLayout(params: readonly Tensor[], bucketSize: number): Tensor[][] {
  const buckets: Tensor[][] = [];
  let cur: Tensor[] = [];
  let n = 0;
  for (let i = params.length - 1; i >= 0; i--) {
    cur.push(params[i]);
    n += params[i].size;
    if (n >= bucketSize) {
      buckets.push(cur.reverse());
      cur = [];
      n = 0;
    }
  }
  if (cur.length) buckets.push(cur.reverse());
  return buckets;
}

/**
 * Data-parallel gradient averaging in buckets: {@link GradBuckets.reduceAll}
 * after backward, or {@link GradBuckets.begin} before the last backward for
 * the overlapped version (same buckets, same sums).
 */
export class GradBuckets {
  #layout: Tensor[][] | null = null;
  #key: readonly Tensor[] | null = null;
  #flats = new Map<number, Float32Array>();

  /**
   * `average` averages a host vector in place over `group` (the group's "avg"
   * all-reduce, or a 16-bit wire).
   */
  constructor(
    readonly device: Device,
    readonly group: DpGroup,
    readonly bucketSize: number,
    readonly average: AverageFn,
  ) {
    if (!(bucketSize > 0)) throw new Error(`bucket size must be positive, got ${bucketSize}`);
  }

  #buckets(params: readonly Tensor[]): Tensor[][] {
    if (this.#key !== params || !this.#layout) {
      this.#layout = bucketLayout(params, this.bucketSize);
      this.#key = params;
    }
    return this.#layout;
  }

  /** Buckets of `params` (for tests and reports). */
  buckets(params: readonly Tensor[]): readonly (readonly Tensor[])[] {
    return this.#buckets(params);
  }

  /**
   * Starts the all-reduce of bucket `i`: `prepare` each gradient (mixed
   * precision's rounding), start the readback now, exchange in issue order.
   */
  #start(i: number, bucket: readonly Tensor[], prepare?: (g: Tensor) => void): Promise<void> {
    const withGrad = bucket.filter((p) => p.grad);
    if (withGrad.length === 0) return Promise.resolve();
    if (prepare) { for (const p of withGrad) prepare(p.grad!); }
    const total = withGrad.reduce((s, p) => s + p.size, 0);
    let flat = this.#flats.get(i);
    if (!flat || flat.length !== total) this.#flats.set(i, flat = this.group.alloc(total));
    const f = flat;
    const bytes = this.device.readMany(withGrad.map((p) => p.grad!.binding));
    bytes.catch(() => {});
    return commQueue(this.device).run(async () => {
      const bufs = await bytes;
      let at = 0;
      bufs.forEach((b, k) => {
        f.set(new Float32Array(b), at);
        at += withGrad[k].size;
      });
      await this.average(f);
      at = 0;
      for (const p of withGrad) {
        p.grad!.write(f.subarray(at, at + p.size));
        at += p.size;
      }
    });
  }

  /** Averages every gradient of `params` over the group, bucket by bucket (after backward). */
  async reduceAll(params: readonly Tensor[], prepare?: (g: Tensor) => void): Promise<void> {
    const buckets = this.#buckets(params);
    for (let i = 0; i < buckets.length; i++) await this.#start(i, buckets[i], prepare);
  }

  /**
   * The overlapped version: call before the last micro-batch's backward, pass
   * `onLeafGrad` to it (core/autograd.ts's `BackwardOptions`), then await
   * `finish()` before using the gradients. A bucket starts once every one of its
   * parameters was reported; `finish` starts the rest (parameters this backward
   * did not reach) and waits for all.
   */
  begin(params: readonly Tensor[], prepare?: (g: Tensor) => void): GradReduction {
    const buckets = this.#buckets(params);
    const where = new Map<Tensor, number>();
    const left = buckets.map((b, i) => {
      for (const p of b) where.set(p, i);
      return b.length;
    });
    const started: Promise<void>[] = [];
    const done = new Set<number>();
    const start = (i: number) => {
      done.add(i);
      const p = this.#start(i, buckets[i], prepare);
      p.catch(() => {});
      started.push(p);
    };
    return {
      onLeafGrad: (leaf: Tensor) => {
        const i = where.get(leaf);
        if (i === undefined || done.has(i)) return;
        if (--left[i] === 0) start(i);
      },
      finish: async () => {
        for (let i = 0; i < buckets.length; i++) if (!done.has(i)) start(i);
        this.device.flush();
        await Promise.all(started);
      },
      settle: async () => {
        await Promise.allSettled(started);
      },
    };
  }
}

/** An overlapped gradient reduction in progress (see {@link GradBuckets.begin}). */
export interface GradReduction {
  /** Reports a leaf whose gradient is final for this step (`BackwardOptions.onLeafGrad`). */
  onLeafGrad(leaf: Tensor): void;
  /** Starts what is left and waits until every bucket is averaged and written back. */
  finish(): Promise<void>;
  /**
   * Waits for the buckets already started to end, failed or not, and starts no
   * other: what a step that fails before `finish` awaits, so that no bucket
   * writes a gradient after it.
   */
  settle(): Promise<void>;
}

/** An {@link AverageFn} for `group`: its "avg" all-reduce, or 16-bit values on the wire. */
export function averageOver(
  group: DpGroup,
  halfAvg?: { format: HalfFormat; run: (flat: Float32Array, format: HalfFormat) => Promise<void> },
): AverageFn {
  if (halfAvg && group.allGather) return (flat) => halfAvg.run(flat, halfAvg.format);
  return (flat) => group.allReduce(flat, "avg");
}
