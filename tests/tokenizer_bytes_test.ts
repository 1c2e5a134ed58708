/**
 * Bytes that are not UTF-8 (issue #11, part 9): the byte tokenizer takes files as
 * raw bytes (one token per byte, whatever the encoding), prompts as their UTF-8
 * bytes; text tokenizers (GPT-2 BPE, WordPiece) get the text with U+FFFD in place
 * of invalid sequences and a warning naming the file and the count of bytes
 * replaced.
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { join } from "node:path";
import { loadBytes, loadText, loadTokens } from "../data/corpus.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import { countInvalidUtf8, decodeUtf8Counted } from "../data/utf8.ts";
import { prng } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

/** 7,200 bytes of Latin-1 text: "café " with é as the single byte 0xE9, repeated. */
function latin1(): Uint8Array {
  const unit = [0x63, 0x61, 0x66, 0xe9, 0x20]; // c a f é ␠
  return Uint8Array.from({ length: 7200 }, (_, i) => unit[i % unit.length]);
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  await using temp = await tempDir({ prefix: "tokenizer_bytes_" });
  const dir = temp.path;
  await fn(dir);
}

Deno.test("byte tokenizer on a Latin-1 file: exactly one token per byte, the bytes themselves", async () => {
  await withDir(async (dir) => {
    const bytes = latin1();
    await Deno.writeFile(join(dir, "corpus.txt"), bytes);
    const warnings: string[] = [];
    const byte = await createTokenizer("byte");
    const c = await loadTokens(byte, join(dir, "corpus.txt"), { warn: (m) => warnings.push(m) });
    equal(c.ids.length, 7200);
    deepStrictEqual(Array.from(c.ids.read(0, c.ids.length)), Array.from(bytes));
    equal(c.chars, 7200);
    deepStrictEqual(warnings, [], "raw bytes need no warning");
    // a folder: files joined by a blank line, bytes untouched
    await Deno.mkdir(join(dir, "folder"));
    await Deno.writeFile(join(dir, "folder", "a.txt"), new Uint8Array([0xe9, 0xff]));
    await Deno.writeFile(join(dir, "folder", "b.txt"), new Uint8Array([0x80]));
    await Deno.writeFile(join(dir, "folder", "c.txt"), new Uint8Array([0x20, 0x0a]));
    const f = await loadTokens(byte, join(dir, "folder"));
    deepStrictEqual(Array.from(f.ids.read(0, f.ids.length)), [0xe9, 0xff, 10, 10, 0x80]);
    deepStrictEqual(
      await loadBytes(join(dir, "folder")),
      new Uint8Array([0xe9, 0xff, 10, 10, 0x80]),
    );
  });
});

Deno.test("byte tokenizer on a prompt (a JS string) takes its UTF-8 bytes", async () => {
  const byte = await createTokenizer("byte");
  deepStrictEqual(Array.from(byte.encode("café")), [0x63, 0x61, 0x66, 0xc3, 0xa9]);
  equal(byte.decode(byte.encode("café")), "café");
});

Deno.test("GPT-2 tokenizer on invalid UTF-8 warns with the file and the count", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "corpus.txt");
    await Deno.writeFile(path, latin1());
    const warnings: string[] = [];
    const gpt2 = await createTokenizer("gpt2");
    const c = await loadTokens(gpt2, path, { warn: (m) => warnings.push(m) });
    deepStrictEqual(warnings, [
      `${path}: 1440 bytes are not valid UTF-8 and were replaced by U+FFFD ` +
      `(1440 replacement characters)`,
    ]);
    ok(c.ids.length > 0);
    // valid UTF-8 gives no warning
    await Deno.writeTextFile(path, "café ".repeat(10));
    warnings.length = 0;
    await loadTokens(gpt2, path, { warn: (m) => warnings.push(m) });
    deepStrictEqual(warnings, []);
  });
});

Deno.test("the default warning is one `warning:` line on stderr; folders warn per file", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(join(dir, "docs"));
    await Deno.writeFile(join(dir, "docs", "a.txt"), new Uint8Array([0x61, 0xe9, 0x62]));
    await Deno.writeTextFile(join(dir, "docs", "b.txt"), "fine");
    await Deno.writeFile(join(dir, "docs", "c.md"), new Uint8Array([0xf0, 0x9f, 0x98, 0x21]));
    const lines: string[] = [];
    const orig = console.error;
    console.error = (...a: unknown[]) => lines.push(a.join(" "));
    let text: string;
    try {
      text = await loadText(join(dir, "docs")); // the WordPiece (BERT) path reads text this way
    } finally {
      console.error = orig;
    }
    equal(text, "a\uFFFDb\n\n\nfine\n\n\n\uFFFD!");
    deepStrictEqual(lines, [
      `warning: ${join(dir, "docs", "a.txt")}: 1 byte is not valid UTF-8 and was replaced by ` +
      `U+FFFD (1 replacement character)`,
      `warning: ${join(dir, "docs", "c.md")}: 3 bytes are not valid UTF-8 and were replaced by ` +
      `U+FFFD (1 replacement character)`,
    ]);
  });
});

Deno.test("the invalid-byte count agrees with TextDecoder on random and edge-case bytes", () => {
  const rnd = prng(11);
  const edge = [0x41, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef];
  edge.push(0xf0, 0xf4, 0xf5, 0xff);
  const enc = new TextEncoder();
  for (let t = 0; t < 5000; t++) {
    const n = Math.floor(rnd() * 12);
    const b = Uint8Array.from(
      { length: n },
      () => rnd() < 0.6 ? edge[Math.floor(rnd() * edge.length)] : Math.floor(rnd() * 256),
    );
    if (b.join().includes("239,191,189")) continue; // a literal U+FFFD would be miscounted here
    const d = decodeUtf8Counted(b);
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(b);
    const fffd = [...text].filter((ch) => ch === "\uFFFD").length;
    const kept = enc.encode(text.replaceAll("\uFFFD", "")).length;
    deepStrictEqual(countInvalidUtf8(b), { invalidBytes: n - kept, replacements: fffd }, `${b}`);
    equal(d.invalidBytes, n - kept);
  }
  // a literal U+FFFD in valid input is not counted
  deepStrictEqual(decodeUtf8Counted(enc.encode("a\uFFFDb")).invalidBytes, 0);
  // a truncated 4-byte sequence at the end is one replacement of 3 bytes
  deepStrictEqual(countInvalidUtf8(new Uint8Array([0x61, 0xf0, 0x9f, 0x98])), {
    invalidBytes: 3,
    replacements: 1,
  });
});
