/**
 * Writing Megatron's indexed dataset, as its `tools/preprocess_data.py` does
 * without `--split-sentences`: each line of a `.jsonl` file is a document, the
 * value of one key (a string, or a list of strings tokenized one after the
 * other), its ids ended by the end-of-document id with `--append-eod` and
 * joined to the next with nothing between otherwise; `PREFIX.bin` holds the
 * ids (uint16, the type Megatron picks for a vocabulary under 65,500) and
 * `PREFIX.idx` the index ("MMIDIDX" version 1: the dtype code, the sequence
 * and document counts, each sequence's length (int32) and byte offset (int64),
 * and the document indices (int64); one sequence per non-empty string).
 * @module
 */

import { oneLine } from "../core/files.ts";
import { CORPUS_CHUNK_BYTES, filePieces, jsonLine, MAX_UNCUT_BYTES } from "./corpus_stream.ts";
import { DataError } from "./errors.ts";
import { tokenBinMetaOf, writeTokenBinFrom } from "./token_bin.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { decodeUtf8Counted, invalidUtf8Warning } from "./utf8.ts";

/** Megatron's code for uint16 ids in an index header (`DType.uint16`). */
const UINT16_CODE = 8;

/** What {@link writeMegatronDataset} wrote. */
export interface MegatronDatasetResult {
  /** Ids written (end-of-document ids included). */
  tokens: number;
  /** Documents (lines), empty ones included, as Megatron counts them. */
  documents: number;
  /** Documents that tokenized to nothing (in the index, without a sequence). */
  emptyDocuments: number;
  /** Characters of text tokenized (UTF-16 code units). */
  chars: number;
}

/** How {@link writeMegatronDataset} reads and writes. */
export interface MegatronDatasetOptions {
  /** End each document with `eod` (Megatron's `--append-eod`). */
  appendEod: boolean;
  /** The end-of-document id (GPT-2's `<|endoftext|>`); required with `appendEod`. */
  eod?: number;
  /** Receives warnings (bytes that are not UTF-8), one line each. */
  warn: (msg: string) => void;
  /** `(bytes read, bytes in all)`, as the file is read. */
  progress?: (done: number, total: number) => void;
}

/**
 * The sentences of one parsed line of a JSON-lines file: the value of `key`,
 * a string or a list of strings. Refused, naming the line: a line that is not
 * a JSON object, or whose `key` is missing or holds anything else.
 */
export function megatronDocument(
  record: unknown,
  key: string,
  source: string,
  lineNumber: number,
): string[] {
  const v = record !== null && typeof record === "object"
    ? (record as Record<string, unknown>)[key]
    : undefined;
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v as string[];
  throw new DataError(
    `${source}: line ${lineNumber} has no ${JSON.stringify(key)} field holding a string or a ` +
      "list of strings",
  );
}

/**
 * The bytes of a Megatron index of uint16 ids: `sequences` holds each
 * sequence's length in ids, `documents` where each document ends (the count of
 * sequences before its end; a document without sequences repeats the count).
 */
export function megatronIndex(
  sequences: ArrayLike<number>,
  documents: ArrayLike<number>,
): Uint8Array {
  const n = sequences.length, docs = documents.length + 1;
  const bytes = new Uint8Array(34 + 12 * n + 8 * docs);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode("MMIDIDX\x00\x00"), 0);
  view.setBigUint64(9, 1n, true);
  view.setUint8(17, UINT16_CODE);
  view.setBigUint64(18, BigInt(n), true);
  view.setBigUint64(26, BigInt(docs), true);
  const pointersAt = 34 + 4 * n, docsAt = pointersAt + 8 * n;
  let pointer = 0;
  for (let i = 0; i < n; i++) {
    view.setInt32(34 + 4 * i, sequences[i], true);
    view.setBigInt64(pointersAt + 8 * i, BigInt(pointer), true);
    pointer += 2 * sequences[i];
  }
  view.setBigInt64(docsAt, 0n, true);
  for (let d = 0; d < documents.length; d++) {
    view.setBigInt64(docsAt + 8 * (d + 1), BigInt(documents[d]), true);
  }
  return bytes;
}

/** A growable list of int32 values. */
class Int32List {
  #values = new Int32Array(1024);
  /** Values in the list. */
  length = 0;

  /** Adds `v` at the end. */
  push(v: number): void {
    if (this.length === this.#values.length) {
      const grown = new Int32Array(2 * this.length);
      grown.set(this.#values);
      this.#values = grown;
    }
    this.#values[this.length++] = v;
  }

  /** Adds `v` to the last value. */
  addToLast(v: number): void {
    this.#values[this.length - 1] += v;
  }

  /** The values, a view. */
  view(): Int32Array {
    return this.#values.subarray(0, this.length);
  }
}

/** One key's dataset as it is written. */
class KeyDataset {
  /** Megatron's sequences: one per non-empty string of a document. */
  readonly sequences = new Int32List();
  /** Sequences before each document's end (the document index, past its leading 0). */
  readonly documentEnds = new Int32List();
  emptyDocuments = 0;
  chars = 0;
  /** Ids written. */
  tokens = 0;
}

/**
 * Tokenizes the documents of the JSON-lines file `input` as Megatron's
 * `preprocess_data.py` does (see the module), each line read once for every
 * key of `outputs` (key → prefix), and writes for each `PREFIX.bin`, its
 * sidecar `PREFIX.bin.json` (the tokenizer, as `preprocess --output` writes)
 * and `PREFIX.idx`. The file is read a piece at a time; every file is written
 * beside its name and renamed to it once all are written, so a failed run
 * leaves the old files as they were. A line ends at a line feed, a carriage
 * return or both, as Python reads a text file.
 */
export async function writeMegatronDataset(
  tokenizer: Tokenizer,
  input: string,
  outputs: ReadonlyMap<string, string>,
  opts: MegatronDatasetOptions,
): Promise<Map<string, MegatronDatasetResult>> {
  if (opts.appendEod && opts.eod === undefined) {
    throw new DataError(`the ${tokenizer.name} tokenizer has no end-of-document id to append`);
  }
  const keys = [...outputs.keys()];
  const data = new Map(keys.map((k) => [k, new KeyDataset()]));
  const idx = keys.map((k) => `${outputs.get(k)}.idx`);
  const partials = idx.map((p) => `${p}.partial-${Deno.pid}`);
  let total: number;
  try {
    const info = await Deno.stat(input);
    if (!info.isFile) throw new DataError(`${input}: not a regular file`);
    total = info.size;
  } catch (e) {
    if (e instanceof DataError) throw e;
    if (e instanceof Deno.errors.NotFound) throw new DataError(`${input}: no such file`);
    throw new DataError(`${input}: ${oneLine((e as Error).message)}`);
  }
  let read = 0;
  // Every key's .bin is written through its own writer, nested so that each is
  // renamed only after the reading pass and every index are written.
  const writeKeys = async (
    k: number,
    writes: ((ids: ArrayLike<number>) => Promise<void>)[],
  ): Promise<void> => {
    if (k < keys.length) {
      const r = await writeTokenBinFrom(
        `${outputs.get(keys[k])}.bin`,
        (write) => writeKeys(k + 1, [...writes, write]),
        () => tokenBinMetaOf(tokenizer, data.get(keys[k])!.documentEnds.length),
      );
      data.get(keys[k])!.tokens = r.tokens;
      return;
    }
    const bad = { invalidBytes: 0, replacements: 0 };
    let line = 0;
    const pieces = filePieces(input, true, CORPUS_CHUNK_BYTES, MAX_UNCUT_BYTES, (n) => {
      read += n;
      opts.progress?.(read, total);
    });
    for await (const bytes of pieces) {
      const decoded = decodeUtf8Counted(bytes);
      bad.invalidBytes += decoded.invalidBytes;
      bad.replacements += decoded.replacements;
      const lines = decoded.text.split(/\r\n|\r|\n/);
      // A piece ends just after a line end: its last "line" is empty, not a line.
      if (/[\r\n]$/.test(decoded.text)) lines.pop();
      for (const l of lines) {
        const record = jsonLine(l, input, ++line);
        if (record === undefined) continue; // a blank line
        for (const [k, key] of keys.entries()) {
          const sentences = megatronDocument(record, key, input, line);
          const ids = addDocument(data.get(key)!, sentences, tokenizer, opts);
          if (ids.length > 0) await writes[k](ids);
        }
      }
    }
    const w = invalidUtf8Warning(input, { text: "", ...bad });
    if (w) opts.warn(w);
    if (data.get(keys[0])!.documentEnds.length === 0) {
      throw new DataError(`${input}: no documents`);
    }
    // The indices beside their names before any .bin replaces its old one.
    for (const [k, key] of keys.entries()) {
      const d = data.get(key)!;
      try {
        await Deno.writeFile(partials[k], megatronIndex(d.sequences.view(), d.documentEnds.view()));
      } catch (e) {
        throw new DataError(`${idx[k]}: ${oneLine((e as Error).message)}`);
      }
    }
  };
  try {
    await writeKeys(0, []);
    for (const [k, p] of partials.entries()) await Deno.rename(p, idx[k]);
  } finally {
    for (const p of partials) await Deno.remove(p).catch(() => {});
  }
  return new Map(keys.map((key) => {
    const d = data.get(key)!;
    return [key, {
      tokens: d.tokens,
      documents: d.documentEnds.length,
      emptyDocuments: d.emptyDocuments,
      chars: d.chars,
    }];
  }));
}

/**
 * Adds one document of `sentences` to `d`'s index, as Megatron's
 * `Encoder.encode` makes it, and returns its ids.
 */
function addDocument(
  d: KeyDataset,
  sentences: string[],
  tokenizer: Tokenizer,
  opts: MegatronDatasetOptions,
): number[] {
  const ids: number[] = [];
  for (const s of sentences) {
    d.chars += s.length;
    const encoded = tokenizer.encode(s);
    if (encoded.length === 0) continue;
    for (const id of encoded) ids.push(id);
    d.sequences.push(encoded.length);
  }
  if (ids.length > 0 && opts.appendEod) {
    ids.push(opts.eod!);
    d.sequences.addToLast(1);
  }
  if (ids.length === 0) d.emptyDocuments++;
  d.documentEnds.push(d.sequences.length);
  return ids;
}
