/**
 * Token streams read a window at a time: ids held in memory, or a `.bin` file
 * of uint16 ids read from disk as each window is needed, so that a corpus
 * larger than memory trains (nanoGPT maps its `train.bin` into memory; Deno
 * has no memory map, so a window is a positioned read of its bytes).
 * @module
 */

import { DataError } from "./errors.ts";
import { oneLine } from "../core/files.ts";

/** A stream of token ids whose windows are read on demand. */
export interface TokenStream {
  /** Ids in the stream. */
  readonly length: number;
  /** Ids [start, end) of the stream (a view or a copy: do not write to it). */
  read(start: number, end: number): ArrayLike<number>;
  /** The ids [start, end) as a stream of their own, nothing read. */
  part(start: number, end: number): TokenStream;
}

/** Ids in an array, or a {@link TokenStream}: what the samplers and the split take. */
export type TokenStreamLike = ArrayLike<number> | TokenStream;

/** Whether `ids` is a {@link TokenStream} (not a plain array of ids). */
export function isTokenStream(ids: TokenStreamLike): ids is TokenStream {
  return typeof (ids as Partial<TokenStream>).read === "function";
}

/** `ids` as a {@link TokenStream}: a stream as it is, an array wrapped without a copy. */
export function asTokenStream(ids: TokenStreamLike): TokenStream {
  return isTokenStream(ids) ? ids : new MemoryTokenStream(ids);
}

/** Throws a RangeError unless 0 ≤ start ≤ end ≤ length, integers. */
function checkRange(start: number, end: number, length: number): void {
  if (
    !Number.isInteger(start) || !Number.isInteger(end) || start < 0 || start > end || end > length
  ) {
    throw new RangeError(`token range [${start}, ${end}) is not within a stream of ${length} ids`);
  }
}

/** A stream over ids in memory; `read` gives views of a typed array, copies of other arrays. */
export class MemoryTokenStream implements TokenStream {
  readonly #ids: ArrayLike<number>;
  readonly #offset: number;
  /** Ids in the stream. */
  readonly length: number;

  /** The stream of `ids[offset, offset + length)` (default: all of `ids`). */
  constructor(ids: ArrayLike<number>, offset: number = 0, length: number = ids.length - offset) {
    checkRange(offset, offset + length, ids.length);
    this.#ids = ids;
    this.#offset = offset;
    this.length = length;
  }

  /** Ids [start, end). */
  read(start: number, end: number): ArrayLike<number> {
    checkRange(start, end, this.length);
    const ids = this.#ids as ArrayLike<number> & {
      subarray?: (s: number, e: number) => ArrayLike<number>;
    };
    const lo = this.#offset + start, hi = this.#offset + end;
    if (typeof ids.subarray === "function") return ids.subarray(lo, hi);
    return Array.prototype.slice.call(ids, lo, hi) as number[];
  }

  /** The ids [start, end) as a stream of their own. */
  part(start: number, end: number): TokenStream {
    checkRange(start, end, this.length);
    return new MemoryTokenStream(this.#ids, this.#offset + start, end - start);
  }
}

/** Whether this machine stores a uint16 low byte first, as `.bin` files do. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** What identifies a file's contents between reads: its size, inode, device and modification time. */
export interface FileIdentity {
  /** Bytes. */
  size: number;
  /** Inode number (null where the platform has none). */
  ino: number | null;
  /** Device (null where the platform has none). */
  dev: number | null;
  /** Modification time in ms since the epoch (null where the file system keeps none). */
  mtimeMs: number | null;
}

/** The {@link FileIdentity} of a `Deno.stat` result. */
export function fileIdentity(info: Deno.FileInfo): FileIdentity {
  return { size: info.size, ino: info.ino, dev: info.dev, mtimeMs: info.mtime?.getTime() ?? null };
}

/**
 * A `.bin` file of little-endian uint16 ids, read from disk a window at a
 * time: each `read` opens the file, checks that it is the file the run began
 * with (the same size, inode and modification time: a file written again or
 * replaced under a run would change its data silently), and reads the
 * window's bytes. Nothing stays open between reads, so nothing needs closing.
 * Made by `openTokenBin` (data/token_bin.ts), which checks the file first.
 */
export class TokenBinStream implements TokenStream {
  /** The file. */
  readonly path: string;
  /** The file as the run began with it. */
  readonly file: FileIdentity;
  /** Ids in the whole file. */
  readonly fileIds: number;
  readonly #offset: number;
  /** Ids in the stream. */
  readonly length: number;

  /** The ids [offset, offset + length) of the file at `path`, which `file` identifies. */
  constructor(
    path: string,
    file: FileIdentity,
    offset: number = 0,
    length: number = file.size / 2 - offset,
  ) {
    this.fileIds = Math.floor(file.size / 2);
    checkRange(offset, offset + length, this.fileIds);
    this.path = path;
    this.file = file;
    this.#offset = offset;
    this.length = length;
  }

  /** Ids [start, end), read from the file (uint16, as the file holds them). */
  read(start: number, end: number): Uint16Array {
    checkRange(start, end, this.length);
    const bytes = new Uint8Array(2 * (end - start));
    try {
      // A path that is no longer a regular file (a FIFO would block the open) is refused first.
      if (!Deno.statSync(this.path).isFile) throw this.#changed("it is not a regular file now");
      using file = Deno.openSync(this.path);
      const now = fileIdentity(file.statSync());
      if (now.size !== this.file.size) {
        throw this.#changed(`${this.file.size} bytes when the run began, ${now.size} now`);
      }
      if (now.ino !== this.file.ino || now.dev !== this.file.dev) {
        throw this.#changed("another file now has its name");
      }
      if (now.mtimeMs !== this.file.mtimeMs) throw this.#changed("it was written again");
      file.seekSync(2 * (this.#offset + start), Deno.SeekMode.Start);
      for (let at = 0; at < bytes.length;) {
        const n = file.readSync(bytes.subarray(at));
        if (n === null) throw new DataError(`${this.path}: the file ended inside a window`);
        at += n;
      }
    } catch (e) {
      if (e instanceof DataError) throw e;
      throw new DataError(
        `${this.path}: cannot read it any more (${oneLine((e as Error).message)})`,
      );
    }
    return LITTLE_ENDIAN ? new Uint16Array(bytes.buffer) : Uint16Array.from(decodeUint16(bytes));
  }

  /** The ids [start, end) as a stream of their own. */
  part(start: number, end: number): TokenStream {
    checkRange(start, end, this.length);
    return new TokenBinStream(this.path, this.file, this.#offset + start, end - start);
  }

  #changed(how: string): DataError {
    return new DataError(
      `${this.path} changed during the run (${how}): its ids are not the ones checked at the ` +
        "start; restart the run when the file stands still",
    );
  }
}

/** Little-endian uint16 `bytes` (an even count) as ids. */
export function decodeUint16(bytes: Uint8Array): Uint32Array {
  const n = bytes.length >> 1;
  const ids = new Uint32Array(n);
  if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
    ids.set(new Uint16Array(bytes.buffer, bytes.byteOffset, n));
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) ids[i] = view.getUint16(2 * i, true);
  }
  return ids;
}

/** Ids a {@link forEachPiece} piece holds: 4M (8 MiB of a `.bin`). */
export const PIECE_IDS = 1 << 22;

/** How long {@link forEachPiece} works before the event loop turns (a signal waits at most this). */
const TURN_MS = 50;

/**
 * Hands `stream` to `fn` a piece at a time, in order (`offset`: where the
 * piece starts), letting the event loop turn between pieces every 50 ms, so
 * that a pass over a corpus larger than memory holds one piece and a signal
 * is answered within a piece.
 */
export async function forEachPiece(
  ids: TokenStreamLike,
  fn: (piece: ArrayLike<number>, offset: number) => void,
  pieceIds = PIECE_IDS,
): Promise<void> {
  if (!Number.isInteger(pieceIds) || pieceIds < 1) {
    throw new RangeError(`ids a piece must be a positive integer, got ${pieceIds}`);
  }
  const stream = asTokenStream(ids);
  let turned = performance.now();
  for (let at = 0; at < stream.length; at += pieceIds) {
    fn(stream.read(at, Math.min(stream.length, at + pieceIds)), at);
    if (performance.now() - turned >= TURN_MS) {
      await new Promise((r) => setTimeout(r, 0));
      turned = performance.now();
    }
  }
}
