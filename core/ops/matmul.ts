/**
 * Batched matrix multiplication and the linear layer, with autograd.
 * @module
 */

import {
  type DispatchPlan,
  type GeluKind,
  type MatmulOptions,
  matmulPlan,
  matmulPlanWith,
  type MatmulShape,
} from "../../kernels/matmul.ts";
import { record } from "../autograd.ts";
import type { Device, TextureBinding } from "../device.ts";
import {
  assertF32,
  assertSameDevice,
  disposeOnThrow,
  fmtShape,
  type HalfCopy,
  Tensor,
} from "../tensor.ts";
import type { BufferBinding } from "../windows.ts";
import { sumToSize } from "./raw.ts";

/** Options of {@link matmul}. */
export interface MatmulOpts {
  /** Use the transpose of `a`'s last two dims. */
  transA?: boolean;
  /** Use the transpose of `b`'s last two dims. */
  transB?: boolean;
  /** Scale of the product (e.g. 1/sqrt(d) for attention scores). */
  alpha?: number;
  /** Bias over the last output dimension, added in the kernel's epilogue. */
  bias?: Tensor;
  /**
   * Read `b` from this 16-bit copy instead (a 2-D `b` only; mixed precision's
   * weights). {@link matmul} takes it from `b.halfCopy` by itself.
   */
  bHalf?: HalfCopy | null;
  /**
   * Also write GeLU of the result into `into` (same size), from the same kernel;
   * no gradient flows through `into` (see core/ops/mlp.ts).
   */
  geluOut?: { kind: GeluKind; into: Tensor };
  /**
   * Multiply the result by GeLU's derivative at `pre` (same size) in the kernel's
   * epilogue: the gradient through a GeLU (see core/ops/mlp.ts).
   */
  geluGrad?: { kind: GeluKind; pre: Tensor };
}

interface Geometry {
  batch: number;
  batchShape: number[];
  M: number;
  N: number;
  K: number;
  batchA: boolean;
  batchB: boolean;
  outShape: number[];
}

function geometry(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Geometry {
  const err = (why: string) =>
    new Error(
      `matmul: shape mismatch ${fmtShape(a.shape)}${transA ? "ᵀ" : ""} · ${fmtShape(b.shape)}${
        transB ? "ᵀ" : ""
      } (${why})`,
    );
  if (a.rank < 2 || b.rank < 2) throw err("both operands need at least 2 dimensions");
  let aShape = [...a.shape];
  // Linear-style: a batched, b a plain matrix, a not transposed: fold a's batch into M.
  const folded = b.rank === 2 && a.rank > 2 && !transA;
  if (folded) {
    aShape = [a.size / a.shape[a.rank - 1], a.shape[a.rank - 1]];
  }
  const [aR, aC] = aShape.slice(-2);
  const [bR, bC] = b.shape.slice(-2);
  const M = transA ? aC : aR;
  const K = transA ? aR : aC;
  const Kb = transB ? bC : bR;
  const N = transB ? bR : bC;
  if (K !== Kb) throw err(`inner dimensions ${K} and ${Kb} differ`);
  const aBatch = aShape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const batchA = aBatch.length > 0;
  const batchB = bBatch.length > 0;
  if (
    batchA && batchB && (aBatch.length !== bBatch.length || aBatch.some((d, i) => d !== bBatch[i]))
  ) {
    throw err("batch dimensions differ");
  }
  const batchShape = batchA ? aBatch : bBatch;
  const batch = batchShape.reduce((x, y) => x * y, 1);
  const outShape = folded ? [...a.shape.slice(0, -1), N] : [...batchShape, M, N];
  return { batch, batchShape, M, N, K, batchA, batchB, outShape };
}

/** Records `out (+)= alpha·op(a)·op(b) (+ bias)` without autograd; returns `out`. */
export function matmulInto(
  out: Tensor,
  a: Tensor,
  b: Tensor,
  opts: MatmulOpts & { accumulate?: boolean } = {},
): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  assertF32("matmul", a, b, out, opts.bias, opts.geluOut?.into, opts.geluGrad?.pre);
  const g = geometry(a, b, transA, transB);
  if (out.size !== g.batch * g.M * g.N) {
    throw new Error(`matmul: output ${fmtShape(out.shape)} does not hold ${fmtShape(g.outShape)}`);
  }
  if (opts.bias && opts.bias.size !== g.N) {
    throw new Error(
      `matmul: bias ${fmtShape(opts.bias.shape)} does not match ${g.N} output columns`,
    );
  }
  const device = assertSameDevice(
    "matmul",
    a,
    b,
    out,
    opts.bias,
    opts.geluOut?.into,
    opts.geluGrad?.pre,
  );
  const shape: MatmulShape = {
    batch: g.batch,
    M: g.M,
    N: g.N,
    K: g.K,
    transA,
    transB,
    batchA: g.batchA,
    batchB: g.batchB,
    bias: !!opts.bias,
    alpha: opts.alpha ?? 1,
    accumulate: opts.accumulate ?? false,
  };
  const epilogue = opts.geluOut?.into ?? opts.geluGrad?.pre;
  if (epilogue && epilogue.size !== out.size) {
    throw new Error(
      `matmul: GeLU epilogue tensor ${fmtShape(epilogue.shape)} does not match the output ${
        fmtShape(g.outShape)
      }`,
    );
  }
  if (opts.geluOut) shape.geluOut = opts.geluOut.kind;
  if (opts.geluGrad) shape.geluGrad = opts.geluGrad.kind;
  const half = opts.bHalf && b.rank === 2 && b.size === opts.bHalf.words.size * 2 - (b.size % 2)
    ? opts.bHalf
    : null;
  if (half) shape.packedB = half.format;
  const bBinding = half ? half.words.binding : b.binding;
  return dispatchMatmul(
    device,
    shape,
    a.binding,
    bBinding,
    opts.bias?.binding,
    out.binding,
    out,
    epilogue?.binding,
  );
}

/**
 * Records one matmul of `shape` over raw bindings (which may be windows of
 * larger buffers) and returns `result`. Callers check the geometry. `epilogue`
 * is the GeLU epilogue's D or U binding when the shape has one.
 */
export function dispatchMatmul<T>(
  device: Device,
  shape: MatmulShape,
  a: BufferBinding,
  b: BufferBinding,
  bias: BufferBinding | undefined,
  c: BufferBinding,
  result: T,
  epilogue?: BufferBinding,
): T {
  const opts = matmulOptions(device);
  const tuned = device.matmulTuner?.tiling(shape, opts);
  const plan = tuned ? matmulPlanWith(shape, opts, tuned) : matmulPlan(shape, opts);
  if (!epilogue !== !(shape.geluOut || shape.geluGrad)) {
    throw new Error("matmul: a GeLU epilogue needs its tensor, and only then");
  }
  recordPlan(device, plan, [a, b, ...(bias ? [bias] : []), c, ...(epilogue ? [epilogue] : [])]);
  return result;
}

/** What `device` allows the matmul kernels (kernels/matmul.ts's {@link MatmulOptions}). */
export function matmulOptions(device: Device): MatmulOptions {
  return {
    software: device.isSoftware,
    maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
    maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
    shaderF16: device.nativeF16,
    f16Arithmetic: device.f16Arithmetic,
    maxTextureDimension: device.maxTextureDimension,
    lanes: device.softwareLanes,
  };
}

/**
 * Records a matmul plan over its buffers (A, B, [bias], C, [D or U]); when the
 * plan reads A, B or U through a texture, first fills a scratch texture from
 * that operand's buffer and binds it in the operand's place.
 */
export function recordPlan(device: Device, plan: DispatchPlan, bufs: BufferBinding[]): void {
  const bound: (BufferBinding | TextureBinding)[] = [...bufs];
  const streamed: { index: number; vec4s: number }[] = [];
  if (plan.textureA) streamed.push({ index: 0, vec4s: plan.textureA });
  if (plan.textureB) streamed.push({ index: 1, vec4s: plan.textureB });
  if (plan.textureU) streamed.push({ index: bufs.length - 1, vec4s: plan.textureU });
  const views = device.streamOperands(
    streamed.map((o) => ({ binding: bufs[o.index], vec4s: o.vec4s })),
  );
  streamed.forEach((o, k) => bound[o.index] = { view: views[k] });
  device.dispatch(plan.kernel, bound, plan.params, plan.workgroups);
}

/**
 * `alpha·op(a)·op(b) (+ bias)` over the last two dims, batched over leading dims.
 * A 2-D `b` is shared by every batch entry of `a` (a weight).
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOpts = {}): Tensor {
  return disposeOnThrow(a.device, () => {
    const transA = opts.transA ?? false;
    const transB = opts.transB ?? false;
    const alpha = opts.alpha ?? 1;
    assertF32("matmul", a, b, opts.bias);
    const g = geometry(a, b, transA, transB);
    const half = opts.bHalf !== undefined ? opts.bHalf : b.halfCopy;
    const out = matmulInto(Tensor.empty(a.device, g.outShape), a, b, { ...opts, bHalf: half });
    const bias = opts.bias;
    const inputs = bias ? [a, b, bias] : [a, b];
    return record(out, "matmul", inputs, (grad) => {
      // Work in the kernel's geometry: operands as [r, c] (shared) or [batch, r, c].
      const av = kernelView(a, g, g.batchA);
      const bv = kernelView(b, g, g.batchB);
      const gv = g.batch > 1 ? grad.view([g.batch, g.M, g.N]) : grad.view([g.M, g.N]);
      let ga: Tensor | null = null;
      let gb: Tensor | null = null;
      if (a.requiresGrad) {
        const raw = transA
          ? matmul(bv, gv, { transA: transB, transB: true, alpha, bHalf: null })
          : matmul(gv, bv, { transB: !transB, alpha, bHalf: half });
        ga = toShape(raw, a.shape);
      }
      if (b.requiresGrad) {
        const raw = transB
          ? matmul(gv, av, { transA: true, transB: transA, alpha, bHalf: null })
          : matmul(av, gv, { transA: !transA, alpha, bHalf: null });
        gb = toShape(raw, b.shape);
      }
      av.dispose();
      bv.dispose();
      gv.dispose();
      if (!bias) return [ga, gb];
      return [ga, gb, bias.requiresGrad ? sumToSize(grad, bias.shape) : null];
    });
  });
}

function kernelView(t: Tensor, g: Geometry, batched: boolean): Tensor {
  const r = t.shape[t.rank - 2];
  const c = t.shape[t.rank - 1];
  if (!batched) return t.view([t.size / c, c]);
  return g.batch > 1 ? t.view([g.batch, t.size / (g.batch * c), c]) : t.view([r, c]);
}

/** Views or (for a broadcast operand) sums a raw gradient down to `shape`. */
function toShape(raw: Tensor, shape: readonly number[]): Tensor {
  const size = shape.reduce((x, y) => x * y, 1);
  const res = raw.size === size ? raw.view(shape) : sumToSize(raw, shape);
  raw.dispose();
  return res;
}

/**
 * `x·Wᵀ + b` for `W` stored `[out, in]` (PyTorch's layout), over any leading dims
 * of `x`; `epilogue` may add a GeLU output (core/ops/mlp.ts).
 */
export function linear(
  x: Tensor,
  weight: Tensor,
  bias?: Tensor,
  epilogue: Pick<MatmulOpts, "geluOut"> = {},
): Tensor {
  return disposeOnThrow(x.device, () => {
    assertSameDevice("linear", x, weight, bias);
    if (weight.rank !== 2) {
      throw new Error(`linear: weight must be 2-D, got ${fmtShape(weight.shape)}`);
    }
    const inF = x.shape[x.rank - 1];
    if (inF !== weight.shape[1]) {
      throw new Error(
        `linear: shape mismatch, input ${fmtShape(x.shape)} has ${inF} features but weight ${
          fmtShape(weight.shape)
        } expects ${weight.shape[1]}`,
      );
    }
    return matmul(x, weight, { transB: true, bias, ...epilogue });
  });
}
