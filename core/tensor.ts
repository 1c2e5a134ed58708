/**
 * Tensors: a GPU buffer (shared by views through a reference count), a shape and
 * a dtype, plus the autograd fields. Creation, read-back and disposal live here;
 * the math lives in `core/ops/`.
 * @module
 */

import type { Device } from "./device.ts";
import { recordHalfConversion } from "./half_convert.ts";
import { type BufferBinding, subBinding, windowElements, windows } from "./windows.ts";

/**
 * Element types. `i32` is for indices (token ids and targets: see `TokenIds` for
 * the ops that also need their host copy); all math is f32.
 */
export type DType = "f32" | "i32";

/** A node of the autograd graph: the op that produced a tensor. */
export interface GradNode {
  /** Op name, for error messages and debugging. */
  readonly name: string;
  /** The inputs the op read; gradients flow back to those that require them. */
  readonly inputs: readonly Tensor[];
  /**
   * Given the gradient of the output, returns one gradient (or null) per input.
   * An entry may be a {@link PendingGrad} (a promise): its work is under way (an
   * all-reduce in flight, see models/parallel/overlap.ts) and the engine awaits
   * it only when that input's gradient is consumed.
   */
  backward(grad: Tensor): GradResult[] | Promise<GradResult[]>;
  /**
   * For an op with several outputs (see `recordMulti`): all of them, sharing this
   * one node. The engine then calls {@link GradNode.backwardAll} once, with one
   * gradient (or null) per output, when every output's gradient is complete;
   * `backward` is not called.
   */
  readonly outputs?: readonly Tensor[];
  /** The backward pass of a several-output node, given one gradient (or null) per output. */
  backwardAll?(grads: (Tensor | null)[]): GradResult[] | Promise<GradResult[]>;
}

/** A gradient whose computation is still in flight (awaited when consumed). */
export type PendingGrad = Promise<Tensor | null>;

/**
 * A gradient that can add itself into another gradient of its input in place,
 * and becomes a tensor of its own only where it is the first: an embedding
 * table's, zero outside the batch's rows, is a scatter-add into the tied LM
 * head's gradient rather than a zeroed table-sized tensor and a sum. Used once:
 * {@link AddableGrad.addInto}, {@link AddableGrad.dense} or
 * {@link AddableGrad.dispose}.
 */
export interface AddableGrad {
  /** Elements, as many as the input's. */
  readonly size: number;
  /** Adds this gradient into `dst` (a gradient of the same input), in place. */
  addInto(dst: Tensor): void;
  /** This gradient as a new tensor (of its input's shape). */
  dense(): Tensor;
  /** Frees what it holds (a gradient never used). */
  dispose(): void;
}

/** One input's gradient as a backward function returns it. */
export type GradResult = Tensor | AddableGrad | PendingGrad | null;

/** `g` as a tensor: itself, or an {@link AddableGrad} made dense. */
export function denseGrad(g: Tensor | AddableGrad): Tensor {
  return g instanceof Tensor ? g : g.dense();
}

/** The GPU storage behind one or more tensor views. */
class Storage {
  refs = 1;
  /**
   * Mixed precision: the values packed two per word while `buffer` is dropped
   * (a saved activation, see {@link packSaved}); `buffer` is refilled from it on use.
   */
  packed: { words: GPUBuffer; format: "fp16" | "bf16" } | null = null;
  /** Never packed (cross-entropy's logits and hidden input: see {@link keepF32}). */
  keepF32 = false;
  constructor(readonly device: Device, public buffer: GPUBuffer | null, readonly bytes: number) {}

  release(): void {
    if (--this.refs !== 0) return;
    if (this.buffer) this.device.pool.release(this.buffer);
    this.buffer = null;
    if (this.packed) this.device.pool.release(this.packed.words);
    this.packed = null;
  }

  /** The f32 buffer, unpacked from the 16-bit words when it was dropped. */
  live(): GPUBuffer | null {
    if (this.buffer || !this.packed || this.refs === 0) return this.buffer;
    const device = this.device;
    const buf = device.pool.acquire(this.bytes);
    halfWindows(device, this.bytes / 4, (s, c) => {
      recordHalfConversion(
        device,
        "unpack",
        this.packed!.format,
        c,
        subBinding(
          { buffer: this.packed!.words, size: this.packed!.words.size },
          s / 2,
          (c + 1) >> 1,
        ),
        subBinding({ buffer: buf, size: buf.size }, s, c),
      );
    });
    this.buffer = buf;
    savedState(device).unpacked.add(this);
    return buf;
  }

  /** Frees the f32 buffer refilled by {@link Storage.live} (the packed words stay). */
  dropUnpacked(): void {
    if (this.buffer && this.packed) this.device.pool.release(this.buffer);
    if (this.packed) this.buffer = null;
  }

  /** Packs the f32 values into 16-bit words and frees the f32 buffer. */
  pack(format: "fp16" | "bf16"): void {
    if (!this.buffer || this.packed || this.keepF32) return;
    const device = this.device;
    const n = this.bytes / 4;
    const words = device.pool.acquire(Math.max(1, Math.ceil(n / 2)) * 4);
    const src = this.buffer;
    halfWindows(device, n, (s, c) => {
      recordHalfConversion(
        device,
        "pack",
        format,
        c,
        subBinding({ buffer: src, size: src.size }, s, c),
        subBinding({ buffer: words, size: words.size }, s / 2, (c + 1) >> 1),
      );
    });
    device.pool.release(src);
    this.buffer = null;
    this.packed = { words, format };
  }
}

/** Windows over `n` values whose starts are even and whose word offsets stay aligned. */
function halfWindows(device: Device, n: number, each: (start: number, count: number) => void) {
  const align = device.limits.minStorageBufferOffsetAlignment ?? 256;
  for (const [s, c] of windows(n, windowElements(device, 2 * Math.max(1, align / 4)))) each(s, c);
}

interface SavedState {
  /** Tensors recorded for backward since the last {@link packSaved}. */
  pending: Set<Tensor>;
  /** Packed storages whose f32 buffer was refilled since the last pack or drop. */
  unpacked: Set<Storage>;
}

const saved = new WeakMap<Device, SavedState>();

function savedState(device: Device): SavedState {
  let st = saved.get(device);
  if (!st) saved.set(device, st = { pending: new Set(), unpacked: new Set() });
  return st;
}

/** Number of elements of `shape`. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Formats a shape as `[2, 3]`. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(`invalid shape ${fmtShape(shape)}: dimensions must be integers ≥ 0`);
    }
  }
}

/** A 16-bit copy of an f32 tensor: its values packed two per 32-bit word (core/ops/half.ts). */
export interface HalfCopy {
  /** The packed words (an i32-typed tensor of ceil(size/2) elements). */
  words: Tensor;
  /** The 16-bit format. */
  format: "fp16" | "bf16";
}

/** An n-dimensional array on one device. */
export class Tensor {
  /** Element count. */
  readonly size: number;
  /** Whether gradients flow into this tensor. */
  requiresGrad = false;
  /** Accumulated gradient (leaves only), same shape. */
  grad: Tensor | null = null;
  /** The op that produced this tensor (null for leaves). */
  node: GradNode | null = null;
  /**
   * Set once `backward` has run from this tensor: a second pass would add the
   * same gradients into the parameters again, so it is refused (PyTorch's
   * "backward through the graph a second time").
   */
  backwardDone = false;
  /** Survives scope cleanup (parameters, optimizer state, gradients). */
  persistent = false;
  /** Optional name, used in messages and checkpoints. */
  name?: string;
  /**
   * Mixed precision: a 16-bit copy of this (f32 master) tensor that the matmul
   * kernels read in its place when it is the B operand of a forward or
   * input-gradient product; the trainer refreshes it after each update, and
   * {@link Tensor.write} drops it.
   */
  halfCopy: HalfCopy | null = null;
  #storage: Storage | null;

  /** Wraps storage; prefer the static constructors. */
  private constructor(
    /** The device holding the data. */
    readonly device: Device,
    storage: Storage,
    /** Dimensions, outermost first. */
    readonly shape: readonly number[],
    /** Element type. */
    readonly dtype: DType,
  ) {
    this.size = numel(shape);
    this.#storage = storage;
    const scope = device.scopes[device.scopes.length - 1];
    if (scope) {
      scope.add(this);
      this.#madeDuring = device.runningPass;
    }
  }

  /**
   * The pass (`Trainer.step`, …) that ran on the device when this tensor was
   * made, whose scope then holds it: named when the tensor is used after that
   * scope freed it.
   */
  #madeDuring: string | null = null;

  /** An uninitialised tensor (contents undefined until written). */
  static empty(device: Device, shape: readonly number[], dtype: DType = "f32"): Tensor {
    checkShape(shape);
    if (dtype !== "f32" && dtype !== "i32") {
      throw new TypeError(`empty: dtype must be "f32" or "i32", got ${JSON.stringify(dtype)}`);
    }
    device.assertAlive();
    const bytes = numel(shape) * 4;
    const buffer = device.pool.acquire(Math.max(bytes, 4));
    return new Tensor(device, new Storage(device, buffer, bytes), [...shape], dtype);
  }

  /** A tensor holding `data` (copied), of `shape` (default: 1-D). */
  static fromArray(
    device: Device,
    data: Float32Array | Int32Array | number[],
    shape?: readonly number[],
    dtype?: DType,
  ): Tensor {
    const dt: DType = dtype ?? (data instanceof Int32Array ? "i32" : "f32");
    if (dt !== "f32" && dt !== "i32") {
      throw new TypeError(`fromArray: dtype must be "f32" or "i32", got ${JSON.stringify(dt)}`);
    }
    // A typed array is uploaded as its bytes: one of the other element type
    // would have its bits reinterpreted, so it is refused, not converted.
    if (data instanceof Float32Array && dt === "i32") {
      throw new TypeError(
        "fromArray: a Float32Array cannot fill an i32 tensor (its bits would be read as " +
          "integers); pass an Int32Array or a number[] of integers",
      );
    }
    if (data instanceof Int32Array && dt === "f32") {
      throw new TypeError(
        "fromArray: an Int32Array cannot fill an f32 tensor (its bits would be read as " +
          "floats); pass a Float32Array or a number[]",
      );
    }
    if (Array.isArray(data) && dt === "i32") {
      const bad = data.findIndex((v) => !Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31);
      if (bad >= 0) {
        throw new RangeError(
          `fromArray: value ${data[bad]} at index ${bad} is not an int32 (an i32 tensor holds ` +
            `integers in [-2^31, 2^31))`,
        );
      }
    }
    const arr = data instanceof Float32Array || data instanceof Int32Array
      ? data
      : dt === "i32"
      ? Int32Array.from(data)
      : Float32Array.from(data);
    const sh = shape ?? [arr.length];
    if (numel(sh) !== arr.length) {
      throw new Error(
        `fromArray: ${arr.length} values do not fill shape ${fmtShape(sh)} (${numel(sh)} elements)`,
      );
    }
    const t = Tensor.empty(device, sh, dt);
    device.upload(t.buffer, arr);
    return t;
  }

  /** The GPU buffer; throws a clear error if the tensor was disposed. */
  get buffer(): GPUBuffer {
    const b = this.#storage?.live();
    if (!b) {
      // A tensor made while a pass ran (a data loader preparing the next batch
      // during a step) joined that pass's scope, which freed it when it ended.
      const during = this.#madeDuring && freedByScope.has(this)
        ? `; it was made while ${this.#madeDuring} ran on its device, and that pass ` +
          "frees what is made during it when it ends: make it before or after the pass, " +
          "or call keep() on it"
        : "";
      throw new Error(
        `use of a disposed tensor${this.name ? ` "${this.name}"` : ""} of shape ${
          fmtShape(this.shape)
        }${during}`,
      );
    }
    return b;
  }

  /** Size in bytes. */
  get byteLength(): number {
    return this.size * 4;
  }

  /** Whether another live view shares this tensor's storage (in-place writes would show there). */
  get shared(): boolean {
    return (this.#storage?.refs ?? 0) > 1;
  }

  /** Whether {@link Tensor.dispose} was called. */
  get disposed(): boolean {
    return this.#storage === null;
  }

  /** The binding descriptor kernels take. */
  get binding(): BufferBinding {
    return { buffer: this.buffer, size: Math.max(this.byteLength, 4), device: this.device };
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }

  /** A new tensor sharing this one's storage with another shape of the same size. */
  view(shape: readonly number[] = this.shape): Tensor {
    checkShape(shape);
    if (numel(shape) !== this.size) {
      throw new Error(
        `cannot view ${fmtShape(this.shape)} (${this.size} elements) as ${fmtShape(shape)} (${
          numel(shape)
        } elements)`,
      );
    }
    const s = this.#storage;
    if (!s?.buffer && !s?.packed) void this.buffer; // throws the disposed error
    s!.refs++;
    return new Tensor(this.device, s!, [...shape], this.dtype);
  }

  /** Reads the values back to the host (a sync point). */
  async read(): Promise<Float32Array> {
    const bytes = await this.device.read(this.buffer, this.byteLength);
    if (this.dtype === "i32") return Float32Array.from(new Int32Array(bytes));
    return new Float32Array(bytes);
  }

  /**
   * Reads the values into `dst` (`size` elements, as {@link Tensor.read} gives
   * them; a sync point): for callers that reuse one host array (collectives'
   * staging). An f32 tensor is copied straight in.
   */
  async readInto(dst: Float32Array): Promise<void> {
    if (dst.length !== this.size) {
      throw new Error(
        `readInto: ${dst.length} floats from a tensor of shape ${
          fmtShape(this.shape)
        } (${this.size})`,
      );
    }
    if (this.dtype === "i32") dst.set(await this.read());
    else await this.device.readInto(this.buffer, dst);
  }

  /** Reads an `i32` tensor back as integers. */
  async readInt(): Promise<Int32Array> {
    if (this.dtype !== "i32") throw new Error(`readInt on a ${this.dtype} tensor`);
    return new Int32Array(await this.device.read(this.buffer, this.byteLength));
  }

  /** Reads a one-element tensor as a number. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() on a tensor of shape ${fmtShape(this.shape)}`);
    return (await this.read())[0];
  }

  /**
   * Overwrites the contents from the host (recorded in order with pending work),
   * dropping a 16-bit copy of the old contents ({@link Tensor.halfCopy}).
   */
  write(data: Float32Array | Int32Array): void {
    const want = this.dtype === "i32" ? Int32Array : Float32Array;
    if (!(data instanceof want)) {
      // Uploaded as its bytes, an array of the other type would have its bits reinterpreted.
      throw new TypeError(
        `write: a ${data?.constructor?.name ?? typeof data} cannot fill an ${this.dtype} tensor; ` +
          `pass an ${want.name}`,
      );
    }
    if (data.length !== this.size) {
      throw new Error(
        `write: ${data.length} values into a tensor of shape ${
          fmtShape(this.shape)
        } (${this.size})`,
      );
    }
    this.device.upload(this.buffer, data);
    // Its 16-bit copy (mixed precision) holds the old values: products read the f32 values until a
    // trainer packs a new one (before its next step or evaluation).
    this.halfCopy?.words.dispose();
    this.halfCopy = null;
  }

  /** Marks this tensor as surviving scopes (returns itself). */
  keep(): this {
    this.persistent = true;
    return this;
  }

  /** Turns on gradient tracking for a leaf (returns itself). */
  requireGrad(on = true): this {
    this.requiresGrad = on;
    return this;
  }

  /** Returns the storage to the pool once no view uses it. Idempotent. */
  dispose(): void {
    if (!this.#storage) return;
    this.#storage.release();
    this.#storage = null;
    this.node = null;
    this.halfCopy?.words.dispose();
    this.halfCopy = null;
  }

  /**
   * Frees the storage but keeps the autograd node, shape and flags: for a tensor
   * whose values nobody reads again but through which gradients still flow (a
   * recompute block's input kept elsewhere in 16 bits). A later read throws.
   */
  dropData(): void {
    if (!this.#storage) return;
    this.#storage.release();
    this.#storage = null;
  }

  /** Registers this tensor (an op's output autograd keeps) for {@link packSaved}. */
  static noteSaved(t: Tensor): void {
    if (t.dtype === "f32" && t.#storage && !t.persistent) savedState(t.device).pending.add(t);
  }

  /** Keeps this tensor's storage f32 when saved for backward (returns itself). */
  keepF32(): this {
    if (this.#storage) this.#storage.keepF32 = true;
    return this;
  }

  /** Whether the f32 storage is currently dropped and the values held packed in 16 bits. */
  get packedNow(): boolean {
    return !!this.#storage?.packed && !this.#storage.buffer;
  }

  /** See {@link packSaved}. */
  static packSaved(device: Device, keep: readonly Tensor[] = []): void {
    const st = savedState(device);
    const format = device.saveActivationsAs;
    const keepS = new Set(keep.map((t) => t.#storage));
    const still = new Set<Tensor>();
    for (const t of st.pending) {
      const s = t.#storage;
      if (!s) continue;
      if (keepS.has(s)) still.add(t);
      else if (format) s.pack(format);
    }
    st.pending = still;
    for (const s of st.unpacked) if (!keepS.has(s)) s.dropUnpacked();
    st.unpacked = new Set([...st.unpacked].filter((s) => keepS.has(s)));
  }

  /** See {@link dropUnpacked}. */
  static dropUnpacked(device: Device): void {
    const st = saved.get(device);
    if (!st || st.unpacked.size === 0) return;
    for (const s of st.unpacked) s.dropUnpacked();
    st.unpacked.clear();
  }

  /** A short description. */
  toString(): string {
    return `Tensor(${fmtShape(this.shape)}, ${this.dtype}${this.name ? `, ${this.name}` : ""})`;
  }
}

function collect(value: unknown, out: Set<Tensor>, depth = 0): void {
  if (value instanceof Tensor) out.add(value);
  else if (depth < 3 && value && typeof value === "object") {
    for (const v of Object.values(value as Record<string, unknown>)) collect(v, out, depth + 1);
  }
}

/**
 * Tensors a scope's end disposed (not their owner): only they are explained as
 * freed by the pass they were made in ({@link Tensor.buffer}'s error).
 */
const freedByScope = new WeakSet<Tensor>();

function endScope(device: Device, scope: Set<{ dispose(): void }>, result: unknown): void {
  device.scopes.pop();
  const escaping = new Set<Tensor>();
  collect(result, escaping);
  const parent = device.scopes[device.scopes.length - 1];
  for (const t of scope) {
    if (escaping.has(t as Tensor)) {
      parent?.add(t);
    } else if (t instanceof Tensor && t.persistent) {
      continue;
    } else {
      if (t instanceof Tensor) freedByScope.add(t);
      t.dispose();
    }
  }
}

/**
 * Runs one op's body `fn` (synchronous): if it throws, every tensor made inside
 * it is disposed before the error goes on, so an op refused after making its
 * output (a tensor past one binding, refused at dispatch) leaves nothing
 * behind, in a `tidy` scope or outside one. If it returns, the tensors it made
 * stay where they would have been without it: in the enclosing scope, or the
 * caller's. Persistent tensors are never disposed.
 */
export function disposeOnThrow<T>(device: Device, fn: () => T): T {
  const made = new Set<{ dispose(): void }>();
  device.scopes.push(made);
  const balanced = () => {
    if (device.scopes[device.scopes.length - 1] !== made) {
      throw new Error("disposeOnThrow: tensor scopes unbalanced");
    }
  };
  let r: T;
  try {
    r = fn();
  } catch (e) {
    balanced();
    endScope(device, made, undefined); // as a failed `tidy`: all but persistent ones go
    throw e;
  }
  balanced();
  device.scopes.pop();
  const parent = device.scopes[device.scopes.length - 1];
  if (parent) { for (const t of made) parent.add(t); }
  return r;
}

/**
 * Runs `fn` and disposes every tensor created inside it, except those it returns
 * (directly or inside arrays/objects) and those marked persistent. Works with
 * sync and async functions; scopes nest.
 */
export function tidy<T>(device: Device, fn: () => T): T {
  const scope = new Set<{ dispose(): void }>();
  device.scopes.push(scope);
  let r: T;
  try {
    r = fn();
  } catch (e) {
    endScope(device, scope, undefined);
    throw e;
  }
  if (r instanceof Promise) {
    return r.then(
      (v) => {
        endScope(device, scope, v);
        return v;
      },
      (e) => {
        endScope(device, scope, undefined);
        throw e;
      },
    ) as T;
  }
  endScope(device, scope, r);
  return r;
}

/**
 * Mixed precision's 16-bit saved activations (`device.saveActivationsAs`, set by
 * the trainer during a step): every tensor autograd recorded since the last call
 * (an op's output, which later ops' backward read) is packed two values per word
 * and its f32 buffer freed, except those sharing storage with `keep` (still
 * needed by the forward: a layer's output) and those marked {@link Tensor.keepF32}.
 * A packed tensor stays usable: a read (its `buffer`) unpacks it into a fresh f32
 * buffer, freed again at the next call or, in the backward pass, after the node
 * that read it ({@link dropUnpacked}). Models call it after each layer, the
 * trainer after the forward. Forward values are unchanged; backward reads the
 * 16-bit rounding of what it saved. Without `saveActivationsAs` it only forgets.
 */
export function packSaved(device: Device, keep: readonly Tensor[] = []): void {
  Tensor.packSaved(device, keep);
}

/** Frees the f32 buffers that reads refilled from packed saved activations. */
export function dropUnpacked(device: Device): void {
  Tensor.dropUnpacked(device);
}

/** Throws a clear error when two shapes differ. */
export function assertSameShape(op: string, a: Tensor, b: Tensor): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new Error(`${op}: shape mismatch ${fmtShape(a.shape)} vs ${fmtShape(b.shape)}`);
  }
}

/**
 * Throws a TypeError when an op that reads f32 values is handed a tensor of
 * another dtype (an `i32` tensor's bits would be read as floats); `op` names the
 * caller. Absent operands (`undefined`, `null`) are skipped. A disposed operand
 * is refused too (an op calls this before it makes its output, which the
 * refusal would otherwise leave behind).
 */
export function assertF32(op: string, ...ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) {
    if (t?.disposed) void t.buffer; // throws the disposed tensor's error
    if (t && t.dtype !== "f32") {
      throw new TypeError(
        `${op}: expected f32 tensors, got ${t.dtype}${t.name ? ` ("${t.name}")` : ""}`,
      );
    }
  }
}

/**
 * The length of `x`'s last dimension, over which row ops (softmax, layer norm,
 * cross-entropy) work; a 0-D tensor, which has none, is refused naming `op`.
 */
export function lastDim(op: string, x: Tensor): number {
  if (x.rank === 0) {
    throw new Error(`${op}: works along the last dimension and needs at least 1, got a 0-D tensor`);
  }
  return x.shape[x.rank - 1];
}

/**
 * Throws a clear error when tensors live on different devices; returns the
 * first one's device. Absent operands (`undefined`, `null`) are skipped.
 */
export function assertSameDevice(
  op: string,
  first: Tensor,
  ...ts: (Tensor | null | undefined)[]
): Device {
  const d = first.device;
  ts.forEach((t, i) => {
    if (t && t.device !== d) {
      throw new Error(
        `${op}: tensors are on different devices (operand ${i + 2} is not on operand 1's device)`,
      );
    }
  });
  return d;
}
