/**
 * The assignment both Hugging Face families share (`assignHfTensors`): a full
 * tensor the model has no parameter for is refused by name, then a parameter
 * the file lacks, then a shape the model does not have (one order for both
 * families), and a refused assignment leaves every parameter as it was;
 * a good one writes the tensors (the vocabulary padded). From a source that
 * reads values when asked (an opened HF directory), every name and shape is
 * checked before any value is read, each tensor is read once, and a read that
 * fails writes nothing.
 */

import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import { Bert } from "../models/bert.ts";
import {
  CheckpointError,
  type HostTensor,
  paramsToHost,
  type TensorSource,
  tensorSourceOf,
} from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { assignBert, assignGpt2 } from "../models/hf/mod.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { gpuTest, testDevice } from "./helpers.ts";

const dev = await testDevice();
const gptConfig: GptConfig = {
  vocabSize: 37,
  numLayers: 1,
  hiddenSize: 8,
  numHeads: 2,
  maxPositions: 6,
};

/** Full tensors of `host` (vocabulary rows cut to `vocabRows` for `vocabNames`), each value + 1. */
function shifted(
  host: Map<string, HostTensor>,
  vocabNames: string[],
  vocabRows: number,
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [n, t] of host) {
    const rows = vocabNames.includes(n) ? vocabRows : t.shape[0];
    const per = t.data.length / t.shape[0];
    out.set(n, {
      shape: [rows, ...t.shape.slice(1)],
      data: t.data.slice(0, rows * per).map((v) => v + 1),
    });
  }
  return out;
}

Deno.test(
  "GPT-2: an unknown or misshapen tensor is refused and nothing is written",
  gpuTest,
  async () => {
    const m = Gpt.serial(dev, gptConfig, 1);
    const before = await paramsToHost(m.namedParams());
    const good = shifted(before, ["wte.weight"], gptConfig.vocabSize);
    const extra = new Map([...good, ["h.1.ln_1.weight", good.get("h.0.ln_1.weight")!]]);
    throws(
      () => assignGpt2(m.namedParams(), extra, gptConfig, {}, "w.safetensors"),
      /w\.safetensors: the model has no parameter h\.1\.ln_1\.weight$/,
    );
    // One order of checks for both families: unknown, then missing, then shapes.
    const short = new Map(good);
    short.delete("ln_f.weight");
    throws(
      () => assignGpt2(m.namedParams(), short, gptConfig, {}, "w.safetensors"),
      /w\.safetensors: no HF tensor for ln_f\.weight$/,
    );
    const both = new Map([...short, ["h.1.ln_1.weight", good.get("h.0.ln_1.weight")!]]);
    throws(
      () => assignGpt2(m.namedParams(), both, gptConfig, {}, "w.safetensors"),
      /the model has no parameter h\.1\.ln_1\.weight$/,
    );
    const wrong = new Map(good);
    wrong.set("ln_f.bias", { shape: [9], data: new Float32Array(9) });
    const wrongAndShort = new Map(wrong);
    wrongAndShort.delete("ln_f.weight");
    throws(
      () => assignGpt2(m.namedParams(), wrongAndShort, gptConfig, {}, "w.safetensors"),
      /no HF tensor for ln_f\.weight$/,
    );
    throws(
      () => assignGpt2(m.namedParams(), wrong, gptConfig, {}, "w.safetensors"),
      /w\.safetensors: ln_f\.bias is \[9\] in the file, but the model has \[8\]/,
    );
    deepStrictEqual(await paramsToHost(m.namedParams()), before);
    assignGpt2(m.namedParams(), good, gptConfig, {}, "w.safetensors");
    const after = await paramsToHost(m.namedParams());
    deepStrictEqual(after.get("ln_f.bias"), good.get("ln_f.bias"));
    const wte = after.get("wte.weight")!;
    deepStrictEqual(wte.shape, before.get("wte.weight")!.shape);
    deepStrictEqual(wte.data.slice(0, 37 * 8), good.get("wte.weight")!.data);
    m.dispose();
  },
);

Deno.test("BERT: an unknown tensor is refused and nothing is written", gpuTest, async () => {
  const V = 30;
  const m = new Bert(TensorParallelLayers.single(dev), {
    vocabSize: V,
    numLayers: 1,
    hiddenSize: 8,
    numHeads: 2,
    maxPositions: 6,
    postLayerNorm: true,
  }, { seed: 1 });
  const before = await paramsToHost(m.namedParams());
  const vocab = ["bert.embeddings.word_embeddings.weight", "cls.predictions.bias"];
  const good = shifted(before, vocab, V);
  const extra = new Map([...good, ["cls.extra.bias", good.get("cls.predictions.bias")!]]);
  throws(
    () => assignBert(m.namedParams(), extra, V, {}, "b.safetensors"),
    /b\.safetensors: the model has no parameter cls\.extra\.bias$/,
  );
  deepStrictEqual(await paramsToHost(m.namedParams()), before);
  assignBert(m.namedParams(), good, V, {}, "b.safetensors");
  const after = await paramsToHost(m.namedParams());
  deepStrictEqual(after.get("cls.seq_relationship.bias"), good.get("cls.seq_relationship.bias"));
  deepStrictEqual(
    after.get("cls.predictions.bias")!.data.slice(0, V),
    good.get("cls.predictions.bias")!.data,
  );
  m.dispose();
});

/** `tensors` as a source that counts each tensor's reads, and fails reading `failing`. */
function countingSource(tensors: Map<string, HostTensor>, failing?: string) {
  const reads = new Map<string, number>();
  const held = tensorSourceOf(tensors);
  const source: TensorSource = {
    ...held,
    get(name) {
      reads.set(name, (reads.get(name) ?? 0) + 1);
      if (name === failing) throw new CheckpointError(`w.safetensors: "${name}" unreadable`);
      return held.get(name);
    },
  };
  return { source, reads };
}

Deno.test(
  "GPT-2 from a source read when asked: shapes before values, each tensor once, nothing written on a failed read",
  gpuTest,
  async () => {
    const m = Gpt.serial(dev, gptConfig, 1);
    const before = await paramsToHost(m.namedParams());
    const good = shifted(before, ["wte.weight"], gptConfig.vocabSize);
    const wrong = new Map(good);
    wrong.set("ln_f.bias", { shape: [9], data: new Float32Array(9) });
    const misshapen = countingSource(wrong);
    throws(
      () => assignGpt2(m.namedParams(), misshapen.source, gptConfig, {}, "w.safetensors"),
      /ln_f\.bias is \[9\] in the file, but the model has \[8\]/,
    );
    strictEqual(misshapen.reads.size, 0, "a shape was refused after values were read");
    const failing = countingSource(good, "ln_f.weight");
    throws(
      () => assignGpt2(m.namedParams(), failing.source, gptConfig, {}, "w.safetensors"),
      /"ln_f\.weight" unreadable/,
    );
    deepStrictEqual(await paramsToHost(m.namedParams()), before);
    const counted = countingSource(good);
    assignGpt2(m.namedParams(), counted.source, gptConfig, {}, "w.safetensors");
    deepStrictEqual(new Set(counted.reads.keys()), new Set(good.keys()));
    for (const [n, k] of counted.reads) strictEqual(k, 1, `${n} read ${k} times`);
    deepStrictEqual((await paramsToHost(m.namedParams())).get("ln_f.bias"), good.get("ln_f.bias"));
    m.dispose();
  },
);
