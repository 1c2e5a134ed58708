/**
 * Activation recomputation: run a block without keeping its intermediate
 * activations, and run it again during the backward pass to get them. Trades one
 * extra forward of the block for the memory of its activations.
 * @module
 */

import { backward, record } from "./autograd.ts";
import type { RngStream } from "./rng.ts";
import { type Tensor, tidy } from "./tensor.ts";
import { packHalf, unpackHalf } from "./ops/half.ts";

/**
 * `fn(x)` whose activations are recomputed in the backward pass. `params` are the
 * block's parameters (their gradients accumulate during the recompute); `rngs`
 * are the streams the block draws dropout masks from, rewound for the recompute
 * so the masks are identical.
 *
 * With `device.saveActivationsAs` set (mixed precision), an input that is itself
 * a recompute block's output (values needed by nobody else: the chain of layers)
 * is kept as a packed 16-bit copy and its f32 storage freed; the backward pass
 * recomputes from the unpacked copy, as a 16-bit activation store would.
 */
export async function recompute(
  fn: (x: Tensor) => Tensor | Promise<Tensor>,
  x: Tensor,
  params: readonly Tensor[],
  rngs: readonly RngStream[] = [],
): Promise<Tensor> {
  const device = x.device;
  if (!device.gradEnabled) return await fn(x);
  const before = rngs.map((r) => r.offset);
  const out = await tidy(device, () => device.noGrad(async () => await fn(x)));
  const after = rngs.map((r) => r.offset);
  const half = device.saveActivationsAs;
  let packed: Tensor | null = null;
  if (half && x.node?.name === "recompute") {
    packed = packHalf(x, half);
    x.dropData();
  }
  return record(out, "recompute", [x, ...params], (g) =>
    tidy(device, async () => {
      const saved = rngs.map((r) => r.offset);
      rngs.forEach((r, i) => (r.offset = before[i]));
      const leaf = packed ? unpackHalf(packed, x.shape, half!) : x.view();
      packed?.dispose();
      leaf.requiresGrad = x.requiresGrad;
      device.gradEnabled = true;
      let y: Tensor;
      let drew: number[];
      try {
        y = await fn(leaf);
      } finally {
        device.gradEnabled = false;
        // The streams go on from where they were, the recompute thrown or not.
        drew = rngs.map((r) => r.offset);
        rngs.forEach((r, i) => (r.offset = saved[i]));
      }
      if (drew.some((d, i) => d !== after[i])) {
        throw new Error("recompute: the block drew a different number of random masks");
      }
      if (y.requiresGrad) await backward(y, g);
      const gx = leaf.grad;
      leaf.grad = null;
      if (gx) gx.persistent = false;
      leaf.dispose();
      return [gx, ...params.map(() => null)];
    }));
}
