/**
 * Host-side f32 reduction kernels as hand-assembled WebAssembly SIMD.
 *
 * A plain JS `a[i] += b[i]` loop runs at 2–3.4 GB/s; these kernels process 16
 * floats per iteration with `f32x4` instructions and run near memory bandwidth.
 * They work on a `WebAssembly.Memory` (the collectives {@link Arena}), so every
 * buffer they touch must live in that memory. The module bytes are generated
 * here, so no toolchain is needed.
 * @module
 */

/** A reduction operator. `avg` is a sum scaled by `1/n` at the end. */
export type ReduceOp = "sum" | "avg" | "max";

/** The f32 reduction kernels, bound to one memory. Addresses are byte offsets into it. */
export interface Reducer {
  /** `dst[i] = (a[i] + b[i]) * scale` for `n` floats. */
  add(dst: number, a: number, b: number, n: number, scale: number): void;
  /** `dst[i] = dst2[i] = (a[i] + b[i]) * scale`. */
  add2(dst: number, dst2: number, a: number, b: number, n: number, scale: number): void;
  /** `dst[i] = max(a[i], b[i])`. */
  max(dst: number, a: number, b: number, n: number): void;
  /** `dst[i] = dst2[i] = max(a[i], b[i])`. */
  max2(dst: number, dst2: number, a: number, b: number, n: number): void;
  /**
   * bf16 (16-bit words; a bf16 is the top half of an f32), for the first
   * `n & ~7` values: `dst[i] = dst2[i] = bf16((f32(a[i]) + f32(b[i])) · scale)`,
   * the f32 result rounded to nearest even (NaN stays a quiet NaN). Pass `dst`
   * twice for one destination.
   */
  bf16Add(dst: number, dst2: number, a: number, b: number, n: number, scale: number): void;
  /** bf16 to f32, for the first `n & ~7` values: `acc[i] = f32(src[i])`. */
  bf16Widen(acc: number, src: number, n: number): void;
  /** `acc[i] += f32(src[i])` for the first `n & ~7` bf16 values. */
  bf16WidenAdd(acc: number, src: number, n: number): void;
  /** f32 to bf16, for the first `n & ~7` values: `dst[i] = bf16(acc[i] · scale)`. */
  bf16Narrow(dst: number, acc: number, n: number, scale: number): void;
  /** {@link Reducer.bf16Add} for IEEE fp16 (round to nearest even; NaN → a quiet NaN). */
  fp16Add(dst: number, dst2: number, a: number, b: number, n: number, scale: number): void;
  /** {@link Reducer.bf16Widen} for fp16 (exact, subnormals included). */
  fp16Widen(acc: number, src: number, n: number): void;
  /** {@link Reducer.bf16WidenAdd} for fp16. */
  fp16WidenAdd(acc: number, src: number, n: number): void;
  /** {@link Reducer.bf16Narrow} for fp16. */
  fp16Narrow(dst: number, acc: number, n: number, scale: number): void;
}

/** The 16-bit formats the SIMD kernels know. */
export type HalfSimd = "bf16" | "fp16";

// --- a tiny assembler -------------------------------------------------------

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function str(s: string): number[] {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
}

const I32 = 0x7f, F32 = 0x7d, V128 = 0x7b;
const GET = 0x20, SET = 0x21;
const I32_CONST = 0x41, I32_ADD = 0x6a, I32_AND = 0x71, I32_SHL = 0x74, I32_GE_U = 0x4f;
const F32_LOAD = 0x2a, F32_STORE = 0x38, F32_ADD = 0x92, F32_MUL = 0x94, F32_MAX = 0x97;
const BLOCK = 0x02, LOOP = 0x03, VOID = 0x40, BR = 0x0c, BR_IF = 0x0d, END = 0x0b;
const simd = (op: number) => [0xfd, ...uleb(op)];
const V_LOAD = simd(0x00), V_STORE = simd(0x0b), F32X4_SPLAT = simd(0x13);
const F32X4_ADD = simd(0xe4), F32X4_MUL = simd(0xe6), F32X4_MAX = simd(0xe9);
const I32X4_SPLAT = simd(0x11), F32X4_NE = simd(0x42), V128_AND = simd(0x4e), V128_OR = simd(0x50);
const V128_BITSELECT = simd(0x52), I16X8_NARROW_I32X4_U = simd(0x86);
const I32X4_EXTEND_LOW_I16X8_U = simd(0xa9), I32X4_EXTEND_HIGH_I16X8_U = simd(0xaa);
const I32X4_SHL = simd(0xab), I32X4_SHR_U = simd(0xad), I32X4_ADD = simd(0xae);
const I32X4_SUB = simd(0xb1), F32X4_SUB = simd(0xe5), V128_XOR = simd(0x51);
const I32X4_EQ = simd(0x37), I32X4_LT_S = simd(0x39), I32X4_GT_S = simd(0x3b);
const I32X4_GE_S = simd(0x3f);

/**
 * One kernel: params (dst, [dst2], a, b, n, [scale]); computes
 * `op(a, b) [* scale]` into dst (and dst2), 16 floats per SIMD iteration then a scalar tail.
 */
function kernelBody(op: "add" | "max", two: boolean): { params: number[]; code: number[] } {
  const params = two ? [I32, I32, I32, I32, I32] : [I32, I32, I32, I32];
  const scaled = op === "add";
  if (scaled) params.push(F32);
  const dst = 0, dst2 = two ? 1 : -1, a = two ? 2 : 1, b = a + 1, n = b + 1, sc = n + 1;
  const vs = params.length, end = vs + 1; // locals: v128 splat, i32 end
  const c: number[] = [];
  if (scaled) c.push(GET, sc, ...F32X4_SPLAT, SET, vs);
  // end = dst + (n & ~15) * 4
  c.push(GET, dst, GET, n, I32_CONST, ...sleb(-16), I32_AND, I32_CONST, 2, I32_SHL, I32_ADD);
  c.push(SET, end);
  const advance = (bytes: number) => {
    for (const p of [dst, dst2, a, b]) {
      if (p >= 0) c.push(GET, p, I32_CONST, ...sleb(bytes), I32_ADD, SET, p);
    }
  };
  // SIMD loop
  c.push(BLOCK, VOID, LOOP, VOID, GET, dst, GET, end, I32_GE_U, BR_IF, 1);
  for (let k = 0; k < 4; k++) {
    const off = uleb(k * 16);
    const compute = () => {
      c.push(GET, a, ...V_LOAD, 4, ...off, GET, b, ...V_LOAD, 4, ...off);
      if (op === "add") c.push(...F32X4_ADD, GET, vs, ...F32X4_MUL);
      else c.push(...F32X4_MAX);
    };
    if (two) {
      // compute once into the splat-free path: store to dst, then reload dst for dst2
      c.push(GET, dst);
      compute();
      c.push(...V_STORE, 4, ...off);
      c.push(GET, dst2, GET, dst, ...V_LOAD, 4, ...off, ...V_STORE, 4, ...off);
    } else {
      c.push(GET, dst);
      compute();
      c.push(...V_STORE, 4, ...off);
    }
  }
  advance(64);
  c.push(BR, 0, END, END);
  // end += (n & 15) * 4; scalar tail
  c.push(GET, end, GET, n, I32_CONST, 15, I32_AND, I32_CONST, 2, I32_SHL, I32_ADD, SET, end);
  c.push(BLOCK, VOID, LOOP, VOID, GET, dst, GET, end, I32_GE_U, BR_IF, 1);
  const scalar = () => {
    c.push(GET, a, F32_LOAD, 2, 0, GET, b, F32_LOAD, 2, 0);
    if (op === "add") c.push(F32_ADD, GET, sc, F32_MUL);
    else c.push(F32_MAX);
  };
  c.push(GET, dst);
  scalar();
  c.push(F32_STORE, 2, 0);
  if (two) c.push(GET, dst2, GET, dst, F32_LOAD, 2, 0, F32_STORE, 2, 0);
  advance(4);
  c.push(BR, 0, END, END, END);
  const locals = vec([[1, V128], [1, I32]]);
  const body = [...locals, ...c];
  return { params, code: [...uleb(body.length), ...body] };
}

/**
 * One 16-bit kernel of `format` ({@link Reducer.bf16Add}, {@link Reducer.fp16Add}
 * and their siblings): 8 values per iteration, widened exactly to two f32x4
 * halves and narrowed back with round-to-nearest-even as core/half.ts does it.
 * bf16: the bits shifted into the top of an f32; back with
 * `(b + 0x7fff + ((b >> 16) & 1)) >> 16`, NaN as `(b >> 16) | 0x40`. fp16: the
 * branch-free conversions of `widenedFp16`/`narrowedFp16` below. The caller
 * converts the last `n & 7` values.
 */
function halfBody(format: HalfSimd, kind: "add" | "widen" | "widenAdd" | "narrow"): {
  params: number[];
  code: number[];
} {
  const params = kind === "add"
    ? [I32, I32, I32, I32, I32, F32] // dst, dst2, a, b, n, scale
    : kind === "narrow"
    ? [I32, I32, I32, F32] // dst, acc, n, scale
    : [I32, I32, I32]; // acc, src, n
  const np = params.length;
  // locals: end (i32), then v128 scratch: scale splat, lo, hi, t, and w0..w3 for fp16
  const end = np, vs = np + 1, lo = np + 2, hi = np + 3, t = np + 4;
  const [w0, w1, w2, w3] = [np + 5, np + 6, np + 7, np + 8];
  const c: number[] = [];
  const u32x4 = (v: number) => [I32_CONST, ...sleb(v | 0), ...I32X4_SPLAT];
  const add = (p: number, bytes: number) =>
    c.push(GET, p, I32_CONST, ...sleb(bytes), I32_ADD, SET, p);
  /** The f32x4 on the stack as an i32x4 of bf16 bits (through local `t`). */
  const narrowedBf16 = () => {
    c.push(SET, t);
    c.push(GET, t, I32_CONST, 16, ...I32X4_SHR_U, ...u32x4(0x40), ...V128_OR); // NaN's bits
    c.push(GET, t, ...u32x4(0x7fff), ...I32X4_ADD);
    c.push(GET, t, I32_CONST, 16, ...I32X4_SHR_U, ...u32x4(1), ...V128_AND, ...I32X4_ADD);
    c.push(I32_CONST, 16, ...I32X4_SHR_U); // rounded
    c.push(GET, t, GET, t, ...F32X4_NE); // all ones where NaN
    c.push(...V128_BITSELECT);
  };
  /**
   * The f32x4 on the stack as an i32x4 of fp16 bits, rounded to nearest even
   * (the branch-free form of core/half.ts's `f32ToF16Bits`; NaN → sign|0x7e00).
   */
  const narrowedFp16 = () => {
    const [sign, f, normal] = [w0, w1, w2];
    c.push(SET, t);
    c.push(GET, t, ...u32x4(0x80000000), ...V128_AND, SET, sign);
    c.push(GET, t, GET, sign, ...V128_XOR, SET, f); // |x|'s bits
    // normal: (f − (112 << 23) + 0xfff + ((f >> 13) & 1)) >> 13
    c.push(GET, f, ...u32x4(-(112 << 23) + 0xfff), ...I32X4_ADD);
    c.push(GET, f, I32_CONST, 13, ...I32X4_SHR_U, ...u32x4(1), ...V128_AND, ...I32X4_ADD);
    c.push(I32_CONST, 13, ...I32X4_SHR_U, SET, normal);
    // below 2^-14 (subnormal or zero): bits(|x| + 0.5) − bits(0.5), the f32 addition rounding
    c.push(GET, f, ...u32x4(0x3f000000), ...F32X4_ADD, ...u32x4(0x3f000000), ...I32X4_SUB);
    c.push(GET, normal, GET, f, ...u32x4(113 << 23), ...I32X4_LT_S, ...V128_BITSELECT);
    c.push(SET, normal);
    // 2^16 and above: infinity, or a quiet NaN
    c.push(...u32x4(0x7e00), ...u32x4(0x7c00), GET, f, ...u32x4(0x7f800000), ...I32X4_GT_S);
    c.push(...V128_BITSELECT, GET, normal, GET, f, ...u32x4(143 << 23), ...I32X4_GE_S);
    c.push(...V128_BITSELECT);
    c.push(GET, sign, I32_CONST, 16, ...I32X4_SHR_U, ...V128_OR);
  };
  /**
   * The i32x4 of fp16 bits on the stack as f32x4 (exact; subnormals through
   * `f32(2^-14 + m·2^-24) − 2^-14`, inf and NaN re-biased once more).
   */
  const widenedFp16 = () => {
    const [h, sign, o, e] = [w0, w1, w2, w3];
    c.push(SET, h);
    c.push(GET, h, ...u32x4(0x8000), ...V128_AND, I32_CONST, 16, ...I32X4_SHL, SET, sign);
    c.push(GET, h, ...u32x4(0x7fff), ...V128_AND, I32_CONST, 13, ...I32X4_SHL, SET, o);
    c.push(GET, o, ...u32x4(0x0f800000), ...V128_AND, SET, e);
    c.push(GET, o, ...u32x4(112 << 23), ...I32X4_ADD, SET, o);
    c.push(GET, o, GET, e, ...u32x4(0x0f800000), ...I32X4_EQ, ...u32x4(112 << 23), ...V128_AND);
    c.push(...I32X4_ADD, SET, o);
    c.push(GET, o, ...u32x4(1 << 23), ...I32X4_ADD, ...u32x4(113 << 23), ...F32X4_SUB);
    c.push(GET, o, GET, e, ...u32x4(0), ...I32X4_EQ, ...V128_BITSELECT);
    c.push(GET, sign, ...V128_OR);
  };
  const narrowed = format === "bf16" ? narrowedBf16 : narrowedFp16;
  const widen = (p: number, half: number[]) => {
    c.push(GET, p, ...V_LOAD, 0, 0, ...half);
    if (format === "bf16") c.push(I32_CONST, 16, ...I32X4_SHL);
    else widenedFp16();
  };
  const widenLow = (p: number) => widen(p, I32X4_EXTEND_LOW_I16X8_U);
  const widenHigh = (p: number) => widen(p, I32X4_EXTEND_HIGH_I16X8_U);
  // end = (the pointer that walks 16-bit words) + (n & ~7) * 2
  const walker = kind === "add" || kind === "narrow" ? 0 : 1;
  const n = kind === "add" ? 4 : 2;
  if (kind === "add" || kind === "narrow") c.push(GET, np - 1, ...F32X4_SPLAT, SET, vs);
  c.push(GET, walker, GET, n, I32_CONST, ...sleb(-8), I32_AND, I32_CONST, 1, I32_SHL, I32_ADD);
  c.push(SET, end);
  c.push(BLOCK, VOID, LOOP, VOID, GET, walker, GET, end, I32_GE_U, BR_IF, 1);
  if (kind === "add") {
    const [dst, dst2, a, b] = [0, 1, 2, 3];
    widenLow(a);
    widenLow(b);
    c.push(...F32X4_ADD, GET, vs, ...F32X4_MUL);
    narrowed();
    c.push(SET, lo);
    widenHigh(a);
    widenHigh(b);
    c.push(...F32X4_ADD, GET, vs, ...F32X4_MUL);
    narrowed();
    c.push(SET, hi);
    c.push(GET, dst, GET, lo, GET, hi, ...I16X8_NARROW_I32X4_U, ...V_STORE, 0, 0);
    c.push(GET, dst2, GET, dst, ...V_LOAD, 0, 0, ...V_STORE, 0, 0);
    for (const p of [dst, dst2, a, b]) add(p, 16);
  } else if (kind === "narrow") {
    const [dst, acc] = [0, 1];
    c.push(GET, acc, ...V_LOAD, 0, 0, GET, vs, ...F32X4_MUL);
    narrowed();
    c.push(SET, lo);
    c.push(GET, acc, ...V_LOAD, 0, 16, GET, vs, ...F32X4_MUL);
    narrowed();
    c.push(SET, hi);
    c.push(GET, dst, GET, lo, GET, hi, ...I16X8_NARROW_I32X4_U, ...V_STORE, 0, 0);
    add(dst, 16);
    add(acc, 32);
  } else {
    const [acc, src] = [0, 1];
    c.push(GET, acc);
    widenLow(src);
    if (kind === "widenAdd") c.push(GET, acc, ...V_LOAD, 0, 0, ...F32X4_ADD);
    c.push(...V_STORE, 0, 0);
    c.push(GET, acc);
    widenHigh(src);
    if (kind === "widenAdd") c.push(GET, acc, ...V_LOAD, 0, 16, ...F32X4_ADD);
    c.push(...V_STORE, 0, 16);
    add(src, 16);
    add(acc, 32);
  }
  c.push(BR, 0, END, END, END);
  const locals = vec([[1, I32], [8, V128]]);
  const body = [...locals, ...c];
  return { params, code: [...uleb(body.length), ...body] };
}

/** The module bytes; `shared` must match the imported memory. */
export function reduceModuleBytes(shared: boolean): Uint8Array<ArrayBuffer> {
  const kernels = [
    { name: "add", ...kernelBody("add", false) },
    { name: "add2", ...kernelBody("add", true) },
    { name: "max", ...kernelBody("max", false) },
    { name: "max2", ...kernelBody("max", true) },
    ...(["bf16", "fp16"] as const).flatMap((f) => [
      { name: `${f}Add`, ...halfBody(f, "add") },
      { name: `${f}Widen`, ...halfBody(f, "widen") },
      { name: `${f}WidenAdd`, ...halfBody(f, "widenAdd") },
      { name: `${f}Narrow`, ...halfBody(f, "narrow") },
    ]),
  ];
  const types = section(1, vec(kernels.map((k) => [0x60, ...vec(k.params.map((p) => [p])), 0])));
  const limits = shared ? [0x03, ...uleb(1), ...uleb(65536)] : [0x00, ...uleb(1)];
  const imports = section(2, vec([[...str("env"), ...str("mem"), 0x02, ...limits]]));
  const funcs = section(3, vec(kernels.map((_, i) => uleb(i))));
  const exports = section(7, vec(kernels.map((k, i) => [...str(k.name), 0x00, ...uleb(i)])));
  const code = section(10, vec(kernels.map((k) => k.code)));
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...types,
    ...imports,
    ...funcs,
    ...exports,
    ...code,
  ]);
}

/** Instantiates the kernels on `memory` (shared or not, detected from its buffer). */
export function createReducer(memory: WebAssembly.Memory): Reducer {
  const shared = memory.buffer instanceof SharedArrayBuffer;
  const module = new WebAssembly.Module(reduceModuleBytes(shared));
  const inst = new WebAssembly.Instance(module, { env: { mem: memory } });
  return inst.exports as unknown as Reducer;
}

/** Reference JS reduction of `b` into `a` (for tests and for non-arena buffers). */
export function reduceJs(a: Float32Array, b: Float32Array, op: ReduceOp): void {
  if (op === "max") {
    for (let i = 0; i < a.length; i++) a[i] = Math.max(a[i], b[i]);
  } else {
    for (let i = 0; i < a.length; i++) a[i] += b[i];
  }
}
