/**
 * Fused attention in the style of FlashAttention: `q·kᵀ`, the scale, a causal or
 * padding mask, an online softmax, attention dropout and `·v` in one kernel, so
 * the `[B, heads, T, T]` scores and probabilities never exist in memory. The
 * forward pass keeps only the per-row log-sum-exp; the backward pass recomputes
 * the probabilities from it in two kernels (queries own `dQ`, keys own `dK` and
 * `dV`), with no atomics.
 *
 * Layouts: `qkv` is the fused projection `[B, T, 3·hl]`, laid out q|k|v with
 * head `h` at offset `h·hd` inside each part (hl = heads·hd); the context `out`
 * and its gradient are `[B, T, hl]` (heads merged); `lse` and `D` are
 * `[B, heads, T]`; `dqkv` has `qkv`'s layout. All rows are read as `vec4`s, so
 * `hd` is a multiple of 4; it is part of the kernel key and every loop over it
 * is unrolled, so only the key and query loops count against
 * {@link SOFTWARE_LOOP_LIMIT}.
 *
 * Each invocation owns one query (forward, `dQ`) or one key (`dK`/`dV`); the
 * invocations of a workgroup own consecutive rows of one head, so the rows
 * they loop over are the same for all of them (uniform loads).
 *
 * Dropout draws exactly the mask of `dropoutKernel` applied to the
 * `[B, heads, T, T]` probabilities: Philox counter (flat index, offset, 0, 0),
 * key = seed, keep when `u01(x) ≥ p`, kept values scaled by `1/(1 − p)`.
 * @module
 */

import {
  FUNCTION_VARIABLE_BYTES,
  type KernelSource,
  lazyKernel,
  Params,
  SOFTWARE_LANE_WIDTHS,
  SOFTWARE_LANES,
} from "./kernel.ts";
import { grid2d, GRID_BUILTINS, GROUP_INDEX } from "./grid.ts";
import { PHILOX_WGSL } from "./rng.ts";
import { SOFTWARE_LOOP_LIMIT } from "./rowreduce.ts";
import { STREAM_TEXTURE, streamTexel } from "./texture.ts";

/** Which keys a query may not see: later ones (causal) or padding tokens. */
export type AttentionMask = "causal" | "padding";

/**
 * Rows (queries or keys) each invocation owns at most: every k/v (or q/dO) row
 * loaded feeds this many rows' FMAs. Invocation `l` owns rows `r0 + l + lanes·r`.
 */
const ROWS_PER_LANE = 4;

/**
 * Bytes kept for the key-side backward kernel's variables beside its `dK`/`dV`
 * accumulators: its loop counter (4) and dropout's Philox state (28), with room
 * to spare.
 */
const KEY_KERNEL_OTHER_BYTES = 64;

/**
 * Rows each invocation of the kernels of `s` owns: {@link ROWS_PER_LANE},
 * halved while the key-side kernel's accumulators (a `dK` and a `dV` row of
 * `headDim` floats per row) and its other variables would pass WGSL's
 * {@link FUNCTION_VARIABLE_BYTES} (at head size 256: 2 rows, not 4).
 */
function rowsPerLane(s: AttentionSpec): number {
  let rows = ROWS_PER_LANE;
  while (rows > 1 && rows * 2 * s.headDim * 4 + KEY_KERNEL_OTHER_BYTES > FUNCTION_VARIABLE_BYTES) {
    rows /= 2;
  }
  return rows;
}

/** Invocations per workgroup of the kernels of `s`. */
function lanesOf(s: AttentionSpec): number {
  return s.lanes ?? SOFTWARE_LANES;
}

/** Rows (queries or keys) per workgroup of the kernels of `s`. */
export function attentionTile(s: AttentionSpec): number {
  return lanesOf(s) * rowsPerLane(s);
}

/** Keys the forward and `dQ` kernels take per loop iteration. */
const KEYS_PER_STEP = 2;

/** Queries the `dK`/`dV` kernel takes per loop iteration. */
const QUERIES_PER_STEP = 1;

/** Specialization of the fused attention kernels. */
export interface AttentionSpec {
  /** The mask. */
  mask: AttentionMask;
  /** Head size (a multiple of 4). */
  headDim: number;
  /** Whether attention dropout is applied. */
  dropout: boolean;
  /**
   * Read qkv (and, in the key-side backward, dout) through stream textures
   * (`qkvT`, `doutT`, indexed as their buffers) instead of storage buffers:
   * faster on CPU adapters (kernels/texture.ts).
   */
  textures?: boolean;
  /**
   * Invocations per workgroup (8 or 16): the adapter's SIMD width on a CPU
   * adapter (16 on llvmpipe with 512-bit vectors). Default {@link SOFTWARE_LANES}.
   */
  lanes?: number;
}

/** Loop iterations one invocation of the fused kernels runs for a sequence of `T`. */
export function attentionLoopIterations(T: number): number {
  return Math.max(Math.ceil(T / KEYS_PER_STEP), Math.ceil(T / QUERIES_PER_STEP));
}

/**
 * Throws unless the fused kernels can run `spec` over sequences of `T` on an
 * adapter (on a software one, `software`: within Mesa's loop cap).
 */
export function checkAttentionShape(spec: AttentionSpec, T: number, software: boolean): void {
  const hd = spec.headDim;
  if (!SOFTWARE_LANE_WIDTHS.includes(lanesOf(spec))) {
    throw new Error(
      `fused attention: ${spec.lanes} lanes per workgroup (${SOFTWARE_LANE_WIDTHS.join(" or ")})`,
    );
  }
  if (!Number.isInteger(hd) || hd < 4 || hd % 4 !== 0 || hd > 256) {
    throw new Error(
      `fused attention: head size ${hd} is not supported (a multiple of 4, at most 256)`,
    );
  }
  const iters = attentionLoopIterations(T);
  if (software && iters > SOFTWARE_LOOP_LIMIT) {
    throw new Error(
      `fused attention: a sequence of ${T} needs ${iters} loop iterations per invocation, ` +
        `over the ${SOFTWARE_LOOP_LIMIT} a software adapter runs (Mesa stops longer loops ` +
        `silently); use the unfused path or a shorter sequence`,
    );
  }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function key(kind: string, s: AttentionSpec): string {
  return `attention:${kind}:${s.mask}:hd${s.headDim}:${s.dropout ? "drop" : "nodrop"}:` +
    `l${lanesOf(s)}r${rowsPerLane(s)}k${KEYS_PER_STEP}q${QUERIES_PER_STEP}${
      s.textures ? ":tex" : ""
    }`;
}

/** WGSL reading vec4 `index` of qkv, from its buffer or its stream texture. */
function qkvAt(s: AttentionSpec, index: string): string {
  return s.textures ? streamTexel("qkvT", index) : `qkv[${index}]`;
}

/** The qkv binding (0): a storage buffer, or a texture ({@link AttentionSpec.textures}). */
function qkvDecl(s: AttentionSpec): string {
  return s.textures
    ? `@group(0) @binding(0) var qkvT: ${STREAM_TEXTURE};`
    : "@group(0) @binding(0) var<storage, read> qkv: array<vec4<f32>>;";
}

/** `dot(a·0, b·0) + dot(a·1, b·1) + …` over the `n4` vec4s of a head row. */
function dotRow(n4: number, a: (c: number) => string, b: (c: number) => string): string {
  return range(n4).map((c) => `dot(${a(c)}, ${b(c)})`).join(" + ");
}

const PARAMS_WGSL = /* wgsl */ `
struct P {
  B: u32, T: u32, nh: u32, tiles: u32,
  hl4: u32, row4: u32, seedLo: u32, seedHi: u32,
  offset: u32, scale: f32, prob: f32, dscale: f32,
}`;

/** Helper WGSL shared by the three kernels: masking and the dropout factor. */
function helpers(s: AttentionSpec): string {
  const drop = s.dropout
    ? /* wgsl */ `
${PHILOX_WGSL}
fn drop_scale(bh: u32, i: u32, j: u32) -> f32 {
  let r = philox(vec4<u32>((bh * p.T + i) * p.T + j, p.offset, 0u, 0u),
                 vec2<u32>(p.seedLo, p.seedHi));
  return select(0.0, p.dscale, u01(r.x) >= p.prob);
}`
    : "";
  return /* wgsl */ `
${PARAMS_WGSL}
${drop}`;
}

function keepDecl(s: AttentionSpec): string {
  return s.mask === "padding" ? "@group(0) @binding(1) var<storage, read> keep: array<f32>;" : "";
}

/** The first binding after qkv (and keep, for the padding mask). */
function firstBinding(s: AttentionSpec): number {
  return s.mask === "padding" ? 2 : 1;
}

/**
 * WGSL prologue: this workgroup's head `bh` (= b·nh + h), first row `r0`, and
 * the rows `row{r}` this invocation owns (clamped; `valid{r}` when in range).
 */
function headOfGroup(s: AttentionSpec): string {
  const lanes = lanesOf(s);
  return /* wgsl */ `
  let g = ${GROUP_INDEX};
  let bh = g / p.tiles;
  if (bh >= p.B * p.nh) { return; }
  let b = bh / p.nh;
  let h = bh % p.nh;
  let r0 = (g % p.tiles) * ${attentionTile(s)}u;
${
    range(rowsPerLane(s)).map((r) =>
      `  let valid${r} = r0 + lid + ${lanes * r}u < p.T;
  let row${r} = min(r0 + lid + ${lanes * r}u, p.T - 1u);`
    ).join("\n")
  }`;
}

/** WGSL: whether key `j{u}` is hidden from every query (past the end, or padding). */
function keyMasked(s: AttentionSpec, u: number): string {
  return s.mask === "padding"
    ? `j${u} >= p.T || keep[b * p.T + min(j${u}, p.T - 1u)] == 0.0`
    : `j${u} >= p.T`;
}

/**
 * WGSL loading keys `j + u` (u < KEYS_PER_STEP) of this head: `kk{u}_{c}` and
 * `vv{u}_{c}`, and whether each is masked, `kx{u}`.
 */
function keyLoads(s: AttentionSpec): string {
  const cs = range(s.headDim / 4);
  return range(KEYS_PER_STEP).map((u) => /* wgsl */ `
    let j${u} = j + ${u}u;
    let kx${u} = ${keyMasked(s, u)};
    let k${u} = kbase + min(j${u}, p.T - 1u) * p.row4;
${
    cs.map((c) => `    let kk${u}_${c} = ${qkvAt(s, `k${u} + ${c}u`)};`)
      .join("\n")
  }
${cs.map((c) => `    let vv${u}_${c} = ${qkvAt(s, `k${u} + p.hl4 + ${c}u`)};`).join("\n")}`).join(
    "",
  );
}

/**
 * Forward: `out = dropout(softmax(scale·q·kᵀ, mask))·v` per head, and
 * `lse = max + log(Σ exp)` of each query's scaled, masked scores (`3e38` for a
 * query with no visible key, whose output is 0). Bindings: qkv, [keep], out, lse.
 */
export function attentionForwardKernel(s: AttentionSpec): KernelSource {
  return lazyKernel(key("fwd", s), () => forwardWgsl(s));
}

/** The WGSL of {@link attentionForwardKernel}. */
function forwardWgsl(s: AttentionSpec): string {
  const n4 = s.headDim / 4;
  const K = KEYS_PER_STEP;
  const o = firstBinding(s);
  const us = range(K);
  const cs = range(n4);
  const rs = range(rowsPerLane(s));
  const kEnd = s.mask === "causal" ? `min(p.T, r0 + ${attentionTile(s)}u)` : "p.T";
  const causal = s.mask === "causal";
  const loads = keyLoads(s);
  const perRow = rs.map((r) => /* wgsl */ `
${
    us.map((u) =>
      `    let x${r}_${u} = kx${u}${causal ? ` || j${u} > row${r}` : ""};
    let s${r}_${u} = select(${
        dotRow(n4, (c) => `q${r}_${c}`, (c) => `kk${u}_${c}`)
      }, -3.0e38, x${r}_${u});`
    ).join("\n")
  }
    let mn${r} = max(m${r}, ${us.map((u) => `s${r}_${u}`).reduce((a, b) => `max(${a}, ${b})`)});
    let al${r} = exp(m${r} - mn${r});
${
    us.map((u) => `    let e${r}_${u} = select(exp(s${r}_${u} - mn${r}), 0.0, x${r}_${u});`).join(
      "\n",
    )
  }
    l${r} = l${r} * al${r} + ${us.map((u) => `e${r}_${u}`).join(" + ")};
${
    us.map((u) =>
      s.dropout
        ? `    let w${r}_${u} = e${r}_${u} * drop_scale(bh, row${r}, j${u});`
        : `    let w${r}_${u} = e${r}_${u};`
    ).join("\n")
  }
${
    cs.map((c) =>
      `    a${r}_${c} = a${r}_${c} * al${r} + ${
        us.map((u) => `w${r}_${u} * vv${u}_${c}`).join(" + ")
      };`
    ).join("\n")
  }
    m${r} = mn${r};`).join("");
  return /* wgsl */ `
${helpers(s)}
${qkvDecl(s)}
${keepDecl(s)}
@group(0) @binding(${o}) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(${o + 1}) var<storage, read_write> lse: array<f32>;
@group(0) @binding(${o + 2}) var<uniform> p: P;
@compute @workgroup_size(${lanesOf(s)})
fn main(${GRID_BUILTINS}) {
${headOfGroup(s)}
${
    rs.map((r) =>
      `  let qb${r} = (b * p.T + row${r}) * p.row4 + h * ${n4}u;
${cs.map((c) => `  let q${r}_${c} = ${qkvAt(s, `qb${r} + ${c}u`)} * p.scale;`).join("\n")}
${cs.map((c) => `  var a${r}_${c} = vec4<f32>(0.0);`).join("\n")}
  var m${r} = -3.0e38;
  var l${r} = 0.0;`
    ).join("\n")
  }
  let kbase = b * p.T * p.row4 + p.hl4 + h * ${n4}u;
  let kEnd = ${kEnd};
  for (var j = 0u; j < kEnd; j += ${K}u) {${loads}${perRow}
  }
${
    rs.map((r) =>
      `  if (valid${r}) {
    let inv = select(0.0, 1.0 / l${r}, l${r} > 0.0);
    let ob = (b * p.T + row${r}) * p.hl4 + h * ${n4}u;
${cs.map((c) => `    out[ob + ${c}u] = a${r}_${c} * inv;`).join("\n")}
    lse[bh * p.T + row${r}] = select(3.0e38, m${r} + log(l${r}), l${r} > 0.0);
  }`
    ).join("\n")
  }
}`;
}

/**
 * Backward, query side: `D = rowsum(dO∘O)` per query (written to `dsum` for
 * the key side), then `dQ = scale·Σ_j P∘(dP − D)·k_j` into the q part of
 * `dqkv`. Bindings: qkv, [keep], out, dout, lse, dsum, dqkv.
 */
export function attentionBackwardQueryKernel(s: AttentionSpec): KernelSource {
  return lazyKernel(key("bwdq", s), () => backwardQueryWgsl(s));
}

/** The WGSL of {@link attentionBackwardQueryKernel}. */
function backwardQueryWgsl(s: AttentionSpec): string {
  const n4 = s.headDim / 4;
  const K = KEYS_PER_STEP;
  const o = firstBinding(s);
  const us = range(K);
  const cs = range(n4);
  const rs = range(rowsPerLane(s));
  const causal = s.mask === "causal";
  const kEnd = causal ? `min(p.T, r0 + ${attentionTile(s)}u)` : "p.T";
  const loads = keyLoads(s);
  const perRow = rs.map((r) =>
    us.map((u) => /* wgsl */ `
    let x${r}_${u} = kx${u}${causal ? ` || j${u} > row${r}` : ""};
    let e${r}_${u} = select(exp(${
      dotRow(n4, (c) => `q${r}_${c}`, (c) => `kk${u}_${c}`)
    } - L${r}), 0.0, x${r}_${u});
    let dp${r}_${u} = (${dotRow(n4, (c) => `g${r}_${c}`, (c) => `vv${u}_${c}`)})${
      s.dropout ? ` * drop_scale(bh, row${r}, j${u})` : ""
    };
    let ds${r}_${u} = e${r}_${u} * (dp${r}_${u} - D${r});`).join("") + "\n" +
    cs.map((c) => `    dq${r}_${c} += ${us.map((u) => `ds${r}_${u} * kk${u}_${c}`).join(" + ")};`)
      .join("\n")
  ).join("");
  return /* wgsl */ `
${helpers(s)}
${qkvDecl(s)}
${keepDecl(s)}
@group(0) @binding(${o}) var<storage, read> out: array<vec4<f32>>;
@group(0) @binding(${o + 1}) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(${o + 2}) var<storage, read> lse: array<f32>;
@group(0) @binding(${o + 3}) var<storage, read_write> dsum: array<f32>;
@group(0) @binding(${o + 4}) var<storage, read_write> dqkv: array<vec4<f32>>;
@group(0) @binding(${o + 5}) var<uniform> p: P;
@compute @workgroup_size(${lanesOf(s)})
fn main(${GRID_BUILTINS}) {
${headOfGroup(s)}
${
    rs.map((r) =>
      `  let ob${r} = (b * p.T + row${r}) * p.hl4 + h * ${n4}u;
${cs.map((c) => `  let g${r}_${c} = dout[ob${r} + ${c}u];`).join("\n")}
  let D${r} = ${dotRow(n4, (c) => `g${r}_${c}`, (c) => `out[ob${r} + ${c}u]`)};
  let qb${r} = (b * p.T + row${r}) * p.row4 + h * ${n4}u;
${cs.map((c) => `  let q${r}_${c} = ${qkvAt(s, `qb${r} + ${c}u`)} * p.scale;`).join("\n")}
  let L${r} = lse[bh * p.T + row${r}];
${cs.map((c) => `  var dq${r}_${c} = vec4<f32>(0.0);`).join("\n")}`
    ).join("\n")
  }
  let kbase = b * p.T * p.row4 + p.hl4 + h * ${n4}u;
  let kEnd = ${kEnd};
  for (var j = 0u; j < kEnd; j += ${K}u) {${loads}${perRow}
  }
${
    rs.map((r) =>
      `  if (valid${r}) {
    dsum[bh * p.T + row${r}] = D${r};
${cs.map((c) => `    dqkv[qb${r} + ${c}u] = dq${r}_${c} * p.scale;`).join("\n")}
  }`
    ).join("\n")
  }
}`;
}

/**
 * Backward, key side: for key `j`, `dV = Σ_i dropout(P)_ij·dO_i` and
 * `dK = scale·Σ_i P_ij(dP_ij − D_i)·q_i`, into the k and v parts of `dqkv`.
 * Run after {@link attentionBackwardQueryKernel} (it reads `dsum`).
 * Bindings: qkv, [keep], dout, lse, dsum, dqkv.
 */
export function attentionBackwardKeyKernel(s: AttentionSpec): KernelSource {
  return lazyKernel(key("bwdkv", s), () => backwardKeyWgsl(s));
}

/** The WGSL of {@link attentionBackwardKeyKernel}. */
function backwardKeyWgsl(s: AttentionSpec): string {
  const n4 = s.headDim / 4;
  const Q = QUERIES_PER_STEP;
  const o = firstBinding(s);
  const us = range(Q);
  const cs = range(n4);
  const rs = range(rowsPerLane(s));
  const causal = s.mask === "causal";
  const iStart = causal ? "r0" : "0u";
  const loads = us.map((u) => /* wgsl */ `
    let i${u} = i + ${u}u;
    let ic${u} = min(i${u}, p.T - 1u);
    let qr${u} = qbase + ic${u} * p.row4;
    let gr${u} = gbase + ic${u} * p.hl4;
${cs.map((c) => `    let qq${u}_${c} = ${qkvAt(s, `qr${u} + ${c}u`)};`).join("\n")}
${
    cs.map((c) =>
      s.textures
        ? `    let gg${u}_${c} = ${streamTexel("doutT", `gr${u} + ${c}u`)};`
        : `    let gg${u}_${c} = dout[gr${u} + ${c}u];`
    ).join("\n")
  }
    let L${u} = lse[bh * p.T + ic${u}];
    let D${u} = dsum[bh * p.T + ic${u}];`).join("");
  const perRow = rs.map((r) =>
    us.map((u) => /* wgsl */ `
    let x${r}_${u} = kx${r} || i${u} >= p.T${causal ? ` || row${r} > i${u}` : ""};
    let e${r}_${u} = select(exp(${
      dotRow(n4, (c) => `qq${u}_${c}`, (c) => `k${r}_${c}`)
    } - L${u}), 0.0, x${r}_${u});
    let z${r}_${u} = ${s.dropout ? `drop_scale(bh, i${u}, row${r})` : "1.0"};
    let w${r}_${u} = e${r}_${u} * z${r}_${u};
    let ds${r}_${u} = e${r}_${u} * ((${
      dotRow(n4, (c) => `gg${u}_${c}`, (c) => `v${r}_${c}`)
    }) * z${r}_${u} - D${u});`).join("") + "\n" +
    cs.map((c) => `    dv${r}_${c} += ${us.map((u) => `w${r}_${u} * gg${u}_${c}`).join(" + ")};`)
      .join("\n") +
    "\n" +
    cs.map((c) => `    dk${r}_${c} += ${us.map((u) => `ds${r}_${u} * qq${u}_${c}`).join(" + ")};`)
      .join("\n")
  ).join("");
  return /* wgsl */ `
${helpers(s)}
${qkvDecl(s)}
${keepDecl(s)}
${
    s.textures
      ? `@group(0) @binding(${o}) var doutT: ${STREAM_TEXTURE};`
      : `@group(0) @binding(${o}) var<storage, read> dout: array<vec4<f32>>;`
  }
@group(0) @binding(${o + 1}) var<storage, read> lse: array<f32>;
@group(0) @binding(${o + 2}) var<storage, read> dsum: array<f32>;
@group(0) @binding(${o + 3}) var<storage, read_write> dqkv: array<vec4<f32>>;
@group(0) @binding(${o + 4}) var<uniform> p: P;
@compute @workgroup_size(${lanesOf(s)})
fn main(${GRID_BUILTINS}) {
${headOfGroup(s)}
${
    rs.map((r) =>
      `  let kx${r} = ${s.mask === "padding" ? `keep[b * p.T + row${r}] == 0.0` : "false"};
  let kb${r} = (b * p.T + row${r}) * p.row4 + p.hl4 + h * ${n4}u;
${cs.map((c) => `  let k${r}_${c} = ${qkvAt(s, `kb${r} + ${c}u`)} * p.scale;`).join("\n")}
${cs.map((c) => `  let v${r}_${c} = ${qkvAt(s, `kb${r} + p.hl4 + ${c}u`)};`).join("\n")}
${cs.map((c) => `  var dk${r}_${c} = vec4<f32>(0.0);`).join("\n")}
${cs.map((c) => `  var dv${r}_${c} = vec4<f32>(0.0);`).join("\n")}`
    ).join("\n")
  }
  let qbase = b * p.T * p.row4 + h * ${n4}u;
  let gbase = b * p.T * p.hl4 + h * ${n4}u;
  for (var i = ${iStart}; i < p.T; i += ${Q}u) {${loads}${perRow}
  }
${
    rs.map((r) =>
      `  if (valid${r}) {
${cs.map((c) => `    dqkv[kb${r} + ${c}u] = dk${r}_${c} * p.scale;`).join("\n")}
${cs.map((c) => `    dqkv[kb${r} + p.hl4 + ${c}u] = dv${r}_${c};`).join("\n")}
  }`
    ).join("\n")
  }
}`;
}

/** Uniforms and grid shared by the three fused attention kernels. */
export function attentionDispatch(
  spec: AttentionSpec,
  B: number,
  T: number,
  heads: number,
  dropout?: { p: number; seed: number; offset: number },
): { params: ArrayBuffer; workgroups: [number, number, number] } {
  const headDim = spec.headDim;
  const tiles = Math.ceil(T / attentionTile(spec));
  const hl4 = (heads * headDim) / 4;
  const prob = dropout?.p ?? 0;
  const seed = dropout?.seed ?? 0;
  return {
    params: new Params(12).u32(B).u32(T).u32(heads).u32(tiles)
      .u32(hl4).u32(3 * hl4).u32(seed >>> 0).u32(Math.floor(seed / 2 ** 32))
      .u32(dropout?.offset ?? 0).f32(1 / Math.sqrt(headDim)).f32(prob).f32(1 / (1 - prob))
      .buffer,
    workgroups: grid2d(B * heads * tiles),
  };
}
