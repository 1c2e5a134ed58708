/**
 * Flat buckets of parameters for the optimizer: many small tensors laid end to
 * end so that one dispatch updates them all (as PyTorch's `_foreach` and
 * Megatron's contiguous grad buffers do). A bucket's weights and gradients are
 * copied into flat scratch tensors, updated there, and the weights copied back;
 * its AdamW moments live flat for good.
 * @module
 */

import type { Device } from "./device.ts";
import type { ParamInfo } from "./nn.ts";
import { Tensor } from "./tensor.ts";
import { windowElements } from "./windows.ts";

/**
 * Default most elements in one bucket (16 MiB of f32): the scratch copies a
 * step makes are at most two of these at a time, and one bucket stays within
 * one storage binding and one stream texture on every adapter.
 */
export const BUCKET_ELEMENTS = 1 << 22;

/**
 * Largest parameter (elements) put in a bucket (1 MiB of f32). A bucket saves
 * dispatches, which matter for small tensors only; a large one would pay the
 * gather and scatter copies for nothing (GPT-2 small's layer weights at TP=2:
 * AdamW and the norm 7% slower bucketed than tensor by tensor).
 */
export const BUCKET_MEMBER_ELEMENTS = 1 << 18;

/** One parameter's place in a bucket. */
export interface BucketMember {
  /** The parameter. */
  tensor: Tensor;
  /** First element in the bucket: a multiple of 64 (a 256-byte binding offset). */
  offset: number;
}

/** Parameters updated as one flat vector. */
export interface ParamBucket {
  /** In bucket order: those with weight decay first. */
  members: BucketMember[];
  /** Elements, padding between members included (a multiple of 4). */
  size: number;
  /** Members below this element take weight decay, the rest none. */
  decayEnd: number;
  /** Whether gaps lie between members (their gradients are then zeroed first). */
  padded: boolean;
}

/** Buckets, and the parameters left to per-tensor updates. */
export interface BucketPlan {
  /** The buckets, each of more than one parameter. */
  buckets: ParamBucket[];
  /** Parameters updated one tensor at a time. */
  single: ParamInfo[];
}

/** Member offsets are multiples of this many elements (256 bytes). */
const ALIGN = 64;

/**
 * Packs `params` into buckets of at most `capacity` elements (capped to one
 * binding of `device`): tensors whose sizes divide by 4 and that fit (at most
 * {@link BUCKET_MEMBER_ELEMENTS} each), those with decay first, each group in
 * the given order. The rest, and buckets that would hold a single tensor, are
 * left to per-tensor updates.
 */
export function planBuckets(
  device: Device,
  params: readonly ParamInfo[],
  capacity = BUCKET_ELEMENTS,
): BucketPlan {
  const cap = Math.min(capacity, windowElements(device, ALIGN));
  const most = Math.min(cap, BUCKET_MEMBER_ELEMENTS);
  const fits = (p: ParamInfo) => p.tensor.size % 4 === 0 && p.tensor.size <= most;
  const ordered = [
    ...params.filter((p) => fits(p) && p.decay),
    ...params.filter((p) => fits(p) && !p.decay),
  ];
  const single = params.filter((p) => !fits(p));
  const buckets: ParamBucket[] = [];
  let cur: { infos: ParamInfo[]; members: BucketMember[]; end: number } | null = null;
  const close = () => {
    if (!cur) return;
    const { infos, members, end } = cur;
    if (members.length === 1) single.push(infos[0]);
    else {
      const firstPlain = infos.findIndex((p) => !p.decay);
      const decayEnd = firstPlain < 0 ? end : members[firstPlain].offset;
      const padded = members.some((m, i) =>
        m.offset + m.tensor.size !== (members[i + 1]?.offset ?? end)
      );
      buckets.push({ members, size: end, decayEnd, padded });
    }
    cur = null;
  };
  for (const p of ordered) {
    const n = p.tensor.size;
    if (cur && Math.ceil(cur.end / ALIGN) * ALIGN + n > cap) close();
    const offset = cur ? Math.ceil(cur.end / ALIGN) * ALIGN : 0;
    cur ??= { infos: [], members: [], end: 0 };
    cur.infos.push(p);
    cur.members.push({ tensor: p.tensor, offset });
    cur.end = offset + n;
  }
  close();
  return { buckets, single };
}

/** Whether every member of `b` has a gradient now. */
export function allHaveGrads(b: ParamBucket): boolean {
  return b.members.every((m) => m.tensor.grad !== null);
}

/**
 * Copies the members' gradients end to end into `into` (`b.size` elements), in
 * order with the dispatches around it, and returns it. The copies never write
 * the gaps between members: for a bucket with gaps (`b.padded`) they must be
 * zero in `into` already (a buffer kept from step to step is zeroed once).
 * Every member must have a gradient.
 */
export function gatherGrads(device: Device, b: ParamBucket, into: Tensor): Tensor {
  if (into.size !== b.size) {
    throw new Error(`gatherGrads: a bucket of ${b.size} elements into a tensor of ${into.size}`);
  }
  for (const m of b.members) {
    device.copy(m.tensor.grad!.buffer, 0, into.buffer, 4 * m.offset, 4 * m.tensor.size);
  }
  return into;
}

/**
 * The gradients of `members` (some of one bucket's, every one with a gradient)
 * packed end to end in a new flat tensor, without the bucket's gaps: what a
 * norm over part of a bucket reduces in one pass.
 */
export function gatherSomeGrads(device: Device, members: readonly BucketMember[]): Tensor {
  const flat = Tensor.empty(device, [members.reduce((n, m) => n + m.tensor.size, 0)]);
  let at = 0;
  for (const m of members) {
    device.copy(m.tensor.grad!.buffer, 0, flat.buffer, 4 * at, 4 * m.tensor.size);
    at += m.tensor.size;
  }
  return flat;
}

/** The members' weights end to end in a new flat tensor (gaps undefined). */
export function gatherWeights(device: Device, b: ParamBucket): Tensor {
  const flat = Tensor.empty(device, [b.size]);
  for (const m of b.members) {
    device.copy(m.tensor.buffer, 0, flat.buffer, 4 * m.offset, 4 * m.tensor.size);
  }
  return flat;
}

/** Copies each member's weights back from `flat` (from {@link gatherWeights}). */
export function scatterWeights(device: Device, b: ParamBucket, flat: Tensor): void {
  for (const m of b.members) {
    device.copy(flat.buffer, 4 * m.offset, m.tensor.buffer, 0, 4 * m.tensor.size);
  }
}
