/**
 * Hugging Face GPT-2 interop: a small GPT-2 written by the test in HF's layout
 * (Conv1D [in, out] weights, `transformer.` prefix, attention-mask buffers, tied
 * lm_head) imports into our GPT with the same logits as a plain computation on the
 * HF tensors; it imports at TP=2 as the right shards; export then import is the
 * identity (bit-exact files and weights); the exported config names GPT-2's
 * end-of-text id only at GPT-2's vocabulary.
 */

import { deepStrictEqual, rejects, strictEqual } from "node:assert/strict";
import { join } from "node:path";
import type { ParamInfo } from "../core/nn.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import {
  type HostTensor,
  paramsToHost,
  SafetensorsFile,
  splitShard,
  writeSafetensors,
} from "../models/checkpoint/mod.ts";
import { Gpt, paddedVocabSize } from "../models/gpt.ts";
import { assignGpt2, gpt2ConfigToHf, readHfGpt2, writeHfGpt2 } from "../models/hf/mod.ts";
import { assertClose, gpuTest, prng, randomArray, testDevice } from "./helpers.ts";
import { geluTanh, layerNormRef } from "./reference.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();
const V = 41, H = 8, NH = 2, L = 2, P = 6, F = 4 * H;

function hfTensors(seed: number): Map<string, HostTensor> {
  const m = new Map<string, HostTensor>();
  let s = seed;
  const add = (n: string, shape: number[], scale = 0.3, offset = 0) => {
    const d = randomArray(shape.reduce((a, b) => a * b, 1), s++, -scale, scale).map((x) =>
      x + offset
    );
    m.set(n, { shape, data: d });
  };
  add("wte.weight", [V, H]);
  add("wpe.weight", [P, H]);
  for (let i = 0; i < L; i++) {
    const p = `h.${i}.`;
    add(p + "ln_1.weight", [H], 0.2, 1);
    add(p + "ln_1.bias", [H], 0.1);
    add(p + "attn.c_attn.weight", [H, 3 * H]);
    add(p + "attn.c_attn.bias", [3 * H], 0.1);
    add(p + "attn.c_proj.weight", [H, H]);
    add(p + "attn.c_proj.bias", [H], 0.1);
    add(p + "ln_2.weight", [H], 0.2, 1);
    add(p + "ln_2.bias", [H], 0.1);
    add(p + "mlp.c_fc.weight", [H, F]);
    add(p + "mlp.c_fc.bias", [F], 0.1);
    add(p + "mlp.c_proj.weight", [F, H]);
    add(p + "mlp.c_proj.bias", [H], 0.1);
  }
  add("ln_f.weight", [H], 0.2, 1);
  add("ln_f.bias", [H], 0.1);
  return m;
}

const hfConfig = {
  architectures: ["GPT2LMHeadModel"],
  model_type: "gpt2",
  activation_function: "gelu_new",
  vocab_size: V,
  n_embd: H,
  n_head: NH,
  n_layer: L,
  n_positions: P,
  n_inner: null,
  layer_norm_epsilon: 1e-5,
  resid_pdrop: 0,
  embd_pdrop: 0,
  attn_pdrop: 0,
};

async function writeHfModel(
  dir: string,
  w: Map<string, HostTensor>,
  head: Float32Array = w.get("wte.weight")!.data,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(hfConfig));
  const out = [...w].map(([n, t]) => ({ name: `transformer.${n}`, shape: t.shape, data: t.data }));
  for (let i = 0; i < L; i++) { // HF's non-parameter buffers
    const tri = new Float32Array(P * P).map((_, k) => (k % P) <= Math.floor(k / P) ? 1 : 0);
    out.push({ name: `transformer.h.${i}.attn.bias`, shape: [1, 1, P, P], data: tri });
  }
  out.push({ name: "lm_head.weight", shape: [V, H], data: head });
  await writeSafetensors(join(dir, "model.safetensors"), out, { format: "pt" });
}

/** A plain GPT-2 forward on the HF tensors (Conv1D: y = x·W + b with W [in, out]). */
function hfLogitsRef(w: Map<string, HostTensor>, ids: number[]): Float64Array {
  const T = ids.length;
  const g = (n: string) => w.get(n)!.data;
  const conv = (x: Float64Array, n: string, inF: number, outF: number) => {
    const W = g(n + ".weight"), b = g(n + ".bias");
    const y = new Float64Array(T * outF);
    for (let t = 0; t < T; t++) {
      for (let o = 0; o < outF; o++) {
        let s = b[o];
        for (let i = 0; i < inF; i++) s += x[t * inF + i] * W[i * outF + o];
        y[t * outF + o] = s;
      }
    }
    return y;
  };
  const ln = (x: Float64Array, n: string) =>
    layerNormRef(x, g(n + ".weight"), g(n + ".bias"), H, 1e-5);
  let x = new Float64Array(T * H);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < H; i++) {
      x[t * H + i] = g("wte.weight")[ids[t] * H + i] + g("wpe.weight")[t * H + i];
    }
  }
  const hd = H / NH;
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    const qkv = conv(ln(x, p + "ln_1"), p + "attn.c_attn", H, 3 * H);
    const ctx = new Float64Array(T * H);
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        const sc: number[] = [];
        for (let u = 0; u <= t; u++) {
          let s = 0;
          for (let d = 0; d < hd; d++) {
            s += qkv[t * 3 * H + h * hd + d] * qkv[u * 3 * H + H + h * hd + d];
          }
          sc.push(s / Math.sqrt(hd));
        }
        const mx = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < hd; d++) {
          let s = 0;
          for (let u = 0; u <= t; u++) s += (e[u] / z) * qkv[u * 3 * H + 2 * H + h * hd + d];
          ctx[t * H + h * hd + d] = s;
        }
      }
    }
    const a = conv(ctx, p + "attn.c_proj", H, H);
    x = x.map((v, i) => v + a[i]);
    const m = conv(
      conv(ln(x, p + "ln_2"), p + "mlp.c_fc", H, F).map(geluTanh),
      p + "mlp.c_proj",
      F,
      H,
    );
    x = x.map((v, i) => v + m[i]);
  }
  const hf = ln(x, "ln_f");
  const out = new Float64Array(T * V);
  const wte = g("wte.weight");
  for (let t = 0; t < T; t++) {
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let i = 0; i < H; i++) s += hf[t * H + i] * wte[v * H + i];
      out[t * V + v] = s;
    }
  }
  return out;
}

async function ourLogits(m: Gpt, ids: number[]): Promise<Float32Array> {
  m.train(false);
  const T = ids.length;
  const full = await tidy(
    dev,
    async () => (await m.logits(TokenIds.fromHost(dev, Int32Array.from(ids), [1, T]))).read(),
  );
  const out = new Float32Array(T * V);
  for (let t = 0; t < T; t++) {
    out.set(full.subarray(t * m.paddedVocab, t * m.paddedVocab + V), t * V);
  }
  return out;
}

Deno.test(
  "HF GPT-2 import gives the logits of a plain computation on the HF tensors",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const w = hfTensors(1);
    await writeHfModel(dir, w);
    const { config, tensors, source } = await readHfGpt2(dir);
    deepStrictEqual([
      config.vocabSize,
      config.hiddenSize,
      config.numLayers,
      config.numHeads,
      config.maxPositions,
    ], [V, H, L, NH, P]);
    const m = Gpt.serial(dev, config, 3);
    assignGpt2(m.namedParams(), tensors, config, {}, source);
    const r = prng(5);
    const ids = Array.from({ length: P }, () => Math.floor(r() * V));
    const ours = await ourLogits(m, ids);
    const ref = hfLogitsRef(w, ids);
    let worst = 0;
    ours.forEach((v, i) => worst = Math.max(worst, Math.abs(v - ref[i])));
    console.log(
      `max |logit ours − plain HF-layout reference| = ${
        worst.toExponential(2)
      } over ${ours.length} logits`,
    );
    assertClose(ours, ref, { rtol: 1e-4, atol: 1e-4, what: "logits" });
    // padded vocabulary rows are zero
    const wte = (await paramsToHost(m.namedParams())).get("wte.weight")!;
    deepStrictEqual(wte.shape, [paddedVocabSize(V), H]);
    deepStrictEqual(wte.data.subarray(V * H).every((x) => x === 0), true);
    m.dispose();
  },
);

function gptPartition(name: string): { dim: number | null; blocks: number } {
  if (name === "wte.weight" || /mlp\.c_fc\./.test(name)) return { dim: 0, blocks: 1 };
  if (/attn\.c_attn\./.test(name)) return { dim: 0, blocks: 3 };
  if (/c_proj\.weight$/.test(name)) return { dim: 1, blocks: 1 };
  return { dim: null, blocks: 1 };
}

Deno.test(
  "HF GPT-2 import at TP=2 gives each rank its shard of the full weights",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    await writeHfModel(dir, hfTensors(7));
    const { config, tensors, source } = await readHfGpt2(dir);
    const serial = Gpt.serial(dev, config, 3);
    assignGpt2(serial.namedParams(), tensors, config, {}, source);
    const full = await paramsToHost(serial.namedParams());
    const tp = 2;
    for (let rank = 0; rank < tp; rank++) {
      const params: [string, ParamInfo][] = [...full].map(([n, t]) => {
        const part = gptPartition(n);
        const shape = [...t.shape];
        if (n === "wte.weight") shape[0] = paddedVocabSize(V, tp);
        if (part.dim !== null) shape[part.dim] /= tp;
        return [n, {
          tensor: Tensor.fromArray(dev, new Float32Array(shape.reduce((a, b) => a * b, 1)), shape)
            .keep(),
          decay: true,
          partitionDim: part.dim,
          partitionBlocks: part.blocks,
        }];
      });
      assignGpt2(params, tensors, config, { tp, tpRank: rank }, source);
      const got = await paramsToHost(params);
      for (const [n, t] of full) {
        const part = gptPartition(n);
        let f = t;
        if (n === "wte.weight") {
          const d = new Float32Array(paddedVocabSize(V, tp) * H);
          d.set(t.data);
          f = { shape: [paddedVocabSize(V, tp), H], data: d };
        }
        deepStrictEqual(got.get(n), splitShard(f, part, tp, rank), n);
      }
      for (const [, p] of params) p.tensor.dispose();
    }
    serial.dispose();
  },
);

Deno.test("GPT-2 export then import is the identity", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const w = hfTensors(11);
  await writeHfModel(join(dir, "a"), w);
  const a = await readHfGpt2(join(dir, "a"));
  const m = Gpt.serial(dev, a.config, 3);
  assignGpt2(m.namedParams(), a.tensors, a.config, {}, a.source);
  const before = await paramsToHost(m.namedParams());
  await writeHfGpt2(join(dir, "b"), a.config, (n) => before.get(n));
  // the exported file holds exactly the original HF tensors, bit for bit
  const f = await SafetensorsFile.read(join(dir, "b", "model.safetensors"));
  deepStrictEqual(f.metadata.format, "pt");
  deepStrictEqual(new Set(f.tensors.keys()), new Set([...w.keys()].map((n) => `transformer.${n}`)));
  for (const [n, t] of w) {
    deepStrictEqual(f.info(`transformer.${n}`).shape, t.shape, n);
    deepStrictEqual(
      new Uint32Array(f.floats(`transformer.${n}`).buffer),
      new Uint32Array(t.data.buffer),
      n,
    );
  }
  // and imports back to the same weights
  const b = await readHfGpt2(join(dir, "b"));
  deepStrictEqual(b.config, a.config);
  const m2 = Gpt.serial(dev, b.config, 4);
  assignGpt2(m2.namedParams(), b.tensors, b.config, {}, b.source);
  deepStrictEqual(await paramsToHost(m2.namedParams()), before);
  m.dispose();
  m2.dispose();
});

Deno.test("HF import refuses missing, unexpected and mismatched tensors", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const w = hfTensors(13);
  w.delete("h.1.mlp.c_fc.bias");
  await writeHfModel(dir, w);
  await rejects(readHfGpt2(dir), /model\.safetensors: missing tensor h\.1\.mlp\.c_fc\.bias/);
  const w2 = hfTensors(13);
  w2.set("h.0.attn.rotary.weight", { shape: [2], data: new Float32Array(2) });
  await writeHfModel(dir, w2);
  await rejects(readHfGpt2(dir), /unexpected tensor h\.0\.attn\.rotary\.weight/);
  const w3 = hfTensors(13);
  await writeHfModel(dir, w3, w3.get("wte.weight")!.data.map((v) => -v));
  await rejects(
    readHfGpt2(dir),
    /lm_head\.weight is not a copy of wte\.weight \(an untied output layer\); this model ties/,
  );
  await writeHfModel(dir, hfTensors(13));
  const { config, tensors, source } = await readHfGpt2(dir);
  const other = Gpt.serial(dev, { ...config, hiddenSize: 12, numHeads: 2 }, 1);
  const before = await paramsToHost(other.namedParams());
  let err = "";
  try {
    assignGpt2(other.namedParams(), tensors, config, {}, source);
  } catch (e) {
    err = (e as Error).message;
  }
  deepStrictEqual(
    /: wte\.weight is \[41, 8\] in the file, but the model has \[41, 12\] \(sized by config\.json's n_embd, n_inner, n_positions, vocab_size\): the weights and the config disagree$/
      .test(err),
    true,
    err,
  );
  deepStrictEqual(await paramsToHost(other.namedParams()), before);
  // A config.json whose sizes the weights do not have is named in the file's own layout
  // (Conv1D [in, out]), not in this project's names.
  for (
    const [key, value, says] of [
      [
        "n_inner",
        16,
        /h\.0\.mlp\.c_fc\.weight is \[8, 32\] in the file, but the model has \[8, 16\]/,
      ],
      ["n_positions", 12, /wpe\.weight is \[6, 8\] in the file, but the model has \[12, 8\]/],
    ] as const
  ) {
    await Deno.writeTextFile(
      join(dir, "config.json"),
      JSON.stringify({ ...hfConfig, [key]: value }),
    );
    const hf = await readHfGpt2(dir);
    const m = Gpt.serial(dev, hf.config, 1);
    try {
      assignGpt2(m.namedParams(), hf.tensors, hf.config, {}, hf.source);
      throw new Error(`${key} ${value}: loaded`);
    } catch (e) {
      deepStrictEqual(says.test((e as Error).message), true, (e as Error).message);
    }
    m.dispose();
  }
  await Deno.writeTextFile(
    join(dir, "config.json"),
    JSON.stringify({ ...hfConfig, activation_function: "relu" }),
  );
  await rejects(readHfGpt2(dir), /activation_function "relu" is not supported/);
  other.dispose();
});

Deno.test("the exported config names an end-of-text id only at GPT-2's vocabulary", () => {
  const shape = { numLayers: 1, hiddenSize: 8, numHeads: 2, maxPositions: 4 };
  const gpt2 = gpt2ConfigToHf({ ...shape, vocabSize: 50257 });
  strictEqual(gpt2.eos_token_id, 50256);
  strictEqual(gpt2.bos_token_id, 50256);
  // Byte-level: no end-of-text token (its last id, byte 0xFF, would stop generation there).
  const bytes = gpt2ConfigToHf({ ...shape, vocabSize: 256 });
  strictEqual(bytes.eos_token_id, null);
  strictEqual(bytes.bos_token_id, null);
});
