/**
 * `preprocess --output-prefix` (data/megatron_dataset.ts): Megatron's
 * `tools/preprocess_data.py` command line writes its indexed dataset,
 * `PREFIX_KEY_document.bin` and `.idx`, read back here field by field against
 * the format (not the writer): each document's strings tokenized one after the
 * other, a sequence per non-empty string, `--append-eod` ending each non-empty
 * document, empty documents in the document index without a sequence. `train`
 * reads the dataset by its prefix; flags Megatron has and this does not are
 * refused with their reason.
 */

import assert from "node:assert/strict";
import { main as preprocessMain } from "../cli/preprocess.ts";
import { loadTokens } from "../data/corpus.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import { megatronDocumentStarts } from "../data/token_bin.ts";
import { gpt2VocabFiles, runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const EOD = 50256;

/** The fields of a Megatron index, read as Megatron's `_IndexReader` reads them. */
function readIndex(bytes: Uint8Array) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(18, true)), docs = Number(view.getBigUint64(26, true));
  assert.equal(bytes.length, 34 + 12 * n + 8 * docs, "no bytes past the document indices");
  return {
    magic: new TextDecoder().decode(bytes.subarray(0, 9)),
    version: Number(view.getBigUint64(9, true)),
    dtype: bytes[17],
    sizes: Array.from({ length: n }, (_, i) => view.getInt32(34 + 4 * i, true)),
    pointers: Array.from(
      { length: n },
      (_, i) => Number(view.getBigInt64(34 + 4 * n + 8 * i, true)),
    ),
    documents: Array.from(
      { length: docs },
      (_, i) => Number(view.getBigInt64(34 + 12 * n + 8 * i, true)),
    ),
  };
}

/** Little-endian uint16 ids of a `.bin`. */
async function binIds(path: string): Promise<number[]> {
  const b = await Deno.readFile(path);
  return Array.from(new Uint16Array(b.buffer, b.byteOffset, b.length / 2));
}

const LINES = [
  { text: "Hello world. This is a test.", title: "One" },
  { text: "", title: "Empty" },
  { text: ["First sentence.", "", " Second one, naïve café."], title: "List" },
  null, // a blank line: no document
  { text: "  ", title: "Spaces" },
  { text: "Ends here 🙂", title: "Last" },
];

Deno.test("Megatron's preprocess command line writes its indexed dataset, read back by the format", async () => {
  await using dir = await tempDir({ prefix: "megatron_preprocess_test_" });
  const input = `${dir.path}/corpus.jsonl`;
  await Deno.writeTextFile(input, LINES.map((l) => l ? JSON.stringify(l) : "").join("\n") + "\n");
  const gpt2 = await createTokenizer("gpt2");
  for (const appendEod of [true, false]) {
    const prefix = `${dir.path}/my-gpt2${appendEod ? "" : "-noeod"}`;
    const code = await preprocessMain([
      "--input",
      input,
      "--output-prefix",
      prefix,
      "--tokenizer-type",
      "GPT2BPETokenizer",
      ...(appendEod ? ["--append-eod"] : []),
      "--workers",
      "8",
      "--dataset-impl",
      "mmap",
      "--json-keys",
      "text",
      "title",
    ]);
    assert.equal(code, 0);
    for (const key of ["text", "title"] as const) {
      // What Megatron's Encoder makes of each line: a sequence per non-empty string.
      const sizes: number[] = [], documents = [0], ids: number[] = [];
      for (const line of LINES) {
        if (!line) continue;
        const value = line[key];
        const strings = Array.isArray(value) ? value : [value];
        const doc: number[] = [];
        for (const s of strings) {
          const encoded = Array.from(gpt2.encode(s));
          if (encoded.length === 0) continue;
          doc.push(...encoded);
          sizes.push(encoded.length);
        }
        if (doc.length > 0 && appendEod) {
          doc.push(EOD);
          sizes[sizes.length - 1]++;
        }
        ids.push(...doc);
        documents.push(sizes.length);
      }
      const out = `${prefix}_${key}_document`;
      assert.deepEqual(await binIds(`${out}.bin`), ids, key);
      const index = readIndex(await Deno.readFile(`${out}.idx`));
      const pointers = sizes.map((_, i) => 2 * sizes.slice(0, i).reduce((a, b) => a + b, 0));
      assert.deepEqual(index, {
        magic: "MMIDIDX\0\0",
        version: 1,
        dtype: 8, // uint16
        sizes,
        pointers,
        documents,
      }, `${key}, append-eod ${appendEod}`);
      // This project's reader takes it, the index checked against the .bin.
      const loaded = (await loadTokens(gpt2, `${out}.bin`)).ids;
      assert.deepEqual(Array.from(loaded.read(0, loaded.length)), ids);
    }
  }
  // Megatron's example, GPT-2's vocabulary files included; by its prefix, the dataset trains.
  const vocabText = await gpt2VocabFiles();
  const files = { vocab: `${dir.path}/gpt2-vocab.json`, merges: `${dir.path}/gpt2-merges.txt` };
  await Deno.writeTextFile(files.vocab, vocabText.vocab);
  await Deno.writeTextFile(files.merges, vocabText.merges);
  const longer = `${dir.path}/longer.jsonl`;
  await Deno.writeTextFile(
    longer,
    Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `Document ${i} says hello.` }))
      .join("\n"),
  );
  assert.equal(
    await preprocessMain([
      "--input",
      longer,
      "--output-prefix",
      `${dir.path}/run`,
      "--tokenizer-type",
      "GPT2BPETokenizer",
      "--vocab-file",
      files.vocab,
      "--merge-file",
      files.merges,
      "--append-eod",
      "--workers",
      "2",
    ]),
    0,
  );
  const r = await runCli("cli/train.ts", [
    ...TINY_RUN_FLAGS,
    "--data-path",
    `${dir.path}/run_text_document`,
    "--tokenizer-type",
    "GPT2BPETokenizer",
    "--train-iters",
    "2",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    new RegExp(`data: ${dir.path}/run_text_document\\.bin \\| tokenizer gpt2`),
  );
});

Deno.test("several keys are written in one pass, and a failure leaves every old file as it was", async () => {
  await using dir = await tempDir({ prefix: "megatron_preprocess_test_" });
  // Megatron's README names its input my-corpus.json; lines may end in CR, LF or both.
  const input = `${dir.path}/my-corpus.json`;
  const args = (keys: string[]) => [
    "--input",
    input,
    "--output-prefix",
    `${dir.path}/p`,
    "--tokenizer-type",
    "GPT2BPETokenizer",
    "--append-eod",
    "--json-keys",
    ...keys,
  ];
  await Deno.writeTextFile(
    input,
    '{"text": "old a", "title": "old"}\r{"text": "old b", "title": "x"}\r\n',
  );
  assert.equal(await preprocessMain(args(["text", "title"])), 0);
  const files = ["text", "title"].flatMap((k) =>
    [".bin", ".idx", ".bin.json"].map((ext) => `${dir.path}/p_${k}_document${ext}`)
  );
  const before = await Promise.all(files.map((f) => Deno.readFile(f)));
  const gpt2 = await createTokenizer("gpt2");
  assert.deepEqual(await binIds(`${dir.path}/p_text_document.bin`), [
    ...gpt2.encode("old a"),
    EOD,
    ...gpt2.encode("old b"),
    EOD,
  ]);
  // The new input's second line has no title: nothing is replaced, the text dataset neither.
  await Deno.writeTextFile(input, '{"text": "new", "title": "t"}\n{"text": "new"}\n');
  assert.equal(await preprocessMain(args(["text", "title"])), 1);
  assert.deepEqual(await Promise.all(files.map((f) => Deno.readFile(f))), before);
  // An index that cannot be written (here a folder in its way) stops the run before any .bin
  // is replaced: a new .bin never stands beside an old index.
  await Deno.writeTextFile(input, '{"text": "newer text", "title": "t"}\n');
  await Deno.mkdir(`${dir.path}/p_title_document.idx.partial-${Deno.pid}`);
  assert.equal(await preprocessMain(args(["text", "title"])), 1);
  assert.deepEqual(await Promise.all(files.map((f) => Deno.readFile(f))), before);
  // (The run's cleanup took the empty folder with its partial files.)
  assert.equal(await preprocessMain(args(["text", "title"])), 0);
  assert.deepEqual(await binIds(`${dir.path}/p_title_document.bin`), [...gpt2.encode("t"), EOD]);
  assert.deepEqual(readIndex(await Deno.readFile(`${dir.path}/p_text_document.idx`)).sizes, [
    gpt2.encode("newer text").length + 1,
  ]);
});

Deno.test("--split cuts a Megatron dataset where its index says a document begins", async () => {
  await using dir = await tempDir({ prefix: "megatron_preprocess_test_" });
  // Documents of 500, 500, 500, 330 and 170 ids ("a" then " a"s: one GPT-2 id each), no
  // <|endoftext|> between them: only the index knows where they begin.
  const input = `${dir.path}/docs.jsonl`;
  const lengths = [500, 500, 500, 330, 170];
  await Deno.writeTextFile(
    input,
    lengths.map((k) => JSON.stringify({ text: "a" + " a".repeat(k - 1) })).join("\n"),
  );
  assert.equal(
    await preprocessMain([
      "--input",
      input,
      "--output-prefix",
      `${dir.path}/d`,
      "--tokenizer-type",
      "GPT2BPETokenizer",
    ]),
    0,
  );
  assert.deepEqual(
    await megatronDocumentStarts(`${dir.path}/d_text_document.bin`),
    new Float64Array([500, 1000, 1500, 1830]),
  );
  // 90% of 2,000 ids is 1,800, inside the fourth document; its end, 30 ids on, is within reach.
  const r = await runCli("cli/train.ts", [
    ...TINY_RUN_FLAGS,
    "--data-path",
    `${dir.path}/d_text_document`,
    "--tokenizer-type",
    "GPT2BPETokenizer",
    "--split",
    "90,10,0",
    "--train-iters",
    "1",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, / \| 1830 train \/ 170 validation tokens/);
});

Deno.test("preprocess refuses Megatron flags it cannot honour, each with its reason", async () => {
  await using dir = await tempDir({ prefix: "megatron_preprocess_test_" });
  const input = `${dir.path}/c.jsonl`;
  await Deno.writeTextFile(input, `{"text": "a b c"}\n{"body": "no text"}\n`);
  const errors: string[] = [];
  const original = console.error;
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  const run = async (...args: string[]) => {
    errors.length = 0;
    return await preprocessMain(args);
  };
  try {
    const prefix = ["--input", input, "--output-prefix", `${dir.path}/p`];
    assert.equal(await run(...prefix, "--split-sentences"), 2);
    assert.match(errors.join("\n"), /--split-sentences: sentences are not split here/);
    assert.equal(
      await run("--input", `${dir.path}/none.json`, "--output-prefix", "p", "--tokenizer", "gpt2"),
      1,
    );
    assert.match(errors.join("\n"), /none\.json: no such file/);
    assert.equal(await run(...prefix, "--dataset-impl", "lazy"), 2);
    assert.match(errors.join("\n"), /--dataset-impl lazy: .*; mmap is accepted/);
    assert.equal(await run(...prefix, "--partitions", "2"), 2);
    assert.match(errors.join("\n"), /--partitions 2: .*; 1 is accepted/);
    assert.equal(await run(...prefix, "--tokenizer", "byte", "--append-eod"), 2, "no end id");
    assert.match(errors.join("\n"), /--append-eod: the byte tokenizer has no end-of-document id/);
    assert.equal(await run(...prefix, "--output", `${dir.path}/x.bin`), 2);
    assert.equal(await run("--input", input, "--output", `${dir.path}/x.bin`, "--append-eod"), 2);
    assert.match(errors.join("\n"), /--append-eod is Megatron's, for --output-prefix/);
    // The second line has no "text": named, and the dataset is not written.
    const gpt2 = ["--tokenizer-type", "GPT2BPETokenizer"];
    assert.equal(
      await run(...prefix, ...gpt2, "--partitions", "1", "--keep-newlines", "--lang", "english"),
      1,
    );
    assert.match(errors.join("\n"), /c\.jsonl: line 2 has no "text" field/);
    await assert.rejects(() => Deno.stat(`${dir.path}/p_text_document.bin`), Deno.errors.NotFound);
    // Megatron's script needs a tokenizer named: the byte default is not taken silently.
    assert.equal(await run(...prefix), 2);
    assert.match(errors.join("\n"), /--output-prefix needs --tokenizer-type/);
    assert.equal(await run(...prefix, ...gpt2, "--tokenizer-type", "BertWordPieceLowerCase"), 2);
    assert.equal(await run(...prefix, ...gpt2, "--tokenizer-model", "m.model"), 2);
    assert.match(errors.join("\n"), /--tokenizer-model m\.model: no tokenizer model files/);
    // GPT-2's vocabulary files beside an explicit byte tokenizer: refused, as train refuses them.
    const vocabText = await gpt2VocabFiles();
    await Deno.writeTextFile(`${dir.path}/vocab.json`, vocabText.vocab);
    await Deno.writeTextFile(`${dir.path}/merges.txt`, vocabText.merges);
    const files = [
      "--vocab-file",
      `${dir.path}/vocab.json`,
      "--merge-file",
      `${dir.path}/merges.txt`,
    ];
    assert.equal(await run(...prefix, "--tokenizer-type", "ByteTokenizer", ...files), 2);
    assert.match(errors.join("\n"), /GPT-2's vocabulary, and --tokenizer is byte/);
  } finally {
    console.error = original;
  }
});
