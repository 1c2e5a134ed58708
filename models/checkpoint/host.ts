/**
 * Host copies of parameters: one GPU read for all of them.
 * @module
 */

import type { ParamInfo } from "../../core/nn.ts";
import type { HostTensor } from "./shard.ts";

/** Reads every parameter back (one sync) as host tensors keyed by name. */
export async function paramsToHost(
  params: readonly [string, ParamInfo][],
): Promise<Map<string, HostTensor>> {
  if (params.length === 0) return new Map();
  const device = params[0][1].tensor.device;
  const bufs = await device.readMany(params.map(([, p]) => p.tensor.binding));
  return new Map(
    params.map(([n, p], i) => [n, { shape: [...p.tensor.shape], data: new Float32Array(bufs[i]) }]),
  );
}
