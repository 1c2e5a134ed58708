/**
 * `--split` cuts (data/split.ts): at the token the fractions give without a
 * separator; with one, at the nearest document boundary when that moves
 * neither part by more than half its size (checked against a brute-force
 * search over every boundary), so that no document is in two parts; and at
 * the token when the documents are longer than the parts.
 */

import { deepStrictEqual, equal } from "node:assert/strict";
import assert from "node:assert/strict";
import { splitStream, textCut } from "../data/split.ts";
import { prng } from "./helpers.ts";

const SEP = 9;

/** Documents of the given lengths (ids 1..8), separated (not ended) by SEP. */
function stream(lengths: number[]): Uint32Array {
  const out: number[] = [];
  const r = prng(lengths.length);
  lengths.forEach((len, i) => {
    if (i > 0) out.push(SEP);
    for (let k = 0; k < len; k++) out.push(1 + Math.floor(r() * 8));
  });
  return Uint32Array.from(out);
}

/** The brute-force rule: the nearest boundary (earlier on a tie) within half of each side. */
function expectedCut(ids: Uint32Array, cut: number, from: number, to: number): number {
  const reach = Math.floor(Math.min(cut - from, to - cut) / 2);
  let best = cut, bestD = Infinity;
  for (let b = from + 1; b < to; b++) {
    if (ids[b - 1] !== SEP) continue;
    const d = Math.abs(b - cut);
    if (d <= reach && d < bestD) [best, bestD] = [b, d];
  }
  return best;
}

Deno.test("without a separator the cuts are the fractions' tokens", () => {
  const ids = stream([1000]);
  const s = splitStream(ids, { valid: 0.05, test: 0.01 });
  equal(s.train.length, 940);
  equal(s.val.length, 50);
  equal(s.test, 10);
  deepStrictEqual(
    splitStream(ids, { valid: 0.05, test: 0.01 }, SEP),
    s,
    "one document: no boundary",
  );
});

Deno.test("with documents, each cut moves to the nearest boundary within half of each part", () => {
  const r = prng(3);
  for (let trial = 0; trial < 200; trial++) {
    const docs = 1 + Math.floor(r() * 60);
    const ids = stream(Array.from({ length: docs }, () => 1 + Math.floor(r() * 300)));
    const fractions = { valid: 0.05 + r() * 0.3, test: r() < 0.5 ? 0 : r() * 0.2 };
    const s = splitStream(ids, fractions, SEP);
    const n = ids.length;
    const nTest = Math.round(n * fractions.test);
    const nVal = Math.round(n * fractions.valid);
    const end = expectedCut(ids, Math.max(0, n - nVal - nTest), 0, n - nTest);
    const valEnd = expectedCut(ids, n - nTest, end, n);
    equal(s.train.length, end, `trial ${trial}`);
    equal(s.val.length, valEnd - end, `trial ${trial}`);
    equal(s.test, n - valEnd, `trial ${trial}`);
  }
});

Deno.test("a document longer than a part straddles the cut, as before", () => {
  // The audit's case: the test part (1%) lies inside a document ten times its size.
  const ids = stream([5000, 4000, 1000]);
  const s = splitStream(ids, { valid: 0.05, test: 0.01 }, SEP);
  equal(s.test, Math.round(ids.length * 0.01));
  // The train/validation cut (at 9,400) found no boundary within 250 tokens: kept too.
  equal(s.train.length, ids.length - Math.round(ids.length * 0.05) - s.test);
  // Documents of 100 tokens and a validation part of 500: the cuts land on boundaries.
  const even = stream(Array.from({ length: 100 }, () => 99));
  const e = splitStream(even, { valid: 0.05, test: 0.01 }, SEP);
  equal(even[e.train.length - 1], SEP);
  equal(even[e.train.length + e.val.length - 1], SEP);
});

Deno.test("with a Megatron index's document starts, each cut moves to the nearest start, as by brute force", () => {
  const r = prng(11);
  for (let trial = 0; trial < 300; trial++) {
    const n = 50 + Math.floor(r() * 5000);
    const starts = [
      ...new Set(Array.from({ length: Math.floor(r() * 12) }, () => 1 + Math.floor(r() * (n - 1)))),
    ]
      .sort((a, b) => a - b);
    // The same documents marked by separators, to compare with the separator rule.
    const ids = new Uint32Array(n).fill(1);
    for (const b of starts) ids[b - 1] = SEP;
    const fractions = { valid: 0.05 + r() * 0.3, test: r() < 0.5 ? 0 : r() * 0.2 };
    const byIndex = splitStream(new Uint32Array(n).fill(1), fractions, undefined, starts);
    const bySeparator = splitStream(ids, fractions, SEP);
    equal(byIndex.train.length, bySeparator.train.length, `trial ${trial}`);
    equal(byIndex.val.length, bySeparator.val.length, `trial ${trial}`);
    equal(byIndex.test, bySeparator.test, `trial ${trial}`);
  }
});

Deno.test("BERT's text is cut between documents, else paragraphs, else words (it cut mid-word)", async () => {
  const doc = (k: number) => `Document ${k} opens. It goes on.\n\nIts second paragraph.`;
  const text = [0, 1, 2, 3].map(doc).join("\n\n\n");
  // Raw cuts inside document 2's first word and inside its second paragraph: to the boundary
  // before document 2 (the nearest run of blank lines), within half of each part.
  const start2 = text.indexOf("Document 2");
  assert.equal(textCut(text, start2 + 3, 0, text.length), start2);
  const para = text.indexOf("Its second", start2);
  assert.equal(textCut(text, para + 4, 0, text.length), text.indexOf("Document 3"));
  // Without a document boundary within reach, a paragraph's; then a word's.
  const one =
    "alpha beta gamma.\n\ndelta epsilon zeta eta theta iota kappa lambda mu nu xi omicron";
  assert.equal(textCut(one, 15, 0, one.length), one.indexOf("delta"));
  const words = "alpha beta gamma delta epsilon zeta";
  assert.equal(textCut(words, 13, 0, words.length), words.indexOf("gamma"));
  // No room (an empty part on either side): the cut stays.
  assert.equal(textCut(text, 10, 10, text.length), 10);
  // The default corpus, cut at 90% for validation: the training part ends between documents.
  const book = await Deno.readTextFile(new URL("../data/assets/moby_dick.txt", import.meta.url));
  const raw = Math.round(book.length * 0.9);
  const cut = textCut(book, raw, 0, book.length);
  assert.match(book.slice(0, cut), /\n[ \t]*\n(?:[ \t]*\n)+$/, "not after a document");
  assert.ok(Math.abs(cut - raw) < 2000, `${cut - raw} characters from the fraction's cut`);
});
