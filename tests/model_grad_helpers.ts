/**
 * Helpers of the whole-model gradient tests (model_grad_test.ts,
 * vocab_scale_test.ts): O(1) random weights, the GPU loss and every
 * parameter's gradient, central differences of a host loss, and a gradient
 * comparison that names the worst elements. Test-only.
 * @module
 */

import { backward, zeroGrad } from "../core/autograd.ts";
import type { Device } from "../core/device.ts";
import type { Module } from "../core/nn.ts";
import { type Tensor, tidy } from "../core/tensor.ts";
import { prng } from "./helpers.ts";

/** Set MODEL_GRAD_VERBOSE=1 to print every parameter's largest error and margin. */
export const VERBOSE = !!Deno.env.get("MODEL_GRAD_VERBOSE");

/**
 * Overwrites every parameter of `m` with O(1) random values and returns the
 * host copies by name: linear weights U(±1.5/sqrt(fan-in)), embedding tables
 * U(±`embeddingScale`), layer-norm gains 1 ± 0.3, every other vector ±0.2. So
 * every path carries a gradient of the same order (the 0.02 init's do not),
 * and zero biases or unit gains cannot hide a bug.
 */
export function randomizeWeights(
  m: Module,
  seed: number,
  embeddingScale = 0.5,
): Map<string, Float32Array> {
  const r = prng(seed);
  const u = (a: number) => (2 * r() - 1) * a;
  const out = new Map<string, Float32Array>();
  for (const [name, p] of m.namedParams()) {
    const t = p.tensor;
    const data = new Float32Array(t.size);
    const norm = /(LayerNorm|layernorm|ln_\w+)\.weight$/.test(name);
    const table = /(embeddings|wte|wpe)\.weight$/.test(name);
    for (let i = 0; i < data.length; i++) {
      if (t.rank === 2) {
        data[i] = table ? u(embeddingScale) : u(1.5 / Math.sqrt(t.shape[1]));
      } else {
        data[i] = norm ? 1 + u(0.3) : u(0.2);
      }
    }
    t.write(data);
    out.set(name, data);
  }
  return out;
}

/**
 * The GPU loss of `lossFn` and the gradient of every parameter of `m` after one
 * backward pass from it (zeros for a parameter that received none). Leaves the
 * parameters' gradients cleared.
 */
export async function gpuGrads(
  dev: Device,
  m: Module,
  lossFn: () => Promise<Tensor>,
): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const named = m.namedParams();
  zeroGrad(m.parameters());
  const loss = await tidy(dev, async () => {
    const l = await lossFn();
    await backward(l);
    return await l.item();
  });
  const withGrad = named.filter(([, p]) => p.tensor.grad);
  const vals = await dev.readMany(withGrad.map(([, p]) => p.tensor.grad!.binding));
  const grads = new Map<string, Float32Array>();
  for (const [n, p] of named) grads.set(n, new Float32Array(p.tensor.size));
  withGrad.forEach(([n], i) => grads.set(n, new Float32Array(vals[i])));
  zeroGrad(m.parameters());
  return { loss, grads };
}

/**
 * `(L(w + eps) − L(w − eps)) / (step taken)` for element `i` of `arr`, which
 * `lossOf` reads; the element is restored. Dividing by the step actually taken
 * (`fround(w ± eps)` for a float32 array) keeps float32 weights exact.
 */
export function centralDifference(
  arr: Float32Array | Float64Array,
  i: number,
  lossOf: () => number,
  eps: number,
): number {
  const w0 = arr[i];
  arr[i] = w0 + eps;
  const wp = arr[i];
  const lp = lossOf();
  arr[i] = w0 - eps;
  const wm = arr[i];
  const lm = lossOf();
  arr[i] = w0;
  return (lp - lm) / (wp - wm);
}

/** {@link centralDifference} for every element of every array of `w` (perturbed in place). */
export function centralDifferences(
  w: Map<string, Float32Array | Float64Array>,
  lossOf: () => number,
  eps: number,
): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const [name, arr] of w) {
    const g = new Float64Array(arr.length);
    for (let i = 0; i < arr.length; i++) g[i] = centralDifference(arr, i, lossOf, eps);
    out.set(name, g);
  }
  return out;
}

/** Tolerance of {@link assertGrads}: `|g − ref| ≤ atolOfMax·G + rtol·|ref|`. */
export interface GradTolerance {
  /** Absolute floor as a fraction of G, the largest |ref| of the whole model. */
  atolOfMax: number;
  /** Relative part. */
  rtol: number;
}

/**
 * Asserts every GPU gradient against its reference; on failure names the worst
 * elements (parameter, index, both values, multiple of the tolerance).
 */
export function assertGrads(
  what: string,
  got: Map<string, ArrayLike<number>>,
  ref: Map<string, ArrayLike<number>>,
  tol: GradTolerance,
): void {
  let G = 0;
  for (const r of ref.values()) for (let i = 0; i < r.length; i++) G = Math.max(G, Math.abs(r[i]));
  const atol = tol.atolOfMax * G;
  const bad: { name: string; i: number; g: number; r: number; ratio: number }[] = [];
  for (const [name, r] of ref) {
    const g = got.get(name);
    if (!g || g.length !== r.length) {
      throw new Error(`${what}: no gradient of size ${r.length} for ${name}`);
    }
    let worstErr = 0, worstRatio = 0, scale = 0;
    for (let i = 0; i < r.length; i++) {
      const err = Math.abs(g[i] - r[i]);
      const allowed = atol + tol.rtol * Math.abs(r[i]);
      const ratio = err / allowed;
      if (!(ratio <= 1)) bad.push({ name, i, g: g[i], r: r[i], ratio });
      worstErr = Math.max(worstErr, err);
      worstRatio = Math.max(worstRatio, ratio);
      scale = Math.max(scale, Math.abs(r[i]));
    }
    if (VERBOSE) {
      console.log(
        `${what} ${name}: max|ref| ${scale.toExponential(2)}, max|err| ${
          worstErr.toExponential(2)
        }, worst element at ${worstRatio.toFixed(3)} of its tolerance`,
      );
    }
  }
  if (bad.length) {
    bad.sort((a, b) => b.ratio - a.ratio);
    const lines = bad.slice(0, 8).map((b) =>
      `  ${b.name}[${b.i}]: gpu ${b.g}, reference ${b.r} (${b.ratio.toFixed(2)}× the tolerance)`
    );
    throw new Error(
      `${what}: ${bad.length} gradient elements out of tolerance (|g − ref| ≤ ${
        atol.toExponential(2)
      } + ${tol.rtol}·|ref|; largest |ref| ${G.toExponential(3)}); worst:\n${lines.join("\n")}`,
    );
  }
}

/** Asserts rows `[from, rows)` of a row-major `[rows, cols]` gradient are exactly zero. */
export function assertZeroRows(what: string, g: ArrayLike<number>, cols: number, from: number) {
  for (let i = from * cols; i < g.length; i++) {
    if (g[i] !== 0) {
      throw new Error(`${what}: row ${Math.floor(i / cols)} (padding) has gradient ${g[i]}`);
    }
  }
}

/** `n` token ids uniform in `[0, vocab)`. */
export function tokens(n: number, seed: number, vocab: number): Int32Array {
  const r = prng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(r() * vocab));
}
