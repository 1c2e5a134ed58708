/**
 * Batched f32 matrix multiplication `C = alpha·op(A)·op(B) (+ bias) (+ C)` as WGSL.
 *
 * One generator covers every transpose combination, batch broadcast, a bias
 * epilogue, accumulation, and a packed 16-bit B (mixed precision's weights; fp16
 * optionally in native `f16` arithmetic). Shapes travel in a uniform block, so a pipeline is
 * compiled once per flag combination, not per shape.
 * @module
 */

import {
  ceilDiv,
  type KernelSource,
  lazyKernel,
  Params,
  SOFTWARE_LANE_WIDTHS,
  SOFTWARE_LANES,
} from "./kernel.ts";
import { STREAM_TEXTURE, streamFits, streamTexel } from "./texture.ts";
import { SOFTWARE_LOOP_LIMIT } from "./rowreduce.ts";
import { type HalfFormat, halfFunctions, halvesOf } from "./half.ts";
import { ACTIVATIONS_WGSL, type GeluKind } from "./elementwise.ts";

export type { GeluKind };

export type { KernelSource };

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
  /**
   * B is bound packed in this 16-bit format, two values per u32 (kernels/half.ts;
   * element i in word i/2, low half first), and unpacked to f32 as it is read:
   * mixed precision's 16-bit weight copy. The arithmetic stays f32.
   */
  packedB?: HalfFormat;
  /**
   * Also write `gelu(C)` of this kind to an output D (`[batch, M, N]`, bound
   * right after C): a linear and its GeLU in one kernel (C keeps the
   * pre-activation for the backward pass).
   */
  geluOut?: GeluKind;
  /**
   * Multiply the product by `gelu'(U)` of this kind before storing, U
   * (`[batch, M, N]`, the pre-activation) bound right after C: the gradient
   * through a GeLU in the epilogue of the product that brings it.
   */
  geluGrad?: GeluKind;
}

/** What the adapter allows and which variant family to use. */
export interface MatmulOptions {
  /** True on CPU adapters (lavapipe, SwiftShader): picks the CPU-friendly variant. */
  software: boolean;
  /** The adapter's maxComputeInvocationsPerWorkgroup. */
  maxInvocations: number;
  /** The adapter's maxComputeWorkgroupStorageSize in bytes. */
  maxWorkgroupStorage: number;
  /**
   * The device has `shader-f16`: a packed fp16 B ({@link MatmulShape.packedB}) is
   * read as native `f16` values instead of being unpacked with integer operations.
   */
  shaderF16?: boolean;
  /**
   * With {@link MatmulOptions.shaderF16} and a packed fp16 B: native `f16`
   * arithmetic. A is rounded to f16 as it is read; each group of 4 products
   * along k is multiplied and summed in f16 (the first product rounded, then 3
   * fused multiply-adds) and the group's sum is added to an f32 accumulator.
   * False (the default): every product and sum in f32.
   */
  f16Arithmetic?: boolean;
  /**
   * The adapter's maxTextureDimension2D: software variants may then read B
   * through a texture ({@link MatmulTiling.texB}); undefined: never.
   */
  maxTextureDimension?: number;
  /**
   * Software adapters: f32 lanes one SIMD instruction covers (llvmpipe: its
   * vector width / 32, so 8 at 256 bits and 16 at 512), which the software
   * tilings make the workgroup size. Default {@link SOFTWARE_LANES}.
   */
  lanes?: number;
}

/** The workgroup size of software tilings on an adapter described by `opts`. */
function lanesOf(opts: MatmulOptions): number {
  return opts.lanes ?? SOFTWARE_LANES;
}

/** A software tiling's invocations per workgroup. */
function tilingLanes(t: MatmulTiling): number {
  return t.lanes ?? SOFTWARE_LANES;
}

/** A software tiling's invocations along N (default: all of its lanes). */
function tilingLx(t: MatmulTiling): number {
  return t.lx ?? tilingLanes(t);
}

/** Invocations along N the tuner tries (divisors of the lanes, at most 8). */
function lxChoices(lanes: number): number[] {
  return [1, 2, 4, 8].filter((lx) => lx <= lanes);
}

/** The `lanes` field of a software tiling: left out at the default width. */
function laneField(lanes: number): { lanes?: number } {
  return lanes === SOFTWARE_LANES ? {} : { lanes };
}

/** A kernel, its uniform block and its workgroup counts, ready for `Device.dispatch`. */
export interface DispatchPlan {
  /** The WGSL specialization. */
  kernel: KernelSource;
  /** The packed uniform parameters. */
  params: ArrayBuffer;
  /** Workgroup counts (each at most 65535). */
  workgroups: [number, number, number];
  /**
   * When B is read through a stream texture: the vec4s of B the kernel reads.
   * The caller fills the texture from B's buffer first (`Device.streamOperands`)
   * and binds it in B's place.
   */
  textureB?: number;
  /** The same for A ({@link MatmulTiling.texA}): filled from A's buffer, bound in A's place. */
  textureA?: number;
  /**
   * The same for a GeLU-gradient epilogue's U ({@link MatmulShape.geluGrad}) on
   * CPU adapters: filled from U's buffer, bound in U's place (the last binding).
   */
  textureU?: number;
}

/** Vec4s of B's stream texture for `shape` ({@link MatmulTiling.texB}), or null when B cannot use one. */
export function textureBSize(s: MatmulShape, opts: MatmulOptions): number | null {
  if (!opts.software) return null;
  const copies = s.batchB ? s.batch : 1;
  if (s.packedB) return packedTexture(s, opts, copies);
  return operandTexture(layout(s, true).b, s.N, s.K, copies, opts.maxTextureDimension);
}

/**
 * Vec4s of the stream texture a packed 16-bit B is read through (its words as
 * they are: a texel holds 8 values, two of the kernel's vec4s), or null where B
 * keeps its buffer: scalar reads, native `f16` reads (`shader-f16`), or a
 * count of values that does not fill whole texels. The texture is rgba32float;
 * the kernel takes its texels' bits back with `bitcast`, which a storage
 * texture's load and the buffer-to-texture copy leave untouched (checked on
 * llvmpipe over every special pattern: NaNs, infinities, denormals).
 */
function packedTexture(s: MatmulShape, opts: MatmulOptions, copies: number): number | null {
  if (layout(s, true).b === "s" || f16Variant(s, opts) !== "") return null;
  const values = copies * s.N * s.K;
  if (values % 8 !== 0) return null;
  return streamFits(values / 8, opts.maxTextureDimension) ? values / 8 : null;
}

/** Vec4s of A's stream texture for `shape` ({@link MatmulTiling.texA}), or null when A cannot use one. */
export function textureASize(s: MatmulShape, opts: MatmulOptions): number | null {
  if (!opts.software) return null;
  return operandTexture(
    layout(s, true).a,
    s.M,
    s.K,
    s.batchA ? s.batch : 1,
    opts.maxTextureDimension,
  );
}

/**
 * Vec4s of the stream texture a software kernel reads a GeLU-gradient
 * epilogue's U through (`[batch, M, N]` with N a multiple of 4: vec4 loads that
 * a storage buffer would serve one invocation at a time), or null when it reads
 * U's buffer.
 */
function textureUSize(s: MatmulShape, opts: MatmulOptions): number | null {
  if (!opts.software || !s.geluGrad || s.N % 4 !== 0) return null;
  const vec4s = (s.batch * s.M * s.N) / 4;
  return streamFits(vec4s, opts.maxTextureDimension) ? vec4s : null;
}

/**
 * The vec4s of an operand read as vec4s (modes "k4" and "l4": `copies` of
 * `lines × K` values) when they fit a stream texture; scalar operands have
 * no texture.
 */
function operandTexture(
  mode: Mode,
  lines: number,
  K: number,
  copies: number,
  maxDimension: number | undefined,
): number | null {
  if (mode !== "k4" && mode !== "l4") return null;
  const vec4s = (copies * lines * K) / 4;
  return streamFits(vec4s, maxDimension) ? vec4s : null;
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
  if (s.geluOut && s.geluGrad) throw new Error("matmul: geluOut and geluGrad exclude each other");
  if ((s.geluOut || s.geluGrad) && s.accumulate) {
    throw new Error("matmul: a GeLU epilogue cannot accumulate into C");
  }
  const big = [s.M * s.K, s.K * s.N, s.M * s.N].some((v) => v * s.batch >= 2 ** 32);
  if (big) {
    throw new Error(`matmul: ${s.batch}×[${s.M}×${s.K}]·[${s.K}×${s.N}] exceeds u32 indexing`);
  }
}

function checkTiling(t: MatmulTiling): void {
  const ok = t.software
    ? t.tm % 4 === 0 && t.tm >= 4 && t.tm <= 64 && Number.isInteger(t.tv) && t.tv >= 1 &&
      t.tv <= 8 && SOFTWARE_LANE_WIDTHS.includes(tilingLanes(t)) &&
      [1, 2, 4, 8, 16].includes(tilingLx(t)) && tilingLx(t) <= tilingLanes(t)
    : [16, 32, 64].includes(t.tm) && [16, 32, 64].includes(t.tv);
  if (!ok || ((t.texB || t.texA) && !t.software)) {
    throw new Error(`matmul: unsupported tiling ${JSON.stringify(t)}`);
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
 * Tiling of one specialization. `software` variants give each invocation a
 * `tm × 4·tv` block of C (one workgroup of {@link MatmulTiling.lanes}
 * invocations, vec4 loads, no shared memory); GPU variants stage `tm × tn`
 * tiles of A and B in workgroup memory.
 */
export interface MatmulTiling {
  /** Variant family. */
  software: boolean;
  /** Software: rows per invocation (multiple of 4). GPU: tile rows per workgroup. */
  tm: number;
  /** Software: vec4 column groups per invocation. GPU: tile columns per workgroup. */
  tv: number;
  /**
   * Software: invocations along N (1, 2, 4, 8 or `lanes`, at most `lanes`; the
   * other `lanes / lx` go along M). Default: `lanes`.
   */
  lx?: number;
  /**
   * Software: invocations per workgroup, the adapter's SIMD width in f32 lanes
   * ({@link MatmulOptions.lanes}): 8 or 16. Default {@link SOFTWARE_LANES}.
   */
  lanes?: number;
  /**
   * Software: read B through a stream texture (kernels/texture.ts; filled from
   * B's buffer by copies first) instead of its storage buffer. Mesa's llvmpipe
   * loads a storage element that differs between invocations one invocation at
   * a time in a branching loop, while texel fetches are straight-line gathers:
   * measured 1.4–1.7× faster at the reference shapes. Same values.
   */
  texB?: boolean;
  /** Software: read A through a stream texture too (same reasoning as texB). */
  texA?: boolean;
}

/**
 * Plans one batched matmul. Bindings in order: A, B, [bias], C (C is
 * `[batch, M, N]` row-major, read_write).
 */
export function matmulPlan(shape: MatmulShape, opts: MatmulOptions): DispatchPlan {
  return matmulPlanWith(shape, opts, chooseTiling(shape, opts));
}

/** The tiling {@link matmulPlan} picks for `shape` on an adapter described by `opts`. */
export function chooseTiling(s: MatmulShape, opts: MatmulOptions): MatmulTiling {
  if (opts.software) {
    const lanes = lanesOf(opts);
    if (textureASize(s, opts)) {
      // Both operands through textures (measured on llvmpipe, Zen 1): a 16×32
      // block per invocation, 4 invocations along N, was near the best (32×32
      // ran up to 10% faster but takes LLVM 3× as long to compile: ~10 s).
      const lx = s.N > 64 ? 4 : 2;
      const tv = Math.min(8, ceilDiv(s.N, 4 * lx));
      const tm = Math.min(16, 4 * ceilDiv(ceilDiv(s.M, lanes / lx), 4));
      return {
        software: true,
        tm,
        tv,
        lx,
        ...laneField(lanes),
        texA: true,
        ...(textureBSize(s, opts) ? { texB: true } : {}),
      };
    }
    // Measured on lavapipe: a 16×16 block per invocation (tm 16, tv 4) is near
    // the best everywhere; narrow outputs put fewer invocations along N rather
    // than giving each a thinner block, and tall ones use 32 rows.
    const lx = s.N > 64 ? 8 : s.N > 32 ? 4 : 2;
    const tv = Math.min(4, ceilDiv(s.N, 4 * lx));
    const rows = ceilDiv(s.M, lanes / lx);
    const tm = lx === 8 && s.M >= 512 ? 32 : Math.min(16, 4 * ceilDiv(rows, 4));
    return textureBSize(s, opts)
      ? { software: true, tm, tv, lx, ...laneField(lanes), texB: true }
      : { software: true, tm, tv, lx, ...laneField(lanes) };
  }
  const big = opts.maxInvocations >= 256 && opts.maxWorkgroupStorage >= 2 * BK * 64 * 4;
  const side = (n: number) => (n <= 16 ? 16 : n <= 32 || !big ? 32 : 64);
  return { software: false, tm: side(s.M), tv: side(s.N) };
}

/**
 * How `opts` changes the code of `shape`'s kernels beyond its key: "n" where
 * its fp16 weights are read natively (`shader-f16`), "h" where the products
 * are also computed in f16 (`--f16-arithmetic`), else "".
 */
export function f16Variant(shape: MatmulShape, opts: MatmulOptions): "" | "n" | "h" {
  if (shape.packedB !== "fp16" || opts.shaderF16 !== true) return "";
  return opts.f16Arithmetic === true ? "h" : "n";
}

/** Like {@link matmulPlan} with an explicit tiling (for tuning and benchmarks). */
export function matmulPlanWith(
  shape: MatmulShape,
  opts: MatmulOptions,
  tiling: MatmulTiling,
): DispatchPlan {
  const variant = f16Variant(shape, opts);
  const nativeF16 = variant !== "";
  const f16Math = variant === "h";
  checkShape(shape);
  checkTiling(tiling);
  if (tiling.software && ceilDiv(shape.K, 4) + 3 > SOFTWARE_LOOP_LIMIT) {
    // Each invocation walks K in steps of 4 (see SOFTWARE_LOOP_LIMIT).
    throw new Error(
      `matmul: an inner dimension of ${shape.K} is past what a software adapter computes ` +
        `correctly (${4 * (SOFTWARE_LOOP_LIMIT - 3)}: Mesa stops a shader after ` +
        `${SOFTWARE_LOOP_LIMIT} loop iterations); use fewer tokens per micro-batch`,
    );
  }
  const lay = layout(shape, tiling.software);
  const texU = tiling.software ? textureUSize(shape, opts) : null;
  const tex = tiling.texB ? textureBSize(shape, opts) : null;
  if (tiling.texB && !tex) {
    throw new Error(
      `matmul: B of ${matmulShapeKey(shape)} cannot be read through a texture on this adapter`,
    );
  }
  const texA = tiling.texA ? textureASize(shape, opts) : null;
  if (tiling.texA && !texA) {
    throw new Error(
      `matmul: A of ${matmulShapeKey(shape)} cannot be read through a texture on this adapter`,
    );
  }
  const tile = workgroupTile(tiling);
  const tilesN = ceilDiv(shape.N, tile.cols);
  const tilesM = ceilDiv(shape.M, tile.rows);
  const workgroups = grid(tilesN * tilesM * shape.batch);
  const params = new Params(8)
    .u32(shape.M).u32(shape.N).u32(shape.K).f32(shape.alpha ?? 1)
    .u32(tilesN).u32(tilesM).u32(workgroups[0]).u32(shape.batch);
  const flags = `${shape.transA ? "T" : "N"}${shape.transB ? "T" : "N"}` +
    `/a${+shape.batchA}${lay.a}/b${+shape.batchB}${lay.b}/c${+lay.vecC}k${+lay.k4}` +
    `/bias${+shape.bias}/acc${+lay.acc}${shape.packedB ? `/pB${shape.packedB}` : ""}` +
    epilogueKey(shape) + (texU ? "/tU" : "") + variant;
  const key = `matmul/${tilingKey(tiling)}/${flags}`;
  // The WGSL (tens of kB) is generated only when a pipeline is compiled: a plan
  // for an already-cached key costs microseconds.
  const s: Spec = { ...shape, nativeF16, f16Math }, t = { ...tiling }; // callers may reuse their objects
  const kernel = lazyKernel(key, () => {
    const code = t.software ? cpuCode(s, lay, t, texU !== null) : gpuCode(s, lay, t);
    return s.packedB ? readPackedB(code) : code;
  });
  const plan: DispatchPlan = { kernel, params: params.buffer, workgroups };
  if (tex) plan.textureB = tex;
  if (texA) plan.textureA = texA;
  if (texU) plan.textureU = texU;
  return plan;
}

// ---------------------------------------------------------------------------
// Operand layout. Each operand is read along "lines" (rows m of A, columns n of
// B) and k. Mode "k4": vec4 loads along k (the line is contiguous in k);
// "l4": vec4 loads across 4 neighbouring lines (they are contiguous); "s":
// scalar loads. A vec4 mode needs the contiguous extent to be a multiple of 4
// so every vec4 is aligned, including batch offsets.

type Mode = "k4" | "l4" | "s";

/** A shape with the 16-bit choices {@link matmulPlanWith} made for the adapter. */
type Spec = MatmulShape & {
  /** Packed fp16 B read as native `f16`. */
  nativeF16?: boolean;
  /** Products and 4-term partial sums in native `f16` ({@link MatmulOptions.f16Arithmetic}). */
  f16Math?: boolean;
};

interface Layout {
  a: Mode;
  b: Mode;
  /**
   * The software tiling with C rows (N) a multiple of 4: C, D, the bias and U
   * as vec4 arrays. Never in the GPU tiling, whose neighbouring invocations
   * each store one element: WGSL counts a write to one component as a write
   * to the whole vector, so four invocations storing the components of one
   * vec4 would race (a compiler may store the whole vector).
   */
  vecC: boolean;
  /** K is a multiple of 4: no k tail loop. */
  k4: boolean;
  acc: boolean;
}

function layout(s: MatmulShape, software: boolean): Layout {
  const a: Mode = s.transA ? (s.M % 4 === 0 ? "l4" : "s") : (s.K % 4 === 0 ? "k4" : "s");
  const b: Mode = s.transB ? (s.K % 4 === 0 ? "k4" : "s") : (s.N % 4 === 0 ? "l4" : "s");
  const vecC = software && s.N % 4 === 0;
  return { a, b, vecC, k4: s.K % 4 === 0, acc: s.accumulate === true };
}

/**
 * `code` with every read `B[i]` turned into `loadB(i)` (the packed reader the
 * header declares for {@link MatmulShape.packedB}).
 */
function readPackedB(code: string): string {
  let out = "";
  let i = 0;
  for (;;) {
    const j = code.indexOf("B[", i);
    if (j < 0) return out + code.slice(i);
    if (j > 0 && /[A-Za-z0-9_]/.test(code[j - 1])) {
      out += code.slice(i, j + 2);
      i = j + 2;
      continue;
    }
    let depth = 1, e = j + 2;
    for (; depth > 0; e++) {
      if (code[e] === "[") depth++;
      else if (code[e] === "]") depth--;
    }
    out += code.slice(i, j) + "loadB(" + readPackedB(code.slice(j + 2, e - 1)) + ")";
    i = e;
  }
}

/** The binding of B and its reader `loadB` when B is packed 16-bit. */
function packedBDecl(s: Spec, lay: Layout, texB: boolean): string {
  const fmt = s.packedB!;
  if (texB) {
    // A texel holds the words of two vec4s of B (packedTexture).
    return `@group(0) @binding(1) var Bt: ${STREAM_TEXTURE};
${halfFunctions(fmt)}
fn loadB(i: u32) -> vec4<f32> {
  let t = bitcast<vec4<u32>>(${streamTexel("Bt", "i >> 1u")});
  let w = select(t.xy, t.zw, (i & 1u) == 1u);
  return ${halvesOf("w.x", "w.y")};
}
`;
  }
  if (s.nativeF16) {
    // The same bytes as native f16 (shader-f16): the hardware converts, to f32
    // unless the arithmetic is f16 too.
    const t = s.f16Math ? "f16" : "f32";
    return lay.b !== "s"
      ? `@group(0) @binding(1) var<storage, read> Bh: array<vec4<f16>>;
fn loadB(i: u32) -> vec4<${t}> { return vec4<${t}>(Bh[i]); }
`
      : `@group(0) @binding(1) var<storage, read> Bh: array<f16>;
fn loadB(i: u32) -> ${t} { return ${t}(Bh[i]); }
`;
  }
  if (lay.b !== "s") {
    return `@group(0) @binding(1) var<storage, read> Bp: array<vec2<u32>>;
${halfFunctions(fmt)}
fn loadB(i: u32) -> vec4<f32> {
  let w = Bp[i];
  return ${halvesOf("w.x", "w.y")};
}
`;
  }
  return `@group(0) @binding(1) var<storage, read> Bp: array<u32>;
${halfFunctions(fmt)}
fn loadB(i: u32) -> f32 { return from_half(Bp[i / 2u] >> (16u * (i % 2u))); }
`;
}

function header(s: Spec, lay: Layout, texB = false): string {
  const ty = (v: boolean) => (v ? "vec4<f32>" : "f32");
  const bias = s.bias
    ? `@group(0) @binding(2) var<storage, read> bias: array<${ty(lay.vecC)}>;\n`
    : "";
  const c = s.bias ? 3 : 2;
  const extra = s.geluOut
    ? `@group(0) @binding(${c + 1}) var<storage, read_write> D: array<${
      ty(lay.vecC)
    }>;\n${ACTIVATIONS_WGSL}`
    : s.geluGrad
    ? `@group(0) @binding(${c + 1}) var<storage, read> U: array<${
      ty(lay.vecC)
    }>;\n${ACTIVATIONS_WGSL}`
    : "";
  const u = s.geluOut || s.geluGrad ? c + 2 : c + 1;
  return `${
    s.nativeF16 ? "enable f16;\n" : ""
  }struct P { M: u32, N: u32, K: u32, alpha: f32, tilesN: u32, tilesM: u32, gx: u32, batch: u32 }
@group(0) @binding(0) var<storage, read> A: array<${ty(lay.a !== "s")}>;
${
    s.packedB
      ? packedBDecl(s, lay, texB)
      : `@group(0) @binding(1) var<storage, read> B: array<${ty(lay.b !== "s")}>;\n`
  }${bias}@group(0) @binding(${c}) var<storage, read_write> C: array<${ty(lay.vecC)}>;
${extra}@group(0) @binding(${u}) var<uniform> p: P;
`;
}

/** WGSL that decodes the linear workgroup id into batch `b`, tile row `tm`, tile column `tn`. */
function tileIndex(s: MatmulShape): string {
  return `  let tile = wg.x + wg.y * p.gx;
  let perBatch = p.tilesN * p.tilesM;
  let b = tile / perBatch;
  if (b >= p.batch) { return; }
  let r = tile - b * perBatch;
  let tm = r / p.tilesN;
  let tn = r - tm * p.tilesN;
  let aOff = ${s.batchA ? "b * p.M * p.K" : "0u"};
  let bOff = ${s.batchB ? "b * p.K * p.N" : "0u"};
  let cOff = b * p.M * p.N;
`;
}

// ---------------------------------------------------------------------------
// Software (CPU Vulkan) variant. lavapipe runs 8 invocations per SIMD step (16
// with 512-bit vectors) and every storage load is costly whatever its width, so
// the kernel maximizes FMAs per load: each invocation keeps a tm × (4·tv) block
// of C in registers and per 4 steps of k issues tm + 4·tv vec4 loads for
// 16·tm·tv FMAs. The `lanes` invocations of a workgroup (one SIMD step) stand
// lx along N and lanes/lx along M; invocation x
// owns rows m0 + [0,tm) and columns nb + 4·lx·j + [0,4) for j < tv
// (neighbouring invocations read neighbouring vec4s).

function cpuCode(s: Spec, lay: Layout, t: MatmulTiling, texU: boolean): string {
  const { tm: TM, tv: TV } = t;
  const LANES = tilingLanes(t);
  const LX = tilingLx(t);
  const W = 4 * LX; // columns between an invocation's vec4 groups
  const L: string[] = [];
  const emit = (x: string) => L.push(x);
  const strideA = s.transA ? "p.M" : "1u";
  const strideB = s.transB ? "1u" : "p.N";
  // vec4 `i` of A or B, from its buffer or its stream texture
  const loadA = (i: string) => (t.texA ? streamTexel("At", i) : `A[${i}]`);
  // (a packed B reads `B[i]`, which readPackedB turns into its loadB, from a texture or not)
  const loadB = (i: string) => (t.texB && !s.packedB ? streamTexel("Bt", i) : `B[${i}]`);
  // per-line bases, computed once (a texture operand is indexed as its buffer)
  if (lay.a === "k4") {
    for (let i = 0; i < TM; i++) {
      emit(`let ab${i} = (aOff + min(m0 + ${i}u, p.M - 1u) * p.K) / 4u;`);
    }
  } else if (lay.a === "l4") {
    for (let i = 0; i < TM / 4; i++) {
      emit(`let ab${i} = (aOff + min(m0 + ${4 * i}u, p.M - 4u)) / 4u;`);
    }
  } else {
    const rowStride = s.transA ? "" : " * p.K";
    for (let i = 0; i < TM; i++) emit(`let ab${i} = aOff + min(m0 + ${i}u, p.M - 1u)${rowStride};`);
  }
  if (lay.b === "l4") {
    for (let j = 0; j < TV; j++) {
      emit(`let bb${j} = (bOff + min(nb + ${W * j}u, p.N - 4u)) / 4u;`);
    }
  } else {
    const colStride = s.transB ? " * p.K" : "";
    const div = lay.b === "k4" ? " / 4u" : "";
    for (let j = 0; j < TV; j++) {
      for (let c = 0; c < 4; c++) {
        emit(
          `let bb${j}_${c} = (bOff + min(nb + ${W * j + c}u, p.N - 1u)${colStride})${div};`,
        );
      }
    }
  }
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TV; j++) emit(`var c${i}_${j} = vec4<f32>();`);
  }

  /** Loads for one step of `kk` k-values starting at `k`; returns value expressions. */
  const step = (kk: number): string[] => {
    const body: string[] = [];
    const kAt = (u: number) => (u === 0 ? "k" : `(k + ${u}u)`);
    // A (rounded to f16 as it is read for f16 arithmetic)
    const h4 = (x: string) => (s.f16Math ? `vec4<f16>(${x})` : x);
    if (lay.a === "k4") {
      for (let i = 0; i < TM; i++) {
        const x = loadA(`ab${i} + k / 4u`);
        body.push(`let a${i} = ${h4(x)};`);
      }
    } else if (lay.a === "l4") {
      for (let u = 0; u < kk; u++) {
        for (let i = 0; i < TM / 4; i++) {
          const x = loadA(`ab${i} + ${kAt(u)} * (p.M / 4u)`);
          body.push(`let a${u}_${i} = ${h4(x)};`);
        }
      }
    } else {
      for (let u = 0; u < kk; u++) {
        for (let i = 0; i < TM; i++) {
          const x = `A[ab${i} + ${kAt(u)} * ${strideA}]`;
          body.push(`let a${u}_${i} = ${s.f16Math ? `f16(${x})` : x};`);
        }
      }
    }
    // B
    if (lay.b === "l4") {
      for (let u = 0; u < kk; u++) {
        for (let j = 0; j < TV; j++) {
          body.push(`let b${u}_${j} = ${loadB(`bb${j} + ${kAt(u)} * (p.N / 4u)`)};`);
        }
      }
    } else if (lay.b === "k4") {
      for (let j = 0; j < TV; j++) {
        for (let c = 0; c < 4; c++) {
          body.push(`let b${j}_${c} = ${loadB(`bb${j}_${c} + k / 4u`)};`);
        }
      }
    } else {
      for (let u = 0; u < kk; u++) {
        for (let j = 0; j < TV; j++) {
          for (let c = 0; c < 4; c++) {
            body.push(`let b${u}_${j}_${c} = B[bb${j}_${c} + ${kAt(u)} * ${strideB}];`);
          }
        }
      }
    }
    const vec = s.f16Math ? "vec4<f16>" : "vec4<f32>";
    const aVal = (u: number, i: number) =>
      lay.a === "k4" ? `a${i}[${u}]` : lay.a === "l4" ? `a${u}_${i >> 2}[${i & 3}]` : `a${u}_${i}`;
    const bVal = (u: number, j: number) => {
      if (lay.b === "l4") return `b${u}_${j}`;
      const comp = (c: number) => (lay.b === "k4" ? `b${j}_${c}[${u}]` : `b${u}_${j}_${c}`);
      return `${vec}(${comp(0)}, ${comp(1)}, ${comp(2)}, ${comp(3)})`;
    };
    for (let u = 0; u < kk; u++) {
      for (let j = 0; j < TV; j++) {
        if (lay.b !== "l4") body.push(`let bv${u}_${j} = ${bVal(u, j)};`);
      }
    }
    // All k-steps of one accumulator in a row: each spilled accumulator is
    // loaded and stored once per step instead of once per k (~1.2× measured).
    for (let i = 0; i < TM; i++) {
      for (let j = 0; j < TV; j++) {
        const bv = (u: number) => (lay.b === "l4" ? bVal(u, j) : `bv${u}_${j}`);
        if (s.f16Math) {
          // the k-group's products and their sum in f16, then one f32 addition
          let e = `${vec}(${aVal(0, i)}) * ${bv(0)}`;
          for (let u = 1; u < kk; u++) e = `fma(${vec}(${aVal(u, i)}), ${bv(u)}, ${e})`;
          body.push(`c${i}_${j} += vec4<f32>(${e});`);
          continue;
        }
        let e = `c${i}_${j}`;
        for (let u = 0; u < kk; u++) e = `fma(${vec}(${aVal(u, i)}), ${bv(u)}, ${e})`;
        body.push(`c${i}_${j} = ${e};`);
      }
    }
    return body;
  };

  // k is a private variable: the 64×32 block's accumulators alone take all of
  // WGSL's FUNCTION_VARIABLE_BYTES (private variables have their own 8,192)
  emit("k = 0u;");
  emit("for (; k + 4u <= p.K; k += 4u) {");
  for (const x of step(4)) emit("  " + x);
  emit("}");
  if (!lay.k4) {
    emit("for (; k < p.K; k++) {");
    for (const x of step(1)) emit("  " + x);
    emit("}");
  }
  const loadU = texU ? (o: string) => streamTexel("Ut", o) : undefined;
  emit(
    storeC(
      s,
      lay,
      TM,
      TV,
      (i, j) => `c${i}_${j}`,
      (i) => `m0 + ${i}u`,
      (j) => `nb + ${W * j}u`,
      loadU,
    ),
  );

  let head = header(s, lay, t.texB === true && s.packedB !== undefined);
  if (t.texB) {
    head = head.replace(
      /@group\(0\) @binding\(1\) var<storage, read> B: [^;]*;/,
      `@group(0) @binding(1) var Bt: ${STREAM_TEXTURE};`,
    );
  }
  if (t.texA) {
    head = head.replace(
      /@group\(0\) @binding\(0\) var<storage, read> A: [^;]*;/,
      `@group(0) @binding(0) var At: ${STREAM_TEXTURE};`,
    );
  }
  if (texU) {
    head = head.replace(
      /(@group\(0\) @binding\(\d+\)) var<storage, read> U: [^;]*;/,
      `$1 var Ut: ${STREAM_TEXTURE};`,
    );
  }
  return `${head}
var<private> k: u32;
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
${tileIndex(s)}  let m0 = (tm * ${LANES / LX}u + lid.x / ${LX}u) * ${TM}u;
  let nb = tn * ${W * TV}u + (lid.x % ${LX}u) * 4u;
${L.map((x) => "  " + x).join("\n")}
}
`;
}

/** The kernel-key suffix of a GeLU epilogue ("" without one). */
function epilogueKey(s: MatmulShape): string {
  return s.geluOut ? `/gelu-${s.geluOut}` : s.geluGrad ? `/dgelu-${s.geluGrad}` : "";
}

/** WGSL applying GeLU of `kind` to each component of the vec4 expression `v`. */
function geluOf(kind: GeluKind, v: string): string {
  const f = `gelu_${kind}`;
  return `vec4<f32>(${f}(${v}.x), ${f}(${v}.y), ${f}(${v}.z), ${f}(${v}.w))`;
}

/** WGSL of GeLU's derivative of `kind` at each component of the vec4 expression `u`. */
function geluGradOf(kind: GeluKind, u: string): string {
  const f = `gelu_${kind}_grad`;
  return `vec4<f32>(${f}(${u}.x), ${f}(${u}.y), ${f}(${u}.z), ${f}(${u}.w))`;
}

/**
 * WGSL storing `tm × tv` vec4 accumulators (`acc(i, j)` holds row `row(i)`,
 * columns `col(j) + [0,4)`) with alpha, bias and accumulate, masked at the edges;
 * a GeLU-gradient epilogue reads vec4 `o` of U through `loadU`.
 */
function storeC(
  s: MatmulShape,
  lay: Layout,
  tm: number,
  tv: number,
  acc: (i: number, j: number) => string,
  row: (i: number) => string,
  col: (j: number) => string,
  loadU: (o: string) => string = (o) => `U[${o}]`,
): string {
  const L: string[] = [];
  const op = lay.acc ? "+=" : "=";
  for (let j = 0; j < tv; j++) {
    L.push(`{ let n = ${col(j)};`);
    L.push(`  if (n < p.N) {`);
    if (s.bias) {
      L.push(
        lay.vecC
          ? `    let bz = bias[n / 4u];`
          : `    let bz = vec4<f32>(bias[n], bias[min(n + 1u, p.N - 1u)], ` +
            `bias[min(n + 2u, p.N - 1u)], bias[min(n + 3u, p.N - 1u)]);`,
      );
    }
    for (let i = 0; i < tm; i++) {
      L.push(`    { let m = ${row(i)};`);
      L.push(`      if (m < p.M) {`);
      // values are `let`s: WGSL counts every `var` of a block against its
      // FUNCTION_VARIABLE_BYTES, and the accumulators may take all of them
      L.push(`        let v = p.alpha * ${acc(i, j)}${s.bias ? " + bz" : ""};`);
      if (lay.vecC) {
        L.push(`        let o = (cOff + m * p.N + n) / 4u;`);
        if (s.geluGrad) {
          L.push(`        C[o] ${op} v * ${geluGradOf(s.geluGrad, loadU("o"))};`);
        } else L.push(`        C[o] ${op} v;`);
        if (s.geluOut) L.push(`        D[o] = ${geluOf(s.geluOut, "v")};`);
      } else {
        L.push(`        let o = cOff + m * p.N + n;`);
        for (let c = 0; c < 4; c++) {
          const at = c === 0 ? "o" : `o + ${c}u`;
          const value = s.geluGrad ? `v[${c}] * gelu_${s.geluGrad}_grad(U[${at}])` : `v[${c}]`;
          const body = `C[${at}] ${op} ${value};` +
            (s.geluOut ? ` D[${at}] = gelu_${s.geluOut}(v[${c}]);` : "");
          L.push(c === 0 ? `        { ${body} }` : `        if (n + ${c}u < p.N) { ${body} }`);
        }
      }
      L.push(`      }`);
      L.push(`    }`);
    }
    L.push(`  }`);
    L.push(`}`);
  }
  return L.join("\n");
}

// ---------------------------------------------------------------------------
// Discrete-GPU variant: a classic shared-memory tiled kernel. A workgroup of
// (tn/4)×(tm/4) invocations computes a tm×tn tile of C, each invocation a 4×4
// block (rows ty + (tm/4)·i, columns tx + (tn/4)·j, so neighbouring invocations
// touch neighbouring addresses); k advances in steps of BK, both operand tiles
// are staged in workgroup memory with coalesced, bounds-checked loads. Not
// measured on a discrete GPU yet; correctness is tested on lavapipe.

const BK = 16;

function gpuCode(s: Spec, lay: Layout, t: MatmulTiling): string {
  const TM = t.tm, TN = t.tv;
  const WX = TN / 4, WY = TM / 4, NT = WX * WY;
  const aLoads = (TM * BK) / NT, bLoads = (TN * BK) / NT;
  // element (line, k) of each operand, as a scalar read with zero fill
  const aAt = s.transA ? "aOff + kg * p.M + mg" : "aOff + mg * p.K + kg";
  const bAt = s.transB ? "bOff + ng * p.K + kg" : "bOff + kg * p.N + ng";
  const aRead = lay.a === "s" ? `A[${aAt}]` : `A[(${aAt}) / 4u][(${aAt}) % 4u]`;
  const bRead = lay.b === "s" ? `B[${bAt}]` : `B[(${bAt}) / 4u][(${bAt}) % 4u]`;
  // consecutive invocations walk the operand's contiguous dimension
  const aSplit = s.transA
    ? `let mm = e % ${TM}u; let kk = e / ${TM}u;`
    : `let kk = e % ${BK}u; let mm = e / ${BK}u;`;
  const bSplit = s.transB
    ? `let kk = e % ${BK}u; let nn = e / ${BK}u;`
    : `let nn = e % ${TN}u; let kk = e / ${TN}u;`;
  // f16 arithmetic: tiles in f16, each k-group of 4 multiplied and summed in f16
  const T = s.f16Math ? "f16" : "f32";
  // one k: the 4×4 block's operands from the tiles, multiplied into `acc`
  const fmaK = (acc: string) =>
    `var a: array<${T}, 4>;
      var bv: array<${T}, 4>;
      for (var i = 0u; i < 4u; i++) { a[i] = As[kk][ty + i * ${WY}u]; }
      for (var j = 0u; j < 4u; j++) { bv[j] = Bs[kk][tx + j * ${WX}u]; }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { ${acc}[i][j] = fma(a[i], bv[j], ${acc}[i][j]); }
      }`;
  const inner = s.f16Math
    ? `for (var kg = 0u; kg < ${BK}u; kg += 4u) {
      // zeroed explicitly: on Deno's WebGPU (naga, lavapipe) a var declared
      // without an initializer in a loop kept the previous iteration's value
      var h = array<array<f16, 4>, 4>();
      for (var kk = kg; kk < kg + 4u; kk++) {
        ${fmaK("h")}
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { c[i][j] += f32(h[i][j]); }
      }
    }`
    : `for (var kk = 0u; kk < ${BK}u; kk++) {
      ${fmaK("c")}
    }`;
  return `${header(s, lay)}
var<workgroup> As: array<array<${T}, ${TM}>, ${BK}>;
var<workgroup> Bs: array<array<${T}, ${TN}>, ${BK}>;

@compute @workgroup_size(${WX}, ${WY})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
${tileIndex(s)}  let tx = lid.x;
  let ty = lid.y;
  let m0 = tm * ${TM}u;
  let n0 = tn * ${TN}u;
  var c: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += ${BK}u) {
    for (var r = 0u; r < ${aLoads}u; r++) {
      let e = li + r * ${NT}u;
      ${aSplit}
      let mg = m0 + mm;
      let kg = k0 + kk;
      var v = 0.0;
      if (mg < p.M && kg < p.K) { v = ${aRead}; }
      As[kk][mm] = ${T}(v);
    }
    for (var r = 0u; r < ${bLoads}u; r++) {
      let e = li + r * ${NT}u;
      ${bSplit}
      let ng = n0 + nn;
      let kg = k0 + kk;
      var v = ${T}();
      if (ng < p.N && kg < p.K) { v = ${bRead}; }
      Bs[kk][nn] = v;
    }
    workgroupBarrier();
    ${inner}
    workgroupBarrier();
  }
${gpuStore(s, lay, WX, WY)}
}
`;
}

function gpuStore(s: MatmulShape, lay: Layout, WX: number, WY: number): string {
  const op = lay.acc ? "+=" : "=";
  const cRef = lay.vecC ? "C[o / 4u][o % 4u]" : "C[o]";
  return `  for (var i = 0u; i < 4u; i++) {
    let m = m0 + ty + i * ${WY}u;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + tx + j * ${WX}u;
      if (m < p.M && n < p.N) {
        let o = cOff + m * p.N + n;
        var v = p.alpha * c[i][j];
        ${s.bias ? (lay.vecC ? "v += bias[n / 4u][n % 4u];" : "v += bias[n];") : ""}
        ${
    s.geluGrad ? `v = v * gelu_${s.geluGrad}_grad(${lay.vecC ? "U[o / 4u][o % 4u]" : "U[o]"});` : ""
  }
        ${cRef} ${op} v;
        ${s.geluOut ? `${lay.vecC ? "D[o / 4u][o % 4u]" : "D[o]"} = gelu_${s.geluOut}(v);` : ""}
      }
    }
  }`;
}

// ---------------------------------------------------------------------------
// Autotuning support: what to time, and the identity of a shape class.

/**
 * Products of at least this many multiply-adds (the reference config's
 * smallest, 512×128×128) also try the large software blocks (32×32 and 64×16
 * per invocation) when tuned: their kernels take LLVM ~8 s each to compile
 * cold, which smaller products would not win back.
 */
export const LARGE_BLOCK_MACS = 2 ** 23;

/**
 * Products of at least this many multiply-adds (GPT-2 small's at TP=2 but its
 * attention output, 256×768×384) try the 64×32 block per invocation with every
 * split of the invocations; smaller large products only with 1 or 2 along N,
 * the splits that won there. The block runs 13–17% faster than 32×32 on GPT-2's
 * shapes on one core, and 5–20% on the weak-scaling ladder's and the reference
 * config's (interleaved timings on one core, 2026-12-02), but takes ~11 s to
 * compile cold on a Zen 5 core (~40 s on Zen 1), and 25–75 s for GPT-2 small's
 * 768-wide shapes (2026-12-03, two compiles at once on two Zen 5 cores; the
 * GeLU epilogues the slowest).
 */
export const HUGE_BLOCK_MACS = 2 ** 27;

/**
 * The tilings worth timing for `shape` on an adapter described by `opts`, the
 * {@link chooseTiling} heuristic first. Every candidate of one family adds the
 * products over k in the same order, so they give bit-identical results: a
 * tuner may pick any of them without changing a model's numbers.
 */
export function tilingCandidates(s: MatmulShape, opts: MatmulOptions): MatmulTiling[] {
  const first = chooseTiling(s, opts);
  const out = new Map<string, MatmulTiling>([[tilingKey(first), first]]);
  const add = (t: MatmulTiling) => out.set(tilingKey(t), t);
  if (opts.software) {
    // With A in a texture (3× faster than from its buffer on llvmpipe) blocks
    // of 16×16, 32×16 or 16×32, for large products 32×32, 64×16 and 64×32
    // (fewer texel fetches per FMA: 15–19% faster on the reference shapes, but
    // ~3–11 s each to compile cold; HUGE_BLOCK_MACS); without, 16 columns won
    // nearly every shape measured. The split of the workgroup's invocations
    // between M and N varies; all along M (lx 1, every invocation reading the
    // same columns of B) only pays with the large blocks: 64×32 that way ran
    // 512×352×704 at 35 GFLOP/s against 29–32 for every other split and block
    // (one core). Wider workgroups stop at WIDE_LANES_MOST_BLOCK.
    const texA = textureASize(s, opts) !== null;
    const texB = textureBSize(s, opts) !== null;
    const lanes = lanesOf(opts);
    const largest = lanes > SOFTWARE_LANES ? WIDE_LANES_MOST_BLOCK : Infinity;
    const macs = s.batch * s.M * s.N * s.K;
    const large = macs >= LARGE_BLOCK_MACS ? [[32, 8], [64, 4], [64, 8]] : [];
    const blocks = texA ? [[16, 4], [32, 4], [16, 8], ...large] : [[16, 4], [32, 4]];
    for (const lx of lxChoices(lanes)) {
      for (const [tm, tv] of blocks) {
        if (lx === 1 && tm * tv < 256) continue;
        if (tm * tv >= 512 && lx > 2 && macs < HUGE_BLOCK_MACS) continue;
        if (tm * tv > largest) continue;
        // skip blocks that would mostly compute padding
        const base: MatmulTiling = { software: true, tm, tv, lx, ...laneField(lanes) };
        const tile = workgroupTile(base);
        if (tile.rows > 2 * Math.max(s.M, 8) || tile.cols > 2 * Math.max(s.N, 8)) continue;
        if (texA) add({ ...base, texA, ...(texB ? { texB } : {}) });
        else {
          add(base);
          if (texB) add({ ...base, texB });
        }
      }
    }
    if (texA) {
      const most = Math.min(
        macs >= LARGE_BLOCK_MACS ? (macs >= HUGE_BLOCK_MACS ? 512 : 384) : 128,
        largest,
      );
      for (const t of exactBlocks(s, [...out.values()], most, lanes)) {
        add({ ...t, texA, ...(texB ? { texB } : {}) });
      }
    }
  } else {
    const big = opts.maxInvocations >= 256 && opts.maxWorkgroupStorage >= 2 * BK * 64 * 4;
    const sides = big ? [16, 32, 64] : [16, 32];
    for (const tm of sides) for (const tv of sides) add({ software: false, tm, tv });
  }
  return [...out.values()];
}

/** Rows and columns of C one workgroup of `t` computes. */
function workgroupTile(t: MatmulTiling): { rows: number; cols: number } {
  if (!t.software) return { rows: t.tm, cols: t.tv };
  const lanes = tilingLanes(t);
  const lx = tilingLx(t);
  return { rows: t.tm * (lanes / lx), cols: 4 * t.tv * lx };
}

/**
 * Largest software block (`tm·tv`, vec4 columns) offered with more than
 * {@link SOFTWARE_LANES} lanes. At 16 lanes the larger blocks are slower and
 * slow to compile: 64×32 (`tm·tv` 512) ran 512×704×352 NT at 18–24 GFLOP/s
 * on one core against 33–39 for 32×32, took 12–48 s to compile, and once
 * (a GPT-2 shape with the GeLU epilogue) did not finish in 5 minutes in LLVM
 * 15's coroutine split pass (llvmpipe's compute shaders are coroutines).
 * 32×32 compiles in seconds and ran fastest at 1024³.
 */
export const WIDE_LANES_MOST_BLOCK = 256;

/** Most extra candidates {@link exactBlocks} adds for one shape. */
export const EXACT_BLOCK_CANDIDATES = 3;

/**
 * Software blocks whose workgroup tile divides M and N exactly, for shapes the
 * usual blocks only cover with padding (a tensor-parallel rank's share of an
 * odd width: rows of 176, 352, 528 or 704 floats in the weak-scaling ladder's
 * 2-rank model). Up to {@link EXACT_BLOCK_CANDIDATES} of the largest blocks
 * (per invocation `tm` rows by `tv` vec4 columns, `tm·tv` from 128 to `most`),
 * none when one of `listed` of at least 128 already fits exactly. Interleaved
 * timings on one core (2026-12-02): 512×528×352 NT 64×24 against 64×16 23.2
 * against 19.9 GFLOP/s, 528×352×512 TN 44×16 against 16×16 20.5 against 19.2.
 */
function exactBlocks(
  s: MatmulShape,
  listed: MatmulTiling[],
  most: number,
  lanes: number,
): MatmulTiling[] {
  const fits = (t: MatmulTiling) => {
    const tile = workgroupTile(t);
    return s.M % tile.rows === 0 && s.N % tile.cols === 0;
  };
  if (listed.some((t) => t.software && t.tm * t.tv >= 128 && fits(t))) return [];
  const found: MatmulTiling[] = [];
  for (const lx of lxChoices(lanes)) {
    for (let tm = 16; tm <= 64; tm += 4) {
      for (let tv = 2; tv <= 8; tv++) {
        const t: MatmulTiling = { software: true, tm, tv, lx, ...laneField(lanes) };
        if (tm * tv >= 128 && tm * tv <= most && fits(t)) found.push(t);
      }
    }
  }
  return found.sort((a, b) => b.tm * b.tv - a.tm * a.tv).slice(0, EXACT_BLOCK_CANDIDATES);
}

/** Gives a tuned tiling for a shape, or undefined to use {@link chooseTiling}'s. */
export interface TilingSource {
  /** The tiling to use for `shape` on an adapter described by `opts`, if known. */
  tiling(shape: MatmulShape, opts: MatmulOptions): MatmulTiling | undefined;
}

/** A short, stable name of a tiling (e.g. `cpu16x4x8`, `gpu32x64`). */
export function tilingKey(t: MatmulTiling): string {
  if (!t.software) return `gpu${t.tm}x${t.tv}`;
  const lanes = tilingLanes(t);
  const width = lanes === SOFTWARE_LANES ? "" : `w${lanes}`;
  return `cpu${t.tm}x${t.tv}x${tilingLx(t)}${width}${t.texB ? "t" : ""}${t.texA ? "a" : ""}`;
}

/** Parses {@link tilingKey}'s output; null for anything else. */
export function parseTilingKey(key: string): MatmulTiling | null {
  const cpu = /^cpu(\d+)x(\d+)x(\d+)(?:w(\d+))?(t?)(a?)$/.exec(key);
  const gpu = /^gpu(\d+)x(\d+)$/.exec(key);
  const t: MatmulTiling | null = cpu
    ? {
      software: true,
      tm: +cpu[1],
      tv: +cpu[2],
      lx: +cpu[3],
      ...(cpu[4] ? { lanes: +cpu[4] } : {}),
      ...(cpu[5] ? { texB: true } : {}),
      ...(cpu[6] ? { texA: true } : {}),
    }
    : gpu
    ? { software: false, tm: +gpu[1], tv: +gpu[2] }
    : null;
  if (!t) return null;
  try {
    checkTiling(t);
  } catch {
    return null;
  }
  return t;
}

/**
 * The identity of a matmul for tuning: sizes, transposes, broadcasts and
 * epilogue (not alpha, which does not change the work).
 */
export function matmulShapeKey(s: MatmulShape): string {
  const lay = layout(s, true);
  return `${s.batch}x${s.M}x${s.N}x${s.K}/${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}` +
    `/a${+s.batchA}b${+s.batchB}/bias${+s.bias}/acc${+lay.acc}${s.packedB ? `/${s.packedB}` : ""}` +
    epilogueKey(s);
}
