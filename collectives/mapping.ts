/**
 * Shared memory between two processes on one host, for the payloads of a TCP
 * link (`TcpLink`): a file in `/dev/shm` that both processes map (glibc's
 * `open`, `posix_fallocate` and `mmap` through FFI), removed as soon as both have it
 * mapped, so nothing is left behind once they exit. The link's socket still
 * carries every header, in order; a payload over {@link MAPPED_MIN_BYTES} is
 * copied into the next slot of the sender's half instead of being written to
 * the socket, and the receiver copies it out when the header arrives. Two
 * pinned processes all-reduce 704 KiB that way in ~0.1 ms, against ~0.4 ms
 * through the socket (2026-12-03; docs/measured.md, "Collectives").
 *
 * Each side's half has {@link MAPPING_DEPTH} slots used in turn, each with a
 * flag: the sender sets it after filling the slot, the receiver clears it after
 * copying out. A sender that finds its next slot still full sends that payload
 * through the socket, so a slow reader never blocks a send. Beside its flag a
 * slot holds its message's header and its number on the link, written before
 * the flag: a receiver waiting for exactly that message may take it from the
 * slot as soon as the flag is set, without waiting for the header to come
 * through the socket (`TcpLink.recv`).
 *
 * Where the mapping cannot be made (not Linux/glibc, no FFI permission, no
 * `/dev/shm`, the peer on another host, or turned off) the link carries its
 * payloads in the socket as before; `negotiateMapping` (collectives/tcp.ts)
 * settles this with the peer when the connection opens.
 * @module
 */

/** Payloads up to this many bytes stay in the socket (one write with their header). */
export const MAPPED_MIN_BYTES = 16384;
/** Slots per direction. */
export const MAPPING_DEPTH = 4;

/** Bytes of the token that proves both sides mapped one file. */
export const TOKEN_BYTES = 16;
/** Bytes before the first slot: the token, then the slots' flags. */
const HEADER = 4096;
const FLAGS_AT = 64;
/** Where the slots' headers start: 16 Int32 words a slot (the frame's 8, then its message number). */
const SLOT_HEADERS_AT = 1024;
const SLOT_HEADER_WORDS = 16;
/** Int32 words of a frame header (collectives/frame.ts), then the message number's word. */
const FRAME_WORDS = 8;

const O_RDWR = 0o2, O_CREAT = 0o100, O_EXCL = 0o200;
const PROT_READ_WRITE = 3, MAP_SHARED = 1, SEEK_END = 2;

const LIBC_SYMBOLS = {
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  posix_fallocate: { parameters: ["i32", "i64", "i64"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  close: { parameters: ["i32"], result: "i32" },
  unlink: { parameters: ["buffer"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

/** glibc through FFI; throws why not where that is not possible (another OS, no FFI permission). */
function openLibc(): Libc {
  if (Deno.build.os !== "linux") throw new Error(`not on Linux (${Deno.build.os})`);
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    throw new Error("no FFI permission (--allow-ffi)");
  }
  try {
    return Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  } catch (e) {
    throw new Error(`cannot load glibc: ${(e as Error).message}`);
  }
}

/** Closes `libc` and throws `why`. */
function fail(libc: Libc, why: string): never {
  libc.close();
  throw new Error(why);
}

const cString = (s: string) => new TextEncoder().encode(`${s}\0`);

/**
 * One mapped file shared by the two ends of a link: `depth` slots of
 * `slotBytes` per direction. The side that created it sends from direction 0.
 */
export class PairMapping {
  #libc: Libc;
  #ptr: Deno.PointerObject;
  #bytes: number;
  #memory: ArrayBuffer;
  #flags: Int32Array;
  #headers: Int32Array;
  #unmapped = false;
  /** The file's name while it still has one and this side created it. */
  #name: string | null = null;

  private constructor(
    libc: Libc,
    ptr: Deno.PointerObject,
    bytes: number,
    readonly slotBytes: number,
    readonly depth: number,
    /** Direction this side sends on (0 for the creator, 1 for the other). */
    readonly sendsOn: 0 | 1,
  ) {
    this.#libc = libc;
    this.#ptr = ptr;
    this.#bytes = bytes;
    this.#memory = Deno.UnsafePointerView.getArrayBuffer(ptr, bytes);
    this.#flags = new Int32Array(this.#memory, FLAGS_AT, 2 * depth);
    this.#headers = new Int32Array(this.#memory, SLOT_HEADERS_AT, 2 * depth * SLOT_HEADER_WORDS);
  }

  /** Total bytes of a mapping with these slots. */
  static size(slotBytes: number, depth: number): number {
    return HEADER + 2 * depth * slotBytes;
  }

  /**
   * Creates and maps a new file at `path` (which must not exist), writing
   * `token` into it; throws why not where shared mappings are not available.
   */
  static create(path: string, token: Uint8Array, slotBytes: number, depth: number): PairMapping {
    const libc = openLibc();
    const bytes = PairMapping.size(slotBytes, depth);
    const fd = libc.symbols.open(cString(path), O_RDWR | O_CREAT | O_EXCL, 0o600);
    if (fd < 0) fail(libc, `cannot create ${path}`);
    // Reserve every page now: a store to a page a full tmpfs cannot back would
    // kill the process (SIGBUS); a full /dev/shm (64 MiB in a default Docker
    // container) fails here instead, and the link uses its socket.
    const reserved = libc.symbols.posix_fallocate(fd, 0n, BigInt(bytes)) === 0;
    const ptr = reserved ? map(libc, fd, bytes) : null;
    libc.symbols.close(fd);
    if (!ptr) {
      libc.symbols.unlink(cString(path));
      fail(libc, reserved ? `cannot map ${path}` : `no room for ${bytes} bytes in /dev/shm`);
    }
    const m = new PairMapping(libc, ptr, bytes, slotBytes, depth, 0);
    new Uint8Array(m.#memory, 0, TOKEN_BYTES).set(token);
    m.#name = path;
    return m;
  }

  /**
   * Maps the file the peer created at `path`; throws unless it exists, has the
   * size of these slots and holds `token` (else it is not the peer's file: the
   * peer is on another host, or in another `/dev/shm`).
   */
  static open(path: string, token: Uint8Array, slotBytes: number, depth: number): PairMapping {
    const libc = openLibc();
    const bytes = PairMapping.size(slotBytes, depth);
    const fd = libc.symbols.open(cString(path), O_RDWR, 0);
    if (fd < 0) fail(libc, `cannot open ${path} (another host, or another /dev/shm)`);
    // the file's size, without needing Deno's read permission for /dev/shm
    const size = Number(libc.symbols.lseek(fd, 0n, SEEK_END));
    const ptr = size === bytes ? map(libc, fd, bytes) : null;
    libc.symbols.close(fd);
    if (!ptr) {
      fail(libc, size === bytes ? `cannot map ${path}` : `${path} has ${size} bytes, not ${bytes}`);
    }
    const m = new PairMapping(libc, ptr, bytes, slotBytes, depth, 1);
    const theirs = new Uint8Array(m.#memory, 0, TOKEN_BYTES);
    if (!theirs.every((b, i) => b === token[i])) {
      m.unmap();
      throw new Error(`${path} is not the peer's file (its token differs)`);
    }
    return m;
  }

  /**
   * Removes the name of the file this side created (the mappings stay), once
   * both sides have mapped it or gave up. Idempotent; a no-op for the side
   * that opened the peer's file.
   */
  removeName(): void {
    if (this.#name === null || this.#unmapped) return;
    this.#libc.symbols.unlink(cString(this.#name));
    this.#name = null;
  }

  /** Slot `j` of direction `dir`. */
  #slot(dir: 0 | 1, j: number, bytes: number): Uint8Array {
    return new Uint8Array(this.#memory, HEADER + (dir * this.depth + j) * this.slotBytes, bytes);
  }

  /** Whether send slot `j` is free (the peer copied out what was there). */
  sendSlotFree(j: number): boolean {
    return Atomics.load(this.#flags, this.sendsOn * this.depth + j) === 0;
  }

  /**
   * Copies `payload` into send slot `j` with its frame `header` (8 Int32 words)
   * and its number on the link `message`, then marks the slot full.
   */
  fill(j: number, payload: Uint8Array, header: Int32Array, message: number): void {
    this.#slot(this.sendsOn, j, payload.length).set(payload);
    const at = (this.sendsOn * this.depth + j) * SLOT_HEADER_WORDS;
    for (let i = 0; i < FRAME_WORDS; i++) Atomics.store(this.#headers, at + i, header[i]);
    Atomics.store(this.#headers, at + FRAME_WORDS, message);
    Atomics.store(this.#flags, this.sendsOn * this.depth + j, 1);
  }

  /**
   * Whether receive slot `j` is full with message number `message` of the
   * link; if so, its frame header is copied into `header` (8 Int32 words).
   */
  holds(j: number, message: number, header: Int32Array): boolean {
    const dir = 1 - this.sendsOn;
    if (Atomics.load(this.#flags, dir * this.depth + j) === 0) return false;
    const at = (dir * this.depth + j) * SLOT_HEADER_WORDS;
    if (Atomics.load(this.#headers, at + FRAME_WORDS) !== message) return false;
    for (let i = 0; i < FRAME_WORDS; i++) header[i] = Atomics.load(this.#headers, at + i);
    return true;
  }

  /** Copies receive slot `j`'s first `into.length` bytes into `into` and marks the slot free. */
  drain(j: number, into: Uint8Array): void {
    const dir = (1 - this.sendsOn) as 0 | 1;
    into.set(this.#slot(dir, j, into.length));
    Atomics.store(this.#flags, dir * this.depth + j, 0);
  }

  /** Removes the name if still there, then unmaps; no slot may be touched afterwards. Idempotent. */
  unmap(): void {
    this.removeName();
    if (this.#unmapped) return;
    this.#unmapped = true;
    this.#libc.symbols.munmap(this.#ptr, BigInt(this.#bytes));
    this.#libc.close();
  }
}

function map(libc: Libc, fd: number, bytes: number): Deno.PointerObject | null {
  const ptr = libc.symbols.mmap(null, BigInt(bytes), PROT_READ_WRITE, MAP_SHARED, fd, 0n);
  // MAP_FAILED is (void*)-1
  if (ptr === null || Deno.UnsafePointer.value(ptr) === 0xffffffffffffffffn) return null;
  return ptr;
}
