/**
 * Loading a training corpus: the default book, a user's text file or folder, or a `.bin` of
 * pre-tokenized ids; and the train/validation split.
 * @module
 */

import { oneLine, readUpTo } from "../core/files.ts";
import { DataError } from "./errors.ts";
import { loadMobyDick } from "./moby_dick.ts";
import {
  checkIdsInVocab,
  checkTokenBinTokenizer,
  isMegatronIndexHeader,
  isTokenBinPath,
  MAX_BIN_VOCAB,
  megatronDocumentStarts,
  openTokenBin,
  readTokenBinMeta,
} from "./token_bin.ts";
import { MemoryTokenStream, type TokenStream } from "./token_stream.ts";
import {
  blankBytes,
  type CorpusFile,
  jsonLineDocument,
  tokenizeCorpus,
  type TokenizedCorpus,
} from "./corpus_stream.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { type DecodedText, decodeUtf8Counted, invalidUtf8Warning } from "./utf8.ts";

/** File extensions read from a folder given as `--data-path`. */
export const TEXT_EXTENSIONS = [".txt", ".md"] as const;

/** Where the default corpus lies, relative to the project's root. */
export const DEFAULT_CORPUS_PATH = "data/assets/moby_dick.txt";

/** Name of the default corpus in messages. */
export const DEFAULT_CORPUS_NAME = `Moby Dick (${DEFAULT_CORPUS_PATH})`;

async function statOrThrow(path: string): Promise<Deno.FileInfo> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DataError(`data path ${JSON.stringify(path)} does not exist`);
    }
    throw e;
  }
}

/** Lists the .txt/.md files under `dir`, recursively, sorted by path. */
export async function listTextFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  // Real paths of the folders being walked: a link back to one of them is a loop.
  const walking: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const real = await Deno.realPath(d);
    if (walking.includes(real)) {
      throw new DataError(
        `${d} leads back to ${real}, a folder above it (a loop of symbolic links): remove the ` +
          "link, or give a --data-path without it",
      );
    }
    walking.push(real);
    for await (const entry of Deno.readDir(d)) {
      const path = `${d}/${entry.name}`;
      const text = TEXT_EXTENSIONS.some((ext) => entry.name.toLowerCase().endsWith(ext));
      const info = entry.isSymlink ? await Deno.stat(path).catch((e) => e as Error) : entry;
      if (info instanceof Error) {
        // A broken link is skipped, like any other file that is not text, unless it names one.
        if (!text) continue;
        throw new DataError(`${path}: a link to nothing readable (${info.message})`);
      }
      if (info.isDirectory) await walk(path);
      else if (info.isFile && text) {
        found.push(path);
      }
    }
    walking.pop();
  };
  await walk(dir.replace(/\/+$/, "") || "/");
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Options of {@link loadText} and {@link loadTokens} ({@link loadBytes} takes
 * them for symmetry and reads neither: raw bytes are never decoded).
 */
export interface CorpusOptions {
  /**
   * Receives warnings such as "FILE: N bytes are not valid UTF-8 and were replaced by
   * U+FFFD" (default: `warning: …` on stderr).
   */
  warn?: (msg: string) => void;
  /**
   * Called as a corpus's files are read and tokenized, `(bytes read, bytes in
   * all)`, for a progress bar (not for the default book, nor a `.bin`).
   */
  progress?: (done: number, total: number) => void;
}

function warnOnStderr(msg: string): void {
  console.error(`warning: ${msg}`);
}

async function readBytes(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DataError(`data path ${JSON.stringify(path)} does not exist`);
    }
    throw new DataError(`${path}: ${oneLine((e as Error).message)}`);
  }
}

/** The files of a data path (a file, or a folder's .txt/.md files), as raw bytes. */
async function readCorpusFiles(
  dataPath: string,
): Promise<{ folder: boolean; files: { path: string; bytes: Uint8Array }[] }> {
  const { folder, files } = await corpusFiles(dataPath);
  const read = [];
  for (const { path } of files) read.push({ path, bytes: await readBytes(path) });
  return { folder, files: read };
}

/**
 * The files of a data path as {@link tokenizeCorpus} reads them: a file (a
 * `.jsonl` file's lines are documents), or a folder's .txt/.md files
 * (recursive, sorted by path). Refused: a path that does not exist, a folder
 * without text files, and a Megatron index (`.idx`).
 */
async function corpusFiles(
  dataPath: string,
): Promise<{ folder: boolean; files: CorpusFile[] }> {
  const info = await statOrThrow(dataPath);
  if (info.isDirectory) {
    const paths = await listTextFiles(dataPath);
    if (paths.length === 0) {
      throw new DataError(`data folder ${JSON.stringify(dataPath)} holds no .txt or .md files`);
    }
    return { folder: true, files: paths.map((path) => ({ path, jsonLines: false })) };
  }
  if (!info.isFile) {
    throw new DataError(`data path ${JSON.stringify(dataPath)} is not a regular file or folder`);
  }
  const head = new Uint8Array(16);
  try {
    using file = await Deno.open(dataPath);
    await readUpTo(file, head);
  } catch (e) {
    throw new DataError(`${dataPath}: ${oneLine((e as Error).message)}`);
  }
  refuseMegatronIndex(dataPath, head);
  return { folder: false, files: [{ path: dataPath, jsonLines: isJsonLines(dataPath) }] };
}

/** The error for a corpus that held no document (all blank). */
function noDocumentsError(
  dataPath: string,
  { folder, files }: { folder: boolean; files: CorpusFile[] },
): DataError {
  if (!folder && files[0].jsonLines) return new DataError(`${dataPath}: no documents`);
  return emptyError(dataPath, folder, files.length);
}

/**
 * Refuses a Megatron index given as a data path: read as text, its binary
 * header and sizes trained as if they were words (an easy slip beside the
 * prefix that names the dataset).
 */
function refuseMegatronIndex(path: string, bytes: Uint8Array): void {
  if (!isMegatronIndexHeader(bytes)) return;
  const prefix = path.replace(/\.idx$/, "");
  throw new DataError(
    `${path} is the index of a Megatron indexed dataset, not text: pass the dataset's prefix ` +
      `(${prefix}, read as ${prefix}.bin) or its .bin`,
  );
}

function emptyError(dataPath: string, folder: boolean, count: number): DataError {
  return folder
    ? new DataError(`data folder ${JSON.stringify(dataPath)}: all ${count} text files are empty`)
    : new DataError(`data file ${JSON.stringify(dataPath)} is empty`);
}

/**
 * Loads corpus text: the default book when `dataPath` is undefined, else a text file, a
 * `.jsonl` file of documents, or a folder whose .txt/.md files (recursive, sorted by path) are
 * documents. Documents are joined with two blank lines, where `splitDocuments`
 * (data/sentences.ts) breaks them apart again. Files are decoded as UTF-8; bytes that are not valid UTF-8 become U+FFFD,
 * and each file that had any gets one warning with their count.
 */
export async function loadText(dataPath?: string, opts: CorpusOptions = {}): Promise<string> {
  return (await loadDocuments(dataPath, opts)).join(DOCUMENT_BREAK);
}

/** What separates documents in {@link loadText}'s text: two blank lines. */
const DOCUMENT_BREAK = "\n\n\n";

/** Whether `path` is a JSON-lines file of documents (Megatron's preprocessing input). */
export function isJsonLines(path: string): boolean {
  return /\.jsonl$/i.test(path);
}

/**
 * The documents of a JSON-lines file, as Megatron's `preprocess_data.py` reads
 * them: one JSON object per line, its `text` field the document.
 */
export function jsonLinesDocuments(text: string, source: string): string[] {
  const docs: string[] = [];
  text.split("\n").forEach((line, i) => {
    const doc = jsonLineDocument(line, source, i + 1);
    if (doc !== null) docs.push(doc);
  });
  if (docs.length === 0) throw new DataError(`${source}: no documents`);
  return docs;
}

/**
 * The documents of a corpus, as {@link loadText} reads them: the default book, a file (one
 * document), a `.jsonl` file (one document per line, its `text` field, as Megatron's
 * preprocessing reads), or a folder's non-empty .txt/.md files (recursive, sorted by path).
 * A `.bin` token file is refused: it holds ids, not text.
 */
export async function loadDocuments(
  dataPath?: string,
  opts: CorpusOptions = {},
): Promise<string[]> {
  if (dataPath === undefined) return [await loadMobyDick()];
  if (isTokenBinPath(dataPath)) {
    throw new DataError(
      `${dataPath} holds token ids, not text, and BERT reads text (it splits sentences and ` +
        "masks words itself): pass the text file, .jsonl or folder of .txt/.md it was made from",
    );
  }
  const warn = opts.warn ?? warnOnStderr;
  if (isJsonLines(dataPath) && (await statOrThrow(dataPath)).isFile) {
    const d = decodeWhole(dataPath, await readBytes(dataPath));
    const w = invalidUtf8Warning(dataPath, d);
    if (w) warn(w);
    return jsonLinesDocuments(d.text, dataPath);
  }
  const { folder, files } = await readCorpusFiles(dataPath);
  const texts = files.map(({ path, bytes }) => {
    const d = decodeWhole(path, bytes);
    const w = invalidUtf8Warning(path, d);
    if (w) warn(w);
    return d.text;
  });
  const nonEmpty = texts.filter((t) => t.trim().length > 0);
  if (nonEmpty.length === 0) throw emptyError(dataPath, folder, files.length);
  return nonEmpty;
}

/**
 * Decodes a whole file (the documents BERT reads), refusing in one line a file
 * past what one JavaScript string holds (2^29 − 24 characters, ~512 MiB of
 * text) rather than failing in the decoder.
 */
function decodeWhole(path: string, bytes: Uint8Array): DecodedText {
  try {
    return decodeUtf8Counted(bytes);
  } catch (e) {
    if (!(e instanceof TypeError || e instanceof RangeError)) throw e;
    throw new DataError(
      `${path}: ${bytes.length} bytes is more text than one JavaScript string holds ` +
        "(about 512 MiB): BERT reads each file whole; split it into several files of a folder",
    );
  }
}

/**
 * Loads a corpus as raw bytes, unchanged (for byte-level tokenizers): a file, or a folder's
 * .txt/.md files (recursive, sorted by path) joined with a blank line ("\n\n"); files of
 * only ASCII white space are skipped. The default book is its UTF-8 encoding.
 */
export async function loadBytes(dataPath?: string, _opts: CorpusOptions = {}): Promise<Uint8Array> {
  if (dataPath === undefined) return new TextEncoder().encode(await loadMobyDick());
  const { folder, files } = await readCorpusFiles(dataPath);
  const nonEmpty = files.map((f) => f.bytes).filter((b) => !blankBytes(b));
  if (nonEmpty.length === 0) throw emptyError(dataPath, folder, files.length);
  return joinBytes(nonEmpty);
}

/** `nonEmpty` joined with a blank line ("\n\n"). */
function joinBytes(nonEmpty: Uint8Array[]): Uint8Array {
  if (nonEmpty.length === 1) return nonEmpty[0];
  const total = nonEmpty.reduce((s, b) => s + b.length, 0) + 2 * (nonEmpty.length - 1);
  const out = new Uint8Array(total);
  let o = 0;
  nonEmpty.forEach((b, i) => {
    if (i > 0) {
      out[o++] = 10;
      out[o++] = 10;
    }
    out.set(b, o);
    o += b.length;
  });
  return out;
}

/** A tokenized corpus and where it came from. */
export interface CorpusTokens {
  /**
   * Token ids, all below the tokenizer's vocabulary size: in memory for text,
   * read from disk a window at a time for a `.bin` (`TokenBinStream`).
   */
  ids: TokenStream;
  /** Human-readable source (file, folder or the default book). */
  source: string;
  /**
   * Characters of text tokenized (UTF-16 code units), or bytes for a tokenizer that takes
   * raw bytes (the byte tokenizer on a file or folder; see `unit`); undefined for a `.bin`.
   */
  chars?: number;
  /** What `chars` counts. */
  unit?: "characters" | "bytes";
  /** Documents joined (files of a folder); undefined for a `.bin`. */
  documents?: number;
  /** Where documents begin, in ids, when a Megatron index beside a `.bin` says (for `--split`). */
  documentStarts?: Float64Array;
}

/**
 * Loads and tokenizes a corpus. A path ending in `.bin` is opened as little-endian uint16 ids,
 * read from disk as they are needed (a file larger than memory trains), after every id is
 * checked against the tokenizer's vocabulary and the file against the tokenizer its sidecar
 * (`FILE.bin.json`) names, if any. A tokenizer with `encodeBytes` (the byte tokenizer) gets the
 * files' raw bytes ({@link loadBytes}): one token per byte, whatever the encoding. Others get
 * text ({@link loadDocuments}, which warns about bytes that are not UTF-8): each document is
 * encoded on its own, and documents are separated by the tokenizer's end-of-text id
 * (`<|endoftext|>`, 50256, for GPT-2) or its document separator (WordPiece's `[SEP]`), or by a
 * blank line when it has neither. `chars` counts the documents' own text, not what is set between.
 */
export async function loadTokens(
  tokenizer: Tokenizer,
  dataPath?: string,
  opts: CorpusOptions = {},
): Promise<CorpusTokens> {
  if (dataPath !== undefined && isTokenBinPath(dataPath)) {
    const info = await statOrThrow(dataPath);
    if (!info.isFile) throw new DataError(`data path ${JSON.stringify(dataPath)} is not a file`);
    const meta = await readTokenBinMeta(dataPath);
    checkTokenBinTokenizer(dataPath, meta, tokenizer);
    const ids = await openTokenBin(dataPath, meta, tokenizer.vocabSize);
    const documentStarts = await megatronDocumentStarts(dataPath);
    return { ids, source: dataPath, ...(documentStarts ? { documentStarts } : {}) };
  }
  // Two bytes an id where the vocabulary fits in uint16 (every tokenizer here), else four.
  const IdArray = tokenizer.vocabSize <= MAX_BIN_VOCAB ? Uint16Array : Uint32Array;
  let ids: Uint16Array | Uint32Array = new IdArray(1 << 16);
  let n = 0;
  const r = await streamTokens(tokenizer, dataPath, (part) => {
    if (n + part.length > ids.length) {
      const grown = new IdArray(Math.max(n + part.length, Math.ceil(ids.length * 1.5)));
      grown.set(ids.subarray(0, n));
      ids = grown;
    }
    ids.set(part, n);
    n += part.length;
  }, opts);
  ids = ids.length === n ? ids : ids.slice(0, n);
  return {
    ids: new MemoryTokenStream(ids),
    source: r.source,
    chars: r.chars,
    unit: r.unit,
    documents: r.documents,
  };
}

/**
 * Tokenizes a text corpus as {@link loadTokens} does (not a `.bin`), handing
 * the ids to `sink` a piece at a time (data/corpus_stream.ts), so that memory
 * does not grow with the corpus; each piece is checked against the
 * vocabulary first. Refused: a corpus of blank documents, or of no tokens.
 */
export async function streamTokens(
  tokenizer: Tokenizer,
  dataPath: string | undefined,
  sink: (ids: ArrayLike<number>) => void | Promise<void>,
  opts: CorpusOptions = {},
): Promise<TokenizedCorpus & { source: string }> {
  const source = dataPath ?? DEFAULT_CORPUS_NAME;
  const corpus = dataPath === undefined ? null : await corpusFiles(dataPath);
  let n = 0;
  const r = await tokenizeCorpus(tokenizer, corpus?.files ?? null, async (part) => {
    checkIdsInVocab(part, tokenizer.vocabSize, source, n);
    n += part.length;
    await sink(part);
  }, { warn: opts.warn ?? warnOnStderr, progress: opts.progress });
  if (r.documents === 0) throw noDocumentsError(dataPath!, corpus!);
  if (r.tokens === 0) throw new DataError(`${source}: tokenized to zero tokens`);
  return { ...r, source };
}

/** Train and validation token streams. */
export interface TrainValSplit {
  /** Leading part of the stream. */
  train: Uint32Array;
  /** Trailing part of the stream. */
  val: Uint32Array;
}

/**
 * Splits a token stream: the last `valFraction` (default 0.1) is validation, the rest training.
 * Both parts are views into `ids`, not copies.
 */
export function splitTrainVal(ids: Uint32Array, valFraction = 0.1): TrainValSplit {
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new RangeError(`validation fraction must be in [0, 1), got ${valFraction}`);
  }
  const nVal = Math.round(ids.length * valFraction);
  const cut = ids.length - nVal;
  return { train: ids.subarray(0, cut), val: ids.subarray(cut) };
}
