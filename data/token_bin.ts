/**
 * Reading and writing `.bin` token files: little-endian uint16 ids, no header (nanoGPT's format),
 * with a sidecar `FILE.bin.json` ({@link TokenBinMeta}) naming the tokenizer that made them, so
 * that a run with another tokenizer is refused with both names rather than failing on the id
 * range or, worse, training on ids that mean other tokens.
 * @module
 */

import { oneLine, readFully, readUpTo } from "../core/files.ts";
import { DataError } from "./errors.ts";
import { GPT2_VOCAB_SIZE } from "./gpt2_vocab.ts";
import { TOKENIZER_NAMES } from "./tokenizer.ts";
import { decodeUint16, fileIdentity, forEachPiece, TokenBinStream } from "./token_stream.ts";

/** Largest vocabulary a uint16 `.bin` file can hold. */
export const MAX_BIN_VOCAB = 65536;

/**
 * Encodes ids as little-endian uint16 bytes; throws if any id does not fit
 * (`offset`: the position of `ids[0]` in the whole stream, for the message).
 */
export function encodeTokenBin(ids: ArrayLike<number>, offset = 0): Uint8Array {
  const bytes = new Uint8Array(ids.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id > 0xffff) {
      throw new DataError(`token id ${id} at position ${offset + i} does not fit in uint16`);
    }
    view.setUint16(i * 2, id, true);
  }
  return bytes;
}

/**
 * Decodes little-endian uint16 bytes into ids. `source` names the file in error messages;
 * `vocabSize`, when given, rejects ids outside [0, vocabSize).
 */
export function decodeTokenBin(
  bytes: Uint8Array,
  source = "token data",
  vocabSize?: number,
): Uint32Array {
  checkTokenBinBytes(source, bytes.length);
  const ids = decodeUint16(bytes);
  if (vocabSize !== undefined) checkIdsInVocab(ids, vocabSize, source);
  return ids;
}

/** Refuses `bytes` bytes of `.bin` ids that are an odd count or none. */
function checkTokenBinBytes(source: string, bytes: number): void {
  if (bytes % 2 !== 0) {
    throw new DataError(
      `${source}: ${bytes} bytes is an odd length; a .bin file holds little-endian uint16 ids`,
    );
  }
  if (bytes === 0) throw new DataError(`${source}: the file is empty`);
}

/**
 * Throws a {@link DataError} naming the first id that is not in [0, vocabSize);
 * `offset` is the position of `ids[0]` in the whole stream, for the message.
 */
export function checkIdsInVocab(
  ids: ArrayLike<number>,
  vocabSize: number,
  source: string,
  offset = 0,
): void {
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] >= vocabSize) {
      throw new DataError(
        `${source}: token id ${ids[i]} at position ${
          offset + i
        } is not below the vocabulary size ${vocabSize}` +
          (ids[i] < GPT2_VOCAB_SIZE
            ? ` (was it made with another tokenizer? GPT-2's ids, below ${GPT2_VOCAB_SIZE}, ` +
              `are read with ${tokenizerFlagFor("gpt2")})`
            : " (was it made with another tokenizer?)"),
      );
    }
  }
}

/**
 * Reads a `.bin` token file whole. Refused: a file whose sidecar names another
 * element type or another number of ids (cut short, or replaced), and a
 * Megatron indexed dataset (`FILE.idx` beside it) of other than uint16 ids.
 */
export async function readTokenBin(path: string, vocabSize?: number): Promise<Uint32Array> {
  return await readTokenBinWith(path, await readTokenBinMeta(path), vocabSize);
}

/** {@link readTokenBin} with the sidecar already read (`meta` undefined: there is none). */
export async function readTokenBinWith(
  path: string,
  meta: TokenBinMeta | undefined,
  vocabSize?: number,
): Promise<Uint32Array> {
  await checkTokenBinFile(path, meta);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new DataError(`${path}: ${oneLine((e as Error).message)}`);
  }
  return decodeTokenBin(bytes, path, vocabSize);
}

/**
 * Opens a `.bin` token file as a stream read from disk a window at a time
 * ({@link TokenBinStream}), so that a file larger than memory trains. It is
 * checked as {@link readTokenBin} checks it, and with `vocabSize` below
 * {@link MAX_BIN_VOCAB} every id is read once, a piece at a time, against it.
 */
export async function openTokenBin(
  path: string,
  meta: TokenBinMeta | undefined,
  vocabSize?: number,
): Promise<TokenBinStream> {
  if (vocabSize !== undefined && (!Number.isInteger(vocabSize) || vocabSize < 1)) {
    throw new RangeError(`vocabulary size must be a positive integer, got ${vocabSize}`);
  }
  const stream = new TokenBinStream(path, fileIdentity(await checkTokenBinFile(path, meta)));
  if (vocabSize !== undefined && vocabSize < MAX_BIN_VOCAB) {
    await forEachPiece(stream, (piece, at) => checkIdsInVocab(piece, vocabSize, path, at));
  }
  return stream;
}

/**
 * Checks a `.bin` token file without reading its ids, and returns its `stat`.
 * Refused: a missing file or one that is not a regular file, an odd or zero
 * length, a sidecar naming another element type or another number of ids, and
 * a Megatron index beside it that disagrees ({@link checkMegatronIndex}).
 */
async function checkTokenBinFile(
  path: string,
  meta: TokenBinMeta | undefined,
): Promise<Deno.FileInfo> {
  if (meta?.dtype !== undefined && meta.dtype !== "uint16") {
    throw new DataError(
      `${tokenBinMetaPath(path)} says the ids are ${meta.dtype}; a .bin token file holds ` +
        `little-endian uint16 ids (run deno task preprocess on the text again)`,
    );
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(`${path}: no such file`);
    throw new DataError(`${path}: ${oneLine((e as Error).message)}`);
  }
  if (!info.isFile) throw new DataError(`${path}: not a regular file`);
  const bytes = info.size;
  await checkMegatronIndex(path, bytes);
  checkTokenBinBytes(path, bytes);
  const ids = bytes / 2;
  if (typeof meta?.tokens === "number" && meta.tokens !== ids) {
    throw new DataError(
      `${path} holds ${ids} ids but its sidecar ${tokenBinMetaPath(path)} says ` +
        `${meta.tokens}: the file was cut short or replaced (run deno task preprocess again)`,
    );
  }
  return info;
}

/** Megatron's indexed-dataset element types, by their code in an `.idx` header. */
const MEGATRON_DTYPES: Record<number, string> = {
  1: "uint8",
  2: "int8",
  3: "int16",
  4: "int32",
  5: "int64",
  6: "float64",
  7: "float32",
  8: "uint16",
};

/** The first bytes of a Megatron index (`.idx`, MMapIndexedDataset's header). */
const MEGATRON_INDEX_MAGIC = "MMIDIDX\x00\x00";

/** Whether `bytes` begin as a Megatron index (`.idx`) does. */
export function isMegatronIndexHeader(bytes: Uint8Array): boolean {
  const n = MEGATRON_INDEX_MAGIC.length;
  return bytes.length >= n &&
    String.fromCharCode(...bytes.subarray(0, n)) === MEGATRON_INDEX_MAGIC;
}

/** Bytes of a Megatron index's header: magic, version (u64), dtype (u8), sequences and documents (u64 each). */
const MEGATRON_HEADER_BYTES = 34;

/**
 * The path of the file `FILE.idx` beside the `.bin` `path` when it is a
 * regular file (only one can be an index; opening a named pipe would block),
 * else undefined.
 */
async function indexBeside(path: string): Promise<string | undefined> {
  const idx = path.replace(/\.bin$/i, ".idx");
  if (idx === path) return undefined;
  try {
    return (await Deno.stat(idx)).isFile ? idx : undefined;
  } catch {
    return undefined;
  }
}

/** The sequence and document counts of a Megatron index header (`head`: its first bytes). */
function indexCounts(head: Uint8Array): { sequences: number; documents: number } {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return {
    sequences: Number(view.getBigUint64(18, true)),
    documents: Number(view.getBigUint64(26, true)),
  };
}

/**
 * Refuses `path` when a Megatron index (`FILE.idx`, header "MMIDIDX") beside
 * it says its ids are not uint16 (Megatron writes int32 ids for vocabularies
 * of 65,500 or more: read as uint16, they would interleave zeros silently), or
 * that the `.bin` holds another number of bytes than its `actual` (cut short or
 * replaced: the last sequence's pointer and size give its length), or when the
 * index is itself cut short. A file `FILE.idx` that does not begin as
 * Megatron's does is not Megatron's, and is left alone, as is one that is not
 * a regular file.
 */
async function checkMegatronIndex(path: string, actual: number): Promise<void> {
  const idx = await indexBeside(path);
  if (idx === undefined) return;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(idx);
  } catch {
    return;
  }
  using _ = file;
  const head = new Uint8Array(MEGATRON_HEADER_BYTES);
  const got = await readUpTo(file, head);
  if (!isMegatronIndexHeader(head.subarray(0, got))) return;
  const idxSize = (await file.stat()).size;
  const cut = () =>
    new DataError(
      `${path}: its Megatron index ${idx} is cut short (${idxSize} bytes, less than its ` +
        `header and arrays take): write the dataset again`,
    );
  if (got < MEGATRON_HEADER_BYTES) throw cut();
  const { sequences, documents } = indexCounts(head);
  const dtype = MEGATRON_DTYPES[head[17]] ?? `type code ${head[17]}`;
  if (dtype !== "uint16") {
    throw new DataError(
      `${path}: its Megatron index ${idx} says the ids are ${dtype}; this project reads ` +
        `.bin files of little-endian uint16 ids (run deno task preprocess on the text)`,
    );
  }
  const idxBytes = MEGATRON_HEADER_BYTES + 12 * sequences + 8 * documents;
  if (idxSize < idxBytes) throw cut();
  let binBytes = 0;
  if (sequences > 0) {
    const last = new Uint8Array(8);
    await file.seek(MEGATRON_HEADER_BYTES + 4 * (sequences - 1), Deno.SeekMode.Start);
    await readFully(file, last.subarray(0, 4));
    const size = new DataView(last.buffer).getInt32(0, true);
    await file.seek(
      MEGATRON_HEADER_BYTES + 4 * sequences + 8 * (sequences - 1),
      Deno.SeekMode.Start,
    );
    await readFully(file, last);
    binBytes = Number(new DataView(last.buffer).getBigInt64(0, true)) + 2 * size;
  }
  if (actual !== binBytes) {
    throw new DataError(
      `${path} holds ${actual / 2} ids but its Megatron index ${idx} says ${binBytes / 2} ` +
        `(${sequences} sequences): the .bin was cut short or replaced (write the dataset again)`,
    );
  }
}

/**
 * Where the documents of a `.bin` begin, in ids, by its Megatron index
 * (`FILE.idx`): each document's first sequence's pointer, ascending, without
 * the first document's 0, empty documents (no sequence) left out; undefined
 * when there is no Megatron index beside it. Call after the file is checked
 * (`openTokenBin`), which refuses an index that disagrees with it.
 */
export async function megatronDocumentStarts(path: string): Promise<Float64Array | undefined> {
  const idx = await indexBeside(path);
  if (idx === undefined) return undefined;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(idx);
  } catch {
    return undefined;
  }
  if (!isMegatronIndexHeader(bytes) || bytes.length < MEGATRON_HEADER_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { sequences, documents } = indexCounts(bytes);
  const pointersAt = MEGATRON_HEADER_BYTES + 4 * sequences;
  const documentsAt = pointersAt + 8 * sequences;
  if (bytes.length < documentsAt + 8 * documents) return undefined;
  const starts = new Float64Array(Math.max(0, documents - 1));
  let n = 0;
  for (let d = 1; d < documents; d++) {
    const sequence = Number(view.getBigInt64(documentsAt + 8 * d, true));
    if (sequence >= sequences) break; // the end of the data: no document starts there
    const start = Number(view.getBigInt64(pointersAt + 8 * sequence, true)) / 2;
    if (start > 0 && (n === 0 || start > starts[n - 1])) starts[n++] = start;
  }
  return starts.subarray(0, n);
}

/** What the sidecar `FILE.bin.json` of a `.bin` token file records. */
export interface TokenBinMeta {
  /** Name of the tokenizer that made the ids ("gpt2", "byte", "bert"). */
  tokenizer: string;
  /** Its vocabulary size. */
  vocab_size: number;
  /** Its end-of-text id, written between documents, when it has one. */
  eos_id?: number;
  /** Element type of the file. */
  dtype: "uint16";
  /** Number of ids in the file. */
  tokens: number;
  /** Number of documents joined (separated by `eos_id` when there is one). */
  documents?: number;
}

/** The sidecar of a `.bin` token file: `FILE.bin.json`. */
export function tokenBinMetaPath(path: string): string {
  return `${path}.json`;
}

/**
 * Writes ids to a `.bin` token file (little-endian uint16) and, with `meta`,
 * its sidecar (see {@link tokenBinMetaPath}).
 */
export async function writeTokenBin(
  path: string,
  ids: ArrayLike<number>,
  meta?: Omit<TokenBinMeta, "dtype" | "tokens">,
): Promise<void> {
  // An empty file would be refused when read back.
  if (ids.length === 0) throw new DataError(`${path}: no token ids to write`);
  await Deno.writeFile(path, encodeTokenBin(ids));
  if (meta) {
    const full: TokenBinMeta = { ...meta, dtype: "uint16", tokens: ids.length };
    await Deno.writeTextFile(tokenBinMetaPath(path), JSON.stringify(full, null, 2) + "\n");
  }
}

/**
 * Writes a `.bin` token file from ids that `fill` hands to its `write` a piece
 * at a time, then its sidecar (`meta` of what `fill` returned): the ids go to
 * a file beside `path` that is renamed to it when `fill` has finished, so a
 * failed run leaves `path` as it was. Returns `fill`'s result and the ids
 * written.
 */
export async function writeTokenBinFrom<R>(
  path: string,
  fill: (write: (ids: ArrayLike<number>) => Promise<void>) => Promise<R>,
  meta: (result: R) => Omit<TokenBinMeta, "dtype" | "tokens">,
): Promise<{ result: R; tokens: number }> {
  const partial = `${path}.partial-${Deno.pid}`;
  let tokens = 0;
  try {
    let result: R;
    {
      using file = await Deno.open(partial, { write: true, create: true, truncate: true });
      // Ids gather in a buffer written when full: a document at a time would be a
      // write (and an await) per document.
      const buffer = new Uint8Array(WRITE_BUFFER_BYTES);
      let used = 0;
      const flush = async () => {
        for (let at = 0; at < used;) at += await file.write(buffer.subarray(at, used));
        used = 0;
      };
      result = await fill(async (ids) => {
        const bytes = encodeTokenBin(ids, tokens);
        tokens += ids.length;
        if (used + bytes.length > buffer.length) await flush();
        if (bytes.length > buffer.length) {
          for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
        } else {
          buffer.set(bytes, used);
          used += bytes.length;
        }
      });
      await flush();
    }
    if (tokens === 0) throw new DataError(`${path}: no token ids to write`);
    await Deno.rename(partial, path);
    const full: TokenBinMeta = { ...meta(result), dtype: "uint16", tokens };
    await Deno.writeTextFile(tokenBinMetaPath(path), JSON.stringify(full, null, 2) + "\n");
    return { result, tokens };
  } finally {
    await Deno.remove(partial).catch(() => {});
  }
}

/** Bytes {@link writeTokenBinFrom} gathers before a write. */
const WRITE_BUFFER_BYTES = 4 * 2 ** 20;

/** The sidecar record of ids `tokenizer` made from `documents` documents (dtype and count added on writing). */
export function tokenBinMetaOf(
  tokenizer: { name: string; vocabSize: number; eosId?: number },
  documents: number,
): Omit<TokenBinMeta, "dtype" | "tokens"> {
  return {
    tokenizer: tokenizer.name,
    vocab_size: tokenizer.vocabSize,
    ...(tokenizer.eosId !== undefined ? { eos_id: tokenizer.eosId } : {}),
    documents,
  };
}

/** The sidecar of `path`, or undefined when there is none (a plain nanoGPT `.bin`). */
export async function readTokenBinMeta(path: string): Promise<TokenBinMeta | undefined> {
  const side = tokenBinMetaPath(path);
  let text: string;
  try {
    text = await Deno.readTextFile(side);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new DataError(`${side}: ${oneLine((e as Error).message)}`);
  }
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch {
    throw new DataError(`${side}: not JSON (the sidecar of ${path} names its tokenizer)`);
  }
  const m = meta as Partial<TokenBinMeta> | null;
  if (!m || typeof m !== "object" || typeof m.tokenizer !== "string") {
    throw new DataError(
      `${side}: no "tokenizer" field (the sidecar of ${path} names its tokenizer)`,
    );
  }
  return m as TokenBinMeta;
}

/** The tokenizer a `.bin`'s sidecar names ({@link sidecarTokenizers}). */
export interface SidecarTokenizer {
  /** The `.bin`. */
  path: string;
  /** Its sidecar ({@link tokenBinMetaPath}). */
  sidecar: string;
  /** The tokenizer it names. */
  tokenizer: string;
  /** That tokenizer's vocabulary, where the sidecar records it. */
  vocabSize?: number;
}

/**
 * The tokenizers the sidecars of the `.bin` files among `paths` name, in
 * order; a path that is not a `.bin`, or whose sidecar is missing or
 * unreadable, is left out (reading the data names what is wrong with it).
 */
export async function sidecarTokenizers(paths: readonly string[]): Promise<SidecarTokenizer[]> {
  const out: SidecarTokenizer[] = [];
  for (const path of paths) {
    if (!isTokenBinPath(path)) continue;
    const meta = await readTokenBinMeta(path).catch(() => undefined);
    if (!meta) continue;
    out.push({
      path,
      sidecar: tokenBinMetaPath(path),
      tokenizer: meta.tokenizer,
      ...(meta.vocab_size !== undefined ? { vocabSize: meta.vocab_size } : {}),
    });
  }
  return out;
}

/** Whether `path` names a token file (`.bin`, any case), which data paths read as ids, not text. */
export function isTokenBinPath(path: string): boolean {
  return path.toLowerCase().endsWith(".bin");
}

/**
 * The flag that selects the tokenizer `name` on a GPT command line: `--tokenizer
 * NAME`, except for WordPiece (`bert`), which `--tokenizer` does not list and
 * Megatron's spelling `--tokenizer-type BertWordPieceLowerCase` selects.
 */
export function tokenizerFlagFor(name: string): string {
  return name === "bert" ? "--tokenizer-type BertWordPieceLowerCase" : `--tokenizer ${name}`;
}

/**
 * Refuses a `.bin` whose sidecar names another tokenizer than `tokenizer`
 * (by name and vocabulary size), naming both and the flag that reads it
 * ({@link tokenizerFlagFor}).
 */
export function checkTokenBinTokenizer(
  path: string,
  meta: TokenBinMeta | undefined,
  tokenizer: { name: string; vocabSize: number },
): void {
  if (!meta) return;
  const same = meta.tokenizer === tokenizer.name &&
    (meta.vocab_size === undefined || meta.vocab_size === tokenizer.vocabSize);
  if (same) return;
  const side = tokenBinMetaPath(path);
  if (!(TOKENIZER_NAMES as readonly string[]).includes(meta.tokenizer)) {
    throw new DataError(
      `${path}: its sidecar ${side} names an unknown tokenizer ${JSON.stringify(meta.tokenizer)} ` +
        `(this program has ${TOKENIZER_NAMES.join(", ")}); re-run preprocess on the text`,
    );
  }
  const vocab = meta.vocab_size === undefined ? "" : `vocabulary ${meta.vocab_size}, `;
  throw new DataError(
    `${path} was tokenized with the ${meta.tokenizer} tokenizer (${vocab}per ${side}), but ` +
      `this run uses the ${tokenizer.name} tokenizer (vocabulary ${tokenizer.vocabSize}): ` +
      `pass ${tokenizerFlagFor(meta.tokenizer)}`,
  );
}
