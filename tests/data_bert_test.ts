import assert from "node:assert/strict";
import {
  BertBatchSampler,
  type BertCorpus,
  type BertVocab,
  maskTokens,
  MLM_IGNORE_INDEX,
  prepareBertCorpus,
} from "../data/bert_batches.ts";
import { DataRng } from "../data/rng.ts";
import { splitDocuments, splitParagraphSentences } from "../data/sentences.ts";
import { createBertTokenizer } from "../data/wordpiece_tokenizer.ts";
import { loadText } from "../data/corpus.ts";
import { tempDir } from "./temp_dir.ts";

/** A synthetic vocabulary: specials 0..4, ordinary ids from 10. */
const VOCAB: BertVocab = {
  vocabSize: 5000,
  special: { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 },
  isSpecial: (id) => id < 10,
  ordinaryIds: Int32Array.from({ length: 4990 }, (_, i) => 10 + i),
  encode: () => [],
};

/** Documents whose ids count up through each document, so corpus order is visible in the ids. */
function countingCorpus(): BertCorpus {
  const rng = new DataRng(99);
  let next = 10;
  const documents: Int32Array[][] = [];
  for (let d = 0; d < 20; d++) {
    const doc: Int32Array[] = [];
    for (let s = 0; s < 2 + rng.nextInt(10); s++) {
      const len = 1 + rng.nextInt(40);
      doc.push(Int32Array.from({ length: len }, () => next++));
    }
    documents.push(doc);
  }
  return { documents };
}

/** The unmasked ids of one row. */
function original(inputs: Int32Array, targets: Int32Array): number[] {
  return Array.from(inputs, (id, i) => (targets[i] === MLM_IGNORE_INDEX ? id : targets[i]));
}

Deno.test("sentence splitting", () => {
  assert.deepEqual(
    splitParagraphSentences(
      'Call me Ishmael. Mr. Starbuck said "Aye!" And then? 3 boats went. Nothing\nmore',
    ),
    ["Call me Ishmael.", 'Mr. Starbuck said "Aye!"', "And then?", "3 boats went.", "Nothing more"],
  );
  assert.deepEqual(splitDocuments("A one. A two.\n\nA three.\n\n\n\nB one. B two."), [
    ["A one.", "A two.", "A three."],
    ["B one.", "B two."],
  ]);
});

Deno.test("sentence splitting: lowercase text, and Chinese and Japanese sentence ends", () => {
  // Text without capitals splits before any letter; text with capitals only before capitals.
  assert.deepEqual(splitParagraphSentences("the cat sat. the dog ran. e.g. this one."), [
    "the cat sat.",
    "the dog ran.",
    "e.g. this one.",
  ]);
  assert.deepEqual(splitParagraphSentences('"Is it?" said he. Version 2.0 is out.'), [
    '"Is it?" said he.',
    "Version 2.0 is out.",
  ]);
  assert.deepEqual(splitParagraphSentences("我们去海边。它们非常大！你见过吗？"), [
    "我们去海边。",
    "它们非常大！",
    "你见过吗？",
  ]);
  assert.deepEqual(splitParagraphSentences("「行こう」と彼は言った。「はい。」"), [
    "「行こう」と彼は言った。",
    "「はい。」",
  ]);
});

Deno.test("a folder's files and a .jsonl file's lines stay separate documents", async () => {
  await using temp = await tempDir({ prefix: "bert_docs_" });
  const dir = temp.path;
  const lines: string[] = [];
  for (let i = 0; i < 5; i++) {
    // No trailing newline: the files' ends are the only document breaks.
    const text = `Doc ${i} starts here. Doc ${i} goes on. Doc ${i} ends.`;
    await Deno.writeTextFile(`${dir}/f${i}.txt`, text);
    lines.push(JSON.stringify({ text }));
  }
  await Deno.writeTextFile(`${dir}/docs.jsonl`, lines.join("\n"));
  for (const path of [dir, `${dir}/docs.jsonl`]) {
    const docs = splitDocuments(await loadText(path));
    assert.equal(docs.length, 5, path);
    assert.deepEqual(docs[3], ["Doc 3 starts here.", "Doc 3 goes on.", "Doc 3 ends."]);
  }
});

Deno.test("SOP pairs: layout, token types, padding mask, labels match corpus order", () => {
  const S = 48, B = 8;
  const sampler = new BertBatchSampler(countingCorpus(), VOCAB, {
    batchSize: B,
    seqLength: S,
    seed: 5,
  });
  let swapped = 0, rows = 0;
  for (let k = 0; k < 100; k++) {
    const b = sampler.next();
    assert.equal(b.sopLabels.length, B);
    for (let r = 0; r < B; r++) {
      const o = r * S;
      const ids = original(b.inputIds.subarray(o, o + S), b.mlmTargets.subarray(o, o + S));
      const types = Array.from(b.tokenTypes.subarray(o, o + S));
      const mask = Array.from(b.paddingMask.subarray(o, o + S));
      const n = mask.indexOf(0) < 0 ? S : mask.indexOf(0);
      assert.ok(mask.slice(n).every((m) => m === 0));
      assert.ok(ids.slice(n).every((id) => id === VOCAB.special.pad));
      assert.ok(types.slice(n).every((t) => t === 0));
      assert.equal(ids[0], VOCAB.special.cls);
      assert.equal(ids[n - 1], VOCAB.special.sep);
      const sep = ids.indexOf(VOCAB.special.sep);
      assert.ok(sep >= 2 && sep <= n - 3, "both segments non-empty");
      assert.deepEqual(types.slice(0, sep + 1), new Array(sep + 1).fill(0));
      assert.deepEqual(types.slice(sep + 1, n), new Array(n - sep - 1).fill(1));
      const first = ids.slice(1, sep), second = ids.slice(sep + 1, n - 1);
      // In corpus order the two segments form one contiguous run of counting ids.
      const [a, bSeg] = b.sopLabels[r] === 1 ? [second, first] : [first, second];
      const joined = a.concat(bSeg);
      joined.forEach((id, i) => assert.equal(id, joined[0] + i));
      swapped += b.sopLabels[r];
      rows++;
    }
  }
  assert.ok(Math.abs(swapped / rows - 0.5) < 0.06, `swapped share ${swapped / rows}`);
});

Deno.test("masking: 15% of each row's tokens, 80/10/10, specials never masked", () => {
  const S = 64, B = 16;
  const sampler = new BertBatchSampler(countingCorpus(), VOCAB, {
    batchSize: B,
    seqLength: S,
    seed: 11,
  });
  let eligible = 0, picked = 0, masked = 0, random = 0, kept = 0;
  for (let k = 0; k < 250; k++) {
    const b = sampler.next();
    for (let i = 0; i < B * S; i++) {
      const t = b.mlmTargets[i], id = b.inputIds[i];
      const orig = t === MLM_IGNORE_INDEX ? id : t;
      if (orig >= 10) eligible++;
      if (t === MLM_IGNORE_INDEX) continue;
      assert.ok(t >= 10, "a special token was chosen for prediction");
      assert.equal(b.paddingMask[i], 1);
      picked++;
      if (id === VOCAB.special.mask) masked++;
      else if (id === t) kept++;
      else {
        assert.ok(id >= 10 && id < VOCAB.vocabSize);
        random++;
      }
    }
  }
  assert.ok(picked > 20_000, `picked ${picked} of ${eligible}`);
  // Of every row's tokens, its [CLS] and two [SEP] counted (Google's and Megatron's n).
  const tokens = eligible + 3 * 250 * B;
  assert.ok(Math.abs(picked / tokens - 0.15) < 0.003, `picked ${picked / tokens}`);
  assert.ok(Math.abs(masked / picked - 0.8) < 0.015, `mask ${masked / picked}`);
  assert.ok(Math.abs(random / picked - 0.1) < 0.01, `random ${random / picked}`);
  assert.ok(Math.abs(kept / picked - 0.1) < 0.01, `kept ${kept / picked}`);
});

Deno.test("maskTokens picks max(1, round(p·n)) ordinary positions, n counting the special tokens", () => {
  // Google's BERT and Megatron: round(0.3 · 7) = 2 of [CLS] a b c [SEP] d [SEP]; 1 when the
  // three special tokens were left out of n (round(0.3 · 4)).
  for (const [p, want] of [[0.3, 2], [0.5, 4], [0.01, 1], [0.9, 4]]) {
    const ids = Int32Array.from([2, 50, 51, 52, 3, 53, 3]);
    const targets = new Int32Array(ids.length);
    maskTokens(ids, targets, VOCAB, p, new DataRng(1));
    const chosen = [...targets.keys()].filter((i) => targets[i] !== MLM_IGNORE_INDEX);
    assert.equal(chosen.length, want, `p ${p}`);
    for (const i of chosen) assert.ok([1, 2, 3, 5].includes(i));
    assert.deepEqual([ids[0], ids[4], ids[6]], [2, 3, 3]);
  }
});

Deno.test("BERT sampler is reproducible and resumable; works on the real book", async () => {
  const tok = await createBertTokenizer();
  const corpus = prepareBertCorpus(await loadText(), tok);
  assert.ok(corpus.documents.length > 130);
  const opts = { batchSize: 4, seqLength: 128, seed: 3 };
  const a = new BertBatchSampler(corpus, tok, opts);
  const b = new BertBatchSampler(corpus, tok, opts);
  assert.deepEqual(a.next(), b.next());
  const state = JSON.parse(JSON.stringify(a.state()));
  const expected = a.next();
  const c = new BertBatchSampler(corpus, tok, opts);
  c.restore(state);
  assert.deepEqual(c.next(), expected);
  assert.ok(expected.inputIds.every((id) => id >= 0 && id < tok.vocabSize));
  assert.throws(() => new BertBatchSampler(corpus, tok, { ...opts, seqLength: 4 }), /≥ 5/);
  assert.throws(() => prepareBertCorpus("One sentence only", tok), /two or more sentences/);
});
