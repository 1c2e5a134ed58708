/**
 * Reverse-mode automatic differentiation over the graph that ops record on their
 * outputs. Gradients of leaves accumulate into `leaf.grad` (on the GPU, in place)
 * until {@link zeroGrad}; intermediate gradients are freed as soon as they are used.
 * @module
 */

import { axpyInPlace, clone } from "./ops/raw.ts";
import {
  type AddableGrad,
  denseGrad,
  dropUnpacked,
  fmtShape,
  type GradNode,
  type GradResult,
  type PendingGrad,
  Tensor,
} from "./tensor.ts";

/**
 * Attaches `node` to `out` when the device records gradients and any input needs
 * one; returns `out`.
 */
export function record(
  out: Tensor,
  name: string,
  inputs: readonly Tensor[],
  backward: (grad: Tensor) => GradResult[] | Promise<GradResult[]>,
): Tensor {
  if (!out.device.gradEnabled) return out;
  if (!inputs.some((t) => t.requiresGrad)) return out;
  out.requiresGrad = true;
  out.node = { name, inputs, backward } satisfies GradNode;
  if (out.device.saveActivationsAs) Tensor.noteSaved(out);
  return out;
}

/**
 * {@link record} for an op with several outputs: one node shared by all of
 * `outs`, whose `backward` receives one gradient (or null, for an output no
 * gradient reached) per output and runs once, after every output's gradient is
 * complete. Returns `outs`.
 */
export function recordMulti(
  outs: readonly Tensor[],
  name: string,
  inputs: readonly Tensor[],
  backward: (grads: (Tensor | null)[]) => GradResult[] | Promise<GradResult[]>,
): readonly Tensor[] {
  const device = outs[0].device;
  if (!device.gradEnabled) return outs;
  if (!inputs.some((t) => t.requiresGrad)) return outs;
  const node: GradNode = {
    name,
    inputs,
    outputs: outs,
    backward: () => {
      throw new Error(`${name}: a several-output node runs through backwardAll`);
    },
    backwardAll: backward,
  };
  for (const out of outs) {
    out.requiresGrad = true;
    out.node = node;
    if (device.saveActivationsAs) Tensor.noteSaved(out);
  }
  return outs;
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const c = inputs[i];
      if (c.requiresGrad && !seen.has(c)) {
        seen.add(c);
        stack.push([c, 0]);
      }
    } else {
      order.push(t);
      stack.pop();
    }
  }
  return order.reverse();
}

/** Options of {@link backward}. */
export interface BackwardOptions {
  /**
   * Called once per leaf that received a gradient, right after that gradient
   * was accumulated into `leaf.grad`: from then on this backward adds nothing
   * more to it (every contribution is summed before the leaf is reached). The
   * data-parallel overlap (models/parallel/overlap.ts) starts a bucket's
   * all-reduce once all of its parameters were reported.
   */
  onLeafGrad?: (leaf: Tensor) => void;
  /**
   * Adds the milliseconds this backward spent waiting on pending gradients
   * (communication that overlap did not hide) to `ms`.
   */
  waitTimer?: { ms: number };
}

/**
 * Back-propagates from `root` (a scalar unless `grad` is given), accumulating into
 * the `.grad` of every leaf that requires a gradient. Async because ops inside
 * parallel regions all-reduce their gradients.
 *
 * Nodes run in reverse topological order. A node's backward may return a
 * pending gradient (a promise, e.g. an all-reduce whose readback and exchange
 * are in flight) for an input: the engine goes on with the following nodes and
 * awaits it only when that input's gradient is consumed (its own node runs, or
 * another contribution must be added to it, which keeps the order of every sum
 * the same as with plain gradients, so results are bit-identical).
 */
export async function backward(
  root: Tensor,
  grad?: Tensor,
  opts: BackwardOptions = {},
): Promise<void> {
  if (root.disposed) {
    throw new Error(`backward(): use of a disposed tensor of shape ${fmtShape(root.shape)}`);
  }
  if (!root.requiresGrad) {
    throw new Error("backward(): the tensor does not require grad (no parameter fed into it)");
  }
  if (root.backwardDone) {
    throw new Error(
      "backward(): this tensor was already run backward, and its gradients added into the " +
        "parameters' .grad: a second pass would add them again; build the loss again",
    );
  }
  const device = root.device;
  if (!grad && root.size !== 1) {
    throw new Error(
      `backward(): a gradient must be given for a non-scalar output of shape ${
        fmtShape(root.shape)
      }`,
    );
  }
  await device.noGrad(async () => {
    const grads = new Map<Tensor, Tensor | AddableGrad>();
    const pending = new Map<Tensor, { node: GradNode; grad: PendingGrad }>();
    const seed = grad ? grad.view() : Tensor.fromArray(device, new Float32Array([1]), root.shape);
    grads.set(root, seed);
    const order = topoOrder(root);
    // A several-output node runs at its last output in the order: by then every
    // consumer of every output has passed its gradient on.
    const lastOutput = new Map<GradNode, Tensor>();
    for (const t of order) if (t.node?.outputs) lastOutput.set(t.node, t);
    const held = new Map<GradNode, Map<Tensor, Tensor>>();

    const accumulate = (node: GradNode, input: Tensor, ig: Tensor | AddableGrad) => {
      if (ig.size !== input.size) {
        throw new Error(
          `backward of ${node.name}: gradient ${
            ig instanceof Tensor ? fmtShape(ig.shape) : `of ${ig.size} elements`
          } for input ${fmtShape(input.shape)}`,
        );
      }
      const prev = grads.get(input);
      if (!prev) {
        grads.set(input, ig);
        return;
      }
      // The sum goes into whichever side is a tensor (two terms add the same
      // either way round); an addable one adds itself in place.
      const [into, from] = prev instanceof Tensor || !(ig instanceof Tensor)
        ? [denseGrad(prev), ig]
        : [ig, prev];
      const own = into.shared ? clone(into) : into;
      if (own !== into) into.dispose();
      grads.set(input, own);
      if (from instanceof Tensor) {
        axpyInPlace(own, from, 1);
        from.dispose();
      } else {
        from.addInto(own);
      }
    };
    // Awaits `input`'s pending gradient (if any) and adds it where it belongs.
    const settle = async (input: Tensor) => {
      const p = pending.get(input);
      if (!p) return;
      pending.delete(input);
      device.flush(); // whatever was recorded meanwhile runs while we wait
      const t0 = performance.now();
      const ig = await p.grad;
      if (opts.waitTimer) opts.waitTimer.ms += performance.now() - t0;
      if (ig) accumulate(p.node, input, ig);
    };

    try {
      for (const t of order) {
        await settle(t);
        const entry = grads.get(t);
        grads.delete(t);
        const node = t.node;
        if (entry && !node) {
          accumulateLeaf(t, entry);
          opts.onLeafGrad?.(t);
          continue;
        }
        const g = entry && denseGrad(entry);
        let inputGrads: GradResult[];
        if (node?.outputs) {
          let got = held.get(node);
          if (g) {
            if (!got) held.set(node, got = new Map());
            got.set(t, g);
          }
          if (lastOutput.get(node) !== t || !got) continue;
          held.delete(node);
          const have = got;
          const outGrads = node.outputs.map((o) => have.get(o) ?? null);
          inputGrads = await node.backwardAll!(outGrads);
          for (const og of outGrads) og?.dispose();
        } else {
          if (!g || !node) continue;
          inputGrads = await node.backward(g);
          g.dispose();
        }
        dropUnpacked(device);
        for (let i = 0; i < node.inputs.length; i++) {
          const input = node.inputs[i];
          const ig = inputGrads[i];
          if (!ig) continue;
          if (ig instanceof Promise) {
            if (!input.requiresGrad) {
              ig.then((x) => x?.dispose(), () => {});
              continue;
            }
            // Keep the order of the sums: an earlier pending contribution lands first.
            await settle(input);
            ig.catch(() => {}); // rejections surface where it is awaited
            pending.set(input, { node, grad: ig });
            continue;
          }
          if (!input.requiresGrad) {
            ig.dispose();
            continue;
          }
          await settle(input);
          accumulate(node, input, ig);
        }
      }
      for (const input of [...pending.keys()]) await settle(input);
    } finally {
      // After a failure: let in-flight work end before the caller frees its scope.
      for (const p of pending.values()) {
        await p.grad.then((x) => x?.dispose(), () => {});
      }
      for (const g of grads.values()) g.dispose();
    }
  });
  root.backwardDone = true;
}

function accumulateLeaf(leaf: Tensor, got: Tensor | AddableGrad): void {
  if (leaf.grad) {
    if (got instanceof Tensor) {
      axpyInPlace(leaf.grad, got, 1);
      got.dispose();
    } else {
      got.addInto(leaf.grad);
    }
  } else {
    const g = denseGrad(got);
    const own = g.shared ? clone(g, leaf.shape) : g.view(leaf.shape);
    g.dispose();
    own.persistent = true;
    own.name = leaf.name ? `${leaf.name}.grad` : undefined;
    leaf.grad = own;
  }
}

/** Drops the accumulated gradients of `params` (their buffers return to the pool). */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
