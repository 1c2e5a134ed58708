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
import { clone, concat, slice } from "../../core/ops/mod.ts";
import { Tensor } from "../../core/tensor.ts";

/** The collectives a tensor-parallel group must offer (a `ProcessGroup` does). */
export type TpGroup = Pick<ProcessGroup, "size" | "rank" | "allReduce" | "allGather">;

/** All-reduce (sum) of a GPU tensor into a fresh tensor, leaving `x` untouched. */
export async function allReduced(
  x: Tensor,
  group: TpGroup,
  op: "sum" | "max" = "sum",
): Promise<Tensor> {
  const out = clone(x);
  if (group.size > 1) await group.allReduce(out, op);
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
