/**
 * Fused AdamW step with decoupled weight decay, reading the gradient-clipping
 * coefficient from a GPU buffer so clipping never needs a host round trip.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { grid2d, GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { STREAM_TEXTURE, streamTexel } from "./texture.ts";

const WG = 256;

/**
 * The uniforms of the single-tensor kernels ({@link adamwDispatch}): weight
 * decay `wd` applies to elements (or vec4s) below `decayEnd`.
 */
const SINGLE_PARAMS_WGSL = "struct P { n: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, " +
  "wd: f32, bc1: f32, bc2: f32, decayEnd: u32, _a: u32, _b: u32, _c: u32 }";

/**
 * The clipping coefficient's block as the AdamW kernels read it: a uniform copy
 * of {@link clipCoefKernel}'s three values (`clip`, the factor the gradients are
 * multiplied by; `norm`; `skip`, non-zero for a step to skip), padded to
 * {@link ADAMW_COEF_BYTES}. A uniform, not a storage buffer: llvmpipe loads a
 * storage element once per invocation even at a constant index, and a uniform at
 * a constant offset once per SIMD batch (the vec4 texture form, one pinned core
 * at 512 bits, 4 M parameters: 5.8 against 6.6 ns a parameter).
 */
const COEF_WGSL = "struct Coef { clip: f32, norm: f32, skip: f32, _pad: f32 }";

/** Bytes of the uniform buffer the AdamW kernels bind the coefficient from (`Coef`). */
export const ADAMW_COEF_BYTES = 16;

/** The weight decay of element `i` in the single-tensor kernels. */
const SINGLE_DECAY = "select(0.0, p.wd, i < p.decayEnd)";

/** Where {@link adamwUpdate} reads element `i`'s gradient, moments and weight. */
interface AdamWLoads {
  grad: string;
  m: string;
  v: string;
  param: string;
}

/** Loads from the buffers `grad<s>`, `m<s>`, `v<s>`, `param<s>`. */
const bufferLoads = (s: string): AdamWLoads => ({
  grad: `grad${s}[i]`,
  m: `m${s}[i]`,
  v: `v${s}[i]`,
  param: `param${s}[i]`,
});
const BUFFER_LOADS = bufferLoads("");

/**
 * WGSL: the AdamW update of element `i`, one definition for every form (the
 * same expressions in the same order, so that the forms give the same bits):
 * reads through `from`, writes the buffers `m<suffix>[i]`, `v<suffix>[i]`,
 * `param<suffix>[i]`, with weight decay `wd`, the clipping coefficient `coef.clip`
 * and the uniforms `p`.
 */
function adamwUpdate(from: AdamWLoads, wd: string, suffix: string): string {
  return `  let gr = ${from.grad} * coef.clip;
  let mi = p.beta1 * ${from.m} + (1.0 - p.beta1) * gr;
  let vi = p.beta2 * ${from.v} + (1.0 - p.beta2) * gr * gr;
  m${suffix}[i] = mi;
  v${suffix}[i] = vi;
  let w = ${from.param};
  param${suffix}[i] = w - p.lr * ${wd} * w - p.lr * (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps);`;
}

/** Elements per invocation of {@link adamwKernel}: 1, or 4 (vec4) for sizes that divide by 4. */
export type AdamWWidth = 1 | 4;

/**
 * Per element, with `g = grad·coef.clip`:
 * `m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
 *  p = p − lr·wd·p − lr·(m/bc1)/(sqrt(v/bc2) + eps)`;
 * nothing at all when `coef.skip ≠ 0` (a gradient overflowed: the step is skipped,
 * leaving the weights and moments bit-identical). Bindings: param, grad, m, v,
 * coef (a uniform buffer of {@link ADAMW_COEF_BYTES} holding {@link clipCoefKernel}'s
 * 3 values).
 */
export function adamwKernel(width: AdamWWidth = 1): KernelSource {
  // width 4: four elements per invocation as vec4 (n counts vec4s), the same
  // arithmetic component by component; measured ~1.5× faster on the software
  // adapters, whose per-invocation loads cost the same whatever their width.
  const t = width === 4 ? "vec4<f32>" : "f32";
  return {
    key: width === 4 ? "adamw:vec4" : "adamw",
    code: /* wgsl */ `
${SINGLE_PARAMS_WGSL}
${COEF_WGSL}
@group(0) @binding(0) var<storage, read_write> param: array<${t}>;
@group(0) @binding(1) var<storage, read> grad: array<${t}>;
@group(0) @binding(2) var<storage, read_write> m: array<${t}>;
@group(0) @binding(3) var<storage, read_write> v: array<${t}>;
@group(0) @binding(4) var<uniform> coef: Coef;
@group(0) @binding(5) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n || coef.skip != 0.0) { return; }
${adamwUpdate(BUFFER_LOADS, SINGLE_DECAY, "")}
}`,
  };
}

/**
 * {@link adamwKernel}'s vec4 form for CPU adapters: the weight, gradient and
 * moments are read through stream textures (kernels/texture.ts; llvmpipe loads
 * storage buffers one invocation at a time), the new values written to their
 * buffers. The same bits as the buffer form. Bindings: the stream textures of
 * param, grad, m, v; the buffers param, m, v; coef (as in {@link adamwKernel}); uniforms of
 * {@link adamwDispatch} at width 4.
 */
export function adamwTextureKernel(): KernelSource {
  const t = "vec4<f32>";
  return {
    key: "adamw:vec4:tex",
    code: /* wgsl */ `
${SINGLE_PARAMS_WGSL}
${COEF_WGSL}
@group(0) @binding(0) var paramT: ${STREAM_TEXTURE};
@group(0) @binding(1) var gradT: ${STREAM_TEXTURE};
@group(0) @binding(2) var mT: ${STREAM_TEXTURE};
@group(0) @binding(3) var vT: ${STREAM_TEXTURE};
@group(0) @binding(4) var<storage, read_write> param: array<${t}>;
@group(0) @binding(5) var<storage, read_write> m: array<${t}>;
@group(0) @binding(6) var<storage, read_write> v: array<${t}>;
@group(0) @binding(7) var<uniform> coef: Coef;
@group(0) @binding(8) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.n || coef.skip != 0.0) { return; }
${
      adamwUpdate(
        {
          grad: streamTexel("gradT", "i"),
          m: streamTexel("mT", "i"),
          v: streamTexel("vT", "i"),
          param: streamTexel("paramT", "i"),
        },
        SINGLE_DECAY,
        "",
      )
    }
}`,
  };
}

/**
 * Multi-tensor AdamW: {@link adamwKernel}'s update over `count` tensors in one
 * dispatch (a tensor list, as PyTorch's `_foreach` and Apex's multi-tensor
 * apply do). Tensor `j`'s workgroups start at `e[j].x` (increasing in `j`); it
 * has `e[j].y` elements and weight decay `bitcast<f32>(e[j].z)`. Bindings: for
 * each tensor param, grad, m, v; then coef (as in {@link adamwKernel}); then the uniforms of
 * {@link adamwMultiDispatch}. The per-element arithmetic is the single-tensor
 * kernel's, expression for expression.
 */
export function adamwMultiKernel(count: number): KernelSource {
  const decl: string[] = [];
  const body: string[] = [];
  for (let j = 0; j < count; j++) {
    decl.push(
      `@group(0) @binding(${4 * j}) var<storage, read_write> param${j}: array<f32>;`,
      `@group(0) @binding(${4 * j + 1}) var<storage, read> grad${j}: array<f32>;`,
      `@group(0) @binding(${4 * j + 2}) var<storage, read_write> m${j}: array<f32>;`,
      `@group(0) @binding(${4 * j + 3}) var<storage, read_write> v${j}: array<f32>;`,
    );
  }
  for (let j = count - 1; j >= 0; j--) {
    body.push(`  if (g >= p.e[${j}].x) {
    let i = (g - p.e[${j}].x) * ${WG}u + lid;
    if (i >= p.e[${j}].y) { return; }
    let wd = bitcast<f32>(p.e[${j}].z);
${adamwUpdate(bufferLoads(String(j)), "wd", String(j))}
    return;
  }`);
  }
  return {
    key: `adamw:multi:${count}`,
    code: /* wgsl */ `
${COEF_WGSL}
struct P {
  lr: f32, beta1: f32, beta2: f32, eps: f32, bc1: f32, bc2: f32, pad0: f32, pad1: f32,
  e: array<vec4<u32>, ${count}>,
}
${decl.join("\n")}
@group(0) @binding(${4 * count}) var<uniform> coef: Coef;
@group(0) @binding(${4 * count + 1}) var<uniform> p: P;
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  if (coef.skip != 0.0) { return; }
  let g = ${GROUP_INDEX};
${body.join("\n")}
}`,
  };
}

/**
 * Uniforms and grid for {@link adamwMultiKernel} over tensors of `sizes`
 * elements with weight decays `decays` (`s.weightDecay` is not used).
 */
export function adamwMultiDispatch(
  sizes: readonly number[],
  decays: readonly number[],
  s: AdamWStep,
) {
  const params = new Params(8 + 4 * sizes.length)
    .f32(s.lr).f32(s.beta1).f32(s.beta2).f32(s.eps)
    .f32(1 - s.beta1 ** s.step).f32(1 - s.beta2 ** s.step).f32(0).f32(0);
  let groups = 0;
  sizes.forEach((n, j) => {
    params.u32(groups).u32(n).f32(decays[j]).u32(0);
    groups += Math.ceil(n / WG);
  });
  return { params: params.buffer, workgroups: grid2d(groups) };
}

/** Hyper-parameters of one AdamW step. */
export interface AdamWStep {
  /** Learning rate. */
  lr: number;
  /** First-moment decay. */
  beta1: number;
  /** Second-moment decay. */
  beta2: number;
  /** Denominator epsilon. */
  eps: number;
  /** Decoupled weight decay (0 for parameters exempt from decay). */
  weightDecay: number;
  /** Step number, from 1 (bias correction). */
  step: number;
}

/**
 * Uniforms and grid for {@link adamwKernel} over `n` elements, the first
 * `decayEnd` (default all) taking `s.weightDecay` and the rest none: a flat
 * bucket of parameters puts those with decay first. Both counts must divide by
 * `width`.
 */
export function adamwDispatch(n: number, s: AdamWStep, width: AdamWWidth = 1, decayEnd = n) {
  for (const c of [n, decayEnd]) {
    if (c % width !== 0) throw new Error(`adamw: ${c} elements are not a multiple of ${width}`);
  }
  n /= width;
  return {
    params: new Params(12).u32(n).f32(s.lr).f32(s.beta1).f32(s.beta2).f32(s.eps)
      .f32(s.weightDecay).f32(1 - s.beta1 ** s.step).f32(1 - s.beta2 ** s.step)
      .u32(decayEnd / width).u32(0).u32(0).u32(0).buffer,
    workgroups: gridFor(n, WG),
  };
}

/**
 * From the squared norm of the gradients with their loss scale `1/invScale`
 * divided out: `norm = sqrt(sumsq[0])`,
 * `out[0] = min(1, maxNorm / (norm + 1e-6))·invScale` (clip and unscale in one
 * factor; `maxNorm ≤ 0` disables clipping), `out[1] = norm`, and `out[2] = 1`
 * when `detect` is set and the sum is not finite (some gradient is inf or NaN:
 * the optimizer skips the step), else 0. The test is on the bits, which no
 * fast-math compiler can fold away. Bindings: sumsq, out (3 values).
 */
export function clipCoefKernel(): KernelSource {
  return {
    key: "clipcoef",
    code: /* wgsl */ `
struct P { maxNorm: f32, invScale: f32, detect: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> sumsq: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(1)
fn main() {
  let bad = (bitcast<u32>(sumsq[0]) & 0x7f800000u) == 0x7f800000u;
  let norm = sqrt(sumsq[0]);
  out[0] = select(1.0, min(1.0, p.maxNorm / (norm + 1e-6)), p.maxNorm > 0.0) * p.invScale;
  out[1] = norm;
  out[2] = select(0.0, 1.0, bad && p.detect != 0u);
}`,
  };
}

/** Uniforms for {@link clipCoefKernel}. */
export function clipCoefParams(maxNorm: number, invScale = 1, detect = false): ArrayBuffer {
  return new Params(4).f32(maxNorm).f32(invScale).u32(detect ? 1 : 0).u32(0).buffer;
}
