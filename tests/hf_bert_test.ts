/**
 * Hugging Face BERT mapping on host arrays: HF's separate query/key/value fuse into
 * our q|k|v tensor, old `gamma/beta` names and bare `BertModel` prefixes are
 * normalised, buffers and the tied decoder are ignored, and export then import
 * is the identity (bit-exact).
 */

import { deepStrictEqual, throws } from "node:assert/strict";
import { Bert, type BertConfig } from "../models/bert.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { paramsToHost } from "../models/checkpoint/mod.ts";
import type { HostTensor } from "../models/checkpoint/mod.ts";
import { readTensors, resizeRows, tensorSourceOf } from "../models/checkpoint/mod.ts";
import {
  assignBert,
  BERT_TABLE,
  bertConfigFromHf,
  bertConfigToHf,
  bertPaddedRows,
  bertTensorsFromHf,
  bertTensorsToHf,
  expandTable,
} from "../models/hf/mod.ts";
import { gpuTest, randomArray, testDevice } from "./helpers.ts";

const hfConfig = {
  model_type: "bert",
  vocab_size: 30,
  hidden_size: 8,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  intermediate_size: 16,
  max_position_embeddings: 12,
  type_vocab_size: 2,
  layer_norm_eps: 1e-12,
  hidden_act: "gelu",
};

function hfBert(): Map<string, HostTensor> {
  const m = new Map<string, HostTensor>();
  let s = 1;
  const add = (n: string, shape: number[]) =>
    m.set(n, { shape, data: randomArray(shape.reduce((a, b) => a * b, 1), s++) });
  const { vocab_size: V, hidden_size: H, intermediate_size: F } = hfConfig;
  add("bert.embeddings.word_embeddings.weight", [V, H]);
  add("bert.embeddings.position_embeddings.weight", [12, H]);
  add("bert.embeddings.token_type_embeddings.weight", [2, H]);
  add("bert.embeddings.LayerNorm.weight", [H]);
  add("bert.embeddings.LayerNorm.bias", [H]);
  for (let i = 0; i < 2; i++) {
    const p = `bert.encoder.layer.${i}.`;
    for (const q of ["query", "key", "value"]) {
      add(`${p}attention.self.${q}.weight`, [H, H]);
      add(`${p}attention.self.${q}.bias`, [H]);
    }
    add(`${p}attention.output.dense.weight`, [H, H]);
    add(`${p}attention.output.dense.bias`, [H]);
    add(`${p}attention.output.LayerNorm.weight`, [H]);
    add(`${p}attention.output.LayerNorm.bias`, [H]);
    add(`${p}intermediate.dense.weight`, [F, H]);
    add(`${p}intermediate.dense.bias`, [F]);
    add(`${p}output.dense.weight`, [H, F]);
    add(`${p}output.dense.bias`, [H]);
    add(`${p}output.LayerNorm.weight`, [H]);
    add(`${p}output.LayerNorm.bias`, [H]);
  }
  add("bert.pooler.dense.weight", [H, H]);
  add("bert.pooler.dense.bias", [H]);
  add("cls.predictions.transform.dense.weight", [H, H]);
  add("cls.predictions.transform.dense.bias", [H]);
  add("cls.predictions.transform.LayerNorm.weight", [H]);
  add("cls.predictions.transform.LayerNorm.bias", [H]);
  add("cls.predictions.bias", [V]);
  add("cls.seq_relationship.weight", [2, H]);
  add("cls.seq_relationship.bias", [2]);
  return m;
}

Deno.test("HF BERT import fuses q|k|v, ignores buffers; export then import is the identity", () => {
  const cfg = bertConfigFromHf(hfConfig);
  deepStrictEqual(cfg.ffnHiddenSize, 16);
  const hf = hfBert();
  // what HF files also hold: buffers and the tied decoder
  const withExtras = new Map(hf);
  withExtras.set("bert.embeddings.position_ids", { shape: [1, 12], data: new Float32Array(12) });
  withExtras.set(
    "cls.predictions.decoder.weight",
    hf.get("bert.embeddings.word_embeddings.weight")!,
  );
  withExtras.set("cls.predictions.decoder.bias", hf.get("cls.predictions.bias")!);
  const ours = readTensors(bertTensorsFromHf(tensorSourceOf(withExtras), cfg, "test.safetensors"));
  deepStrictEqual(ours.size, expandTable(BERT_TABLE, 2).length);
  const qkv = ours.get("bert.encoder.layer.1.attention.self.qkv.weight")!;
  deepStrictEqual(qkv.shape, [24, 8]);
  const p = "bert.encoder.layer.1.attention.self.";
  deepStrictEqual(qkv.data.subarray(0, 64), hf.get(p + "query.weight")!.data);
  deepStrictEqual(qkv.data.subarray(64, 128), hf.get(p + "key.weight")!.data);
  deepStrictEqual(qkv.data.subarray(128), hf.get(p + "value.weight")!.data);
  deepStrictEqual(ours.get("bert.encoder.layer.0.attention.self.qkv.bias")!.shape, [24]);
  // a padded-vocabulary model: pad on the way in, cut on the way out
  const padded = new Map(ours);
  for (const n of Object.keys(bertPaddedRows(30))) padded.set(n, resizeRows(ours.get(n)!, 128));
  const back = new Map(bertTensorsToHf((n) => padded.get(n), cfg));
  deepStrictEqual(new Set(back.keys()), new Set(hf.keys()));
  for (const [n, t] of hf) deepStrictEqual(back.get(n), t, n);
  deepStrictEqual(bertConfigFromHf(bertConfigToHf(cfg)), cfg);
});

Deno.test("HF BERT configs of another architecture are refused naming the key", () => {
  deepStrictEqual(
    bertConfigFromHf({ ...hfConfig, position_embedding_type: "absolute" }).vocabSize,
    hfConfig.vocab_size,
  );
  throws(() => bertConfigFromHf({ ...hfConfig, position_embedding_type: "relative_key" }), {
    message: 'config.json: position_embedding_type "relative_key" is not supported ' +
      "(this BERT has absolute, learned position embeddings)",
  });
  throws(
    () => bertConfigFromHf({ ...hfConfig, is_decoder: true }),
    /"is_decoder" is true, which is not supported: this BERT is an encoder/,
  );
});

Deno.test("HF BERT import refuses an untied MLM decoder (weight or bias)", () => {
  const cfg = bertConfigFromHf(hfConfig);
  const hf = hfBert();
  const words = hf.get("bert.embeddings.word_embeddings.weight")!;
  const cases: [string, HostTensor, RegExp][] = [
    [
      "cls.predictions.decoder.weight",
      { shape: words.shape, data: words.data.map((v) => v + 1) },
      /decoder\.weight is not a copy of bert\.embeddings\.word_embeddings\.weight/,
    ],
    [
      "cls.predictions.decoder.bias",
      { shape: [30], data: new Float32Array(30).fill(7) },
      /decoder\.bias is not a copy of cls\.predictions\.bias/,
    ],
  ];
  for (const [name, t, pattern] of cases) {
    const files = new Map(hf);
    files.set(name, t);
    throws(
      () => bertTensorsFromHf(tensorSourceOf(files), cfg, "t.safetensors"),
      pattern,
    );
  }
});

Deno.test("HF BERT names: gamma/beta and bare BertModel prefixes are normalised", () => {
  const cfg = bertConfigFromHf(hfConfig);
  const hf = hfBert();
  const renamed = new Map<string, HostTensor>();
  for (const [n, t] of hf) {
    const m = n.replace(/LayerNorm\.weight$/, "LayerNorm.gamma").replace(
      /LayerNorm\.bias$/,
      "LayerNorm.beta",
    )
      .replace(/^bert\./, "");
    renamed.set(m, t);
  }
  const ours = bertTensorsFromHf(tensorSourceOf(renamed), cfg, "old.safetensors");
  deepStrictEqual(
    ours.get("bert.embeddings.LayerNorm.weight"),
    hf.get("bert.embeddings.LayerNorm.weight"),
  );
  hf.delete("bert.encoder.layer.0.attention.self.key.bias");
  throws(
    () => bertTensorsFromHf(tensorSourceOf(hf), cfg, "x.safetensors"),
    /x\.safetensors: missing tensor bert\.encoder\.layer\.0\.attention\.self\.key\.bias/,
  );
  throws(
    () => bertConfigFromHf({ ...hfConfig, hidden_act: "relu" }),
    /hidden_act "relu" is not supported/,
  );
});

Deno.test(
  "HF BERT loads into models/bert.ts (post-LN) and exports back bit-exact",
  gpuTest,
  async () => {
    const dev = await testDevice();
    const cfg = bertConfigFromHf(hfConfig);
    const bc: BertConfig = { ...cfg, postLayerNorm: true };
    const model = new Bert(TensorParallelLayers.single(dev), bc, { seed: 1 });
    const names = model.namedParams().map(([n]) => n);
    deepStrictEqual(
      new Set(names),
      new Set(expandTable(BERT_TABLE, cfg.numLayers).map((e) => e.ours)),
    );
    const hf = hfBert();
    const ours = bertTensorsFromHf(tensorSourceOf(hf), cfg, "bert.safetensors");
    assignBert(model.namedParams(), ours, cfg.vocabSize, {}, "bert.safetensors");
    const host = await paramsToHost(model.namedParams());
    deepStrictEqual(host.get("cls.predictions.bias")!.shape, [model.paddedVocab]);
    const back = new Map(bertTensorsToHf((n) => host.get(n), cfg));
    for (const [n, t] of hf) deepStrictEqual(back.get(n), t, n);
    model.dispose();
    // a pre-LN BERT has a final layer norm that HF BERT lacks
    const pre = new Bert(TensorParallelLayers.single(dev), { ...bc, postLayerNorm: false }, {
      seed: 1,
    });
    throws(
      () => assignBert(pre.namedParams(), ours, cfg.vocabSize, {}, "bert.safetensors"),
      /no HF tensor for bert\.encoder\.final_layernorm\.weight.*post-LN/,
    );
    pre.dispose();
  },
);
