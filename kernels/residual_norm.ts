/**
 * Fused residual kernels: `sum = x + dropout(a)` followed by layer norm in one
 * pass per row (and its backward, which folds in the residual gradient and the
 * dropout mask), the plain residual `x + dropout(a)`, and the position-embedding
 * add with dropout. The dropout mask is exactly {@link dropoutKernel}'s for the
 * same (seed, offset): keep element `i` (flat index) when
 * `u01(philox((i, offset, 0, 0), seed).x) ≥ p`.
 * @module
 */

import { type KernelSource, Params } from "./kernel.ts";
import { grid2d, GRID_BUILTINS, gridFor, GROUP_INDEX } from "./grid.ts";
import { dropVec4, KEEP_WGSL, PHILOX_WGSL } from "./rng.ts";
import {
  normalizeRowTextureWgsl,
  normalizeRowWgsl,
  normGradRowTextureWgsl,
  normGradRowWgsl,
} from "./layernorm.ts";
import { ROW_REDUCE_WGSL, ROW_WG } from "./rowreduce.ts";
import { STREAM_TEXTURE, streamTexel } from "./texture.ts";

const WG = 256;

const PARAMS_WGSL = /* wgsl */ `
struct P { rows: u32, cols: u32, eps: f32, offset: u32, seedLo: u32, seedHi: u32, prob: f32, scale: f32 }`;

/**
 * `sum = x + dropout(a)`, then `y = (sum − mean)·rstd·gamma + beta` per row,
 * writing sum, y, mean and rstd (the statistics for the backward pass). Without
 * `drop`, `sum = x + a`. Bindings: x, a, gamma, beta, sum, y, mean, rstd. A row
 * kernel: dispatch it as the layer-norm kernels are (`dispatchRows`); three
 * passes over the row, within `ROW_PASSES`. The Philox draw's fixed 10-round
 * loop is unrolled by Mesa and does not count against `SOFTWARE_LOOP_LIMIT`
 * (checked at 16,000 columns per invocation in tests/fused_norm_test.ts).
 */
export function residualNormForwardKernel(drop: boolean): KernelSource {
  const branch = drop ? "select(0.0, a[i] * p.scale, keep(i))" : "a[i]";
  return {
    key: `resnorm:fwd${drop ? ":drop" : ""}`,
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
${drop ? PHILOX_WGSL : ""}
${PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> sum: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> meanOut: array<f32>;
@group(0) @binding(7) var<storage, read_write> rstdOut: array<f32>;
@group(0) @binding(8) var<uniform> p: P;
${drop ? KEEP_WGSL : ""}
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var s = 0.0;
  for (var c = lid; c < p.cols; c += ${ROW_WG}u) {
    let i = base + c;
    let v = x[i] + ${branch};
    sum[i] = v;
    s += v;
  }
${normalizeRowWgsl("sum")}
}`,
  };
}

/**
 * Backward of {@link residualNormForwardKernel}: `dsum = LN′(dy) + dres` (the
 * layer-norm input gradient plus the gradient reaching `sum` along the
 * residual path, when `residual`), written as `dx`; with `drop`, also
 * `da = dsum·keep/(1 − p)`. Bindings: sum, gamma, dy, [dres], mean, rstd, dx, [da].
 * The parameter gradients are `layerNormParamGradKernel`'s, reading `sum`.
 */
export function residualNormBackwardKernel(residual: boolean, drop: boolean): KernelSource {
  let b = 0;
  const bind = (decl: string) => `@group(0) @binding(${b++}) var<storage, ${decl};`;
  const decls = [
    bind("read> sumIn: array<f32>"),
    bind("read> gamma: array<f32>"),
    bind("read> dy: array<f32>"),
    residual ? bind("read> dres: array<f32>") : "",
    bind("read> meanIn: array<f32>"),
    bind("read> rstdIn: array<f32>"),
    bind("read_write> dx: array<f32>"),
    drop ? bind("read_write> da: array<f32>") : "",
  ].join("\n");
  return {
    key: `resnorm:bwd${residual ? ":res" : ""}${drop ? ":drop" : ""}`,
    code: /* wgsl */ `
${ROW_REDUCE_WGSL}
${drop ? PHILOX_WGSL : ""}
${PARAMS_WGSL}
${decls}
@group(0) @binding(${b}) var<uniform> p: P;
${drop ? KEEP_WGSL : ""}
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX};
  if (row >= p.rows) { return; }
  let base = row * p.cols;
${
      normGradRowWgsl(
        "sumIn",
        // the gradient reaching `sum` along the residual path joins the norm's
        (residual ? "let t = dres[i] + v;" : "let t = v;") + " dx[i] = t;" +
          (drop ? " da[i] = select(0.0, t * p.scale, keep(i));" : ""),
      )
    }
}`,
  };
}

/**
 * Uniforms and grid (workgroup per row) for the residual-norm row kernels;
 * `prob = 0` for the kernels without dropout.
 */
export function residualNormDispatch(
  rows: number,
  cols: number,
  eps: number,
  prob = 0,
  seed = 0,
  offset = 0,
) {
  return {
    params: new Params(8).u32(rows).u32(cols).f32(eps).u32(offset).u32(seed >>> 0)
      .u32(Math.floor(seed / 2 ** 32)).f32(prob).f32(1 / (1 - prob)).buffer,
    workgroups: grid2d(rows),
  };
}

/**
 * Elementwise residual: `out[i] = x[i] + dropout(a)[i]` (or `x[i] + a[i]` without
 * `drop`). Bindings: x, a, out. The backward is `dx = g`, `da = dropout(g)`
 * ({@link dropoutKernel}).
 */
export function residualDropoutKernel(drop: boolean): KernelSource {
  const branch = drop ? "select(0.0, a[i] * p.scale, keep(i))" : "a[i]";
  return {
    key: `residual${drop ? ":drop" : ""}`,
    code: /* wgsl */ `
${drop ? PHILOX_WGSL : ""}
${PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${drop ? KEEP_WGSL : ""}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.rows) { return; }
  out[i] = x[i] + ${branch};
}`,
  };
}

/**
 * {@link residualDropoutKernel} with dropout for CPU adapters, four elements per
 * invocation: x and a read from stream textures (kernels/texture.ts), out
 * written as vec4, each element kept or dropped by `keep` of its own flat
 * index: the same bits. n must divide by 4. Bindings: x's texture, a's
 * texture, out. Dispatch: {@link residualDropoutDispatch} at width 4.
 */
export function residualDropoutTextureKernel(): KernelSource {
  return {
    key: "residual:drop:v4:tex",
    code: /* wgsl */ `
${PHILOX_WGSL}
${PARAMS_WGSL}
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var aT: ${STREAM_TEXTURE};
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: P;
${KEEP_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.rows / 4u) { return; }
  let x = ${streamTexel("xT", "i")};
  let a = ${streamTexel("aT", "i")};
  out[i] = x + ${dropVec4("a", "4u * i")};
}`,
  };
}

/**
 * Uniforms and grid for {@link residualDropoutKernel} (width 1) or
 * {@link residualDropoutTextureKernel} (4) over `n` elements.
 */
export function residualDropoutDispatch(
  n: number,
  prob = 0,
  seed = 0,
  offset = 0,
  width: 1 | 4 = 1,
) {
  return {
    params: residualNormDispatch(n, 1, 0, prob, seed, offset).params,
    workgroups: gridFor(n / width, WG),
  };
}

/** The uniforms of both position-embedding kernels, as {@link embedPositionsDispatch} writes them. */
const EMBED_PARAMS_WGSL =
  "struct P { rows: u32, cols: u32, seq: u32, offset: u32, seedLo: u32, seedHi: u32, prob: f32, scale: f32, start: u32, _a: u32, _b: u32, _c: u32 }";

/**
 * Token plus position embedding with dropout, in one pass:
 * `out[n, :] = dropout(tok[n, :] + pos[start + n mod T, :])` over `rows = B·T`
 * tokens of `cols` features. With `lookup`, `tok[n, :]` is itself a lookup,
 * `table[ids[n], :]` (a whole, unsharded table). Bindings: tok (or table, ids),
 * pos, out. Params: {@link embedPositionsDispatch}.
 */
export function embedPositionsKernel(lookup: boolean, drop: boolean): KernelSource {
  const tokBind = lookup
    ? `@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;`
    : `@group(0) @binding(0) var<storage, read> tok: array<f32>;`;
  let b = lookup ? 2 : 1;
  const tokValue = lookup ? "table[u32(ids[n]) * p.cols + col]" : "tok[i]";
  const v = `${tokValue} + pos[(p.start + n % p.seq) * p.cols + col]`;
  return {
    key: `embedpos${lookup ? ":lookup" : ""}${drop ? ":drop" : ""}`,
    code: /* wgsl */ `
${drop ? PHILOX_WGSL : ""}
${EMBED_PARAMS_WGSL}
${tokBind}
@group(0) @binding(${b++}) var<storage, read> pos: array<f32>;
@group(0) @binding(${b++}) var<storage, read_write> out: array<f32>;
@group(0) @binding(${b}) var<uniform> p: P;
${drop ? KEEP_WGSL : ""}
@compute @workgroup_size(${WG})
fn main(${GRID_BUILTINS}) {
  let i = ${GROUP_INDEX} * ${WG}u + lid;
  if (i >= p.rows * p.cols) { return; }
  let n = i / p.cols;
  let col = i % p.cols;
  ${drop ? `out[i] = select(0.0, (${v}) * p.scale, keep(i));` : `out[i] = ${v};`}
}`,
  };
}

/**
 * {@link embedPositionsKernel} for CPU adapters: one invocation per token,
 * walking its row a vec4 at a time (`cols / 4` iterations, within
 * `SOFTWARE_LOOP_LIMIT` for the caller to check), the token's row and the
 * position's read from stream textures (kernels/texture.ts) and the output
 * written as vec4: the same sums, and with `drop` each element kept by `keep`
 * of its own flat index, so the same bits. The token id is loaded once per
 * token rather than once per float. With `lookup` and `tableTexture` false the
 * table is read as vec4s from its buffer (a table much larger than the
 * lookup's output is not worth copying into a texture). cols must divide by 4.
 * Bindings: tok's texture (or the table's texture or buffer, and ids), pos's
 * texture, out. Dispatch: {@link embedPositionsDispatch} with `perToken`.
 */
export function embedPositionsTextureKernel(
  lookup: boolean,
  drop: boolean,
  tableTexture = true,
): KernelSource {
  const tokBind = !lookup
    ? `@group(0) @binding(0) var tokT: ${STREAM_TEXTURE};`
    : (tableTexture
      ? `@group(0) @binding(0) var tableT: ${STREAM_TEXTURE};`
      : "@group(0) @binding(0) var<storage, read> table: array<vec4<f32>>;") +
      "\n@group(0) @binding(1) var<storage, read> ids: array<i32>;";
  let b = lookup ? 2 : 1;
  const tokValue = !lookup
    ? streamTexel("tokT", "src + c")
    : tableTexture
    ? streamTexel("tableT", "src + c")
    : "table[src + c]";
  return {
    key: `embedpos${lookup ? ":lookup" : ""}${drop ? ":drop" : ""}${
      lookup && !tableTexture ? ":tablebuf" : ""
    }:tex`,
    code: /* wgsl */ `
${drop ? PHILOX_WGSL : ""}
${EMBED_PARAMS_WGSL}
${tokBind}
@group(0) @binding(${b++}) var posT: ${STREAM_TEXTURE};
@group(0) @binding(${b++}) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(${b}) var<uniform> p: P;
${drop ? KEEP_WGSL : ""}
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let n = ${GROUP_INDEX} * ${ROW_WG}u + lid;
  if (n >= p.rows) { return; }
  let c4 = p.cols / 4u;
  let src = ${lookup ? "u32(ids[n])" : "n"} * c4;
  let q = (p.start + n % p.seq) * c4;
  let o = n * c4;
  for (var c = 0u; c < c4; c++) {
    let v = ${tokValue} + ${streamTexel("posT", "q + c")};
    out[o + c] = ${drop ? dropVec4("v", "4u * (o + c)") : "v"};
  }
}`,
  };
}

/**
 * Uniforms and grid for {@link embedPositionsKernel}: `rows` tokens of `cols`
 * features, sequences of `seq` positions starting at position `start`; with
 * `perToken`, the grid of {@link embedPositionsTextureKernel} (an invocation
 * per token).
 */
export function embedPositionsDispatch(
  rows: number,
  cols: number,
  seq: number,
  start = 0,
  prob = 0,
  seed = 0,
  offset = 0,
  perToken = false,
) {
  return {
    params: new Params(12).u32(rows).u32(cols).u32(seq).u32(offset).u32(seed >>> 0)
      .u32(Math.floor(seed / 2 ** 32)).f32(prob).f32(1 / (1 - prob)).u32(start).u32(0).u32(0)
      .u32(0).buffer,
    workgroups: perToken ? gridFor(rows, ROW_WG) : gridFor(rows * cols, WG),
  };
}

// ---------------------------------------------------------------------------
// CPU adapters: one invocation per row, inputs read through stream
// textures and outputs written as vec4, as kernels/layernorm.ts's texture forms
// (same values; the row statistics are summed per vec4 component first).

/**
 * {@link residualNormForwardKernel} for CPU adapters. Bindings: x, a, gamma,
 * beta as textures; sum, y (vec4), mean, rstd. Dispatch over
 * `gridFor(rows, ROW_WG)` with {@link residualNormDispatch}'s params.
 */
export function residualNormForwardTextureKernel(drop: boolean): KernelSource {
  return {
    key: `resnorm:fwd${drop ? ":drop" : ""}:tex`,
    code: /* wgsl */ `
${drop ? PHILOX_WGSL : ""}
${PARAMS_WGSL}
@group(0) @binding(0) var xT: ${STREAM_TEXTURE};
@group(0) @binding(1) var aT: ${STREAM_TEXTURE};
@group(0) @binding(2) var gammaT: ${STREAM_TEXTURE};
@group(0) @binding(3) var betaT: ${STREAM_TEXTURE};
@group(0) @binding(4) var<storage, read_write> sum: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> meanOut: array<f32>;
@group(0) @binding(7) var<storage, read_write> rstdOut: array<f32>;
@group(0) @binding(8) var<uniform> p: P;
${drop ? KEEP_WGSL : ""}
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX} * ${ROW_WG}u + lid;
  if (row >= p.rows) { return; }
  let c4 = p.cols / 4u;
  var s = vec4<f32>();
  for (var c = 0u; c < c4; c++) {
    let av = ${streamTexel("aT", "row * c4 + c")};
    let v = ${streamTexel("xT", "row * c4 + c")} + ${
      drop ? dropVec4("av", "row * p.cols + 4u * c") : "av"
    };
    sum[row * c4 + c] = v;
    s += v;
  }
${normalizeRowTextureWgsl((c) => `sum[row * c4 + ${c}]`)}
}`,
  };
}

/**
 * {@link residualNormBackwardKernel} for CPU adapters. Bindings: sum, gamma,
 * dy, [dres] as textures; mean, rstd; dx, [da] (vec4).
 */
export function residualNormBackwardTextureKernel(residual: boolean, drop: boolean): KernelSource {
  let b = 0;
  const tex = (name: string) => `@group(0) @binding(${b++}) var ${name}: ${STREAM_TEXTURE};`;
  const bind = (decl: string) => `@group(0) @binding(${b++}) var<storage, ${decl};`;
  const decls = [
    tex("sumT"),
    tex("gammaT"),
    tex("dyT"),
    residual ? tex("dresT") : "",
    bind("read> meanIn: array<f32>"),
    bind("read> rstdIn: array<f32>"),
    bind("read_write> dx: array<vec4<f32>>"),
    drop ? bind("read_write> da: array<vec4<f32>>") : "",
  ].join("\n");
  return {
    key: `resnorm:bwd${residual ? ":res" : ""}${drop ? ":drop" : ""}:tex`,
    code: /* wgsl */ `
${drop ? PHILOX_WGSL : ""}
${PARAMS_WGSL}
${decls}
@group(0) @binding(${b}) var<uniform> p: P;
${drop ? KEEP_WGSL : ""}
@compute @workgroup_size(${ROW_WG})
fn main(${GRID_BUILTINS}) {
  let row = ${GROUP_INDEX} * ${ROW_WG}u + lid;
  if (row >= p.rows) { return; }
  let c4 = p.cols / 4u;
${
      normGradRowTextureWgsl(
        "sumT",
        `let t = ${residual ? `${streamTexel("dresT", "row * c4 + c")} + v` : "v"};
    dx[row * c4 + c] = t;
    ${drop ? `da[row * c4 + c] = ${dropVec4("t", "row * p.cols + 4u * c")};` : ""}`,
      )
    }
}`,
  };
}
