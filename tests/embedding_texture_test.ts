/**
 * The CPU-adapter forms of the embedding kernels (`embedPositionsTextureKernel`,
 * `embeddingBackwardTextureKernel`: stream textures, vec4s, the index read once
 * per token or per distinct row) against plain TypeScript references and
 * against their buffer forms dispatched directly: the position add (token
 * tensor or fused lookup, the table through a texture or, when much larger
 * than the output, its buffer), with and without dropout (the same Philox
 * mask), from position 0 and later; the table gradient's gather-sum at every
 * vec4 width (1, 2, 4), in one token block and in several (the later blocks
 * add into the first's), with table windows. Sizes take the texture forms
 * (outputs of at least STREAM_MIN_VEC4S vec4s); feature counts that are not
 * whole vec4s keep the buffer forms. On a GPU only the values are checked.
 * Backend: env WEBGPU_BACKEND (deno | dawn).
 * @module
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import { STREAM_MIN_VEC4S } from "../core/ops/streams.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { embedPositionsDispatch, embedPositionsKernel } from "../kernels/residual_norm.ts";
import {
  assertClose,
  prng,
  randomArray,
  testBackend,
  withKernelKeys,
  withTimeLimit,
} from "./helpers.ts";
import { philox, u01 } from "./reference.ts";

/** Skewed ids in [0, vocab): a third of the tokens are id 1, so one row sums many. */
function skewedIds(n: number, vocab: number, seed: number): Int32Array {
  const r = prng(seed);
  return Int32Array.from({ length: n }, () => r() < 1 / 3 ? 1 : Math.floor(r() * vocab));
}

const DRAW = { seed: 2 ** 40 + 12345, offset: 9 };

/** `dropout(tok + pos[start + n mod T])` in f32 on the host. */
function embedPositionsRef(
  tok: (n: number, c: number) => number,
  pos: Float32Array,
  rows: number,
  h: number,
  T: number,
  start: number,
  p: number,
): Float32Array {
  const out = new Float32Array(rows * h);
  const scale = Math.fround(1 / (1 - p));
  const seed = [DRAW.seed >>> 0, Math.floor(DRAW.seed / 2 ** 32)];
  for (let n = 0; n < rows; n++) {
    for (let c = 0; c < h; c++) {
      const i = n * h + c;
      const v = Math.fround(tok(n, c) + pos[(start + (n % T)) * h + c]);
      out[i] = p === 0
        ? v
        : u01(philox([i, DRAW.offset, 0, 0], seed)[0]) >= p
        ? Math.fround(v * scale)
        : 0;
    }
  }
  return out;
}

async function checkEmbedPositions(device: Device): Promise<void> {
  const B = 4, T = 32;
  // [h, vocab, table read as]: c4 = 16 and 9 (odd); a table of 1024 rows is
  // more than 4× the output, read from its buffer; h = 6 is not whole vec4s.
  const cases: [number, number, string][] = [[64, 40, "texture"], [36, 100, "texture"], [
    64,
    1024,
    "buffer",
  ], [6, 40, "plain"]];
  for (const [h, V, tableForm] of cases) {
    const P = T + 8;
    const tableHost = randomArray(V * h, h + V);
    const posHost = randomArray(P * h, h + 1);
    const tokHost = randomArray(B * T * h, h + 2);
    const idsHost = skewedIds(B * T, V, h);
    const table = Tensor.fromArray(device, tableHost, [V, h]);
    const pos = Tensor.fromArray(device, posHost, [P, h]);
    const tok = Tensor.fromArray(device, tokHost, [B, T, h]);
    const ids = TokenIds.fromHost(device, idsHost, [B, T]);
    for (const p of [0, 0.25]) {
      const spec = p ? { p, draw: DRAW } : null;
      for (const start of [0, 5]) {
        for (const lookup of [true, false]) {
          const what = `embedPositions h=${h} V=${V} p=${p} start=${start} lookup=${lookup}`;
          const [got, keys] = await withKernelKeys(device, async () => {
            const out = ops.embedPositions(lookup ? { table, ids } : tok, pos, spec, start);
            const r = await out.read();
            out.dispose();
            return r;
          });
          if (device.isSoftware) {
            const key = keys.find((k) => k.startsWith("embedpos"))!;
            if (h % 4 !== 0) ok(!key.endsWith(":tex"), `${what}: ${key}`);
            else {
              ok(key.endsWith(":tex"), `${what}: ${key}`);
              ok(key.includes(":tablebuf") === (lookup && tableForm === "buffer"), key);
            }
          }
          const want = embedPositionsRef(
            lookup ? (n, c) => tableHost[idsHost[n] * h + c] : (n, c) => tokHost[n * h + c],
            posHost,
            B * T,
            h,
            T,
            start,
            p,
          );
          assertClose(got, want, { rtol: 1e-6, atol: 1e-7, what });
          // and the buffer form's bits
          const plain = Tensor.empty(device, [B, T, h]);
          const d = embedPositionsDispatch(B * T, h, T, start, p, DRAW.seed, DRAW.offset);
          device.dispatch(
            embedPositionsKernel(lookup, p > 0),
            [
              ...(lookup ? [table.binding, ids.tensor.binding] : [tok.binding]),
              pos.binding,
              plain.binding,
            ],
            d.params,
            d.workgroups,
          );
          deepStrictEqual(got, await plain.read(), `${what}: buffer form's bits`);
          plain.dispose();
        }
      }
    }
    for (const t of [table, pos, tok]) t.dispose();
    ids.dispose();
  }
}

/** The table gradient in f32 on the host: each row's tokens added in token order. */
function embeddingGradRef(g: Float32Array, ids: Int32Array, V: number, dim: number): Float32Array {
  const dw = new Float32Array(V * dim);
  ids.forEach((id, n) => {
    for (let c = 0; c < dim; c++) dw[id * dim + c] = Math.fround(dw[id * dim + c] + g[n * dim + c]);
  });
  return dw;
}

async function checkEmbeddingGrad(device: Device, tag: string): Promise<void> {
  const N = 512;
  // dim/4 = 16, 10, 9: widths 4, 2, 1; dim 6 keeps the buffer form
  for (const [dim, V] of [[64, 300], [40, 50], [36, 70], [6, 50]]) {
    const gHost = randomArray(N * dim, dim);
    const idsHost = skewedIds(N, V, dim + 1);
    const weight = Tensor.fromArray(device, randomArray(V * dim, 3), [V, dim]);
    const g = Tensor.fromArray(device, gHost, [N, dim]);
    const ids = TokenIds.fromHost(device, idsHost, [N]);
    const what = `embeddingGrad ${tag} dim=${dim} V=${V}`;
    const [got, keys] = await withKernelKeys(device, async () => {
      const dw = ops.embeddingGrad(weight, ids, g);
      const r = await dw.read();
      dw.dispose();
      return r;
    });
    if (device.isSoftware) {
      const width = dim % 4 ? 0 : (dim / 4) % 4 === 0 ? 4 : (dim / 4) % 2 === 0 ? 2 : 1;
      const want = width ? `embedding:bwd:w${width}:tex` : "embedding:bwd";
      ok(
        keys.includes(want) && keys.filter((k) => k.startsWith("embedding:")).length === 1,
        [
          what,
          ...keys,
        ].join(" "),
      );
    }
    // several token blocks group the sum by block: within f32 rounding of token order
    const tol = tag === "blocks" ? 1e-5 : 1e-6;
    assertClose(got, embeddingGradRef(gHost, idsHost, V, dim), { rtol: tol, atol: tol, what });
    for (const t of [weight, g]) t.dispose();
    ids.dispose();
  }
}

Deno.test(
  "embedding texture forms: embedPositions forward against the reference and the buffer form",
  withTimeLimit(240),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      ok(4 * 32 * 36 / 4 >= STREAM_MIN_VEC4S, "the outputs take the texture forms");
      await checkEmbedPositions(device);
    } finally {
      await device.close();
    }
  },
);

Deno.test(
  "embedding texture forms: the table gradient, in one token block and in several",
  withTimeLimit(240),
  async () => {
    const device = await Device.create({ backend: testBackend() });
    try {
      ok(512 * 36 / 4 >= STREAM_MIN_VEC4S, "the gradients take the texture form");
      await checkEmbeddingGrad(device, "one block");
    } finally {
      await device.close();
    }
    // 64 KiB bindings: token blocks of 256 rows at dim 64 (the second block adds
    // into the first's rows) and table windows of 256 rows (300 rows: two)
    const capped = await Device.create({ backend: testBackend(), maxBindingBytes: 64 * 1024 });
    try {
      await checkEmbeddingGrad(capped, "blocks");
    } finally {
      await capped.close();
    }
  },
);
