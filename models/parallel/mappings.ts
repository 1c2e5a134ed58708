/**
 * The conjugate communication operators of intra-layer model parallelism, as
 * autograd ops over a tensor-parallel group:
 * - `f` ({@link copyToRegion}): identity forward, all-reduce of the gradient backward;
 * - `g` ({@link reduceFromRegion}): all-reduce forward, identity backward;
 * plus {@link scatterLastDim} / {@link gatherLastDim} for splitting and joining
 * the last dimension across ranks.
 * @module
 */

import type { ProcessGroup } from "../../collectives/group.ts";
import { record } from "../../core/autograd.ts";
import {
  clone,
  concat,
  type HalfFormat,
  packHalf,
  slice,
  sumPackedInto,
} from "../../core/ops/mod.ts";
import { Tensor } from "../../core/tensor.ts";
import { commQueue } from "./comm_queue.ts";
import { halfCodec } from "./half_codec.ts";

/**
 * The collectives a tensor-parallel group must offer (a `ProcessGroup` does);
 * `allReduceHalf`, where offered, serves mixed precision's f/g beyond two ranks.
 */
export type TpGroup =
  & Pick<ProcessGroup, "size" | "rank" | "allReduce" | "allGather">
  & Partial<Pick<ProcessGroup, "allReduceHalf">>;

/** Bytes a {@link halfWireGroup} sent, per all-reduce and in total (for measurements). */
export interface WireCounter {
  /** All-reduces done. */
  calls: number;
  /** Bytes this rank contributed to the wire (its packed vectors). */
  bytes: number;
}

/**
 * `group` with sum all-reduces of GPU tensors done with 16-bit values on the
 * wire (mixed precision's tensor-parallel f/g): each rank packs its tensor to
 * `format` (half the bytes) and
 * - at two ranks (or where the group has no `allReduceHalf`) the packed vectors
 *   are all-gathered and every rank adds them in fp32, in rank order: the sum
 *   stays fp32, and an all-gather of two moves what a ring all-reduce does;
 * - beyond two ranks they are all-reduced as 16-bit values (`allReduceHalf`:
 *   fp32 additions, 16-bit messages, `2(p−1)/p` of the packed bytes per rank,
 *   half an fp32 ring's at any p, where an all-gather would send `p−1` times
 *   them), and the sum, rounded to `format`, is unpacked.
 * Either way every rank holds the same bits. Other reductions (max, host
 * arrays) pass through in fp32.
 */
export function halfWireGroup(group: TpGroup, format: HalfFormat, counter?: WireCounter): TpGroup {
  const codec = halfCodec(format);
  return {
    size: group.size,
    rank: group.rank,
    allGather: group.allGather.bind(group) as TpGroup["allGather"],
    allReduce: async (input, op = "sum") => {
      // A sum into another tensor (see allReduced) is summed here in place of its target.
      const x = input instanceof ReduceInto && op === "sum" ? input.copied() : input;
      if (!(x instanceof Tensor) || op !== "sum" || group.size === 1) {
        return await group.allReduce(x, op);
      }
      const device = x.device;
      const words = packHalf(x, format);
      let mine: Int32Array;
      try {
        mine = new Int32Array(await device.read(words.buffer, words.byteLength));
      } finally {
        words.dispose();
      }
      if (counter) {
        counter.calls++;
        counter.bytes += mine.byteLength;
      }
      const ring = group.size > 2 && group.allReduceHalf;
      if (ring) await ring.call(group, new Uint16Array(mine.buffer), codec, "sum");
      const all = ring ? mine : await group.allGather(mine);
      const parts = Tensor.fromArray(device, all, [all.length], "i32");
      try {
        sumPackedInto(x, parts, ring ? 1 : group.size, format);
      } finally {
        parts.dispose();
      }
    },
  };
}

/**
 * An all-reduce's input and output as two tensors of one shape, for a
 * collective that reads the GPU tensor back and writes the result again (a
 * `ProcessGroup` does): it reads `from` and writes the result into `to`, so
 * `from` is left as it was without a copy made first. A group that must
 * reduce a tensor in place (the 16-bit wire) copies `from` into `to` and
 * reduces that ({@link ReduceInto.copied}).
 */
export class ReduceInto {
  /** Reads `from`, writes `to` (both f32, the same size). */
  constructor(readonly from: Tensor, readonly to: Tensor) {
    if (from.size !== to.size || from.dtype !== "f32" || to.dtype !== "f32") {
      throw new Error(`ReduceInto: ${from.size} ${from.dtype} into ${to.size} ${to.dtype}`);
    }
  }

  /** Elements. */
  get size(): number {
    return this.from.size;
  }

  /** `from`'s values. */
  read(): Promise<Float32Array> {
    return this.from.read();
  }

  /** `from`'s values into `dst`. */
  readInto(dst: Float32Array): Promise<void> {
    return this.from.readInto(dst);
  }

  /** Writes `data` into `to`. */
  write(data: Float32Array): void {
    this.to.write(data);
  }

  /** `to`, holding a copy of `from` (recorded on the device), to reduce in place. */
  copied(): Tensor {
    this.from.device.copy(this.from.buffer, 0, this.to.buffer, 0, this.from.byteLength);
    return this.to;
  }
}

/**
 * All-reduce (`op`: sum by default, or max) of a GPU tensor into a fresh tensor, leaving `x` untouched
 * ({@link ReduceInto}: read from `x`, written to the new tensor). While
 * overlapped collectives of this device are in flight it waits its turn in the
 * device's queue (models/parallel/comm_queue.ts), so every rank runs its
 * exchanges in the same order.
 */
export async function allReduced(
  x: Tensor,
  group: TpGroup,
  op: "sum" | "max" = "sum",
): Promise<Tensor> {
  if (group.size === 1) return clone(x);
  const inPlace = x.dtype !== "f32";
  const out = inPlace ? clone(x) : Tensor.empty(x.device, x.shape);
  const arg = inPlace ? out : new ReduceInto(x, out);
  const q = commQueue(x.device);
  if (q.inFlight > 0) await q.run(() => group.allReduce(arg, op));
  else await group.allReduce(arg, op);
  return out;
}

/** `f`: identity forward; backward sums the input gradients over the group. */
export function copyToRegion(x: Tensor, group: TpGroup): Tensor {
  if (group.size === 1) return x;
  return record(x.view(), "f(copyToRegion)", [x], async (g) => [await allReduced(g, group)]);
}

/** `g`: sums partial results over the group forward; gradient passes through. */
export async function reduceFromRegion(x: Tensor, group: TpGroup): Promise<Tensor> {
  if (group.size === 1) return x;
  const out = await allReduced(x, group);
  return record(out, "g(reduceFromRegion)", [x], (g) => [g.view()]);
}

/** Keeps this rank's slice of the last dimension; backward gathers the gradient. */
export function scatterLastDim(x: Tensor, group: TpGroup): Tensor {
  if (group.size === 1) return x;
  const n = x.shape[x.rank - 1];
  if (n % group.size !== 0) {
    throw new Error(`scatterLastDim: last dimension ${n} is not divisible by ${group.size} ranks`);
  }
  const part = n / group.size;
  const device = x.device;
  const out = device.noGrad(() => slice(x, -1, group.rank * part, (group.rank + 1) * part));
  return record(out, "scatterLastDim", [x], async (g) => [await gatherLastDim(g, group)]);
}

/**
 * Concatenates every rank's `x` along the last dimension (in rank order);
 * backward keeps this rank's slice of the gradient.
 */
export async function gatherLastDim(x: Tensor, group: TpGroup): Promise<Tensor> {
  if (group.size === 1) return x;
  const parts = await group.allGather(await x.read());
  const per = x.size;
  const device = x.device;
  const pieces: Tensor[] = [];
  for (let r = 0; r < group.size; r++) {
    pieces.push(Tensor.fromArray(device, parts.subarray(r * per, (r + 1) * per), x.shape));
  }
  const joined = device.noGrad(() => concat(pieces, -1));
  for (const p of pieces) p.dispose();
  const n = x.shape[x.rank - 1];
  return record(joined, "gatherLastDim", [x], (g) => [
    device.noGrad(() => slice(g, -1, group.rank * n, (group.rank + 1) * n)),
  ]);
}
