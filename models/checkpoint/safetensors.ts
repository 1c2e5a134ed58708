/**
 * The safetensors format, read and written by the project: an 8-byte little-endian
 * header length, a JSON header mapping tensor names to dtype, shape and byte range
 * (plus an optional `__metadata__` map of strings), then the raw little-endian data.
 * Reading validates every offset and size against the file and names the file and
 * the tensor in each error; F32, F16, BF16, F64, I32 and I64 are read, F32, F16,
 * BF16 and I32 are written (16-bit rounded to nearest even, core/half.ts).
 * @module
 */

import { createHash } from "node:crypto";
import { oneLine, readFully } from "../../core/files.ts";
import { fromHalfBits, toHalfBits } from "../../core/half.ts";
import { writeFileDurable } from "./fs.ts";

/** Element types this module understands. */
export type SafeDType = "F32" | "F16" | "BF16" | "F64" | "I32" | "I64";

const ELEMENT_BYTES: Record<SafeDType, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I32: 4,
  I64: 8,
};

/** Thrown for malformed, truncated or mismatched files; the message names the file. */
export class CheckpointError extends Error {
  /** An error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

/** One tensor's entry in a safetensors header. */
export interface SafeTensorInfo {
  /** Element type as stored. */
  dtype: SafeDType;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Byte range [begin, end) within the data section. */
  offsets: [number, number];
}

/** A tensor to write. */
export interface SafeTensorOut {
  /** Name in the header. */
  name: string;
  /** Dimensions. */
  shape: readonly number[];
  /** Values: Float32Array is written as F32 (or `dtype`), Int32Array as I32. */
  data: Float32Array | Int32Array;
  /** The stored type of float values (default F32; F16/BF16 round to nearest even). */
  dtype?: "F32" | "F16" | "BF16";
}

function assertLittleEndian(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new CheckpointError("safetensors I/O needs a little-endian host");
  }
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkHeaderLen(
  headerLen: number,
  size: number,
  bad: (msg: string) => CheckpointError,
): void {
  if (headerLen > size - 8) {
    throw bad(
      `the header claims ${headerLen} bytes but the file holds only ${size - 8} after ` +
        `the length field (truncated or not a safetensors file)`,
    );
  }
  if (headerLen > MAX_HEADER_BYTES) {
    throw bad(
      `the header claims ${headerLen} bytes, more than the ${MAX_HEADER_BYTES} accepted ` +
        `(not a safetensors file?)`,
    );
  }
}

/** Largest header accepted (the JSON part): real headers are kilobytes to a few megabytes. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** What a checkpoint records about one file: its size and SHA-256 (lowercase hex). */
export interface FileDigest {
  /** Size in bytes. */
  bytes: number;
  /** SHA-256 of the whole file, lowercase hex. */
  sha256: string;
}

/** SHA-256 of `bytes` as lowercase hex (node:crypto: ~1 GB/s here, twice WebCrypto's speed). */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Options of {@link SafetensorsFile.read}. */
export interface SafetensorsReadOptions {
  /** The name used in messages (default: the path read). */
  name?: string;
  /** Size and checksum the file must have (from `checkpoint.json`); checked before parsing. */
  expect?: FileDigest;
}

/** Reads `bytes.length` bytes of `f` into `bytes` and returns their SHA-256 (null: the file ended early). */
async function readAndHash(f: Deno.FsFile, bytes: Uint8Array): Promise<string | null> {
  return await readFully(f, bytes) ? sha256Hex(bytes) : null;
}

/** SHA-256 of the `size` bytes of `f` from its position, read in blocks (null: the file ended early). */
async function hashFile(f: Deno.FsFile, size: number): Promise<string | null> {
  const hash = createHash("sha256");
  const block = new Uint8Array(Math.min(size, 16 << 20));
  for (let left = size; left > 0;) {
    const part = block.subarray(0, Math.min(left, block.length));
    if (!await readFully(f, part)) return null;
    hash.update(part);
    left -= part.length;
  }
  return hash.digest("hex");
}

interface ParsedHeader {
  metadata: Record<string, string>;
  tensors: Map<string, SafeTensorInfo>;
}

/**
 * Validates a header: `headerBytes` is the JSON, `dataLen` the size of the data section
 * that follows it. Every tensor's range must lie in the data, ranges must not overlap,
 * and they must cover the data section exactly (no hole, nothing after the last tensor).
 */
function parseHeader(
  headerBytes: Uint8Array,
  dataLen: number,
  bad: (msg: string) => CheckpointError,
): ParsedHeader {
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw bad(`the header is not valid JSON (${oneLine((e as Error).message)})`);
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) {
    throw bad("the header is not a JSON object");
  }
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, SafeTensorInfo>();
  const ranges: [number, number, string][] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (raw && typeof raw === "object") {
        for (const [k, v] of Object.entries(raw)) metadata[k] = String(v);
      }
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = e?.dtype as SafeDType;
    if (!(typeof dtype === "string" && Object.hasOwn(ELEMENT_BYTES, dtype))) {
      throw bad(`tensor "${name}" has unsupported dtype ${JSON.stringify(e?.dtype)}`);
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw bad(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 ||
      off.some((o) => !Number.isSafeInteger(o) || o < 0) || off[0] > off[1]
    ) {
      throw bad(`tensor "${name}" has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const want = product(shape) * ELEMENT_BYTES[dtype];
    if (off[1] - off[0] !== want) {
      throw bad(
        `tensor "${name}" (${dtype} [${shape.join(", ")}]) needs ${want} bytes but its ` +
          `data_offsets span ${off[1] - off[0]}`,
      );
    }
    if (off[1] > dataLen) {
      throw bad(
        `tensor "${name}" needs data bytes [${off[0]}, ${off[1]}) but the file holds only ` +
          `${dataLen} data bytes (truncated file?)`,
      );
    }
    tensors.set(name, { dtype, shape: shape as number[], offsets: [off[0], off[1]] });
    ranges.push([off[0], off[1], name]);
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let end = 0;
  for (let i = 0; i < ranges.length; i++) {
    if (i > 0 && ranges[i][0] < ranges[i - 1][1]) {
      throw bad(
        `tensors "${ranges[i - 1][2]}" and "${ranges[i][2]}" overlap in the data section`,
      );
    }
    if (ranges[i][0] > end) {
      throw bad(
        `data bytes [${end}, ${ranges[i][0]}) before tensor "${ranges[i][2]}" belong to no tensor`,
      );
    }
    end = Math.max(end, ranges[i][1]);
  }
  if (end !== dataLen) {
    throw bad(
      `the tensors end at data byte ${end} but the file holds ${dataLen} data bytes ` +
        `(appended or corrupt data?)`,
    );
  }
  return { metadata, tensors };
}

/** Index of the first NaN or ±Infinity in `a`, or -1 (exponent bits all ones). */
export function firstNonFinite(a: Float32Array): number {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < u.length; i++) {
    if ((u[i] & 0x7f800000) === 0x7f800000) return i;
  }
  return -1;
}

/**
 * Where an opened file's data section is ({@link SafetensorsFile.open}): its tensors are
 * read from there when asked for, and the file must still be as it was opened.
 */
interface FileData {
  /** The path to read. */
  real: string;
  /** Byte offset of the data section in the file. */
  start: number;
  /** The file's size when opened. */
  size: number;
  /** Its modification time when opened (null where the file system has none). */
  mtime: number | null;
}

/**
 * A parsed safetensors file: held in memory ({@link SafetensorsFile.read},
 * {@link SafetensorsFile.parse}), or opened with only its header read
 * ({@link SafetensorsFile.open}), each tensor read from the file when asked for.
 */
export class SafetensorsFile {
  /** Tensor entries by name, in header order. */
  readonly tensors: Map<string, SafeTensorInfo>;
  readonly #data: Uint8Array | FileData;

  private constructor(
    /** The file name used in messages. */
    readonly path: string,
    /** The `__metadata__` strings (empty when absent). */
    readonly metadata: Record<string, string>,
    tensors: Map<string, SafeTensorInfo>,
    data: Uint8Array | FileData,
  ) {
    this.tensors = tensors;
    this.#data = data;
  }

  /**
   * Reads and validates `path`. It must be a regular file; the length field and the
   * header are read and checked against the file's size before any tensor data is read
   * (so a hostile or broken file costs at most its header). With `opts.expect`, the
   * size and SHA-256 are checked first instead.
   */
  static read(path: string, opts: SafetensorsReadOptions = {}): Promise<SafetensorsFile> {
    return SafetensorsFile.#load(path, opts, true);
  }

  /**
   * Opens and validates `path` as {@link SafetensorsFile.read} does, but reads only its
   * header: each tensor's bytes are read from the file when {@link SafetensorsFile.floats}
   * or {@link SafetensorsFile.ints} asks for them, so a large file is never held in
   * memory whole. A file whose size or modification time has changed since is refused
   * then, naming it. With `opts.expect`, the size and SHA-256 are checked first, the file
   * read through in blocks (the check then covers the file as it was opened: a later
   * change is caught by its size or modification time).
   */
  static open(path: string, opts: SafetensorsReadOptions = {}): Promise<SafetensorsFile> {
    return SafetensorsFile.#load(path, opts, false);
  }

  static async #load(
    path: string,
    opts: SafetensorsReadOptions,
    whole: boolean,
  ): Promise<SafetensorsFile> {
    assertLittleEndian();
    const name = opts.name ?? path;
    const bad = (msg: string) => new CheckpointError(`${name}: ${msg}`);
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw bad("no such file");
      throw bad(`cannot open (${oneLine((e as Error).message)})`);
    }
    try {
      const st = await f.stat();
      if (!st.isFile) throw bad("not a regular file");
      const size = st.size;
      const exp = opts.expect;
      if (exp) {
        if (size !== exp.bytes) {
          throw bad(
            `is ${size} bytes but checkpoint.json says ${exp.bytes} (truncated or replaced file)`,
          );
        }
        const bytes = whole ? new Uint8Array(size) : null;
        const got = bytes ? await readAndHash(f, bytes) : await hashFile(f, size);
        if (got === null) throw bad("the file shrank while being read");
        if (got !== exp.sha256) {
          throw bad(
            `SHA-256 ${got} does not match ${exp.sha256} recorded in checkpoint.json ` +
              `(the file is corrupt)`,
          );
        }
        if (bytes) return SafetensorsFile.parse(bytes, name);
        await f.seek(0, Deno.SeekMode.Start);
      }
      if (size < 8) {
        throw bad(`${size} bytes is too short for a safetensors header (truncated file?)`);
      }
      const head = new Uint8Array(8);
      if (!await readFully(f, head)) throw bad("the file shrank while being read");
      const headerLen = Number(new DataView(head.buffer).getBigUint64(0, true));
      checkHeaderLen(headerLen, size, bad);
      if (!whole) {
        const header = new Uint8Array(headerLen);
        if (!await readFully(f, header)) throw bad("the file shrank while being read");
        const parsed = parseHeader(header, size - 8 - headerLen, bad);
        const mtime = st.mtime?.getTime() ?? null;
        const data = { real: path, start: 8 + headerLen, size, mtime };
        return new SafetensorsFile(name, parsed.metadata, parsed.tensors, data);
      }
      const bytes = new Uint8Array(size);
      bytes.set(head);
      const header = bytes.subarray(8, 8 + headerLen);
      if (!await readFully(f, header)) throw bad("the file shrank while being read");
      const parsed = parseHeader(header, size - 8 - headerLen, bad);
      if (!await readFully(f, bytes.subarray(8 + headerLen))) {
        throw bad("the file shrank while being read");
      }
      return new SafetensorsFile(
        name,
        parsed.metadata,
        parsed.tensors,
        bytes.subarray(8 + headerLen),
      );
    } finally {
      f.close();
    }
  }

  /** Parses and validates the bytes of a file; `path` names it in errors. */
  static parse(bytes: Uint8Array, path = "safetensors data"): SafetensorsFile {
    assertLittleEndian();
    const bad = (msg: string) => new CheckpointError(`${path}: ${msg}`);
    if (bytes.length < 8) {
      throw bad(`${bytes.length} bytes is too short for a safetensors header (truncated file?)`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headerLen = Number(view.getBigUint64(0, true));
    checkHeaderLen(headerLen, bytes.length, bad);
    const parsed = parseHeader(
      bytes.subarray(8, 8 + headerLen),
      bytes.length - 8 - headerLen,
      bad,
    );
    return new SafetensorsFile(
      path,
      parsed.metadata,
      parsed.tensors,
      bytes.subarray(8 + headerLen),
    );
  }

  /** Whether the file holds `name`. */
  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The entry of `name`; throws naming the file when absent. */
  info(name: string): SafeTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.path}: no tensor "${name}"`);
    return t;
  }

  #bytes(name: string): { t: SafeTensorInfo; b: Uint8Array } {
    const t = this.info(name);
    const data = this.#data;
    if (data instanceof Uint8Array) return { t, b: data.slice(t.offsets[0], t.offsets[1]) };
    return { t, b: this.#readRange(data, t.offsets[0], t.offsets[1]) };
  }

  /** Bytes [from, to) of an opened file's data section, read now. */
  #readRange(data: FileData, from: number, to: number): Uint8Array {
    const bad = (msg: string) => new CheckpointError(`${this.path}: ${msg}`);
    let f: Deno.FsFile;
    try {
      f = Deno.openSync(data.real, { read: true });
    } catch (e) {
      throw bad(`cannot open it again to read its tensors (${oneLine((e as Error).message)})`);
    }
    try {
      const st = f.statSync();
      const mtime = st.mtime?.getTime() ?? null;
      if (st.size !== data.size || mtime !== data.mtime) {
        throw bad(
          `changed since it was opened (${data.size} bytes then, ${st.size} now` +
            `${st.size === data.size ? ", another modification time" : ""}): it was ` +
            `written to or replaced meanwhile`,
        );
      }
      const out = new Uint8Array(to - from);
      f.seekSync(data.start + from, Deno.SeekMode.Start);
      let off = 0;
      while (off < out.length) {
        const n = f.readSync(out.subarray(off));
        if (n === null || n === 0) throw bad("the file shrank while being read");
        off += n;
      }
      return out;
    } finally {
      f.close();
    }
  }

  /**
   * The values of `name` as f32 (F16/BF16/F64/I32/I64 converted). Throws a
   * {@link CheckpointError} naming the file and the tensor when a value is NaN or
   * infinite (or, for F64, too large for f32): such weights are corrupt.
   * `opts.allowNonFinite` skips that check (raw access, tests).
   */
  floats(name: string, opts: { allowNonFinite?: boolean } = {}): Float32Array {
    const out = this.#floats(name);
    if (opts.allowNonFinite) return out;
    const bad = firstNonFinite(out);
    if (bad >= 0) {
      let count = 0;
      for (let i = bad; i < out.length; i++) if (!Number.isFinite(out[i])) count++;
      const t = this.info(name);
      throw new CheckpointError(
        `${this.path}: tensor "${name}" (${t.dtype} [${t.shape.join(", ")}]) holds ${count} ` +
          `non-finite value${count === 1 ? "" : "s"} (first: ${out[bad]} at element ${bad}); ` +
          `the weights are corrupt`,
      );
    }
    return out;
  }

  #floats(name: string): Float32Array {
    const { t, b } = this.#bytes(name);
    switch (t.dtype) {
      case "F32":
        return new Float32Array(b.buffer, 0, b.length / 4);
      // Converted element by element into one new array: Float32Array.from with a mapping
      // function first built a JS list of every element (~+850 MiB and 3.4 s for GPT-2's
      // 38.6M-element embedding in F16).
      case "F16":
        return fromHalfBits(new Uint16Array(b.buffer, 0, b.length / 2), "fp16");
      case "BF16":
        return fromHalfBits(new Uint16Array(b.buffer, 0, b.length / 2), "bf16");
      case "F64":
        return new Float32Array(new Float64Array(b.buffer, 0, b.length / 8));
      case "I32":
        return new Float32Array(new Int32Array(b.buffer, 0, b.length / 4));
      case "I64": {
        const v = new BigInt64Array(b.buffer, 0, b.length / 8);
        const out = new Float32Array(v.length);
        for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
        return out;
      }
    }
  }

  /** The values of an integer tensor `name` as i32 (I64 must fit). */
  ints(name: string): Int32Array {
    const { t, b } = this.#bytes(name);
    if (t.dtype === "I32") return new Int32Array(b.buffer, 0, b.length / 4);
    if (t.dtype === "I64") {
      const src = new BigInt64Array(b.buffer, 0, b.length / 8);
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const v = Number(src[i]);
        if (v !== (v | 0)) {
          throw new CheckpointError(
            `${this.path}: tensor "${name}" value ${v} does not fit in i32`,
          );
        }
        out[i] = v;
      }
      return out;
    }
    throw new CheckpointError(`${this.path}: tensor "${name}" is ${t.dtype}, not an integer type`);
  }
}

/**
 * A tensor written as F16 or BF16 holds finite values that round to infinity
 * there (|x| ≥ 65,520 in fp16); `dtype` is the type asked for.
 */
export class HalfOverflowError extends CheckpointError {
  /** An error for `message`, about a tensor asked to be stored as `dtype`. */
  constructor(message: string, readonly dtype: "F16" | "BF16") {
    super(message);
    this.name = "HalfOverflowError";
  }
}

/**
 * Refuses finite values that round to ±inf in 16 bits (fp16: |x| ≥ 65,520;
 * values up to there round to its largest, 65,504): a file holding them is
 * corrupt to every reader, this project's own loader included. Names the
 * tensor, the count and the first such value.
 */
function checkNoOverflow(
  name: string,
  dtype: "F16" | "BF16",
  from: Float32Array,
  bits: Uint16Array,
): void {
  const expAllOnes = dtype === "F16" ? 0x7c00 : 0x7f80;
  let count = 0, first = -1;
  for (let i = 0; i < bits.length; i++) {
    if ((bits[i] & expAllOnes) === expAllOnes && Number.isFinite(from[i])) {
      if (count++ === 0) first = i;
    }
  }
  if (count > 0) {
    throw new HalfOverflowError(
      `tensor "${name}": ${count} finite value${count > 1 ? "s" : ""} past ${dtype}'s range ` +
        `(${from[first]} at index ${first}${dtype === "F16" ? "; F16 holds up to 65504" : ""}) ` +
        `would be stored as infinity: write it as ${
          dtype === "F16" ? "BF16 (F32's range) or " : ""
        }F32`,
      dtype,
    );
  }
}

/** The bytes of `t` as stored, and their dtype. */
function storedBytes(t: SafeTensorOut): { dtype: string; bytes: Uint8Array } {
  if (t.data instanceof Int32Array) {
    if (t.dtype && t.dtype !== "F32") {
      throw new CheckpointError(
        `tensor "${t.name}": integer values cannot be stored as ${t.dtype}`,
      );
    }
    return {
      dtype: "I32",
      bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    };
  }
  if (t.dtype === "F16" || t.dtype === "BF16") {
    const h = toHalfBits(t.data, t.dtype === "F16" ? "fp16" : "bf16");
    checkNoOverflow(t.name, t.dtype, t.data, h);
    return { dtype: t.dtype, bytes: new Uint8Array(h.buffer) };
  }
  return {
    dtype: "F32",
    bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
  };
}

/** A tensor's entry in a header to write: its stored dtype, shape and byte count. */
interface StoredEntry {
  name: string;
  dtype: string;
  shape: readonly number[];
  bytes: number;
}

/**
 * The length field and JSON header (padded with spaces to 8 bytes) of a file holding
 * `entries` in order, and the size of its data section.
 */
function encodeHeader(
  entries: readonly StoredEntry[],
  metadata?: Record<string, string>,
): { head: Uint8Array; dataBytes: number } {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let off = 0;
  for (const e of entries) {
    if (e.name === "__metadata__" || e.name in header) {
      throw new CheckpointError(`duplicate or reserved tensor name "${e.name}"`);
    }
    header[e.name] = { dtype: e.dtype, shape: [...e.shape], data_offsets: [off, off + e.bytes] };
    off += e.bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return { head, dataBytes: off };
}

/** Refuses `data` that does not fill `shape`, naming tensor `name`. */
function checkFills(name: string, shape: readonly number[], data: { length: number }): void {
  if (product(shape) !== data.length) {
    throw new CheckpointError(
      `tensor "${name}": ${data.length} values do not fill shape [${shape.join(", ")}]`,
    );
  }
}

/** Encodes tensors (F32, F16, BF16 or I32) and string metadata as safetensors bytes. */
export function encodeSafetensors(
  tensors: readonly SafeTensorOut[],
  metadata?: Record<string, string>,
): Uint8Array {
  assertLittleEndian();
  const stored = tensors.map((t) => {
    checkFills(t.name, t.shape, t.data);
    return { ...storedBytes(t), name: t.name, shape: t.shape };
  });
  const { head, dataBytes } = encodeHeader(
    stored.map((t) => ({ ...t, bytes: t.bytes.length })),
    metadata,
  );
  const out = new Uint8Array(head.length + dataBytes);
  out.set(head);
  let pos = head.length;
  for (const { bytes } of stored) {
    out.set(bytes, pos);
    pos += bytes.length;
  }
  return out;
}

/** A float tensor to write whose values are computed when its turn comes ({@link writeSafetensorsStreamed}). */
export interface SafeTensorLater {
  /** Tensor name in the file. */
  name: string;
  /** Its shape. */
  shape: readonly number[];
  /** Stored element type (default F32; F16/BF16 rounded to nearest even). */
  dtype?: "F32" | "F16" | "BF16";
  /** Its values (row-major), asked for once, when it is written (read from a device, say). */
  values: () => Float32Array | Promise<Float32Array>;
}

/**
 * Writes a safetensors file one tensor at a time: the header from the shapes first,
 * then each tensor's values as they are computed, so the file is never held in
 * memory whole. Flushes it to disk (fsync) before returning its size and SHA-256.
 * A tensor that fails (values that do not fill its shape, a half-precision overflow)
 * stops the write with the file incomplete: write into a staging path.
 */
export async function writeSafetensorsStreamed(
  path: string,
  tensors: readonly SafeTensorLater[],
  metadata?: Record<string, string>,
): Promise<FileDigest> {
  assertLittleEndian();
  const { head, dataBytes } = encodeHeader(
    tensors.map((t) => ({
      name: t.name,
      dtype: t.dtype ?? "F32",
      shape: t.shape,
      bytes: product(t.shape) * (t.dtype === "F16" || t.dtype === "BF16" ? 2 : 4),
    })),
    metadata,
  );
  const hash = createHash("sha256");
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const write = async (bytes: Uint8Array) => {
      for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
      hash.update(bytes);
    };
    await write(head);
    for (const t of tensors) {
      const data = await t.values();
      checkFills(t.name, t.shape, data);
      await write(storedBytes({ name: t.name, shape: [...t.shape], data, dtype: t.dtype }).bytes);
    }
    await f.sync();
  } finally {
    f.close();
  }
  return { bytes: head.length + dataBytes, sha256: hash.digest("hex") };
}

/**
 * Writes a safetensors file and flushes it to disk (fsync) before returning; returns
 * its size and SHA-256 (recorded in `checkpoint.json`).
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly SafeTensorOut[],
  metadata?: Record<string, string>,
): Promise<FileDigest> {
  const bytes = encodeSafetensors(tensors, metadata);
  await writeFileDurable(path, bytes);
  return { bytes: bytes.length, sha256: sha256Hex(bytes) };
}
