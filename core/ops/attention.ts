/**
 * Fused multi-head attention with autograd (FlashAttention-style kernels in
 * `kernels/attention.ts`): reads q, k and v straight from the fused projection
 * and writes the heads-merged context, keeping O(T·d) memory per head instead
 * of the `[B, heads, T, T]` scores and probabilities.
 * @module
 */

import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  attentionDispatch,
  attentionForwardKernel,
  attentionLoopIterations,
  type AttentionMask,
  type AttentionSpec,
  checkAttentionShape,
} from "../../kernels/attention.ts";
import { SOFTWARE_LOOP_LIMIT } from "../../kernels/rowreduce.ts";
import { streamFits } from "../../kernels/texture.ts";
import { record } from "../autograd.ts";
import type { Device } from "../device.ts";
import { checkDraw, type RngDraw } from "../rng.ts";
import { assertF32, assertSameDevice, disposeOnThrow, fmtShape, Tensor } from "../tensor.ts";
import { roundHalfInPlace } from "./half.ts";
import { matmul } from "./matmul.ts";
import { dropout, softmax } from "./nn.ts";
import { asStrided, reshape } from "./shape.ts";

/** Options of {@link attention}. */
export interface AttentionOpts {
  /** Heads in `qkv` (the local heads of this rank). */
  numHeads: number;
  /** Size of one head (a multiple of 4). */
  headDim: number;
  /** "causal": query i sees keys ≤ i; "padding": keys where `keep` is 0 are hidden. */
  mask: AttentionMask;
  /** For "padding": `[B, T]`, 1 for real tokens and 0 for padding. */
  keep?: Tensor;
  /**
   * Attention dropout on the probabilities: the same mask as
   * `dropout(probs, p, draw)` on the unfused `[B, heads, T, T]` probabilities.
   */
  dropout?: { p: number; draw: RngDraw };
}

/** Whether {@link attention} supports heads of `headDim` (a multiple of 4, at most 256). */
export function fusedAttentionSupports(headDim: number): boolean {
  return Number.isInteger(headDim) && headDim >= 4 && headDim % 4 === 0 && headDim <= 256;
}

/**
 * Whether {@link attention} can run on `qkv` (`[B, T, 3·heads·hd]`) with heads
 * of `headDim`: a supported head size, `qkv` within one storage binding (the
 * fused kernels do not bind in windows), and on a software adapter a sequence
 * within Mesa's loop cap. Where it cannot, use {@link attentionUnfused}.
 */
export function canFuseAttention(qkv: Tensor, headDim: number): boolean {
  if (!fusedAttentionSupports(headDim) || qkv.rank !== 3) return false;
  return fusedAttentionFits(qkv.device, qkv.byteLength, qkv.shape[1]);
}

/**
 * {@link canFuseAttention} before any tensor exists: whether the fused kernels
 * run a micro-batch of `batch` sequences of `seqLength` tokens with `heads`
 * heads of `headDim` on `device` (its f32 `qkv` within one binding, the
 * sequence within a software adapter's loop cap). Where they do not, the
 * model computes the `[batch, heads, T, T]` scores unfused.
 */
export function fusedAttentionRuns(
  device: Device,
  s: { batch: number; seqLength: number; heads: number; headDim: number },
): boolean {
  return fusedAttentionSupports(s.headDim) &&
    fusedAttentionFits(device, 4 * s.batch * s.seqLength * 3 * s.heads * s.headDim, s.seqLength);
}

/** The fused kernels' limits: `qkv` (`qkvBytes`) in one binding, the loop cap on software. */
function fusedAttentionFits(device: Device, qkvBytes: number, seqLength: number): boolean {
  return qkvBytes <= device.maxBindingBytes &&
    !(device.isSoftware && attentionLoopIterations(seqLength) > SOFTWARE_LOOP_LIMIT);
}

/**
 * `softmax(q·kᵀ/sqrt(hd), mask)` (with dropout) `·v` for every head of `qkv`
 * (`[B, T, 3·heads·hd]`, laid out q|k|v, head `h` at `h·hd` inside each part),
 * returned heads-merged as `[B, T, heads·hd]`. A query with no visible key
 * gets zeros. The gradient is `[B, T, 3·heads·hd]`, in `qkv`'s layout.
 */
export function attention(qkv: Tensor, opts: AttentionOpts): Tensor {
  return disposeOnThrow(qkv.device, () => {
    const { numHeads: nh, headDim: hd, mask } = opts;
    if (!Number.isInteger(nh) || nh < 1) {
      throw new Error(`attention: numHeads must be a positive integer, got ${nh}`);
    }
    if (!fusedAttentionSupports(hd)) {
      throw new Error(
        `attention: head size ${hd} is not supported by the fused kernels (a multiple of 4, ` +
          `at most 256)`,
      );
    }
    if (qkv.rank !== 3 || qkv.shape[2] !== 3 * nh * hd) {
      throw new Error(
        `attention: qkv ${fmtShape(qkv.shape)} is not [B, T, 3·${nh} heads·${hd}] = [B, T, ${
          3 * nh * hd
        }]`,
      );
    }
    if (qkv.dtype !== "f32") throw new Error(`attention: qkv must be f32, got ${qkv.dtype}`);
    const [B, T] = qkv.shape;
    const device = qkv.device;
    const keep = opts.keep;
    if (mask === "padding") {
      if (!keep) throw new Error("attention: the padding mask needs a `keep` tensor [B, T]");
      assertSameDevice("attention", qkv, keep);
      assertF32("attention", keep);
      if (keep.rank !== 2 || keep.shape[0] !== B || keep.shape[1] !== T) {
        throw new Error(
          `attention: keep ${fmtShape(keep.shape)} does not fit qkv ${fmtShape(qkv.shape)} ` +
            `(expected [${B}, ${T}])`,
        );
      }
    } else if (mask === "causal") {
      if (keep) throw new Error("attention: `keep` is only for the padding mask");
    } else {
      throw new Error(`attention: unknown mask ${mask}`);
    }
    const drop = opts.dropout && opts.dropout.p > 0 ? opts.dropout : undefined;
    if (drop && !(drop.p < 1)) {
      throw new Error(`attention: dropout probability must be in [0, 1), got ${drop.p}`);
    }
    if (drop) checkDraw("attention", drop.draw);
    if (drop && B * nh * T * T > 2 ** 32) {
      throw new Error(
        `attention: dropout counters index [${B}, ${nh}, ${T}, ${T}] probabilities, ` +
          `over 2^32 (as the unfused dropout's)`,
      );
    }
    // On CPU adapters qkv and dout are read through textures (kernels/texture.ts).
    const hl4 = (nh * hd) / 4;
    const qkvTex = device.isSoftware && streamFits(3 * hl4 * B * T, device.maxTextureDimension);
    const spec: AttentionSpec = {
      mask,
      headDim: hd,
      dropout: !!drop,
      textures: qkvTex,
      lanes: device.softwareLanes,
    };
    checkAttentionShape(spec, T, device.isSoftware);
    if (qkv.byteLength > device.maxBindingBytes) {
      throw new Error(
        `attention: qkv ${fmtShape(qkv.shape)} (${qkv.byteLength} bytes) exceeds one storage ` +
          `binding (${device.maxBindingBytes} bytes); the fused kernels do not bind in windows: ` +
          `use attentionUnfused or a smaller batch`,
      );
    }
    const d = attentionDispatch(
      spec,
      B,
      T,
      nh,
      drop && { p: drop.p, seed: drop.draw.seed, offset: drop.draw.offset },
    );
    // Mixed precision keeps qkv (an op's output) as 16 bits for backward (packSaved),
    // whose kernels rebuild the probabilities from it against the forward's
    // log-sum-exp. So the forward reads the same rounded values, in place, as
    // FlashAttention reads Megatron's 16-bit q, k and v: from the f32 ones a row's
    // rebuilt probabilities no longer summed to 1, an error growing with the logits
    // (bf16 gradients 13.5% off at an init std of 1, NaN at 300). A recomputed
    // block's first forward (no graph recorded) rounds too, so that its recompute
    // in backward, which records, runs the same forward.
    const half = device.saveActivationsAs;
    if (half && (qkv.node !== null || !device.gradEnabled)) roundHalfInPlace(qkv, half);
    const masks = keep ? [keep.binding] : [];
    const out = Tensor.empty(device, [B, T, nh * hd]);
    const lse = Tensor.empty(device, [B, nh, T]);
    const qkvIn = qkvTex
      ? { view: device.streamAsTexture(qkv.binding, qkv.size / 4) }
      : qkv.binding;
    device.dispatch(
      attentionForwardKernel(spec),
      [qkvIn, ...masks, out.binding, lse.binding],
      d.params,
      d.workgroups,
    );
    const res = record(out, "attention", [qkv], (g) => {
      const dsum = Tensor.empty(device, [B, nh, T]);
      const dqkv = Tensor.empty(device, qkv.shape);
      const m = keep ? [keep.binding] : [];
      // Both backward kernels read qkv, the second also g (the first binds g read-only):
      // nothing asks for a stream texture between them.
      const [qkvB, gB] = qkvTex
        ? device.streamOperands([
          { binding: qkv.binding, vec4s: qkv.size / 4 },
          { binding: g.binding, vec4s: g.size / 4 },
        ]).map((view) => ({ view }))
        : [qkv.binding, g.binding];
      device.dispatch(
        attentionBackwardQueryKernel(spec),
        [qkvB, ...m, out.binding, g.binding, lse.binding, dsum.binding, dqkv.binding],
        d.params,
        d.workgroups,
      );
      device.dispatch(
        attentionBackwardKeyKernel(spec),
        [
          qkvB,
          ...m,
          gB,
          lse.binding,
          dsum.binding,
          dqkv.binding,
        ],
        d.params,
        d.workgroups,
      );
      dsum.dispose();
      return [dqkv];
    });
    if (!res.node) lse.dispose();
    return res;
  });
}

/**
 * The same attention as {@link attention} from separate ops: strided q, k and v
 * copies, the `[B, heads, T, T]` scores (batched matmul), the masked scaled
 * softmax, dropout and `·v`, merged back to `[B, T, heads·hd]`. Any head size;
 * memory O(T²) per head. Same inputs, same dropout mask.
 */
export function attentionUnfused(qkv: Tensor, opts: AttentionOpts): Tensor {
  return disposeOnThrow(qkv.device, () => {
    const { numHeads: nh, headDim: hd } = opts;
    if (qkv.rank !== 3 || qkv.shape[2] !== 3 * nh * hd) {
      throw new Error(
        `attention: qkv ${fmtShape(qkv.shape)} is not [B, T, 3·${nh} heads·${hd}] = [B, T, ${
          3 * nh * hd
        }]`,
      );
    }
    const [B, T] = qkv.shape;
    const hl = nh * hd;
    const strides = [T * 3 * hl, hd, 3 * hl, 1];
    const q = asStrided(qkv, [B, nh, T, hd], strides, 0);
    const k = asStrided(qkv, [B, nh, T, hd], strides, hl);
    const v = asStrided(qkv, [B, nh, T, hd], strides, 2 * hl);
    let probs = softmax(matmul(q, k, { transB: true }), {
      scale: 1 / Math.sqrt(hd),
      mask: opts.mask,
      keep: opts.keep,
    });
    const drop = opts.dropout;
    if (drop && drop.p > 0) probs = dropout(probs, drop.p, drop.draw);
    const ctx = matmul(probs, v); // [B, nh, T, hd]
    const merged = asStrided(ctx, [B, T, nh, hd], [nh * T * hd, hd, T * hd, 1]);
    return reshape(merged, [B, T, hl]);
  });
}
