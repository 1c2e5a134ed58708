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
import { writeTokenBinFrom } from "./token_bin.ts";
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
  /** The JSON key whose value is the document (Megatron's `--json-keys`, one of them). */
  key: string;
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
 * The sentences of one line of a `.jsonl` file: the value of `key`, a string
 * or a list of strings; null for a blank line. Refused, naming the line: a
 * line that is not a JSON object, or whose `key` is missing or holds anything
 * else.
 */
export function megatronDocument(
  line: string,
  key: string,
  source: string,
  lineNumber: number,
): string[] | null {
  const r = jsonLine(line, source, lineNumber);
  if (r === undefined) return null;
  const v = r !== null && typeof r === "object" ? (r as Record<string, unknown>)[key] : undefined;
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

/**
 * Tokenizes the documents of the `.jsonl` file `input` as Megatron's
 * `preprocess_data.py` does (see the module) and writes `prefix.bin`, its
 * sidecar `prefix.bin.json` (the tokenizer, as `preprocess --output` writes)
 * and `prefix.idx`. The file is read a piece at a time; each file is written
 * beside its name and renamed to it, so a failed run leaves the old files.
 */
export async function writeMegatronDataset(
  tokenizer: Tokenizer,
  input: string,
  prefix: string,
  opts: MegatronDatasetOptions,
): Promise<MegatronDatasetResult> {
  if (opts.appendEod && opts.eod === undefined) {
    throw new DataError(`the ${tokenizer.name} tokenizer has no end-of-document id to append`);
  }
  // Megatron's sequences: one per non-empty sentence (a string value is one sentence).
  const sequences = new Int32List(), documentEnds = new Int32List();
  let emptyDocuments = 0, chars = 0;
  const total = (await Deno.stat(input)).size;
  let read = 0;
  const { tokens } = await writeTokenBinFrom(`${prefix}.bin`, async (write) => {
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
      const lines = decoded.text.split("\n");
      // A piece ends just after a line feed: its last "line" is empty, not a line.
      if (decoded.text.endsWith("\n")) lines.pop();
      for (const l of lines) {
        const sentences = megatronDocument(l, opts.key, input, ++line);
        if (sentences === null) continue;
        const ids: number[] = [];
        for (const s of sentences) {
          chars += s.length;
          const encoded = tokenizer.encode(s);
          if (encoded.length === 0) continue;
          for (const id of encoded) ids.push(id);
          sequences.push(encoded.length);
        }
        if (ids.length > 0 && opts.appendEod) {
          ids.push(opts.eod!);
          sequences.addToLast(1);
        }
        if (ids.length === 0) emptyDocuments++;
        documentEnds.push(sequences.length);
        if (ids.length > 0) await write(ids);
      }
    }
    const w = invalidUtf8Warning(input, { text: "", ...bad });
    if (w) opts.warn(w);
    if (documentEnds.length === 0) throw new DataError(`${input}: no documents`);
  }, () => ({
    tokenizer: tokenizer.name,
    vocab_size: tokenizer.vocabSize,
    ...(tokenizer.eosId !== undefined ? { eos_id: tokenizer.eosId } : {}),
    documents: documentEnds.length,
  }));
  const idx = `${prefix}.idx`, partial = `${idx}.partial-${Deno.pid}`;
  try {
    await Deno.writeFile(partial, megatronIndex(sequences.view(), documentEnds.view()));
    await Deno.rename(partial, idx);
  } catch (e) {
    await Deno.remove(partial).catch(() => {});
    throw new DataError(`${idx}: ${oneLine((e as Error).message)}`);
  }
  return { tokens, documents: documentEnds.length, emptyDocuments, chars };
}
