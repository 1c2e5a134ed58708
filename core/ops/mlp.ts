/**
 * The MLP's GeLU fused into its two products (issue #13's "bias + GeLU in the
 * matmul epilogue"): {@link linearGelu} computes `pre = x·Wᵀ + b` and
 * `act = gelu(pre)` in one kernel; {@link geluLinear} applies the next linear to
 * `act`, and its backward brings the gradient through the GeLU in the epilogue
 * of the product that computes it, `(g·W) ⊙ gelu'(pre)`. Together they replace
 * `linear(gelu(linear(x)))`'s two GeLU kernels (forward and backward) with the
 * same values: the same f32 formulas applied to the same f32 numbers.
 * @module
 */

import type { GeluKind } from "../../kernels/elementwise.ts";
import { record } from "../autograd.ts";
import { disposeOnThrow, fmtShape, Tensor } from "../tensor.ts";
import { linear, matmul } from "./matmul.ts";
import { sumToSize } from "./raw.ts";

/** The pre-activation and its GeLU, from {@link linearGelu}. */
export interface PreAndActivation {
  /** `x·Wᵀ + b`, carrying the linear's gradient. */
  pre: Tensor;
  /** `gelu(pre)`: a value without a graph of its own; pass it to {@link geluLinear} with `pre`. */
  act: Tensor;
}

/** `pre = x·Wᵀ + b` and `act = gelu(pre)` from one matmul kernel (W stored `[out, in]`). */
export function linearGelu(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | undefined,
  kind: GeluKind,
): PreAndActivation {
  return disposeOnThrow(x.device, () => {
    const act = Tensor.empty(x.device, [...x.shape.slice(0, -1), weight.shape[0]]);
    const pre = linear(x, weight, bias, { geluOut: { kind, into: act } });
    if (x.device.saveActivationsAs) Tensor.noteSaved(act);
    return { pre, act };
  });
}

/**
 * `gelu(pre)·Wᵀ (+ bias)`, given `act = gelu(pre)` from {@link linearGelu}: the
 * gradient reaching `pre` is `(g·W) ⊙ gelu'(pre)`, one matmul with the GeLU's
 * derivative in its epilogue; the weight's is `gᵀ·act`, the bias's the column
 * sums of g.
 */
export function geluLinear(
  pre: Tensor,
  act: Tensor,
  weight: Tensor,
  kind: GeluKind,
  bias?: Tensor,
): Tensor {
  return disposeOnThrow(pre.device, () => {
    if (act.size !== pre.size || act.shape[act.rank - 1] !== weight.shape[1]) {
      throw new Error(
        `geluLinear: activation ${fmtShape(act.shape)}, pre-activation ${fmtShape(pre.shape)} ` +
          `and weight ${fmtShape(weight.shape)} do not fit`,
      );
    }
    const out = pre.device.noGrad(() => linear(act, weight, bias));
    return record(out, "gelu+linear", bias ? [pre, weight, bias] : [pre, weight], (grad) => {
      const inF = weight.shape[1];
      const rows = pre.size / inF;
      const g = grad.view([rows, weight.shape[0]]);
      const a = act.view([rows, inF]);
      const p = pre.view([rows, inF]);
      let gPre: Tensor | null = null;
      if (pre.requiresGrad) {
        const raw = matmul(g, weight, { geluGrad: { kind, pre: p } });
        gPre = raw.view(pre.shape);
        raw.dispose();
      }
      const gW = weight.requiresGrad ? matmul(g, a, { transA: true }) : null;
      const gB = bias?.requiresGrad ? sumToSize(grad, bias.shape) : null;
      for (const t of [g, a, p]) t.dispose();
      return bias ? [gPre, gW, gB] : [gPre, gW];
    });
  });
}
