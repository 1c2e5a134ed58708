import assert from "node:assert/strict";
import { createTokenizer } from "../data/tokenizer.ts";
import { type BertBasicOptions, bertBasicTokenize } from "../data/bert_basic.ts";
import {
  createBertTokenizer,
  readWordPieceTokenizer,
  WordPieceTokenizer,
  writeWordPieceTokenizer,
} from "../data/wordpiece_tokenizer.ts";
import { tempDir } from "./temp_dir.ts";
import { maskTokens, MLM_IGNORE_INDEX } from "../data/bert_batches.ts";
import { DataRng } from "../data/rng.ts";

const SAMPLES = [
  "Call me Ishmael. Some years ago—never mind how long precisely.",
  "ASCII only: 0123456789 !@#$%^&*()_+-=[]{};':\",./<>?\n\ttabs and newlines",
  "Unicode: naïve café, Ελληνικά, русский, 日本語, emoji 🐋🌊, combining é (e\u0301).",
];

Deno.test("byte tokenizer round-trips ASCII and Unicode and counts UTF-8 bytes", async () => {
  const tok = await createTokenizer("byte");
  assert.equal(tok.name, "byte");
  assert.equal(tok.vocabSize, 256);
  assert.equal(tok.eosId, undefined);
  for (const text of SAMPLES) {
    const ids = tok.encode(text);
    assert.equal(ids.length, new TextEncoder().encode(text).length);
    assert.equal(tok.decode(ids), text);
  }
  assert.deepEqual(Array.from(tok.encode("é🐋")), [0xc3, 0xa9, 0xf0, 0x9f, 0x90, 0x8b]);
  assert.throws(() => tok.decode([256]), /not in \[0, 256\)/);
});

Deno.test("gpt2 tokenizer: known ids, eos, round trip", async () => {
  const tok = await createTokenizer("gpt2");
  assert.equal(tok.vocabSize, 50257);
  assert.equal(tok.eosId, 50256);
  assert.deepEqual(Array.from(tok.encode("Hello world")), [15496, 995]);
  assert.equal(tok.decode([50256]), "<|endoftext|>");
  for (const text of SAMPLES) {
    const ids = tok.encode(text);
    assert.ok(ids.length > 0 && ids.length < text.length + 20);
    for (const id of ids) assert.ok(id >= 0 && id < tok.vocabSize);
    assert.equal(tok.decode(ids), text);
  }
  // A literal "<|endoftext|>" in user text is ordinary text, not the eos id.
  const ids = Array.from(tok.encode("a<|endoftext|>b"));
  assert.ok(!ids.includes(50256));
  assert.equal(tok.decode(ids), "a<|endoftext|>b");
});

Deno.test("gpt2 tokenizer: whitespace is Unicode's White_Space, as GPT-2's Python regex reads \\s", async () => {
  const tok = await createTokenizer("gpt2");
  // Hugging Face's GPT2TokenizerFast (transformers 5.18, tokenizers 0.23) on GPT-2's own files:
  // U+FEFF is not whitespace (JavaScript's \s says it is), U+0085 is (JavaScript's says not).
  assert.deepEqual(tok.encode("\ufeff'm"), [171, 119, 123, 6, 76]);
  assert.deepEqual(tok.encode("a \u0085b"), [64, 220, 126, 227, 65]);
  assert.deepEqual(tok.encode("\u0085't"), [126, 227, 470]);
});

Deno.test("gpt2 tokenizer: the same ids as npm gpt-tokenizer's encoder on random text and on Moby Dick", async () => {
  // deno-lint-ignore no-import-prefix -- the independent encoder, at the pin of deps/gpt_tokenizer.ts
  const { encode } = await import("npm:gpt-tokenizer@4.0.0/encoding/r50k_base");
  const literal = { disallowedSpecial: new Set<string>() };
  const tok = await createTokenizer("gpt2");
  // Pieces of every class the pattern splits (none of U+0085 and U+FEFF, where the two differ).
  const pieces = [
    "a",
    "Zq",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "'s",
    "'t",
    "'re",
    "'ll",
    "'d",
    "'m",
    "'ve",
    "é",
    "中文",
    "😀",
    "1",
    "23",
    "٣",
    "!?",
    "...",
    "—",
    "_",
    "<|endoftext|>",
    "\u00a0",
    "\u3000",
    "\u200b",
    "ﬁ",
    "İ",
    "\u0301",
    '"',
    "\ud800",
  ];
  const rng = new DataRng(3);
  for (let k = 0; k < 5000; k++) {
    let text = "";
    for (let i = 1 + rng.nextInt(30); i > 0; i--) text += pieces[rng.nextInt(pieces.length)];
    assert.deepEqual(tok.encode(text), encode(text, literal), JSON.stringify(text));
  }
  const book = await Deno.readTextFile(new URL("../data/assets/moby_dick.txt", import.meta.url));
  assert.deepEqual(tok.encode(book), encode(book, literal));
});

Deno.test("gpt2 tokenizer: a long run of letters with no space encodes (no stack overflow) and round-trips", async () => {
  // deno-lint-ignore no-import-prefix -- the independent encoder, at the pin of deps/gpt_tokenizer.ts
  const { encode } = await import("npm:gpt-tokenizer@4.0.0/encoding/r50k_base");
  const tok = await createTokenizer("gpt2");
  const rng = new DataRng(5);
  const run = (n: number) => Array.from({ length: n }, () => "ACGT"[rng.nextInt(4)]).join("");
  const short = run(20_000);
  assert.deepEqual(tok.encode(short), encode(short));
  // 300,000 letters: gpt-tokenizer's encoder overflows the stack (its merges are quadratic too).
  const long = run(300_000);
  const ids = tok.encode(long);
  assert.equal(tok.decode(ids), long);
  assert.ok(ids.length > 100_000 && ids.length < 300_000, `${ids.length} ids`);
});

Deno.test("gpt2 decode: each call on its own, bytes kept in order, an unfinished character is U+FFFD", async () => {
  const tok = await createTokenizer("gpt2");
  // 8582 and 25081 are the two halves of "🙂" (F0 9F | 99 82); 15496 "Hello", 995 " world".
  assert.deepEqual(Array.from(tok.encode("🙂")), [8582, 25081]);
  assert.equal(tok.decode([8582]), "\uFFFD");
  assert.equal(tok.decode([8582]), "\uFFFD", "the same ids decode the same way twice");
  assert.equal(tok.decode([25081]), "\uFFFD\uFFFD", "nothing left over from the call before");
  assert.equal(tok.decode([8582, 15496, 25081, 995]), "\uFFFDHello\uFFFD\uFFFD world");
  assert.equal(tok.decode([15496, 8582, 25081]), "Hello🙂");
  assert.equal(tok.decode(tok.encode("\uFEFFBOM")), "\uFEFFBOM");
  assert.throws(() => tok.decode([50257]), /GPT-2 has no token 50257/);
});

Deno.test("byte decode keeps a leading byte-order mark", async () => {
  const tok = await createTokenizer("byte");
  assert.equal(tok.decode(tok.encode("\uFEFFBOM")), "\uFEFFBOM");
});

Deno.test("createTokenizer rejects unknown names clearly", async () => {
  await assert.rejects(() => createTokenizer("gpt3"), /unknown tokenizer "gpt3".*gpt2, byte, bert/);
});

Deno.test("BERT basic tokenization lowercases, strips accents, splits punctuation and CJK", () => {
  assert.deepEqual(bertBasicTokenize("Hello, World! Naïve CAFÉ's 東京\u0000x"), [
    "hello",
    ",",
    "world",
    "!",
    "naive",
    "cafe",
    "'",
    "s",
    "東",
    "京",
    "x",
  ]);
});

Deno.test("BERT basic tokenization drops controls, format and private-use characters as Hugging Face's does", () => {
  // Expected values from transformers' BasicTokenizer rules (_clean_text, _is_control, _is_whitespace).
  assert.deepEqual(bertBasicTokenize("a\x0bb a\x0cb a\uFEFFb a\uE000b a\u00ADb a\x85b"), [
    "ab",
    "ab",
    "ab",
    "ab",
    "ab",
    "ab",
  ]);
  assert.deepEqual(bertBasicTokenize("x\u2028y\u2029z\u3000w\tv"), ["x", "y", "z", "w", "v"]);
});

Deno.test("WordPiece finds bracketed tokens wherever the vocabulary puts them", () => {
  // [MASK] and an unused slot after the ordinary words (they came first in bert-base, and a
  // vocabulary like this one made every word [UNK] and masked nothing).
  const tok = new WordPieceTokenizer([
    ...["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "##s", "[MASK]", "sat", "[unused0]"],
  ]);
  assert.equal(tok.special.mask, 7);
  assert.deepEqual(tok.encode("the cats sat"), [4, 5, 6, 8]);
  assert.deepEqual(Array.from(tok.ordinaryIds), [4, 5, 6, 8]);
  assert.deepEqual([7, 9, 8].map((id) => tok.isSpecial(id)), [true, true, false]);
  const ids = Int32Array.from({ length: 4000 }, (_, i) => [4, 5, 6, 8, 2, 3][i % 6]);
  const targets = new Int32Array(ids.length);
  maskTokens(ids, targets, tok, 0.15, new DataRng(5));
  // round(15% of the 4,000 tokens, the special ones counted as Google's BERT counts them)
  const picked = targets.filter((t) => t !== MLM_IGNORE_INDEX);
  assert.ok(picked.length === 600 && picked.every((t) => !tok.isSpecial(t)), "only words masked");
  assert.ok(ids.every((id) => !tok.isSpecial(id) || [2, 3, 7].includes(id)), "replacements");
});

Deno.test("WordPiece honours Hugging Face's strip_accents and tokenize_chinese_chars, from its files too", async () => {
  const vocab = [...(await createBertTokenizer()).tokens];
  // Hugging Face tokenizers 0.23's BertWordPieceTokenizer on bert-base-uncased's vocab.txt.
  const cases: [string, BertBasicOptions, string[]][] = [
    ["the résumé of the café was naïve.", {}, [
      "the",
      "resume",
      "of",
      "the",
      "cafe",
      "was",
      "naive",
      ".",
    ]],
    ["the résumé of the café was naïve.", { stripAccents: false }, [
      "the",
      "[UNK]",
      "of",
      "the",
      "[UNK]",
      "was",
      "[UNK]",
      ".",
    ]],
    ["mixed中English混合text 東京", { splitCjk: false }, ["[UNK]", "東", "##京"]],
    ["Naïve CAFÉ résumé", { lowercase: false, stripAccents: true }, ["[UNK]", "[UNK]", "resume"]],
  ];
  for (const [text, opts, want] of cases) {
    assert.deepEqual(
      new WordPieceTokenizer(vocab, opts).tokenize(text),
      want,
      JSON.stringify(opts),
    );
  }
  // Read from tokenizer_config.json (strip_accents null follows the casing) or tokenizer.json's
  // normalizer, and written back so.
  await using temp = await tempDir();
  const dir = temp.path;
  await Deno.writeTextFile(`${dir}/vocab.txt`, vocab.join("\n") + "\n");
  const configs: [Record<string, unknown>, boolean, boolean][] = [
    [{ do_lower_case: true, strip_accents: false }, false, true],
    [{ do_lower_case: true, strip_accents: null, tokenize_chinese_chars: false }, true, false],
    [{ do_lower_case: false }, false, true],
  ];
  for (const [config, strip, cjk] of configs) {
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(config));
    const t = (await readWordPieceTokenizer(dir))!;
    assert.deepEqual([t.stripAccents, t.splitCjk], [strip, cjk], JSON.stringify(config));
    await writeWordPieceTokenizer(`${dir}/copy`, t);
    assert.deepEqual((await readWordPieceTokenizer(`${dir}/copy`))!.basicOptions, t.basicOptions);
  }
  await Deno.remove(`${dir}/tokenizer_config.json`);
  await Deno.writeTextFile(
    `${dir}/tokenizer.json`,
    JSON.stringify({
      normalizer: { lowercase: true, strip_accents: false, handle_chinese_chars: false },
    }),
  );
  const n = (await readWordPieceTokenizer(dir))!;
  assert.deepEqual([n.stripAccents, n.splitCjk], [false, false]);
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ do_basic_tokenize: false }),
  );
  await assert.rejects(
    () => readWordPieceTokenizer(dir),
    /do_basic_tokenize false .* is not built here/,
  );
});

Deno.test("WordPiece (bert-base-uncased ids) on known words", async () => {
  const tok = await createBertTokenizer();
  assert.equal(tok.vocabSize, 30522);
  assert.deepEqual(tok.special, { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 });
  // [unused0..98], [UNK], [CLS], [SEP], [MASK], [unused99..993]: ids 0..998.
  assert.equal(tok.ordinaryIds[0], 999);
  assert.equal(tok.ordinaryIds.length, 30522 - 999);
  assert.deepEqual(tok.encode("Hello world, the"), [7592, 2088, 1010, 1996]);
  assert.deepEqual(tok.tokenize("unaffable"), ["una", "##ffa", "##ble"]);
  assert.deepEqual(tok.tokenize("Ishmael whaling"), ["is", "##hma", "##el", "whaling"]);
  assert.equal(tok.idToToken(103), "[MASK]");
  assert.equal(tok.decode(tok.encode("The unaffable whale.")), "the unaffable whale .");
  assert.deepEqual(tok.encode("\u{1F40B}"), [tok.special.unk]);
  // Private use is dropped before WordPiece, as Hugging Face's tokenizer does.
  assert.deepEqual(tok.encode("\u{10FFFD}"), []);
  assert.equal(tok.isSpecial(101), true);
  assert.equal(tok.isSpecial(1996), false);
  const viaFactory = await createTokenizer("bert");
  assert.equal(viaFactory.vocabSize, 30522);
});

Deno.test("gpt2FilesDiffer: GPT-2's vocab.json and merges.txt are the built-in vocabulary; the first difference is named", async () => {
  const { gpt2FilesDiffer } = await import("../data/gpt2_tokenizer.ts");
  const { gpt2VocabFiles } = await import("./cli_helpers.ts");
  const { vocab, merges } = await gpt2VocabFiles();
  assert.equal(gpt2FilesDiffer(vocab, merges), null);
  // Windows line endings and no trailing newline are the same files.
  assert.equal(gpt2FilesDiffer(vocab, merges.trimEnd().replaceAll("\n", "\r\n")), null);
  const v = JSON.parse(vocab) as Record<string, number>;
  // Two tokens' ids swapped: " t" (Ġt, 256) and " a" (Ġa, 257).
  const swapped = JSON.stringify({ ...v, "Ġt": 257, "Ġa": 256 });
  assert.match(gpt2FilesDiffer(swapped, merges)!, /token "Ġt" has id 257, GPT-2's " a"/);
  const lines = merges.split("\n");
  [lines[1], lines[2]] = [lines[2], lines[1]];
  assert.match(
    gpt2FilesDiffer(vocab, lines.join("\n"))!,
    /merge 1 \(line 2: "Ġ a"\) does not make GPT-2's token 256 \(" t"\)/,
  );
  assert.match(gpt2FilesDiffer(vocab, "#version: 0.2\n")!, /has 0 merges, GPT-2's 50000/);
  assert.match(gpt2FilesDiffer('{"a": 0}', merges)!, /has 1 token, GPT-2's 50257/);
  assert.match(gpt2FilesDiffer("[1, 2]", merges)!, /not a JSON object/);
  assert.match(gpt2FilesDiffer("{", merges)!, /not JSON/);
});
