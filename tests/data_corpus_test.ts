import assert from "node:assert/strict";
import { DataError } from "../data/errors.ts";
import { listTextFiles, loadText, loadTokens, splitTrainVal } from "../data/corpus.ts";
import { decodeTokenBin, encodeTokenBin, readTokenBin, writeTokenBin } from "../data/token_bin.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import { main as preprocessMain, preprocess } from "../cli/preprocess.ts";
import { parseFlags } from "../cli/flags.ts";
import { TRAIN_FLAGS } from "../cli/train_flags.ts";
import { agreeWithModelSource } from "../cli/model_source.ts";
import { tempDir } from "./temp_dir.ts";
import { runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";
import type { TokenStream } from "../data/token_stream.ts";

/** Every id of `stream`, as an array. */
const all = (stream: TokenStream): number[] => Array.from(stream.read(0, stream.length));

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  await using temp = await tempDir({ prefix: "data_corpus_test_" });
  const dir = temp.path;
  await fn(dir);
}

/**
 * A Megatron index (MMapIndexedDataset's `.idx`): "MMIDIDX\0\0", version 1,
 * the dtype's code, the sequences' sizes and byte pointers (`itemBytes` per id),
 * and a document index of one document per sequence.
 */
function megatronIndex(code: number, sizes: number[], itemBytes: number): Uint8Array {
  const n = sizes.length;
  const out = new Uint8Array(34 + 12 * n + 8 * (n + 1));
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode("MMIDIDX\0\0"));
  view.setBigUint64(9, 1n, true);
  out[17] = code;
  view.setBigUint64(18, BigInt(n), true);
  view.setBigUint64(26, BigInt(n + 1), true);
  let pointer = 0;
  sizes.forEach((size, i) => {
    view.setInt32(34 + 4 * i, size, true);
    view.setBigInt64(34 + 4 * n + 8 * i, BigInt(pointer), true);
    pointer += size * itemBytes;
  });
  for (let d = 0; d <= n; d++) view.setBigInt64(34 + 12 * n + 8 * d, BigInt(d), true);
  return out;
}

Deno.test("default corpus is the full Moby Dick", async () => {
  const text = await loadText();
  assert.equal(text.length, 1217672);
  assert.ok(text.startsWith("CONTENTS"));
  assert.ok(text.includes("CHAPTER 1. Loomings.\n\nCall me Ishmael."));
  assert.ok(text.trimEnd().endsWith("only found another orphan."));
  const byte = await loadTokens(await createTokenizer("byte"));
  assert.equal(byte.ids.length, 1221124);
  assert.equal(byte.chars, 1217672);
});

Deno.test("text file and folder loading (recursive, sorted, .txt/.md only)", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/b/sub`, { recursive: true });
    await Deno.writeTextFile(`${dir}/b/sub/z.md`, "third");
    await Deno.writeTextFile(`${dir}/b/a.txt`, "second");
    await Deno.writeTextFile(`${dir}/a.txt`, "first");
    await Deno.writeTextFile(`${dir}/ignored.json`, "{}");
    await Deno.writeTextFile(`${dir}/empty.txt`, "  \n");
    assert.deepEqual(
      (await listTextFiles(dir)).map((p) => p.slice(dir.length + 1)),
      ["a.txt", "b/a.txt", "b/sub/z.md", "empty.txt"],
    );
    // Documents are joined with two blank lines, the break splitDocuments (BERT) keeps.
    assert.equal(await loadText(dir), "first\n\n\nsecond\n\n\nthird");
    assert.equal(await loadText(`${dir}/b/a.txt`), "second");
    const tokens = await loadTokens(await createTokenizer("byte"), `${dir}/a.txt`);
    assert.deepEqual(all(tokens.ids), [102, 105, 114, 115, 116]);
    // Links: one to a folder elsewhere is walked, a broken one that is no text file is
    // skipped, a broken one named as text and a loop back up are refused by name.
    await Deno.mkdir(`${dir}/elsewhere`);
    await Deno.writeTextFile(`${dir}/elsewhere/x.txt`, "fourth");
    await Deno.symlink(`${dir}/elsewhere`, `${dir}/b/linked`);
    await Deno.symlink(`${dir}/none`, `${dir}/b/dead.bin`);
    assert.deepEqual(
      (await listTextFiles(`${dir}/b`)).map((p) => p.slice(dir.length + 1)),
      ["b/a.txt", "b/linked/x.txt", "b/sub/z.md"],
    );
    await Deno.symlink(`${dir}/none`, `${dir}/b/dead.txt`);
    await assert.rejects(listTextFiles(`${dir}/b`), /b\/dead\.txt: a link to nothing readable/);
    await Deno.remove(`${dir}/b/dead.txt`);
    await Deno.symlink("..", `${dir}/b/sub/up`);
    await assert.rejects(
      listTextFiles(`${dir}/b`),
      /b\/sub\/up leads back to .*\/b, a folder above it \(a loop of symbolic links\)/,
    );
  });
});

Deno.test("clear errors for bad data paths", async () => {
  await withTempDir(async (dir) => {
    const byte = await createTokenizer("byte");
    await assert.rejects(() => loadText(`${dir}/missing.txt`), DataError);
    await assert.rejects(() => loadText(`${dir}/missing.txt`), /does not exist/);
    await assert.rejects(() => loadTokens(byte, `${dir}/missing.bin`), /does not exist/);
    await Deno.writeTextFile(`${dir}/empty.txt`, "\n \n");
    await assert.rejects(() => loadText(`${dir}/empty.txt`), /is empty/);
    await Deno.mkdir(`${dir}/nothing`);
    await assert.rejects(() => loadText(`${dir}/nothing`), /no \.txt or \.md files/);
    await Deno.mkdir(`${dir}/blank`);
    await Deno.writeTextFile(`${dir}/blank/x.txt`, "");
    await assert.rejects(() => loadText(`${dir}/blank`), /all 1 text files are empty/);
    await Deno.writeFile(`${dir}/odd.bin`, new Uint8Array([1, 0, 2]));
    await assert.rejects(() => loadTokens(byte, `${dir}/odd.bin`), /odd length/);
    await Deno.writeFile(`${dir}/zero.bin`, new Uint8Array(0));
    await assert.rejects(() => loadTokens(byte, `${dir}/zero.bin`), /empty/);
    await Deno.writeFile(`${dir}/big.bin`, encodeTokenBin([65, 300, 66]));
    await assert.rejects(
      () => loadTokens(byte, `${dir}/big.bin`),
      /token id 300 at position 1 is not below the vocabulary size 256 .*GPT-2's ids, below 50257, are read with --tokenizer gpt2/,
    );
    // An id past GPT-2's vocabulary names no tokenizer.
    await Deno.writeFile(`${dir}/huge.bin`, encodeTokenBin([65, 60000]));
    await assert.rejects(
      () => loadTokens(byte, `${dir}/huge.bin`),
      /token id 60000 at position 1 is not below the vocabulary size 256 \(was it made with another tokenizer\?\)$/,
    );
  });
});

Deno.test("writeTokenBin refuses no ids (the reader refuses an empty file)", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(() => writeTokenBin(`${dir}/e.bin`, []), /e\.bin: no token ids to write/);
    await assert.rejects(() => Deno.stat(`${dir}/e.bin`), Deno.errors.NotFound);
  });
});

Deno.test(".bin encoding is little-endian uint16", () => {
  const bytes = encodeTokenBin([1, 258, 65535]);
  assert.deepEqual(Array.from(bytes), [1, 0, 2, 1, 255, 255]);
  assert.deepEqual(Array.from(decodeTokenBin(bytes)), [1, 258, 65535]);
  assert.throws(() => encodeTokenBin([65536]), /does not fit in uint16/);
});

Deno.test("preprocess writes what encode() gives and the .bin reader reads it back", async () => {
  await withTempDir(async (dir) => {
    const text = "It was the best of times — 🐋 and the whale, naïvely.\n".repeat(50);
    await Deno.writeTextFile(`${dir}/in.txt`, text);
    for (const name of ["gpt2", "byte"]) {
      const tok = await createTokenizer(name);
      const out = `${dir}/${name}.bin`;
      const r = await preprocess(`${dir}/in.txt`, name, out);
      const expected = Array.from(tok.encode(text));
      assert.equal(r.tokens, expected.length);
      assert.equal((await Deno.stat(out)).size, 2 * expected.length);
      assert.deepEqual(Array.from(await readTokenBin(out, tok.vocabSize)), expected);
      const loaded = await loadTokens(tok, out);
      assert.deepEqual(all(loaded.ids), expected);
      assert.equal(tok.decode(all(loaded.ids)), text);
    }
    assert.equal(await preprocessMain(["--output", `${dir}/x.bin`, "--data-path", `${dir}/no`]), 1);
    assert.equal(await preprocessMain(["--bogus"]), 2);
  });
});

Deno.test("train/validation split takes the last fraction", () => {
  const ids = Uint32Array.from({ length: 1000 }, (_, i) => i);
  const { train, val } = splitTrainVal(ids);
  assert.equal(train.length, 900);
  assert.equal(val.length, 100);
  assert.equal(val[0], 900);
  assert.equal(splitTrainVal(ids, 0.25).val.length, 250);
  assert.equal(splitTrainVal(ids, 0).val.length, 0);
  assert.throws(() => splitTrainVal(ids, 1), /validation fraction/);
});

Deno.test("gpt2: a folder's documents are separated by <|endoftext|> (50256), not a blank line", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/a.txt`, "First document.");
    await Deno.writeTextFile(`${dir}/b.txt`, "Second one.");
    const gpt2 = await createTokenizer("gpt2");
    const c = await loadTokens(gpt2, dir);
    const want = [...gpt2.encode("First document."), 50256, ...gpt2.encode("Second one.")];
    assert.deepEqual(all(c.ids), want);
    assert.equal(c.documents, 2);
    // A tokenizer without an end-of-text id keeps the blank line.
    const byte = await createTokenizer("byte");
    assert.equal(
      byte.decode(all((await loadTokens(byte, dir)).ids)),
      "First document.\n\nSecond one.",
    );
    // preprocess writes the same ids, and a sidecar naming the tokenizer.
    const r = await preprocess(dir, "gpt2", `${dir}/out.bin`);
    assert.equal(r.documents, 2);
    assert.deepEqual(Array.from(await readTokenBin(`${dir}/out.bin`)), want);
    const meta = JSON.parse(await Deno.readTextFile(`${dir}/out.bin.json`));
    assert.deepEqual(meta, {
      tokenizer: "gpt2",
      vocab_size: 50257,
      eos_id: 50256,
      documents: 2,
      dtype: "uint16",
      tokens: want.length,
    });
  });
});

Deno.test("a .bin records its tokenizer; loading it with another is refused, naming both", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/in.txt`, "hello world");
    // preprocess's default is train's: byte.
    assert.equal(
      await preprocessMain(["--output", `${dir}/d.bin`, "--data-path", `${dir}/in.txt`]),
      0,
    );
    assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/d.bin.json`)).tokenizer, "byte");
    assert.equal(
      await preprocessMain([
        "--output",
        `${dir}/g.bin`,
        "--input",
        `${dir}/in.txt`,
        "--tokenizer-type",
        "GPT2BPETokenizer",
      ]),
      0,
    );
    const byte = await createTokenizer("byte"), gpt2 = await createTokenizer("gpt2");
    assert.equal((await loadTokens(byte, `${dir}/d.bin`)).ids.length, 11);
    await assert.rejects(
      () => loadTokens(byte, `${dir}/g.bin`),
      (e) =>
        e instanceof DataError &&
        /g\.bin was tokenized with the gpt2 tokenizer .* this run uses the byte tokenizer .*--tokenizer gpt2/
          .test(e.message),
    );
    await assert.rejects(
      () => loadTokens(gpt2, `${dir}/d.bin`),
      /tokenized with the byte tokenizer/,
    );
    assert.deepEqual(
      all((await loadTokens(gpt2, `${dir}/g.bin`)).ids),
      gpt2.encode("hello world"),
    );
    // A plain nanoGPT .bin (no sidecar) is still read.
    await Deno.remove(`${dir}/g.bin.json`);
    assert.equal((await loadTokens(gpt2, `${dir}/g.bin`)).ids.length, 2);
  });
});

Deno.test("a fresh GPT run given no --tokenizer takes the one its .bin sidecars name", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/in.txt`, "hello world");
    const gpt2 = ["--tokenizer-type", "GPT2BPETokenizer"];
    for (const name of ["g", "h"]) {
      assert.equal(
        await preprocessMain([
          "--output",
          `${dir}/${name}.bin`,
          "--input",
          `${dir}/in.txt`,
          ...gpt2,
        ]),
        0,
      );
    }
    assert.equal(await preprocessMain(["--output", `${dir}/b.bin`, "--input", `${dir}/in.txt`]), 0);
    const settled = async (args: string[]) => {
      const f = parseFlags(args, TRAIN_FLAGS);
      const extra = await agreeWithModelSource(f);
      return { tokenizer: f.tokenizer, extra };
    };
    // One corpus, a blend, a Megatron prefix and separate train/valid paths: gpt2, carried to ranks.
    for (
      const data of [
        ["--data-path", `${dir}/g.bin`],
        ["--data-path", "1", `${dir}/g.bin`, "2", `${dir}/h.bin`],
        ["--data-path", `${dir}/g`],
        ["--train-data-path", `${dir}/g.bin`, "--valid-data-path", `${dir}/h.bin`],
      ]
    ) {
      assert.deepEqual(await settled(data), {
        tokenizer: "gpt2",
        extra: ["--tokenizer", "gpt2"],
      });
    }
    // Given, disagreeing sidecars, a byte corpus and text: nothing adopted (the data checks refuse).
    for (
      const args of [
        ["--data-path", `${dir}/g.bin`, "--tokenizer", "byte"],
        ["--data-path", `${dir}/g.bin`, `${dir}/b.bin`],
        ["--data-path", `${dir}/b.bin`],
        ["--data-path", `${dir}/in.txt`],
      ]
    ) {
      assert.deepEqual(await settled(args), { tokenizer: "byte", extra: [] });
    }
  });
});

/** Writes `dir/in.txt` (a short text) and `dir/g.bin`, its ids under GPT-2's tokenizer. */
async function writeGpt2Corpus(dir: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/in.txt`, "Call me Ishmael. Some years ago. ".repeat(200));
  const gpt2 = ["--tokenizer-type", "GPT2BPETokenizer"];
  assert.equal(
    await preprocessMain(["--output", `${dir}/g.bin`, "--input", `${dir}/in.txt`, ...gpt2]),
    0,
  );
}

Deno.test("data of another tokenizer than the model's is refused before any work, saying both ways out", async () => {
  await withTempDir(async (dir) => {
    await writeGpt2Corpus(dir);
    // A byte-level model's checkpoint.
    const r = await runCli("cli/train.ts", [
      ...TINY_RUN_FLAGS,
      ...["--data-path", `${dir}/in.txt`, "--train-iters", "1", "--no-matmul-autotune"],
      ...["--save", `${dir}/ck`],
    ]);
    assert.equal(r.code, 0, r.stderr);
    // A Hugging Face GPT-2 (its config is all the check reads): GPT-2's vocabulary.
    await Deno.mkdir(`${dir}/hf`);
    await Deno.writeTextFile(
      `${dir}/hf/config.json`,
      JSON.stringify({
        model_type: "gpt2",
        vocab_size: 50257,
        n_positions: 64,
        n_embd: 32,
        n_layer: 1,
        n_head: 2,
      }),
    );
    assert.equal(
      await preprocessMain(["--output", `${dir}/b.bin`, "--input", `${dir}/in.txt`]),
      0,
    );
    const settle = (args: string[]) => agreeWithModelSource(parseFlags(args, TRAIN_FLAGS));
    // Before, the data's check asked for --tokenizer gpt2, which the checkpoint then refused.
    await assert.rejects(
      () => settle(["--load", `${dir}/ck`, "--data-path", `${dir}/g.bin`]),
      (e: Error) =>
        e.name === "UsageError" &&
        /g\.bin was tokenized with the gpt2 tokenizer .* the model in the checkpoint .* reads byte ids: .*preprocess on the text with --tokenizer byte; .*fresh model \(without --load\)/
          .test(e.message),
    );
    for (const tokenizer of [[], ["--tokenizer", "gpt2"]]) {
      await assert.rejects(
        () => settle(["--init-from-hf", `${dir}/hf`, "--data-path", `${dir}/b.bin`, ...tokenizer]),
        /b\.bin was tokenized with the byte tokenizer .* reads gpt2 ids: .*--tokenizer gpt2; .*without --init-from-hf/,
      );
    }
    // Data of the model's own tokenizer passes.
    await settle(["--load", `${dir}/ck`, "--data-path", `${dir}/b.bin`]);
    await settle(["--init-from-hf", `${dir}/hf`, "--data-path", `${dir}/g.bin`]);
  });
});

Deno.test("the note of an adopted tokenizer is said once per node, not once per rank process", async () => {
  await withTempDir(async (dir) => {
    await writeGpt2Corpus(dir);
    // Three processes (the launcher and two ranks) printed it three times.
    const r = await runCli("cli/train.ts", [
      ...TINY_RUN_FLAGS,
      ...["--data-path", `${dir}/g.bin`, "--train-iters", "1", "--no-matmul-autotune"],
      ...["--nproc-per-node", "2", "--tp", "2", "--launcher", "procs", "--backend", "deno"],
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stderr.match(/tokenizer gpt2, as .*g\.bin\.json names it/g)?.length,
      1,
      r.stderr,
    );
  });
});

Deno.test("a .jsonl file holds one document per line (its text field), as Megatron's preprocessing reads", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/docs.jsonl`;
    await Deno.writeTextFile(
      path,
      [{ text: "First document." }, { text: "Second one.", id: 2 }].map((r) => JSON.stringify(r))
        .join("\n") + "\n",
    );
    const gpt2 = await createTokenizer("gpt2");
    const c = await loadTokens(gpt2, path);
    assert.deepEqual(all(c.ids), [
      ...gpt2.encode("First document."),
      50256,
      ...gpt2.encode("Second one."),
    ]);
    assert.equal(c.documents, 2);
    const byte = await createTokenizer("byte");
    assert.equal(
      byte.decode(all((await loadTokens(byte, path)).ids)),
      "First document.\n\nSecond one.",
    );
    await Deno.writeTextFile(path, '{"text": "ok"}\n{"body": "no text"}\n');
    await assert.rejects(() => loadTokens(gpt2, path), /docs\.jsonl: line 2 has no string "text"/);
  });
});

Deno.test("preprocess refuses an --output that would overwrite its input (exit 2), and writes beside it", async () => {
  await withTempDir(async (dir) => {
    const text = "hello world\n".repeat(20);
    await Deno.writeTextFile(`${dir}/in.txt`, text);
    await Deno.symlink(`${dir}/in.txt`, `${dir}/link.txt`);
    await Deno.mkdir(`${dir}/corpus/sub`, { recursive: true });
    await Deno.writeTextFile(`${dir}/corpus/sub/a.txt`, text);
    await Deno.writeTextFile(`${dir}/side.json`, text);
    const run = (input: string, output: string) =>
      preprocessMain(["--data-path", input, "--output", output]);
    assert.equal(await run(`${dir}/in.txt`, `${dir}/in.txt`), 2); // QA's case
    assert.equal(await run(`${dir}/in.txt`, `${dir}/./link.txt`), 2); // another spelling
    assert.equal(await run(`${dir}/link.txt`, `${dir}/in.txt`), 2);
    await Deno.writeTextFile(`${dir}/side.bin.json`, text);
    assert.equal(await run(`${dir}/side.bin.json`, `${dir}/side.bin`), 2); // the sidecar
    assert.equal(await run(`${dir}/corpus`, `${dir}/corpus/sub/new.bin`), 2); // not there yet
    assert.equal(await run(`${dir}/corpus/`, `${dir}/corpus/sub/a.txt`), 2);
    assert.equal(await Deno.readTextFile(`${dir}/in.txt`), text);
    assert.equal(await Deno.readTextFile(`${dir}/side.bin.json`), text);
    // A name without .bin would be read back as text: refused.
    assert.equal(await run(`${dir}/in.txt`, `${dir}/out.txt`), 2);
    await assert.rejects(() => Deno.stat(`${dir}/out.txt`), Deno.errors.NotFound);
    assert.equal(await Deno.readTextFile(`${dir}/corpus/sub/a.txt`), text);
    await assert.rejects(() => Deno.stat(`${dir}/corpus/sub/new.bin`), Deno.errors.NotFound);
    // Beside the input, or outside the folder, is fine.
    assert.equal(await run(`${dir}/in.txt`, `${dir}/in.bin`), 0);
    assert.equal(await run(`${dir}/corpus`, `${dir}/corpus.bin`), 0);
    assert.equal((await readTokenBin(`${dir}/corpus.bin`)).length, text.length);
  });
});

Deno.test("a .bin cut short, of another dtype, or a Megatron int32 dataset is refused; documents and bytes counted", async () => {
  await withTempDir(async (dir) => {
    const text = "hello world. ".repeat(100);
    await Deno.writeTextFile(`${dir}/in.txt`, text);
    const byte = await createTokenizer("byte");
    await preprocess(`${dir}/in.txt`, "byte", `${dir}/full.bin`);
    // Cut in half, the sidecar still says the whole count.
    const bytes = await Deno.readFile(`${dir}/full.bin`);
    await Deno.writeFile(`${dir}/cut.bin`, bytes.subarray(0, 600));
    await Deno.copyFile(`${dir}/full.bin.json`, `${dir}/cut.bin.json`);
    await assert.rejects(
      () => loadTokens(byte, `${dir}/cut.bin`),
      /cut\.bin holds 300 ids but its sidecar .*cut\.bin\.json says 1300: the file was cut short/,
    );
    const meta = JSON.parse(await Deno.readTextFile(`${dir}/full.bin.json`));
    await Deno.writeFile(`${dir}/wide.bin`, bytes);
    await Deno.writeTextFile(`${dir}/wide.bin.json`, JSON.stringify({ ...meta, dtype: "int32" }));
    await assert.rejects(() => loadTokens(byte, `${dir}/wide.bin`), /says the ids are int32/);
    // A Megatron dataset of one 4-id sequence, its ids int32 (type code 4).
    let idx = megatronIndex(4, [4], 4);
    await Deno.writeFile(
      `${dir}/meg.bin`,
      new Uint8Array(new Int32Array([72, 105, 33, 10]).buffer),
    );
    await Deno.writeFile(`${dir}/meg.idx`, idx);
    await assert.rejects(
      () => loadTokens(byte, `${dir}/meg.bin`),
      /meg\.bin: its Megatron index .*meg\.idx says the ids are int32/,
    );
    idx = megatronIndex(8, [3, 1], 2); // uint16: read as is
    await Deno.writeFile(`${dir}/meg.idx`, idx);
    await Deno.writeFile(
      `${dir}/meg.bin`,
      new Uint8Array(new Uint16Array([72, 105, 33, 10]).buffer),
    );
    assert.deepEqual(all((await loadTokens(byte, `${dir}/meg.bin`)).ids), [72, 105, 33, 10]);
    // Its .bin cut short (or replaced), and the index itself cut short, are refused.
    await Deno.writeFile(`${dir}/meg.bin`, new Uint8Array(new Uint16Array([72, 105, 33]).buffer));
    await assert.rejects(
      () => loadTokens(byte, `${dir}/meg.bin`),
      /meg\.bin holds 3 ids but its Megatron index .*meg\.idx says 4 \(2 sequences\): the \.bin was cut short or replaced/,
    );
    await Deno.writeFile(`${dir}/meg.idx`, idx.subarray(0, idx.length - 4));
    await assert.rejects(
      () => loadTokens(byte, `${dir}/meg.bin`),
      /meg\.bin: its Megatron index .*meg\.idx is cut short/,
    );
    await Deno.writeFile(`${dir}/meg.idx`, idx);
    // The index itself given as the data path trained on its header as text.
    for (const tok of [byte, await createTokenizer("gpt2")]) {
      await assert.rejects(
        () => loadTokens(tok, `${dir}/meg.idx`),
        /meg\.idx is the index of a Megatron indexed dataset, not text: pass the dataset's prefix \(.*meg, read as .*meg\.bin\) or its \.bin/,
      );
    }
    // A folder of three files is three documents; the byte tokenizer counts bytes.
    await Deno.mkdir(`${dir}/three`);
    for (const n of ["a", "b", "c"]) await Deno.writeTextFile(`${dir}/three/${n}.txt`, "é\n");
    const r = await preprocess(`${dir}/three`, "byte", `${dir}/three.bin`);
    assert.equal(r.documents, 3);
    assert.equal(r.unit, "bytes");
    // The files' own bytes; the blank lines set between them are tokens, not input.
    assert.equal(r.chars, 3 * 3);
    assert.equal(r.tokens, 3 * 3 + 2 * 2);
    // WordPiece sets [SEP] between documents (a blank line would vanish in its splitting).
    const wp = await preprocess(`${dir}/three`, "bert", `${dir}/three_wp.bin`);
    const ids = all((await loadTokens(await createTokenizer("bert"), `${dir}/three_wp.bin`)).ids);
    assert.equal(ids.filter((id) => id === 102).length, 2, `${ids}`);
    assert.equal(wp.chars, 3 * 2);
  });
});

Deno.test("a WordPiece .bin: the advice names a flag GPT training accepts; BERT refuses the .bin", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/in.txt`, "The whale swam. The ship sailed on.");
    const bin = `${dir}/wp.bin`;
    assert.equal(
      await preprocessMain([
        "--tokenizer",
        "bert",
        "--data-path",
        `${dir}/in.txt`,
        "--output",
        bin,
      ]),
      0,
    );
    let advice = "";
    const byte = await createTokenizer("byte");
    await assert.rejects(
      () => loadTokens(byte, bin),
      (e) => {
        advice = /: pass (--[\w-]+ \S+)$/.exec((e as Error).message)?.[1] ?? "";
        return e instanceof DataError && advice === "--tokenizer-type BertWordPieceLowerCase";
      },
    );
    // What it names is what train's parser takes (`--tokenizer bert` is refused), and reads the file.
    const flags = parseFlags(advice.split(" "), TRAIN_FLAGS);
    assert.equal(flags.tokenizer, "bert");
    const wp = await createTokenizer(flags.tokenizer as string);
    assert.equal((await loadTokens(wp, bin)).ids.length, (await Deno.stat(bin)).size / 2);
    // BERT reads text (loadText): a .bin is refused in one line, not decoded as UTF-8.
    await assert.rejects(
      () => loadText(bin),
      (e) => e instanceof DataError && /wp\.bin holds token ids, not text/.test(e.message),
    );
  });
});
