/**
 * Plain TypeScript reference implementations the kernels are tested against
 * (float64 on the host). Test-only: nothing in the library imports this.
 * @module
 */

/** Philox-4x32-10, as in kernels/rng.ts, with BigInt products. */
export function philox(counter: number[], key: number[]): number[] {
  let [c0, c1, c2, c3] = counter.map((x) => x >>> 0);
  let [k0, k1] = key.map((x) => x >>> 0);
  const mul = (a: number, b: number) => {
    const p = BigInt(a) * BigInt(b);
    return [Number(p >> 32n) >>> 0, Number(p & 0xffffffffn) >>> 0];
  };
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mul(0xD2511F53, c0);
    const [hi1, lo1] = mul(0xCD9E8D57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9E3779B9) >>> 0;
    k1 = (k1 + 0xBB67AE85) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** Uniform [0,1) from the top 24 bits, as the kernels do. */
export function u01(x: number): number {
  return (x >>> 8) * 2 ** -24;
}

/** erf by its Taylor series (|x| < 5) in float64. */
export function erf(x: number): number {
  if (Math.abs(x) >= 5) return Math.sign(x);
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= -x * x / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

/** GeLU, tanh approximation. */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

/** GeLU, exact. */
export function geluErf(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** Row-major matmul of op(A)[M,K]·op(B)[K,N] for one batch entry. */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  transA = false,
  transB = false,
): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        s += (transA ? a[k * M + i] : a[i * K + k]) * (transB ? b[j * K + k] : b[k * N + j]);
      }
      out[i * N + j] = s;
    }
  }
  return out;
}

/** Layer norm over rows of `cols`. */
export function layerNormRef(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  b: ArrayLike<number>,
  cols: number,
  eps: number,
): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m += x[r * cols + c];
    m /= cols;
    let v = 0;
    for (let c = 0; c < cols; c++) v += (x[r * cols + c] - m) ** 2;
    v /= cols;
    const rs = 1 / Math.sqrt(v + eps);
    for (let c = 0; c < cols; c++) out[r * cols + c] = (x[r * cols + c] - m) * rs * g[c] + b[c];
  }
  return out;
}

/** Softmax of rows with a mask predicate (true = masked). */
export function softmaxRef(
  x: ArrayLike<number>,
  cols: number,
  scale: number,
  masked: (row: number, col: number) => boolean,
): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let m = -Infinity;
    for (let c = 0; c < cols; c++) if (!masked(r, c)) m = Math.max(m, scale * x[r * cols + c]);
    let s = 0;
    for (let c = 0; c < cols; c++) if (!masked(r, c)) s += Math.exp(scale * x[r * cols + c] - m);
    for (let c = 0; c < cols; c++) {
      out[r * cols + c] = masked(r, c) || s === 0 ? 0 : Math.exp(scale * x[r * cols + c] - m) / s;
    }
  }
  return out;
}

/** Mean cross-entropy over rows with targets (negative = ignored), first `valid` columns. */
export function crossEntropyRef(
  x: ArrayLike<number>,
  targets: ArrayLike<number>,
  cols: number,
  valid: number,
): number {
  let total = 0;
  let count = 0;
  for (let r = 0; r < targets.length; r++) {
    if (targets[r] < 0) continue;
    let m = -Infinity;
    for (let c = 0; c < valid; c++) m = Math.max(m, x[r * cols + c]);
    let s = 0;
    for (let c = 0; c < valid; c++) s += Math.exp(x[r * cols + c] - m);
    total += m + Math.log(s) - x[r * cols + targets[r]];
    count++;
  }
  return total / Math.max(count, 1);
}
