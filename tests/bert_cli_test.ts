/**
 * BERT from the command line, end to end (subprocesses) on a tiny random BERT written
 * in Hugging Face's layout with its own WordPiece vocab.txt:
 * - `deno task eval --model bert`: masked-LM loss and accuracy and sentence-order loss
 *   and accuracy equal a float64 TypeScript BERT (tests/bert_reference.ts) on the same
 *   fixed batches (losses to 1e-4 relative, accuracies exactly), and the library's own
 *   training loss on those batches; `--load` of the same weights gives the same numbers
 *   bit for bit, `--tp 2` to 1e-5;
 * - `deno task fill-mask`: the top filler is the reference's argmax, probabilities match
 *   the reference softmax (1e-4), are sorted and sum to at most 1; bad input is refused
 *   in one line;
 * - `deno task train --model bert --init-from-hf`: takes steps with finite losses, and
 *   what it saves evaluates, fills masks and exports (vocab.txt included).
 */

import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { join } from "node:path";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import {
  type BertBatch,
  bertEvalBatches,
  MLM_IGNORE_INDEX,
  prepareBertCorpus,
} from "../data/bert_batches.ts";
import {
  readWordPieceTokenizer,
  WordPieceTokenizer,
  writeWordPieceTokenizer,
} from "../data/wordpiece_tokenizer.ts";
import { Bert } from "../models/bert.ts";
import { readTensors, saveCheckpoint, tensorSourceOf } from "../models/checkpoint/mod.ts";
import {
  assignBert,
  bertConfigFromHf,
  bertPaddedRows,
  bertTensorsFromHf,
  writeHfDir,
} from "../models/hf/mod.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { bertEncode64, type BertRefConfig, linear64, weight } from "./bert_reference.ts";
import {
  TINY_HF_CONFIG,
  TINY_VOCAB,
  tinyCorpus,
  tinyHfTensors,
  writeTinyHfBert,
} from "./bert_fixture.ts";
import { fillNth } from "../cli/fill_mask.ts";
import { type CliResult, runCli } from "./cli_helpers.ts";
import { assertClose, gpuTest, testDevice } from "./helpers.ts";
import { geluErf, layerNormRef } from "./reference.ts";

const root = await Deno.makeTempDir({ prefix: "bert-cli-" });
const hfDir = join(root, "hf");
await writeTinyHfBert(hfDir);
const dataPath = join(root, "corpus.txt");
const text = tinyCorpus();
await Deno.writeTextFile(dataPath, text);
const tok = new WordPieceTokenizer(TINY_VOCAB);
const hfConfig = bertConfigFromHf(TINY_HF_CONFIG);
const V = hfConfig.vocabSize;
const hfTensors = new Map(tinyHfTensors());
const ours = readTensors(bertTensorsFromHf(tensorSourceOf(hfTensors), hfConfig, "fixture"));
const w = new Map([...ours].map(([n, t]) => [n, t.data]));
const refCfg: BertRefConfig = { ...hfConfig, paddedVocab: V };
const T = 16, MB = 4, SEED = 7;

/** Under `--json`, stdout is the JSON object alone (the report goes to stderr). */
function lastJson(r: CliResult) {
  strictEqual(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  strictEqual(lines.length, 1, `--json printed more than the object on stdout:\n${r.stdout}`);
  return JSON.parse(lines[0]);
}

/** The reference's MLM logits `[M, V]` at the masked positions and SOP logits `[B, 2]`. */
function refHeads(b: BertBatch) {
  const { batchSize: B, seqLength: S } = b;
  const h = refCfg.hiddenSize;
  const hidden = bertEncode64(w, refCfg, {
    B,
    T: S,
    ids: b.inputIds,
    tokenTypes: b.tokenTypes,
    keep: b.paddingMask,
    mlmTargets: b.mlmTargets,
    sopLabels: b.sopLabels,
  });
  const positions = [...b.mlmTargets.keys()].filter((i) => b.mlmTargets[i] >= 0);
  const M = positions.length;
  const rows = new Float64Array(M * h);
  positions.forEach((n, r) => rows.set(hidden.subarray(n * h, (n + 1) * h), r * h));
  const t = layerNormRef(
    linear64(
      rows,
      M,
      h,
      weight(w, "cls.predictions.transform.dense.weight"),
      weight(w, "cls.predictions.transform.dense.bias"),
      h,
    ).map(geluErf),
    weight(w, "cls.predictions.transform.LayerNorm.weight"),
    weight(w, "cls.predictions.transform.LayerNorm.bias"),
    h,
    1e-12,
  );
  const mlm = linear64(
    t,
    M,
    h,
    weight(w, "bert.embeddings.word_embeddings.weight"),
    weight(w, "cls.predictions.bias"),
    V,
  );
  const cls = new Float64Array(B * h);
  for (let r = 0; r < B; r++) cls.set(hidden.subarray(r * S * h, (r * S + 1) * h), r * h);
  const pooled = linear64(
    cls,
    B,
    h,
    weight(w, "bert.pooler.dense.weight"),
    weight(w, "bert.pooler.dense.bias"),
    h,
  ).map(Math.tanh);
  const sop = linear64(
    pooled,
    B,
    h,
    weight(w, "cls.seq_relationship.weight"),
    weight(w, "cls.seq_relationship.bias"),
    2,
  );
  return { mlm, sop, targets: positions.map((n) => b.mlmTargets[n]) };
}

/** Index of the largest value of `row`, and its margin over the runner-up. */
function argmax(row: ArrayLike<number>): { best: number; margin: number } {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  let second = -Infinity;
  for (let i = 0; i < row.length; i++) if (i !== best) second = Math.max(second, row[i]);
  return { best, margin: row[best] - second };
}

function logSumExp(row: ArrayLike<number>): number {
  const m = Math.max(...Array.from(row));
  return m + Math.log(Array.from(row).reduce((s, x) => s + Math.exp(x - m), 0));
}

Deno.test("BERT eval batches: a fixed pass over every document, set by the seed", () => {
  const corpus = prepareBertCorpus(text, tok);
  const all = (
    seed: number,
  ) => [...bertEvalBatches(corpus, tok, { batchSize: MB, seqLength: T, seed })];
  const a = all(SEED);
  deepStrictEqual(all(SEED), a);
  const other = all(SEED + 1);
  ok(
    other.some((b, i) => b.mlmTargets.some((t, j) => t !== a[i].mlmTargets[j])),
    "another seed masks differently",
  );
  // Every document is cut, in order, into spans of ≥ 2 sentences: as many pairs as the
  // greedy walk gives, and every row is [CLS] A [SEP] B [SEP] within T.
  let pairs = 0;
  for (const doc of corpus.documents) {
    for (let k = 0; k + 1 < doc.length;) {
      let end = k + 2, len = doc[k].length + doc[k + 1].length;
      while (end < doc.length && len + doc[end].length <= T - 3) len += doc[end++].length;
      pairs++;
      k = end;
    }
  }
  deepStrictEqual(a.reduce((n, b) => n + b.batchSize, 0), pairs);
  ok(a.slice(0, -1).every((b) => b.batchSize === MB) && a[a.length - 1].batchSize <= MB);
  for (const b of a) {
    for (let r = 0; r < b.batchSize; r++) {
      const ids = b.inputIds.subarray(r * T, (r + 1) * T);
      const n = b.paddingMask.subarray(r * T, (r + 1) * T).reduce((s, x) => s + x, 0);
      deepStrictEqual([ids[0], ids[n - 1]], [tok.special.cls, tok.special.sep]);
      const masked = b.mlmTargets.subarray(r * T, (r + 1) * T).filter((t) =>
        t !== MLM_IGNORE_INDEX
      );
      ok(masked.length >= 1 && masked.every((t) => !tok.isSpecial(t)));
    }
  }
  // The same rows at every batch size (before, a batch's masks were drawn after all its pairs,
  // so the micro-batch size changed what eval measured).
  const rows = (B: number) => {
    const fields = { ids: [] as number[], types: [] as number[], targets: [] as number[], sop: [] };
    for (const b of bertEvalBatches(corpus, tok, { batchSize: B, seqLength: T, seed: SEED })) {
      fields.ids.push(...b.inputIds);
      fields.types.push(...b.tokenTypes);
      fields.targets.push(...b.mlmTargets);
      (fields.sop as number[]).push(...b.sopLabels);
    }
    return fields;
  };
  const one = rows(1);
  for (const B of [2, 3, MB, pairs + 1]) deepStrictEqual(rows(B), one, `batch size ${B}`);
});

Deno.test("WordPiece from a model directory: vocab.txt, tokenizer.json, casing", async () => {
  const dir = join(root, "tok");
  await Deno.mkdir(dir, { recursive: true });
  strictEqual(await readWordPieceTokenizer(dir), null);
  const cased = [...TINY_VOCAB, "The"];
  await Deno.writeTextFile(
    join(dir, "tokenizer.json"),
    JSON.stringify({
      normalizer: { type: "BertNormalizer", lowercase: false },
      model: { type: "WordPiece", vocab: Object.fromEntries(cased.map((t, i) => [t, i])) },
    }),
  );
  const a = (await readWordPieceTokenizer(dir))!;
  deepStrictEqual([a.lowercase, a.vocabSize], [false, cased.length]);
  deepStrictEqual(a.tokenize("The cats"), ["The", "cat", "##s"]);
  await writeWordPieceTokenizer(dir, new WordPieceTokenizer(cased)); // vocab.txt wins, uncased
  const b = (await readWordPieceTokenizer(dir))!;
  deepStrictEqual([b.lowercase, b.tokens], [true, cased]);
  deepStrictEqual(b.tokenize("The cats"), ["the", "cat", "##s"]);
});

Deno.test(
  "eval --model bert: MLM and SOP loss and accuracy equal the reference; --load and --tp 2 agree",
  gpuTest,
  async () => {
    const dev = await testDevice();
    const common = [
      "--data-path",
      dataPath,
      "--seq-length",
      String(T),
      "--micro-batch-size",
      String(MB),
      "--mask-seed",
      String(SEED),
      "--json",
    ];
    const a = await runCli("cli/eval.ts", ["--model", "bert", "--init-from-hf", hfDir, ...common]);
    const ja = lastJson(a);
    match(a.stderr, /eval: \d+ sequences, \d+ masked tokens \| mlm loss/);

    // The float64 reference, and the library's training loss, on the same batches.
    const model = new Bert(TensorParallelLayers.single(dev), hfConfig, { seed: 0 });
    assignBert(model.namedParams(), ours, V, {}, "fixture");
    model.train(false);
    let mlmSum = 0, mlmRight = 0, masked = 0, sopSum = 0, sopRight = 0, seqs = 0;
    let libMlm = 0, libSop = 0, minMargin = Infinity;
    let first: { masked: number; seqs: number; mlm: number; sop: number } | undefined;
    const corpus = prepareBertCorpus(text, tok);
    for (const b of bertEvalBatches(corpus, tok, { batchSize: MB, seqLength: T, seed: SEED })) {
      const r = refHeads(b);
      r.targets.forEach((t, i) => {
        const row = r.mlm.subarray(i * V, (i + 1) * V);
        mlmSum += logSumExp(row) - row[t];
        const { best, margin } = argmax(row);
        if (best === t) mlmRight++;
        minMargin = Math.min(minMargin, margin);
      });
      for (let i = 0; i < b.batchSize; i++) {
        const row = r.sop.subarray(2 * i, 2 * i + 2);
        sopSum += logSumExp(row) - row[b.sopLabels[i]];
        if (argmax(row).best === b.sopLabels[i]) sopRight++;
        minMargin = Math.min(minMargin, argmax(row).margin);
      }
      masked += r.targets.length;
      seqs += b.batchSize;
      const B = b.batchSize;
      const l = await dev.noGrad(() =>
        tidy(dev, async () => {
          const ls = await model.losses({
            ids: TokenIds.fromHost(dev, b.inputIds, [B, T]),
            tokenTypes: TokenIds.fromHost(dev, b.tokenTypes, [B, T]),
            keep: Tensor.fromArray(dev, Float32Array.from(b.paddingMask), [B, T]),
            mlmTargets: TokenIds.fromHost(dev, b.mlmTargets, [B, T]),
            sopLabels: TokenIds.fromHost(dev, b.sopLabels, [B]),
          });
          return [await ls.mlm.item(), await ls.sop.item()];
        })
      );
      libMlm += l[0] * r.targets.length;
      libSop += l[1] * B;
      first ??= { masked, seqs, mlm: mlmSum / masked, sop: sopSum / seqs };
    }
    ok(minMargin > 1e-3, `reference argmax margins ${minMargin} too small for an exact check`);
    deepStrictEqual([ja.masked_tokens, ja.sequences, ja.seq_length, ja.mask_seed], [
      masked,
      seqs,
      T,
      SEED,
    ]);
    assertClose([ja.mlm_loss, ja.sop_loss], [mlmSum / masked, sopSum / seqs], {
      rtol: 1e-4,
      what: "eval vs float64 reference",
    });
    deepStrictEqual([ja.mlm_accuracy, ja.sop_accuracy], [mlmRight / masked, sopRight / seqs]);
    assertClose([ja.mlm_loss, ja.sop_loss], [libMlm / masked, libSop / seqs], {
      rtol: 1e-5,
      what: "eval vs Bert.losses",
    });
    assertClose([ja.loss], [ja.mlm_loss + ja.sop_loss], { rtol: 1e-12 });
    console.log(
      `eval: mlm ${ja.mlm_loss} (reference ${mlmSum / masked}), accuracy ${ja.mlm_accuracy}; ` +
        `sop ${ja.sop_loss} (reference ${sopSum / seqs}), accuracy ${ja.sop_accuracy}; ` +
        `${masked} masked tokens, ${seqs} sequences`,
    );

    // --eval-iters 1: the first batch alone.
    const one = lastJson(
      await runCli("cli/eval.ts", ["--init-from-hf", hfDir, ...common, "--eval-iters", "1"]),
    );
    ok(first && seqs > first.seqs, "the data has more than one batch");
    deepStrictEqual([one.masked_tokens, one.sequences], [first.masked, first.seqs]);
    assertClose([one.mlm_loss, one.sop_loss], [first.mlm, first.sop], {
      rtol: 1e-4,
      what: "eval --eval-iters 1 vs the first batch's float64 reference",
    });

    // The same weights as a checkpoint (model family found in it), and at TP=2.
    const saveBert = (dir: string, m: Bert) =>
      saveCheckpoint(dir, {
        iteration: 0,
        params: m.namedParams(),
        model: { arch: "bert", config: m.config },
        paddedRows: bertPaddedRows(V),
      });
    const ck = join(root, "ck-same");
    await saveBert(ck, model);
    await writeWordPieceTokenizer(ck, tok);
    model.dispose();
    deepStrictEqual(lastJson(await runCli("cli/eval.ts", ["--load", ck, ...common])), ja);
    const tp2Run = await runCli("cli/eval.ts", ["--load", ck, "--tp", "2", ...common]);
    const tp2 = lastJson(tp2Run);
    match(tp2Run.stderr, /\| tensor parallel 2\n/);
    assertClose([tp2.mlm_loss, tp2.sop_loss], [ja.mlm_loss, ja.sop_loss], {
      rtol: 1e-5,
      what: "eval at TP=2",
    });
    deepStrictEqual([tp2.mlm_accuracy, tp2.sop_accuracy], [ja.mlm_accuracy, ja.sop_accuracy]);

    // Another mask seed, other masks; bad input is refused in one line.
    const s2 = lastJson(
      await runCli("cli/eval.ts", ["--init-from-hf", hfDir, ...common, "--mask-seed", "8"]),
    );
    ok(s2.mlm_loss !== ja.mlm_loss);
    const bin = await runCli("cli/eval.ts", [
      "--init-from-hf",
      hfDir,
      "--data-path",
      join(root, "x.bin"),
    ]);
    strictEqual(bin.code, 2);
    match(bin.stderr, /BERT evaluation reads text/);
    const gpt = await runCli("cli/eval.ts", ["--model", "gpt", "--load", ck, ...common]);
    strictEqual(gpt.code, 1);
    match(gpt.stderr, /holds a bert, not a GPT/);

    // A checkpoint of a BERT with one token type is refused from its saved config,
    // before its tokenizer (it has none) or its weights are read.
    const oneType = new Bert(TensorParallelLayers.single(dev), {
      ...model.config,
      typeVocabSize: 1,
    }, { seed: 1 });
    const ck1 = join(root, "ck-one-type");
    await saveBert(ck1, oneType);
    oneType.dispose();
    const types = await runCli("cli/eval.ts", ["--load", ck1, ...common]);
    strictEqual(types.code, 1);
    match(
      types.stderr,
      /ck-one-type\/iter_0000000 \(iteration 0, saved at tp 1\): type_vocab_size 1/,
    );
  },
);

Deno.test("fill-mask: a filler reads as the tokenizer split the text", () => {
  strictEqual(fillNth("the [MASK] sat.", 0, "cat"), "the cat sat.");
  // A mask touching letters was its own word to the tokenizer: the filler is set apart.
  strictEqual(fillNth("the[MASK]cat", 0, "over"), "the over cat");
  strictEqual(fillNth("(über[MASK]9)", 0, "x"), "(über x 9)");
  strictEqual(fillNth("[MASK]'s [MASK].", 1, "dog"), "[MASK]'s dog.");
  // A ## piece joins the word before, a space or not.
  strictEqual(fillNth("play [MASK] now", 0, "##ing"), "playing now");
  strictEqual(fillNth("play[MASK]", 0, "##ed"), "played");
});

Deno.test("fill-mask: top-k fillers and probabilities equal the reference", gpuTest, async () => {
  const textIn = "The [MASK] sat on the [MASK].";
  const r = await runCli("cli/fill_mask.ts", [
    "--init-from-hf",
    hfDir,
    "--text",
    textIn,
    "--top-k",
    "4",
    "--json",
  ]);
  const j = lastJson(r);
  match(r.stderr, /\[MASK\] 1 of 2:\n {2}0\.\d{4} {2}\S+/);
  const ids = [tok.special.cls, ...tok.encode("the"), tok.special.mask];
  ids.push(...tok.encode("sat on the"), tok.special.mask, ...tok.encode("."), tok.special.sep);
  const n = ids.length;
  const targets = ids.map((id) => id === tok.special.mask ? 0 : MLM_IGNORE_INDEX);
  const ref = refHeads({
    inputIds: Int32Array.from(ids),
    tokenTypes: new Int32Array(n),
    paddingMask: new Int32Array(n).fill(1),
    mlmTargets: Int32Array.from(targets),
    sopLabels: new Int32Array(1),
    batchSize: 1,
    seqLength: n,
  });
  deepStrictEqual(j.masks.map((m: { position: number }) => m.position), [2, 6]);
  j.masks.forEach(
    (m: { predictions: { id: number; token: string; prob: number }[] }, i: number) => {
      const row = ref.mlm.subarray(i * V, (i + 1) * V);
      const lse = logSumExp(row);
      const { best, margin } = argmax(row);
      ok(margin > 1e-3, `reference margin ${margin}`);
      strictEqual(m.predictions.length, 4);
      strictEqual(m.predictions[0].id, best);
      strictEqual(m.predictions[0].token, TINY_VOCAB[best]);
      assertClose(
        m.predictions.map((p) => p.prob),
        m.predictions.map((p) => Math.exp(row[p.id] - lse)),
        { rtol: 1e-4, what: `probabilities of mask ${i}` },
      );
      const probs = m.predictions.map((p) => p.prob);
      ok(probs.every((p, k) => k === 0 || p <= probs[k - 1]), "sorted");
      ok(probs.reduce((s, p) => s + p, 0) <= 1 + 1e-9, "sum ≤ 1");
    },
  );
  const first = j.masks[0].predictions[0];
  if (!first.token.startsWith("##") && !first.token.startsWith("[")) {
    strictEqual(first.sequence, `The ${first.token} sat on the [MASK].`);
  }
  console.log(r.stderr.trim());

  // One-line errors: no [MASK], an unknown bracketed token, a word outside the vocabulary,
  // a missing directory.
  const cases: [string[], number, RegExp][] = [
    [["--text", "the cat sat"], 2, /has no \[MASK\] token/],
    [["--text", "the [MSK] sat [MASK]"], 2, /unknown token \[MSK\]/],
    [["--text", "the zebra [MASK]"], 2, /"zebra" in --text is not in the vocabulary/],
  ];
  for (const [args, code, msg] of cases) {
    const e = await runCli("cli/fill_mask.ts", ["--init-from-hf", hfDir, ...args]);
    strictEqual(e.code, code, e.stderr);
    match(e.stderr, msg);
  }
  const missing = await runCli("cli/fill_mask.ts", [
    "--init-from-hf",
    join(root, "none"),
    "--text",
    "a [MASK]",
  ]);
  strictEqual(missing.code, 1);
  match(missing.stderr, /none\/config\.json: no such file/);
  // A config without model_type (as converted from Google's BERT) is a BERT by its fields:
  // eval read it as a GPT-2 and asked for "n_embd".
  const untyped = join(root, "hf-untyped");
  await Deno.mkdir(untyped);
  for await (const e of Deno.readDir(hfDir)) {
    await Deno.copyFile(join(hfDir, e.name), join(untyped, e.name));
  }
  const { model_type: _, ...config } = JSON.parse(
    await Deno.readTextFile(join(hfDir, "config.json")),
  );
  await Deno.writeTextFile(join(untyped, "config.json"), JSON.stringify(config));
  const ev = await runCli("cli/eval.ts", [
    "--init-from-hf",
    untyped,
    "--data-path",
    dataPath,
    "--json",
  ]);
  strictEqual(ev.code, 0, ev.stderr);
  ok(Number.isFinite(lastJson(ev).mlm_loss), ev.stdout);
});

Deno.test(
  "a BertForMaskedLM directory (no pooler, no sentence-order head): fill-mask and eval's MLM as the full model's, train starts",
  gpuTest,
  async () => {
    const headless = join(root, "hf-masked-lm");
    const pretrainingOnly = /^(bert\.pooler\.|cls\.seq_relationship\.)/;
    await writeHfDir(
      headless,
      { ...TINY_HF_CONFIG, architectures: ["BertForMaskedLM"] },
      tinyHfTensors().filter(([n]) => !pretrainingOnly.test(n)),
    );
    await Deno.copyFile(join(hfDir, "vocab.txt"), join(headless, "vocab.txt"));
    const fill = (dir: string) =>
      runCli("cli/fill_mask.ts", ["--init-from-hf", dir, "--text", "the [MASK] sat.", "--json"]);
    deepStrictEqual(lastJson(await fill(headless)), lastJson(await fill(hfDir)));
    const evalOf = (dir: string) =>
      runCli("cli/eval.ts", [
        ...["--init-from-hf", dir, "--data-path", dataPath, "--seq-length", String(T)],
        ...["--mask-seed", String(SEED), "--json"],
      ]);
    const full = await evalOf(hfDir), part = await evalOf(headless);
    const [jf, jp] = [lastJson(full), lastJson(part)];
    strictEqual(jp.mlm_loss, jf.mlm_loss);
    strictEqual(jp.mlm_accuracy, jf.mlm_accuracy);
    strictEqual(jp.sop_loss, null);
    strictEqual(jp.loss, jp.mlm_loss);
    match(
      part.stderr,
      /warning: .*hf-masked-lm has no pooler or sentence-order head .*only the masked-LM loss is reported/,
    );
    match(part.stderr, /no sentence-order head \|/);
    ok(!/sentence-order head/.test(full.stderr), full.stderr);
    const train = await runCli("cli/train.ts", [
      ...["--model", "bert", "--init-from-hf", headless, "--data-path", dataPath],
      ...["--seq-length", String(T), "--micro-batch-size", "2", "--train-iters", "1"],
      ...["--eval-iters", "0"],
    ]);
    strictEqual(train.code, 0, train.stderr);
    match(
      train.stdout,
      /warning: .* they start from a fresh initialization; the sentence-order loss/,
    );
    // Some of those tensors but not all: a damaged file, refused by name.
    const partial = join(root, "hf-partial");
    await writeHfDir(
      partial,
      TINY_HF_CONFIG,
      tinyHfTensors().filter(([n]) => !n.startsWith("bert.pooler.")),
    );
    await Deno.copyFile(join(hfDir, "vocab.txt"), join(partial, "vocab.txt"));
    const refused = await fill(partial);
    strictEqual(refused.code, 1, refused.stderr);
    match(refused.stderr, /missing tensors bert\.pooler\.dense\.weight, bert\.pooler\.dense\.bias/);
  },
);

Deno.test(
  "train --model bert --init-from-hf: finite losses; the checkpoint evaluates, fills and exports",
  gpuTest,
  async () => {
    const ck = join(root, "ck-trained");
    const r = await runCli("cli/train.ts", [
      "--model",
      "bert",
      "--init-from-hf",
      hfDir,
      "--data-path",
      dataPath,
      "--seq-length",
      String(T),
      "--micro-batch-size",
      "2",
      "--train-iters",
      "3",
      "--lr",
      "1e-3",
      "--lr-warmup-iters",
      "0",
      "--log-interval",
      "1",
      "--eval-iters",
      "1",
      "--save",
      ck,
    ]);
    strictEqual(r.code, 0, r.stderr);
    match(r.stdout, /model: BERT \(post-LN\) 2 layers, hidden 16, 4 heads/);
    match(r.stdout, /initialized from .*\(Hugging Face BERT, WordPiece from /);
    // Megatron's BERT fields: the two parts of the loss.
    const losses = [
      ...r.stdout.matchAll(/ iteration +\d+\/ *3 \|.* lm loss: (\S+) \| sop loss: (\S+) \|/g),
    ].map((m) => Number(m[1]) + Number(m[2]));
    strictEqual(losses.length, 3, r.stdout);
    ok(losses.every(Number.isFinite), `losses ${losses}`);
    deepStrictEqual((await readWordPieceTokenizer(ck))!.tokens, TINY_VOCAB);
    const e = lastJson(
      await runCli("cli/eval.ts", [
        "--load",
        ck,
        "--data-path",
        dataPath,
        "--seq-length",
        String(T),
        "--json",
      ]),
    );
    ok(Number.isFinite(e.mlm_loss) && Number.isFinite(e.sop_loss), JSON.stringify(e));
    // --use-checkpoint-args: the training run's --seq-length, not the position table's 24
    const evalAt = async (extra: string[]) =>
      lastJson(
        await runCli("cli/eval.ts", ["--load", ck, "--data-path", dataPath, "--json", ...extra]),
      );
    const saved = await evalAt(["--use-checkpoint-args"]);
    deepStrictEqual([saved.seq_length, saved.mlm_loss, saved.sop_loss], [
      T,
      e.mlm_loss,
      e.sop_loss,
    ]);
    strictEqual((await evalAt([])).seq_length, 24);
    const f = lastJson(
      await runCli("cli/fill_mask.ts", ["--load", ck, "--text", "a [MASK] ran", "--json"]),
    );
    strictEqual(f.masks[0].predictions.length, 5);
    const out = join(root, "exported");
    const x = await runCli("cli/export_hf.ts", ["--load", ck, "--output", out]);
    strictEqual(x.code, 0, x.stderr);
    deepStrictEqual((await readWordPieceTokenizer(out))!.tokens, TINY_VOCAB);
    // The checkpoint's vocab.txt cut short: refused (fill-mask ranked only the ids it kept).
    const vocabPath = join(ck, "vocab.txt");
    const vocab = await Deno.readTextFile(vocabPath);
    await Deno.writeTextFile(vocabPath, vocab.split("\n").slice(0, 20).join("\n") + "\n");
    const cut = await runCli("cli/fill_mask.ts", ["--load", ck, "--text", "a [MASK] ran"]);
    strictEqual(cut.code, 1, cut.stderr);
    match(
      cut.stderr,
      /its vocabulary has 20 tokens, the model it was saved with \d+: the file was cut/,
    );
    await Deno.writeTextFile(vocabPath, vocab);
    console.log(`train from HF BERT: losses ${losses.join(", ")}; eval ${JSON.stringify(e)}`);
  },
);

Deno.test({
  name: "clean up",
  fn: async () => await Deno.remove(root, { recursive: true }),
});
