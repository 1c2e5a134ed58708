/**
 * The host memory that collectives work in: one shared `WebAssembly.Memory`
 * per process, handed to every local Worker. The SIMD reduction kernels can
 * only touch their own memory, so staging buffers, shared-memory channels and
 * TCP receive buffers all live here.
 *
 * Page 0 is a header: a bump-allocation pointer, an abort word with a message,
 * and a directory mapping channel keys to offsets. Allocation is a lock-free
 * bump (`Atomics.add`); memory is never freed, callers cache what they allocate.
 * @module
 */

import { createReducer, type Reducer } from "./wasm_reduce.ts";

const PAGE = 65536;
const MAX_PAGES = 65536;
/** Header word indices (Int32 units). */
const W_BUMP = 0, W_ABORT = 1, W_MSGLEN = 2;
/** The abort word while the failing rank writes its message (then rank + 1). */
const ABORT_WRITING = -1;
const MSG_AT = 64, MSG_MAX = 4000;
/** Channel directory: entries of 4 words [state, keyA, keyB, offset]. */
const DIR_AT = 4096, DIR_ENTRIES = 1024;
const ALIGN = 64;

/** A shared (or single-thread) memory with a bump allocator, an abort flag and a directory. */
export class Arena {
  /** Header words (page 0); never moves. */
  readonly header: Int32Array;
  /** The SIMD reduction kernels bound to this memory. */
  readonly reducer: Reducer;
  #buffers = new WeakSet<ArrayBufferLike>();

  /** Wraps an existing memory (e.g. one received from the launching thread). */
  constructor(readonly memory: WebAssembly.Memory) {
    this.header = new Int32Array(memory.buffer, 0, PAGE / 4);
    this.reducer = createReducer(memory);
    this.#buffers.add(memory.buffer);
  }

  /** Creates a fresh shared memory with an initialised header. */
  static create(): Arena {
    const memory = new WebAssembly.Memory({ initial: 2, maximum: MAX_PAGES, shared: true });
    const a = new Arena(memory);
    Atomics.store(a.header, W_BUMP, PAGE);
    return a;
  }

  /** The current buffer (a new object after growth; older views stay valid). */
  get buffer(): SharedArrayBuffer {
    const b = this.memory.buffer as unknown as SharedArrayBuffer;
    this.#buffers.add(b);
    return b;
  }

  /** True when `view` is backed by this memory, so kernels can address it. */
  owns(view: ArrayBufferView): boolean {
    if (this.#buffers.has(view.buffer)) return true;
    this.buffer; // refresh: it may have grown
    return this.#buffers.has(view.buffer);
  }

  /** Reserves `bytes` (64-byte aligned) and returns its offset; grows the memory as needed. */
  alloc(bytes: number): number {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    const off = Atomics.add(this.header, W_BUMP, size);
    const end = off + size;
    if (off < PAGE || end > MAX_PAGES * PAGE - PAGE) {
      throw new RangeError(
        `collectives arena exhausted: cannot allocate ${bytes} bytes (4 GiB max)`,
      );
    }
    for (;;) {
      const len = this.memory.buffer.byteLength;
      if (len >= end) break;
      try {
        this.memory.grow(Math.ceil((end - len) / PAGE));
      } catch (e) {
        if (this.memory.buffer.byteLength >= end) break;
        throw new RangeError(
          `collectives arena cannot grow to ${end} bytes: ${(e as Error).message}`,
        );
      }
    }
    return off;
  }

  /** A Float32Array of `n` elements at byte offset `off`. */
  f32(off: number, n: number): Float32Array {
    return new Float32Array(this.buffer, off, n);
  }

  /** A Uint8Array of `n` bytes at byte offset `off`. */
  u8(off: number, n: number): Uint8Array {
    return new Uint8Array(this.buffer, off, n);
  }

  /** An Int32Array of `n` words at byte offset `off`. */
  i32(off: number, n: number): Int32Array {
    return new Int32Array(this.buffer, off, n);
  }

  /**
   * Records the first failure (rank and message) and wakes nobody in particular;
   * waiters poll it. The abort word is claimed (`ABORT_WRITING`) before the
   * message is written and names the rank only after, so a reader never sees a
   * failure without its message.
   */
  abort(rank: number, message: string): void {
    if (Atomics.compareExchange(this.header, W_ABORT, 0, ABORT_WRITING) !== 0) return;
    const bytes = new TextEncoder().encode(message).subarray(0, MSG_MAX);
    new Uint8Array(this.buffer, MSG_AT, bytes.length).set(bytes);
    Atomics.store(this.header, W_MSGLEN, bytes.length);
    Atomics.store(this.header, W_ABORT, rank + 1);
  }

  /** The recorded failure, or null while all is well. */
  aborted(): { rank: number; message: string } | null {
    let r = Atomics.load(this.header, W_ABORT);
    if (r === 0) return null;
    // Another thread is writing the message: a few microseconds of copying.
    for (let spins = 0; r === ABORT_WRITING && spins < 10_000_000; spins++) {
      r = Atomics.load(this.header, W_ABORT);
    }
    if (r === ABORT_WRITING) {
      return { rank: -1, message: "a rank failed (its message was not written)" };
    }
    const len = Atomics.load(this.header, W_MSGLEN);
    const msg = new TextDecoder().decode(new Uint8Array(this.buffer, MSG_AT, len).slice());
    return { rank: r - 1, message: msg };
  }

  /**
   * Finds or creates the region registered under `key`: the first caller
   * allocates `bytes` and runs `init` on it; later callers get the same offset.
   */
  region(key: string, bytes: number, init?: (off: number) => void): number {
    const [ka, kb] = hashKey(key);
    const dir = this.header;
    for (let probe = 0; probe < DIR_ENTRIES; probe++) {
      const e = (DIR_AT / 4) + ((ka >>> 0) + probe) % DIR_ENTRIES * 4;
      const st = Atomics.compareExchange(dir, e, 0, 1);
      if (st === 0) {
        Atomics.store(dir, e + 1, ka);
        Atomics.store(dir, e + 2, kb);
        const off = this.alloc(bytes);
        init?.(off);
        Atomics.store(dir, e + 3, off);
        Atomics.store(dir, e, 2);
        return off;
      }
      while (Atomics.load(dir, e) !== 2) { /* the creator is in synchronous code: spin */ }
      if (Atomics.load(dir, e + 1) === ka && Atomics.load(dir, e + 2) === kb) {
        return Atomics.load(dir, e + 3);
      }
    }
    throw new RangeError("collectives arena directory is full (too many channels)");
  }
}

/** Two independent 32-bit FNV-1a hashes of `s`. */
function hashKey(s: string): [number, number] {
  let a = 0x811c9dc5, b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 13);
  }
  return [a | 0, b | 0];
}
