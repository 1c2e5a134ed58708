/**
 * The safetensors format, read and written by the project: an 8-byte little-endian
 * header length, a JSON header mapping tensor names to dtype, shape and byte range
 * (plus an optional `__metadata__` map of strings), then the raw little-endian data.
 * Reading validates every offset and size against the file and names the file and
 * the tensor in each error; F32, F16, BF16, F64, I32 and I64 are read, F32 and I32
 * are written.
 * @module
 */

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
  /** Values: Float32Array is written as F32, Int32Array as I32. */
  data: Float32Array | Int32Array;
}

function assertLittleEndian(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new CheckpointError("safetensors I/O needs a little-endian host");
  }
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** A parsed safetensors file held in memory. */
export class SafetensorsFile {
  /** Tensor entries by name, in header order. */
  readonly tensors: Map<string, SafeTensorInfo>;
  readonly #data: Uint8Array;

  private constructor(
    /** The file name used in messages. */
    readonly path: string,
    /** The `__metadata__` strings (empty when absent). */
    readonly metadata: Record<string, string>,
    tensors: Map<string, SafeTensorInfo>,
    data: Uint8Array,
  ) {
    this.tensors = tensors;
    this.#data = data;
  }

  /** Reads and validates `path`. */
  static async read(path: string): Promise<SafetensorsFile> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new CheckpointError(`${path}: no such file`);
      throw e;
    }
    return SafetensorsFile.parse(bytes, path);
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
    if (headerLen > bytes.length - 8) {
      throw bad(
        `the header claims ${headerLen} bytes but the file holds only ${bytes.length - 8} after ` +
          `the length field (truncated or not a safetensors file)`,
      );
    }
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(
        bytes.subarray(8, 8 + headerLen),
      ));
    } catch (e) {
      throw bad(`the header is not valid JSON (${(e as Error).message})`);
    }
    if (!header || typeof header !== "object" || Array.isArray(header)) {
      throw bad("the header is not a JSON object");
    }
    const data = bytes.subarray(8 + headerLen);
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
      if (!(typeof dtype === "string" && dtype in ELEMENT_BYTES)) {
        throw bad(`tensor "${name}" has unsupported dtype ${JSON.stringify(e?.dtype)}`);
      }
      const shape = e.shape;
      if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
        throw bad(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
      }
      const off = e.data_offsets;
      if (
        !Array.isArray(off) || off.length !== 2 ||
        off.some((o) => !Number.isInteger(o) || o < 0) || off[0] > off[1]
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
      if (off[1] > data.length) {
        throw bad(
          `tensor "${name}" needs data bytes [${off[0]}, ${off[1]}) but the file holds only ` +
            `${data.length} data bytes (truncated file?)`,
        );
      }
      tensors.set(name, { dtype, shape: shape as number[], offsets: [off[0], off[1]] });
      ranges.push([off[0], off[1], name]);
    }
    ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (let i = 1; i < ranges.length; i++) {
      if (ranges[i][0] < ranges[i - 1][1]) {
        throw bad(
          `tensors "${ranges[i - 1][2]}" and "${ranges[i][2]}" overlap in the data section`,
        );
      }
    }
    return new SafetensorsFile(path, metadata, tensors, data);
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
    return { t, b: this.#data.slice(t.offsets[0], t.offsets[1]) };
  }

  /** The values of `name` as f32 (F16/BF16/F64/I32/I64 converted). */
  floats(name: string): Float32Array {
    const { t, b } = this.#bytes(name);
    switch (t.dtype) {
      case "F32":
        return new Float32Array(b.buffer, 0, b.length / 4);
      case "F16": {
        const h = new Uint16Array(b.buffer, 0, b.length / 2);
        return Float32Array.from(h, f16ToF32);
      }
      case "BF16": {
        const h = new Uint16Array(b.buffer, 0, b.length / 2);
        const u = new Uint32Array(h.length);
        for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
        return new Float32Array(u.buffer);
      }
      case "F64":
        return Float32Array.from(new Float64Array(b.buffer, 0, b.length / 8));
      case "I32":
        return Float32Array.from(new Int32Array(b.buffer, 0, b.length / 4));
      case "I64":
        return Float32Array.from(new BigInt64Array(b.buffer, 0, b.length / 8), Number);
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

/** Encodes tensors (F32 or I32) and string metadata as safetensors bytes. */
export function encodeSafetensors(
  tensors: readonly SafeTensorOut[],
  metadata?: Record<string, string>,
): Uint8Array {
  assertLittleEndian();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    if (t.name === "__metadata__" || t.name in header) {
      throw new CheckpointError(`duplicate or reserved tensor name "${t.name}"`);
    }
    if (product(t.shape) !== t.data.length) {
      throw new CheckpointError(
        `tensor "${t.name}": ${t.data.length} values do not fill shape [${t.shape.join(", ")}]`,
      );
    }
    const dtype = t.data instanceof Int32Array ? "I32" : "F32";
    header[t.name] = { dtype, shape: [...t.shape], data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const t of tensors) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    pos += t.data.byteLength;
  }
  return out;
}

/** Writes a safetensors file and flushes it to disk (fsync) before returning. */
export async function writeSafetensors(
  path: string,
  tensors: readonly SafeTensorOut[],
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileDurable(path, encodeSafetensors(tensors, metadata));
}
