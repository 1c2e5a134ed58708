/**
 * Tokenizing a corpus a piece at a time (data/corpus_stream.ts): read in small
 * chunks (a few KiB here, 16 MiB by default), the ids, documents, character
 * counts and warnings must equal those of the whole-file reference (each
 * document decoded and encoded whole, documents separated as `loadTokens`
 * documents) for every tokenizer: GPT-2 BPE, WordPiece and bytes. JSON-lines
 * errors name the right line past the first chunk; a stretch with nowhere to
 * cut is refused by name; `preprocess` leaves an existing output as it was
 * when it fails, and no partial file.
 */

import { deepStrictEqual, equal, rejects } from "node:assert/strict";
import { join } from "node:path";
import { preprocess } from "../cli/preprocess.ts";
import { type CorpusFile, tokenizeCorpus } from "../data/corpus_stream.ts";
import { loadMobyDick } from "../data/moby_dick.ts";
import { createTokenizer, type Tokenizer } from "../data/tokenizer.ts";
import { countInvalidUtf8 } from "../data/utf8.ts";
import { prng } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

const book = await loadMobyDick();
const enc = new TextEncoder();

/** A folder of documents that test the cuts: the book, odd bytes, blanks, long lines. */
async function writeFolder(dir: string): Promise<string[]> {
  const files: [string, Uint8Array][] = [
    ["a_book.txt", enc.encode(book.slice(0, 200_000))],
    // A byte-order mark, invalid UTF-8 (a lone 0xE9, a cut-off 3-byte sequence)
    // and non-ASCII white space after line feeds, where no cut may fall.
    [
      "b_odd.txt",
      new Uint8Array([
        0xef,
        0xbb,
        0xbf,
        ...enc.encode("Caf"),
        0xe9,
        ...enc.encode(" au lait\n\u3000indented\n\u00a0x\n"),
        ...enc.encode("line\n".repeat(2000)),
        0xe2,
        0x82,
        ...enc.encode("\nend ✓ 日本語\n"),
      ]),
    ],
    ["c_blank.txt", enc.encode(" \n\t\n".repeat(3000))],
    ["d_words.md", enc.encode("word ".repeat(5000) + "\n" + "x".repeat(9000) + "\nlast")],
  ];
  for (const [name, bytes] of files) await Deno.writeFile(join(dir, name), bytes);
  return files.map(([name]) => join(dir, name));
}

/** The whole-file reference: each non-blank file decoded and encoded whole, then joined. */
async function reference(tok: Tokenizer, paths: string[]): Promise<number[]> {
  const out: number[] = [];
  const sep = tok.eosId ?? tok.documentSeparatorId;
  let docs = 0;
  for (const p of paths) {
    const bytes = await Deno.readFile(p);
    if (tok.encodeBytes) {
      if (bytes.every((b) => b === 32 || (b >= 9 && b <= 13))) continue;
      if (docs++ > 0) out.push(10, 10);
      for (const id of tok.encodeBytes(bytes)) out.push(id);
      continue;
    }
    const text = new TextDecoder().decode(bytes); // drops the byte-order mark
    if (!text.trim()) continue;
    if (docs++ > 0) out.push(sep!);
    for (const id of tok.encode(text)) out.push(id);
  }
  return out;
}

async function streamed(
  tok: Tokenizer,
  files: CorpusFile[],
  chunkBytes: number,
): Promise<{ ids: number[]; warnings: string[]; documents: number; chars: number }> {
  const ids: number[] = [];
  const warnings: string[] = [];
  const r = await tokenizeCorpus(tok, files, (part) => {
    for (let i = 0; i < part.length; i++) ids.push(part[i]);
  }, { warn: (m) => warnings.push(m), chunkBytes });
  equal(r.tokens, ids.length);
  return { ids, warnings, documents: r.documents, chars: r.chars };
}

for (const name of ["gpt2", "bert", "byte"]) {
  Deno.test(`${name}: ids read in 4 KiB pieces equal the whole files' ids`, async () => {
    await using temp = await tempDir({ prefix: "corpus_stream_" });
    const paths = await writeFolder(temp.path);
    const tok = await createTokenizer(name);
    const files = paths.map((path) => ({ path, jsonLines: false }));
    const want = await reference(tok, paths);
    const small = await streamed(tok, files, 4096);
    const whole = await streamed(tok, files, 1 << 24);
    equal(small.ids.length, want.length);
    deepStrictEqual(small.ids, want);
    deepStrictEqual(whole.ids, want);
    equal(small.documents, 3, "the blank file is skipped");
    equal(small.chars, whole.chars);
    deepStrictEqual(small.warnings, whole.warnings);
    if (name !== "byte") {
      const bad = countInvalidUtf8((await Deno.readFile(paths[1])).subarray(3));
      equal(small.warnings.length, 1);
      equal(
        small.warnings[0].startsWith(`${paths[1]}: ${bad.invalidBytes} bytes are not valid`),
        true,
        small.warnings[0],
      );
    }
  });
}

Deno.test("random text cut every ~64 bytes tokenizes as a whole (GPT-2, WordPiece)", async () => {
  await using temp = await tempDir({ prefix: "corpus_stream_" });
  // Runs of letters, digits, punctuation, contractions and every kind of white
  // space, so that pieces end beside each of them.
  const atoms = [
    "word",
    "Word",
    "x",
    "42",
    "3.5",
    "'s",
    "'ll",
    "don't",
    ".",
    ",",
    "!?",
    "--",
    "(",
    ")",
    "é",
    "日本",
    "✓",
    " ",
    " ",
    " ",
    "  ",
    "\n",
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    "\u00a0",
    "\u3000",
  ];
  const r = prng(7);
  const text = Array.from({ length: 20_000 }, () => atoms[Math.floor(r() * atoms.length)]).join("");
  const path = join(temp.path, "random.txt");
  await Deno.writeTextFile(path, text);
  for (const name of ["gpt2", "bert"]) {
    const tok = await createTokenizer(name);
    const want = Array.from(tok.encode(text));
    for (const chunkBytes of [64, 97, 1000]) {
      const got = await streamed(tok, [{ path, jsonLines: false }], chunkBytes);
      equal(got.ids.length, want.length, `${name}, ${chunkBytes}-byte reads`);
      deepStrictEqual(got.ids, want, `${name}, ${chunkBytes}-byte reads`);
    }
  }
});

Deno.test("a .jsonl read in pieces: documents as whole, errors name the line", async () => {
  await using temp = await tempDir({ prefix: "corpus_stream_" });
  const tok = await createTokenizer("gpt2");
  const docs = Array.from({ length: 1500 }, (_, i) => `document ${i}: ${"ünïcode ".repeat(i % 7)}`);
  const lines = docs.map((text, i) => i % 100 === 5 ? "" : JSON.stringify({ text }));
  const path = join(temp.path, "docs.jsonl");
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  const got = await streamed(tok, [{ path, jsonLines: true }], 1000);
  const kept = docs.filter((_, i) => i % 100 !== 5);
  equal(got.documents, kept.length);
  deepStrictEqual(got.ids, kept.flatMap((d, i) => [...(i ? [tok.eosId!] : []), ...tok.encode(d)]));
  lines[1234] = "{not json";
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  await rejects(
    () => streamed(tok, [{ path, jsonLines: true }], 1000),
    new RegExp(`docs\\.jsonl: line 1235 is not JSON`),
  );
});

Deno.test("a stretch longer than can be cut is refused by name", async () => {
  await using temp = await tempDir({ prefix: "corpus_stream_" });
  const path = join(temp.path, "one_line.txt");
  await Deno.writeTextFile(path, "start\n" + "y".repeat(50_000));
  const tok = await createTokenizer("byte");
  await rejects(
    () =>
      tokenizeCorpus(tok, [{ path, jsonLines: false }], () => {}, {
        warn: () => {},
        chunkBytes: 4096,
        maxUncutBytes: 20_000,
      }),
    /one_line\.txt: \d+ bytes without a place to cut them/,
  );
});

Deno.test("preprocess that fails leaves the output it would replace, and no partial file", async () => {
  await using temp = await tempDir({ prefix: "corpus_stream_" });
  const input = join(temp.path, "in.jsonl");
  const output = join(temp.path, "out.bin");
  await Deno.writeTextFile(input, `{"text": "one"}\n{"text": "two"}\n`);
  const first = await preprocess(input, "gpt2", output);
  equal(first.documents, 2);
  const before = await Deno.readFile(output);
  const side = await Deno.readTextFile(`${output}.json`);
  await Deno.writeTextFile(input, `{"text": "one"}\n{"text": 3}\n`);
  await rejects(() => preprocess(input, "gpt2", output), /line 2 has no string "text" field/);
  deepStrictEqual(await Deno.readFile(output), before);
  equal(await Deno.readTextFile(`${output}.json`), side);
  deepStrictEqual(
    [...Deno.readDirSync(temp.path)].map((e) => e.name).sort(),
    ["in.jsonl", "out.bin", "out.bin.json"],
  );
});
