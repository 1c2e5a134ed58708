/**
 * Batched f32 matrix multiplication `C = alpha·op(A)·op(B) (+ bias) (+ C)` as WGSL.
 *
 * One generator covers every transpose combination, batch broadcast, a bias
 * epilogue and accumulation. Shapes travel in a uniform block, so a pipeline is
 * compiled once per flag combination, not per shape.
 * @module
 */

import { ceilDiv, type KernelSource, Params } from "./kernel.ts";

/** The problem: `batch` products of an `M×K` and a `K×N` matrix. */
export interface MatmulShape {
  /** Number of matrices. */
  batch: number;
  /** Rows of op(A) and C. */
  M: number;
  /** Columns of op(B) and C. */
  N: number;
  /** Inner dimension. */
  K: number;
  /** A stored `[.., K, M]` when true, else `[.., M, K]` (row-major). */
  transA: boolean;
  /** B stored `[.., N, K]` when true, else `[.., K, N]`. */
  transB: boolean;
  /** False: one A shared by every batch entry (broadcast). */
  batchA: boolean;
  /** False: one B shared by every batch entry (e.g. a weight). */
  batchB: boolean;
  /** Add `bias[N]` to every output row (bound after B). */
  bias: boolean;
  /** Scale of A·B (default 1). */
  alpha?: number;
  /** `C += alpha·A·B (+bias)` instead of `C = …` (gradient accumulation). */
  accumulate?: boolean;
}

/** What the adapter allows and which variant family to use. */
export interface MatmulOptions {
  /** True on CPU adapters (lavapipe, SwiftShader): picks the CPU-friendly variant. */
  software: boolean;
  /** The adapter's maxComputeInvocationsPerWorkgroup. */
  maxInvocations: number;
  /** The adapter's maxComputeWorkgroupStorageSize in bytes. */
  maxWorkgroupStorage: number;
}

/** A kernel, its uniform block and its workgroup counts, ready for `Device.dispatch`. */
export interface DispatchPlan {
  /** The WGSL specialization. */
  kernel: KernelSource;
  /** The packed uniform parameters. */
  params: ArrayBuffer;
  /** Workgroup counts (each at most 65535). */
  workgroups: [number, number, number];
}

/** Largest workgroup count per dimension that every WebGPU adapter accepts. */
const MAX_GROUPS = 65535;

function checkShape(s: MatmulShape): void {
  for (const k of ["batch", "M", "N", "K"] as const) {
    const v = s[k];
    if (!Number.isInteger(v) || v < 1) {
      throw new Error(`matmul: ${k} must be a positive integer, got ${v}`);
    }
  }
  const big = [s.M * s.K, s.K * s.N, s.M * s.N].some((v) => v * s.batch >= 2 ** 32);
  if (big) {
    throw new Error(`matmul: ${s.batch}×[${s.M}×${s.K}]·[${s.K}×${s.N}] exceeds u32 indexing`);
  }
}

/** Splits `groups` linear workgroups into an x×y grid within the per-dimension limit. */
function grid(groups: number): [number, number, number] {
  const x = Math.min(groups, MAX_GROUPS);
  const y = ceilDiv(groups, x);
  if (y > MAX_GROUPS) throw new Error(`matmul: ${groups} workgroups exceed ${MAX_GROUPS}²`);
  return [x, y, 1];
}

/**
 * Plans one batched matmul. Bindings in order: A, B, [bias], C (C is
 * `[batch, M, N]` row-major, read_write).
 */
export function matmulPlan(shape: MatmulShape, opts: MatmulOptions): DispatchPlan {
  checkShape(shape);
  return simplePlan(shape, opts);
}

// ---------------------------------------------------------------------------
// Generic register-blocked kernel: every invocation computes a TM×TN block of C
// with scalar loads; rows/columns past the edge are clamped on load and masked
// on store, so the inner loop has no branches.

const TM = 4;
const TN = 4;
const WG_X = 8;
const WG_Y = 8;

function simplePlan(s: MatmulShape, _opts: MatmulOptions): DispatchPlan {
  const acc = s.accumulate === true;
  const key = `matmul/simple/${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}` +
    `/a${+s.batchA}b${+s.batchB}/bias${+s.bias}/acc${+acc}`;
  const tilesN = ceilDiv(s.N, TN * WG_X);
  const tilesM = ceilDiv(s.M, TM * WG_Y);
  const workgroups = grid(tilesN * tilesM * s.batch);
  const params = new Params(8)
    .u32(s.M).u32(s.N).u32(s.K).f32(s.alpha ?? 1)
    .u32(tilesN).u32(tilesM).u32(workgroups[0]).u32(s.batch);
  return { kernel: { key, code: simpleCode(s, acc) }, params: params.buffer, workgroups };
}

function simpleCode(s: MatmulShape, acc: boolean): string {
  const aIdx = s.transA ? "k * p.M + m" : "m * p.K + k";
  const bIdx = s.transB ? "n * p.K + k" : "k * p.N + n";
  const biasBinding = s.bias ? "@group(0) @binding(2) var<storage, read> bias: array<f32>;" : "";
  const cBinding = s.bias ? 3 : 2;
  const params = s.bias ? 4 : 3;
  return /* wgsl */ `
struct P { M: u32, N: u32, K: u32, alpha: f32, tilesN: u32, tilesM: u32, gx: u32, batch: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
${biasBinding}
@group(0) @binding(${cBinding}) var<storage, read_write> C: array<f32>;
@group(0) @binding(${params}) var<uniform> p: P;

@compute @workgroup_size(${WG_X}, ${WG_Y}, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = wg.x + wg.y * p.gx;
  let perBatch = p.tilesN * p.tilesM;
  let b = tile / perBatch;
  let r = tile - b * perBatch;
  let tm = r / p.tilesN;
  let tn = r - tm * p.tilesN;
  if (b >= p.batch) { return; }
  let aOff = ${s.batchA ? "b * p.M * p.K" : "0u"};
  let bOff = ${s.batchB ? "b * p.K * p.N" : "0u"};
  let m0 = (tm * ${WG_Y}u + lid.y) * ${TM}u;
  let n0 = (tn * ${WG_X}u + lid.x) * ${TN}u;
  var ms: array<u32, ${TM}>;
  var ns: array<u32, ${TN}>;
  for (var i = 0u; i < ${TM}u; i++) { ms[i] = min(m0 + i, p.M - 1u); }
  for (var j = 0u; j < ${TN}u; j++) { ns[j] = min(n0 + j, p.N - 1u); }
  var sum: array<array<f32, ${TN}>, ${TM}>;
  for (var k = 0u; k < p.K; k++) {
    var av: array<f32, ${TM}>;
    for (var i = 0u; i < ${TM}u; i++) { let m = ms[i]; av[i] = A[aOff + ${aIdx}]; }
    for (var j = 0u; j < ${TN}u; j++) {
      let n = ns[j];
      let bv = B[bOff + ${bIdx}];
      for (var i = 0u; i < ${TM}u; i++) { sum[i][j] = fma(av[i], bv, sum[i][j]); }
    }
  }
  let cOff = b * p.M * p.N;
  for (var i = 0u; i < ${TM}u; i++) {
    let m = m0 + i;
    if (m >= p.M) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let n = n0 + j;
      if (n >= p.N) { break; }
      var v = p.alpha * sum[i][j];
      ${s.bias ? "v += bias[n];" : ""}
      let ci = cOff + m * p.N + n;
      ${acc ? "C[ci] += v;" : "C[ci] = v;"}
    }
  }
}
`;
}
