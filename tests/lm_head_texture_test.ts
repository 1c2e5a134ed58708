/**
 * The LM head's vocabulary chunks on adapters whose matmul reads B through a
 * texture (software adapters: `MatmulTiling.texB`). A table taller than the
 * stream texture holds (`maxTextureDimension` rows of 1024 texels) is multiplied
 * in chunks that fit one, so that both products whose B is the table (the
 * logits `x·W_kᵀ` and the input gradient `dl·W_k`) read it through the texture.
 *
 * A second device caps 2-D textures at 4 texels (`maxTextureDimension`): a
 * stream texture then holds 16,384 floats, 256 rows of hidden size 64, so a
 * `[1024, 64]` table goes in four 256-row chunks there and in one on the
 * uncapped device. Loss and the gradients of the
 * hidden states, the table and the bias (with padding columns and ignored
 * targets) must match the uncapped device to rtol 1e-5 (only the grouping of
 * two f32 sums over the vocabulary differs: the softmax's Σexp and the input
 * gradient Σ_k dl_k·W_k are added chunk by chunk) and a float64 CPU reference
 * (loss to 1e-5 relative; gradients to 1e-5 of the set's largest plus 1e-4
 * relative). On a GPU adapter neither device chunks (no texture B).
 */

import { backward } from "../core/autograd.ts";
import { Device } from "../core/device.ts";
import { lmHeadCrossEntropy, vocabChunks } from "../core/ops/lm_head.ts";
import { matmulOptions } from "../core/ops/matmul.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { chooseTiling, type MatmulShape } from "../kernels/matmul.ts";
import { assertClose, gpuTest, prng, randomArray, testBackend, testDevice } from "./helpers.ts";

const dev = await testDevice();
const CAP = 4;
const capped = await Device.create({ backend: testBackend(), maxTextureDimension: CAP });

const VOCAB = 1024, VALID = 1000, H = 64, M = 24;

function shapes(m: number, n: number, h: number): { logits: MatmulShape; dx: MatmulShape } {
  const base = { batch: 1, batchA: false, batchB: false, bias: false, transA: false };
  return {
    logits: { ...base, M: m, N: n, K: h, transB: true },
    dx: { ...base, M: m, N: h, K: n, transB: false, accumulate: true },
  };
}

/** Whether both products of a chunk of `n` table rows read the table through a texture. */
function textured(d: Device, m: number, n: number, h: number): boolean {
  const s = shapes(m, n, h);
  const opts = matmulOptions(d);
  return chooseTiling(s.logits, opts).texB === true && chooseTiling(s.dx, opts).texB === true;
}

Deno.test("the cap applies to textures only", gpuTest, () => {
  if (capped.maxTextureDimension !== CAP) {
    throw new Error(`cap not applied: ${capped.maxTextureDimension}`);
  }
  if (capped.maxBindingBytes !== dev.maxBindingBytes) throw new Error("binding limit changed");
  if (dev.maxTextureDimension !== dev.limits.maxTextureDimension2D) {
    throw new Error("the uncapped device does not report the adapter's limit");
  }
});

Deno.test(
  "chunks are texture-sized only where the matmul reads B through a texture",
  gpuTest,
  () => {
    const soft = capped.isSoftware;
    const got = vocabChunks(capped, VOCAB, H, M, true);
    const want = soft ? [[0, 256], [256, 256], [512, 256], [768, 256]] : [[0, VOCAB]];
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      throw new Error(`chunks ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    }
    // Binding-sized only (lmHeadLogits): one chunk.
    const plain = vocabChunks(capped, VOCAB, H, M);
    if (plain.length !== 1) throw new Error(`binding chunks ${JSON.stringify(plain)}`);
    if (soft && !got.every(([, n]) => textured(capped, M, n, H))) {
      throw new Error("a chunk's product does not read the table through a texture");
    }
    // A hidden size that is not a multiple of 4 never reads B through a texture.
    const odd = vocabChunks(capped, VOCAB, 66, M, true);
    if (odd.length !== 1) throw new Error(`hidden 66: chunks ${JSON.stringify(odd)}`);
  },
);

Deno.test(
  "GPT-2's LM head: texture-sized chunks on software adapters, else binding-sized",
  gpuTest,
  () => {
    const vocab = 50304, h = 768, m = 256;
    const chunks = vocabChunks(dev, vocab, h, m, true);
    const plain = vocabChunks(dev, vocab, h, m);
    let next = 0;
    for (const [r0, n] of chunks) {
      if (r0 !== next || r0 % 64 !== 0) throw new Error(`chunks ${JSON.stringify(chunks)}`);
      if (n * h * 4 > dev.maxBindingBytes) throw new Error(`chunk of ${n} rows past one binding`);
      next += n;
    }
    if (next !== vocab) throw new Error(`chunks cover ${next} rows`);
    if (dev.isSoftware && textured(dev, m, 64, h)) {
      for (const [, n] of chunks) {
        if (!textured(dev, m, n, h)) throw new Error(`chunk of ${n} rows not textured`);
      }
    } else if (JSON.stringify(chunks) !== JSON.stringify(plain)) {
      throw new Error(
        `no texture B, yet chunks ${JSON.stringify(chunks)} vs ${JSON.stringify(plain)}`,
      );
    }
  },
);

interface Result {
  loss: number;
  dh: Float32Array;
  dw: Float32Array;
  db: Float32Array;
}

const hidden = randomArray(M * H, 1);
const table = randomArray(VOCAB * H, 2, -0.5, 0.5);
const bias = randomArray(VOCAB, 3);
const targets = (() => {
  const r = prng(4);
  // Some ignored (-1), the rest within the valid vocabulary.
  return Int32Array.from({ length: M }, (_, i) => (i % 7 === 3 ? -1 : Math.floor(r() * VALID)));
})();

async function gpu(d: Device): Promise<Result> {
  return await tidy(d, async () => {
    const h = Tensor.fromArray(d, hidden, [2, M / 2, H]).requireGrad();
    const w = Tensor.fromArray(d, table, [VOCAB, H]).requireGrad();
    const b = Tensor.fromArray(d, bias, [VOCAB]).requireGrad();
    const loss = await lmHeadCrossEntropy(h, w, TokenIds.fromHost(d, targets, [2, M / 2]), {
      validVocab: VALID,
      bias: b,
    });
    const value = (await loss.read())[0];
    await backward(loss);
    return {
      loss: value,
      dh: await h.grad!.read(),
      dw: await w.grad!.read(),
      db: await b.grad!.read(),
    };
  });
}

/** Float64 loss and gradients; padding columns get no probability and no gradient. */
function reference(): Result {
  const dh = new Float64Array(M * H), dw = new Float64Array(VOCAB * H);
  const db = new Float64Array(VOCAB);
  const count = targets.filter((t) => t >= 0 && t < VALID).length;
  let loss = 0;
  for (let r = 0; r < M; r++) {
    const t = targets[r];
    if (t < 0 || t >= VALID) continue;
    const z = new Float64Array(VALID);
    for (let v = 0; v < VALID; v++) {
      let s = bias[v];
      for (let k = 0; k < H; k++) s += hidden[r * H + k] * table[v * H + k];
      z[v] = s;
    }
    const max = Math.max(...z);
    let sum = 0;
    for (let v = 0; v < VALID; v++) sum += Math.exp(z[v] - max);
    const lse = max + Math.log(sum);
    loss += lse - z[t];
    for (let v = 0; v < VALID; v++) {
      const d = (Math.exp(z[v] - lse) - (v === t ? 1 : 0)) / count;
      db[v] += d;
      for (let k = 0; k < H; k++) {
        dh[r * H + k] += d * table[v * H + k];
        dw[v * H + k] += d * hidden[r * H + k];
      }
    }
  }
  const f = (a: Float64Array) => Float32Array.from(a);
  return { loss: loss / count, dh: f(dh), dw: f(dw), db: f(db) };
}

function compare(got: Result, want: Result, tol: (g: Float32Array) => number, rtol: number) {
  assertClose([got.loss], [want.loss], { rtol: 1e-5, atol: 0, what: "loss" });
  for (const k of ["dh", "dw", "db"] as const) {
    assertClose(got[k], want[k], { rtol, atol: tol(want[k]), what: k });
  }
}

Deno.test("LM head loss and gradients in texture-sized chunks", gpuTest, async () => {
  const one = await gpu(dev);
  const chunked = await gpu(capped);
  const ref = reference();
  const largest = (g: Float32Array) => g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  // Against the one-chunk device: the same products, two sums grouped by chunk.
  compare(chunked, one, (g) => 1e-6 * largest(g), 1e-5);
  // Both against float64.
  for (const [what, r] of [["one chunk", one], ["four chunks", chunked]] as const) {
    try {
      compare(r, ref, (g) => 1e-5 * largest(g), 1e-4);
    } catch (e) {
      throw new Error(`${what} vs float64: ${(e as Error).message}`);
    }
  }
  // Padding columns: exactly zero.
  for (let v = VALID; v < VOCAB; v++) {
    if (chunked.db[v] !== 0 || chunked.dw.subarray(v * H, (v + 1) * H).some((x) => x !== 0)) {
      throw new Error(`padding row ${v} has a gradient`);
    }
  }
});

Deno.test("close the capped device", gpuTest, async () => {
  await capped.close();
});
