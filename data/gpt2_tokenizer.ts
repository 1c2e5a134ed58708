/**
 * GPT-2's byte-pair encoding. Importing this module loads npm `gpt-tokenizer`
 * (its tables, ~30 ms): {@link createTokenizer} and the Megatron vocabulary
 * check import it only when asked for GPT-2.
 * @module
 */

import { importGpt2Ranks } from "../deps/gpt_tokenizer.ts";
import { BytePairEncoder } from "./gpt2_bpe.ts";
import { GPT2_EOS_ID, GPT2_VOCAB_SIZE } from "./gpt2_vocab.ts";
import type { Tokenizer } from "./tokenizer.ts";

const { default: ranks } = await importGpt2Ranks();

/** Each id's bytes, built at the first decode. */
let tokenBytes: Uint8Array[] | null = null;

function bytesOf(): Uint8Array[] {
  if (tokenBytes) return tokenBytes;
  const utf8 = new TextEncoder();
  tokenBytes = ranks.map((t) => typeof t === "string" ? utf8.encode(t) : new Uint8Array(t));
  tokenBytes[GPT2_EOS_ID] = utf8.encode("<|endoftext|>");
  return tokenBytes;
}

/**
 * The text of GPT-2 ids: their bytes joined, then decoded as UTF-8 in one go,
 * each call on its own (an incomplete character at the end is U+FFFD, as the
 * byte tokenizer's). gpt-tokenizer's own `decode` shares one streaming decoder
 * between calls, so a character split over tokens could move or leak into the
 * next call's text.
 */
function decodeGpt2(ids: ArrayLike<number>): string {
  const table = bytesOf();
  const parts: Uint8Array[] = [];
  let length = 0;
  for (let i = 0; i < ids.length; i++) {
    const part = table[ids[i]];
    if (part === undefined) {
      throw new RangeError(
        `GPT-2 has no token ${ids[i]} (its ids are 0 to ${GPT2_VOCAB_SIZE - 1})`,
      );
    }
    parts.push(part);
    length += part.length;
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
}

/** The encoder, built at the first encode. */
let encoder: BytePairEncoder | null = null;

/**
 * GPT-2 byte-pair-encoding tokenizer: GPT-2's tokens (the r50k_base table
 * shipped by npm `gpt-tokenizer`) merged by {@link BytePairEncoder}. Text is
 * encoded literally: a `<|endoftext|>` written in the text is not turned into
 * the eos id.
 */
export function gpt2Tokenizer(): Tokenizer {
  return {
    name: "gpt2",
    vocabSize: GPT2_VOCAB_SIZE,
    eosId: GPT2_EOS_ID,
    encode: (text: string): number[] => {
      encoder ??= new BytePairEncoder(bytesOf().map((t, id) => id === GPT2_EOS_ID ? null : t));
      return encoder.encode(text);
    },
    decode: decodeGpt2,
  };
}

/**
 * GPT-2's map from the characters of its `vocab.json` and `merges.txt` to
 * bytes (the inverse of its `bytes_to_unicode`): the printable bytes 33–126,
 * 161–172 and 174–255 stand for themselves, the other 68 for U+0100 onwards,
 * in byte order.
 */
function gpt2FileBytes(): Map<string, number> {
  const printable = (b: number) =>
    (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out = new Map<string, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) out.set(String.fromCodePoint(printable(b) ? b : next++), b);
  return out;
}

/** Whether `a` and `b` hold the same bytes. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Where a GPT-2 `vocab.json` and `merges.txt` (Megatron's `--vocab-file` and
 * `--merge-file`) differ from the GPT-2 vocabulary built in here: null when the
 * vocabulary maps the same 50,257 tokens to the same ids and the merges, in
 * order, make tokens 256, 257, … (the check tiktoken makes of GPT-2's own
 * files: its BPE ranks a merge by the token it makes); otherwise the first
 * difference, in words.
 */
export function gpt2FilesDiffer(vocabJson: string, mergesText: string): string | null {
  const table = bytesOf();
  const byteOf = gpt2FileBytes();
  const bytesOfText = (text: string): Uint8Array | null => {
    const out: number[] = [];
    for (const ch of text) {
      const b = byteOf.get(ch);
      if (b === undefined) return null;
      out.push(b);
    }
    return Uint8Array.from(out);
  };
  const shown = (id: number) => JSON.stringify(decodeGpt2([id]));
  let vocab: unknown;
  try {
    vocab = JSON.parse(vocabJson);
  } catch (e) {
    return `the vocabulary is not JSON (${(e as Error).message.replace(/\s*\n\s*/g, " ")})`;
  }
  if (vocab === null || typeof vocab !== "object" || Array.isArray(vocab)) {
    return "the vocabulary is not a JSON object of tokens and their ids";
  }
  const entries = Object.entries(vocab);
  if (entries.length !== GPT2_VOCAB_SIZE) {
    return `the vocabulary has ${entries.length} token${
      entries.length === 1 ? "" : "s"
    }, GPT-2's ${GPT2_VOCAB_SIZE}`;
  }
  for (const [token, id] of entries) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= GPT2_VOCAB_SIZE) {
      return `token ${JSON.stringify(token)} has id ${JSON.stringify(id)}`;
    }
    const same = id === GPT2_EOS_ID
      ? token === "<|endoftext|>"
      : (bytesOfText(token) ?? new Uint8Array()).length > 0 &&
        sameBytes(bytesOfText(token)!, table[id]);
    if (!same) return `token ${JSON.stringify(token)} has id ${id}, GPT-2's ${shown(id)}`;
  }
  const lines = mergesText.split(/\r?\n/);
  const first = lines[0]?.startsWith("#version") ? 1 : 0;
  while (lines.length > first && lines[lines.length - 1] === "") lines.pop();
  const merges = lines.slice(first);
  const want = GPT2_VOCAB_SIZE - 257;
  if (merges.length !== want) return `the merges file has ${merges.length} merges, GPT-2's ${want}`;
  for (let i = 0; i < merges.length; i++) {
    const pair = merges[i].split(" ");
    const a = pair.length === 2 ? bytesOfText(pair[0]) : null;
    const b = pair.length === 2 ? bytesOfText(pair[1]) : null;
    const id = 256 + i;
    if (!a || !b || !sameBytes(Uint8Array.from([...a, ...b]), table[id])) {
      return `merge ${i + 1} (line ${i + 1 + first}: ${JSON.stringify(merges[i])}) does not ` +
        `make GPT-2's token ${id} (${shown(id)})`;
    }
  }
  return null;
}
