/**
 * Tokenizing a corpus a piece at a time, in memory that does not grow with it:
 * files are read in chunks of {@link CORPUS_CHUNK_BYTES}, each decoded and
 * tokenized on its own, and the ids handed to a sink as they come (preprocess
 * writes them to its `.bin`, `loadTokens` gathers them). A chunk of text ends
 * at a line feed or before a space between printable ASCII characters: a
 * boundary of every tokenizer here (GPT-2's pre-tokenizer, WordPiece's white
 * space, bytes) and of UTF-8 sequences, so the ids are those of the whole
 * text; a chunk of a `.jsonl` file ends at a line feed, so lines stay whole.
 * @module
 */

import { oneLine, readUpTo } from "../core/files.ts";
import { DataError } from "./errors.ts";
import { loadMobyDick } from "./moby_dick.ts";
import { documentEndId, type Tokenizer } from "./tokenizer.ts";
import { decodeUtf8Counted, invalidUtf8Warning } from "./utf8.ts";

/** Bytes read from a corpus file at a time. */
export const CORPUS_CHUNK_BYTES = 2 ** 20;

/**
 * The longest stretch of a file without a place to cut it (a line feed and
 * then a printable ASCII character) that is read as one piece: a JavaScript
 * string holds at most 2^29 − 24 characters, so a longer one could not be
 * decoded at all.
 */
export const MAX_UNCUT_BYTES = 2 ** 28;

/** A file's bytes as {@link tokenizeCorpus} reads them. */
export interface CorpusFile {
  /** The path, for messages. */
  path: string;
  /** Whether its lines are JSON documents (a `.jsonl` file). */
  jsonLines: boolean;
}

/** What {@link tokenizeCorpus} read and wrote. */
export interface TokenizedCorpus {
  /** Ids handed to the sink, separators included. */
  tokens: number;
  /** Documents tokenized (blank ones skipped). */
  documents: number;
  /** Characters of the documents' text (UTF-16 code units), or bytes (see `unit`). */
  chars: number;
  /** What `chars` counts: a byte-level tokenizer reads a file's raw bytes. */
  unit: "characters" | "bytes";
}

/** How {@link tokenizeCorpus} reads. */
export interface TokenizeOptions {
  /** Receives warnings (bytes that are not UTF-8), one line each. */
  warn: (msg: string) => void;
  /** `(bytes read, bytes in all)`, as the files are read. */
  progress?: (done: number, total: number) => void;
  /** Bytes read at a time (default {@link CORPUS_CHUNK_BYTES}; tests use less). */
  chunkBytes?: number;
  /** See {@link MAX_UNCUT_BYTES} (its default; tests use less). */
  maxUncutBytes?: number;
}

/** A printable ASCII character other than the space. */
function printable(b: number): boolean {
  return b > 32 && b < 127;
}

/**
 * Whether a piece may end before `bytes[i]`. In a `.jsonl` file: at the start
 * of a line that begins with a printable character. In text: after a line feed
 * between two printable characters, or before a space between two (GPT-2's
 * pre-tokenizer ends a piece there in the whole text too: a line feed there is
 * a piece of its own, a space starts the word after it; WordPiece splits there).
 */
function cutsAt(bytes: Uint8Array, i: number, jsonLines: boolean): boolean {
  if (jsonLines) return bytes[i - 1] === 10 && printable(bytes[i]);
  return printable(bytes[i]) && bytes[i - 1] === 10 && printable(bytes[i - 2]) ||
    bytes[i] === 32 && printable(bytes[i - 1]) && printable(bytes[i + 1]);
}

/**
 * A file's bytes in pieces of about `chunkBytes`, each (but the last) cut
 * where every tokenizer here cuts too (`cutsAt`; in a `.jsonl` file, at the
 * start of a line); `onRead` counts the bytes read.
 */
export async function* filePieces(
  path: string,
  jsonLines: boolean,
  chunkBytes: number,
  maxUncut: number,
  onRead: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DataError(`data path ${JSON.stringify(path)} does not exist`);
    }
    throw new DataError(`${path}: ${oneLine((e as Error).message)}`);
  }
  using _ = file;
  // Bytes read but not yet handed on, and the last position among them already
  // found to be no place to cut (a long stretch without one is read in growing
  // chunks, and each byte is looked at once).
  let held = new Uint8Array(0);
  let searched = 1;
  for (;;) {
    const buf = new Uint8Array(held.length + Math.max(chunkBytes, held.length));
    buf.set(held);
    const n = await readUpTo(file, buf.subarray(held.length));
    onRead(n);
    const end = held.length + n;
    if (end < buf.length) { // the file ended
      if (end > 0) yield buf.subarray(0, end);
      return;
    }
    let cut = end - 2; // the space rule looks one byte past the cut
    while (cut > searched && !cutsAt(buf, cut, jsonLines)) cut--;
    if (cut <= searched) {
      if (end > maxUncut) {
        throw new DataError(
          `${path}: ${end} bytes without a place to cut them (a line feed or space between ` +
            `printable characters${jsonLines ? "; a line feed, in a .jsonl file" : ""}), ` +
            `more than can be read as one piece (${maxUncut} bytes): break the text into lines`,
        );
      }
      held = buf.subarray(0, end);
      searched = end - 2;
      continue;
    }
    yield buf.subarray(0, cut);
    held = buf.slice(cut, end);
    searched = 1;
  }
}

/** ASCII white space only (a byte-level file that holds nothing else is skipped). */
export function blankBytes(bytes: Uint8Array): boolean {
  for (const b of bytes) if (!(b === 32 || (b >= 9 && b <= 13))) return false;
  return true;
}

/** The separator of the byte-level and separator-less paths: a blank line. */
const BLANK_LINE = "\n\n";

/**
 * Tokenizes the documents of `files` (or the default book when `files` is
 * null) with `tokenizer`, handing the ids to `sink` in order, a piece at a
 * time: what `loadTokens` documents (each document encoded on its own and
 * separated by the tokenizer's end-of-text id or document separator, or by a
 * blank line without either; a byte-level tokenizer given a file's raw bytes;
 * blank documents skipped), without holding the corpus. Refuses a `.jsonl`
 * line that is not a JSON object with a string `text` field, naming its line.
 */
export async function tokenizeCorpus(
  tokenizer: Tokenizer,
  files: CorpusFile[] | null,
  sink: (ids: ArrayLike<number>) => void | Promise<void>,
  opts: TokenizeOptions,
): Promise<TokenizedCorpus> {
  const chunkBytes = opts.chunkBytes ?? CORPUS_CHUNK_BYTES;
  const maxUncut = opts.maxUncutBytes ?? MAX_UNCUT_BYTES;
  const end = documentEndId(tokenizer);
  const separator: ArrayLike<number> = end !== undefined ? [end] : tokenizer.encode(BLANK_LINE);
  let tokens = 0, documents = 0, chars = 0;
  const emit = async (ids: ArrayLike<number>) => {
    if (ids.length === 0) return;
    tokens += ids.length;
    await sink(ids);
  };
  /** Starts a document: the separator before every one but the first. */
  const startDocument = async () => {
    if (documents++ > 0) await emit(separator);
  };

  if (files === null) {
    const text = await loadMobyDick();
    await startDocument();
    chars = text.length;
    await emit(tokenizer.encode(text));
    return { tokens, documents, chars, unit: "characters" };
  }

  let total = 0;
  for (const f of files) total += (await Deno.stat(f.path)).size;
  let read = 0;
  const onRead = (n: number) => {
    read += n;
    opts.progress?.(read, total);
  };
  const bytesOf = tokenizer.encodeBytes?.bind(tokenizer);
  const byteLevel = bytesOf !== undefined && !files.some((f) => f.jsonLines);

  for (const f of files) {
    const bad = { invalidBytes: 0, replacements: 0 };
    let line = 0;
    // A file is one document, opened by its first piece that is not blank. Only a
    // file's last piece can be blank (every other ends beside a printable
    // character), so a blank piece before the document opens is a blank file.
    let open = false;
    for await (const bytes of filePieces(f.path, f.jsonLines, chunkBytes, maxUncut, onRead)) {
      if (byteLevel) {
        if (!open && blankBytes(bytes)) continue;
        if (!open) await startDocument();
        open = true;
        chars += bytes.length;
        await emit(bytesOf!(bytes));
        continue;
      }
      // A byte-order mark is dropped where a piece starts: only a file's first
      // can start with one (every other starts with a printable character or a space).
      const decoded = decodeUtf8Counted(bytes);
      bad.invalidBytes += decoded.invalidBytes;
      bad.replacements += decoded.replacements;
      const text = decoded.text;
      if (f.jsonLines) {
        for (const l of text.split("\n")) {
          line++;
          const doc = jsonLineDocument(l, f.path, line);
          if (doc === null) continue;
          await startDocument();
          chars += doc.length;
          await emit(tokenizer.encode(doc));
        }
        // A piece ends just after a line feed: its last "line" is empty, not a line.
        if (text.endsWith("\n")) line--;
        continue;
      }
      if (!open && text.trim() === "") continue;
      if (!open) await startDocument();
      open = true;
      chars += text.length;
      await emit(tokenizer.encode(text));
    }
    const w = invalidUtf8Warning(f.path, { text: "", ...bad });
    if (w) opts.warn(w);
  }
  return { tokens, documents, chars, unit: byteLevel ? "bytes" : "characters" };
}

/**
 * One line of a `.jsonl` file as Megatron's `preprocess_data.py` reads it: its
 * `text` field, or null for a blank line or a blank document.
 */
export function jsonLineDocument(line: string, source: string, lineNumber: number): string | null {
  const r = jsonLine(line, source, lineNumber);
  if (r === undefined) return null;
  const v = (r as Record<string, unknown> | null)?.text;
  if (typeof v !== "string") {
    throw new DataError(`${source}: line ${lineNumber} has no string "text" field`);
  }
  return v.trim() ? v : null;
}

/**
 * One line of a `.jsonl` file parsed, or undefined for a blank line; a line
 * that is not JSON is refused, naming it (`lineNumber` of `source`).
 */
export function jsonLine(line: string, source: string, lineNumber: number): unknown {
  if (!line.trim()) return undefined;
  try {
    return JSON.parse(line);
  } catch {
    throw new DataError(`${source}: line ${lineNumber} is not JSON`);
  }
}
