/**
 * TCP transport between processes and hosts: one no-delay connection per
 * (group, pair of ranks), framed messages (a 32-byte header, then the payload),
 * a background reader that fills receive slots in the arena ahead of use, and
 * sends written straight from the arena. `conn.write` may write partially, so
 * every write loops. Between two processes on one host, large payloads travel
 * through a shared mapping instead (collectives/mapping.ts) and only their
 * headers through the socket.
 * @module
 */

import {
  CollectiveError,
  type Frame,
  HEADER_BYTES,
  KIND_ABORT,
  KIND_DATA,
  KIND_MAPPED,
} from "./frame.ts";
import { checkFrame, decodeHeader, encodeHeader, TIMEOUT_SETTING } from "./frame.ts";
import { abortedError, type Link, type LinkContext, timeoutError } from "./link.ts";
import { MAPPED_MIN_BYTES, MAPPING_DEPTH, PairMapping, TOKEN_BYTES } from "./mapping.ts";
import { randomRunId } from "./env.ts";

/** Default payload bytes per TCP message. */
export const TCP_SLOT_BYTES = 1024 * 1024;
/** Receive slots read ahead per link. */
export const TCP_DEPTH = 4;

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it), for
 * tools and tests that start a rendezvous on this host.
 */
export function freeLocalPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** How a run id (the job's identity at rendezvous) reads in messages. */
export function describeRun(run: string | undefined): string {
  return run ? `run "${run}"` : "a run without id";
}

/** Writes all of `data`, looping over partial writes. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Reads exactly `into.length` bytes; returns false on a clean EOF before the first byte. */
export async function readExact(conn: Deno.Conn, into: Uint8Array): Promise<boolean> {
  let off = 0;
  while (off < into.length) {
    const n = await conn.read(into.subarray(off));
    if (n === null) {
      if (off === 0) return false;
      throw new Error(`connection closed mid-message (${off} of ${into.length} bytes)`);
    }
    off += n;
  }
  return true;
}

/** Length-prefixed JSON messages (used by the hello handshake and the store). */
export async function writeJson(conn: Deno.Conn, value: unknown): Promise<void> {
  const body = new TextEncoder().encode(JSON.stringify(value));
  const msg = new Uint8Array(4 + body.length);
  new DataView(msg.buffer).setUint32(0, body.length);
  msg.set(body, 4);
  await writeAll(conn, msg);
}

/** Reads one length-prefixed JSON message, or null on EOF. */
export async function readJson(conn: Deno.Conn): Promise<unknown | null> {
  const len = new Uint8Array(4);
  if (!(await readExact(conn, len))) return null;
  const n = new DataView(len.buffer).getUint32(0);
  if (n > 64 << 20) throw new Error(`oversized control message (${n} bytes)`);
  const body = new Uint8Array(n);
  if (!(await readExact(conn, body))) throw new Error("connection closed mid-message");
  return JSON.parse(new TextDecoder().decode(body));
}

interface Filled {
  frame: Frame;
  at: number;
}

/** A link to a rank in another process over one TCP connection. */
export class TcpLink implements Link {
  readonly maxMessage: number;
  #slots: number[] = [];
  #free: number[] = [];
  #filled: Filled[] = [];
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  #readerWake: (() => void) | null = null;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  #current: Filled | null = null;
  #mapping: PairMapping | null;
  /** Payloads sent and received through the mapping (each side uses its slots in turn). */
  #mappedOut = 0;
  #mappedIn = 0;
  /** Messages sent, and messages handed out by `recv`, on this link (abort notices aside). */
  #sent = 0;
  #received = 0;
  /** Mapped messages `recv` took from their slot before the reader met their header. */
  #takenEarly = 0;
  #fromSlots = 0;
  /** Whether the reader holds a header it has not filled a slot for yet (it waits for a free one). */
  #holding = false;
  /** Where an eager `recv` reads a slot's header. */
  readonly #slotHeader = new Int32Array(HEADER_BYTES / 4);

  /**
   * Wraps a connected socket; starts reading ahead into `depth` arena slots.
   * With `mapping` (from {@link negotiateMapping}; the link owns it from then
   * on), payloads over {@link MAPPED_MIN_BYTES} go through it.
   */
  constructor(
    readonly ctx: LinkContext,
    readonly peer: number,
    readonly conn: Deno.TcpConn,
    slotBytes = TCP_SLOT_BYTES,
    depth = TCP_DEPTH,
    mapping: PairMapping | null = null,
  ) {
    if (mapping && mapping.slotBytes < slotBytes) {
      throw new Error(
        `a mapping of ${mapping.slotBytes}-byte slots cannot carry ${slotBytes}-byte messages`,
      );
    }
    this.maxMessage = slotBytes;
    this.#mapping = mapping;
    for (let i = 0; i < depth; i++) {
      const at = ctx.arena.alloc(slotBytes);
      this.#slots.push(at);
      this.#free.push(at);
    }
    this.#readLoop().catch((e) => this.#fail(e));
  }

  #fail(e: unknown): void {
    if (this.#error) return;
    const msg = (e as Error)?.message ?? String(e);
    this.#error = e instanceof CollectiveError ? e : new CollectiveError(
      this.#closed
        ? `rank ${this.ctx.rank}: link to rank ${this.peer} was closed`
        : `rank ${this.ctx.rank}: connection to rank ${this.peer} at ${this.#remote()} ` +
          `failed (${msg}); ` +
          `its process probably exited or crashed`,
      this.peer,
    );
    this.#wake?.();
    this.#readerWake?.();
  }

  async #readLoop(): Promise<void> {
    const hbuf = new Uint8Array(HEADER_BYTES);
    const hdr = new Int32Array(hbuf.buffer);
    for (;;) {
      if (!(await readExact(this.conn, hbuf))) {
        throw new Error("connection closed by the peer");
      }
      const frame = decodeHeader(hdr);
      if (frame.kind === KIND_ABORT) {
        const body = new Uint8Array(frame.bytes);
        await readExact(this.conn, body);
        const err = abortedError(this.peer, new TextDecoder().decode(body));
        this.#fail(err);
        return;
      }
      const mapped = frame.kind === KIND_MAPPED;
      if (mapped && this.#takenEarly > 0) {
        // `recv` already took this message from its slot (headers come in order)
        this.#takenEarly--;
        continue;
      }
      if (
        (frame.kind !== KIND_DATA && !(mapped && this.#mapping)) || frame.bytes > this.maxMessage
      ) {
        throw new CollectiveError(
          `protocol error: bad frame from rank ${this.peer} (kind ${frame.kind}, ${frame.bytes} bytes)`,
          this.peer,
        );
      }
      this.#holding = true;
      while (this.#free.length === 0) {
        await new Promise<void>((r) => this.#readerWake = r);
        this.#readerWake = null;
        if (this.#error) return;
      }
      this.#holding = false;
      // closed while waiting: the mapping may be gone
      if (this.#closed) return;
      const at = this.#free.shift()!;
      if (mapped) {
        this.#mapping!.drain(
          this.#mappedIn++ % this.#mapping!.depth,
          this.ctx.arena.u8(at, frame.bytes),
        );
        frame.kind = KIND_DATA;
      } else if (frame.bytes > 0) await readExact(this.conn, this.ctx.arena.u8(at, frame.bytes));
      this.#filled.push({ frame, at });
      this.#wake?.();
    }
  }

  /** The peer's address ("host:port"), for messages. */
  #remote(): string {
    try {
      const a = this.conn.remoteAddr as Deno.NetAddr;
      return `${a.hostname}:${a.port}`;
    } catch {
      return "an unknown address";
    }
  }

  reserve(): number {
    return -1;
  }

  commit(_frame: Frame): void {
    throw new Error("TcpLink sends from the source; reserve() returned -1");
  }

  /** Whether payloads go through a shared mapping (a peer process on this host). */
  get mapped(): boolean {
    return this.#mapping !== null;
  }

  /** Payloads sent through the mapping so far (the others went through the socket). */
  get mappedSends(): number {
    return this.#mappedOut;
  }

  /** Messages an eager `recv` took straight from their mapped slot so far. */
  get slotReceives(): number {
    return this.#fromSlots;
  }

  send(frame: Frame, off: number): void {
    if (this.#error) throw this.#error;
    const m = this.#mapping;
    const large = frame.bytes > MAPPED_MIN_BYTES;
    const message = this.#sent++;
    // A slot the peer has not emptied yet: this payload goes through the socket.
    const slots = m && large && m.sendSlotFree(this.#mappedOut % m.depth) ? m : null;
    const inSocket = slots === null;
    if (slots) frame = { ...frame, kind: KIND_MAPPED };
    const head = new Uint8Array(HEADER_BYTES + (inSocket && !large ? frame.bytes : 0));
    const header = new Int32Array(head.buffer, 0, HEADER_BYTES / 4);
    encodeHeader(header, frame);
    // The slot holds the header the socket carries too (read by an eager `recv`).
    if (slots) {
      slots.fill(
        this.#mappedOut++ % slots.depth,
        this.ctx.arena.u8(off, frame.bytes),
        header,
        message,
      );
    }
    if (inSocket && !large && frame.bytes > 0) {
      head.set(this.ctx.arena.u8(off, frame.bytes), HEADER_BYTES);
    }
    const body = inSocket && large ? this.ctx.arena.u8(off, frame.bytes) : null;
    this.#writing = this.#writing.then(async () => {
      if (this.#error) throw this.#error;
      try {
        await writeAll(this.conn, head);
        if (body) await writeAll(this.conn, body);
      } catch (e) {
        this.#fail(e);
        throw this.#error;
      }
    });
    this.#writing.catch(() => {}); // observed by flush() and by later calls
  }

  async recv(want: Frame, eager = false): Promise<number> {
    const early = eager ? this.#takeFromSlot(want) : -1;
    if (early >= 0) return early;
    const deadline = performance.now() + this.ctx.timeoutMs;
    while (this.#filled.length === 0) {
      if (this.#error) throw this.#error;
      const left = deadline - performance.now();
      if (left <= 0) {
        throw timeoutError(
          this.ctx,
          this.peer,
          `waiting for data from rank ${this.peer} at ${this.#remote()}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
      this.#wake = null;
    }
    return this.#handOut(this.#filled.shift()!, want);
  }

  /** Hands out message `f` (the next on the link) as `recv`'s answer, checked against `want`. */
  #handOut(f: Filled, want: Frame): number {
    this.#current = f;
    this.#received++;
    checkFrame(f.frame, want, this.peer, this.ctx.rank);
    return f.at;
  }

  /**
   * The next message straight from its mapped slot, where it is there now: the
   * flag is set before the header leaves through the socket, and taking it at
   * once saves waiting for the reader's turn of the event loop (~70 µs of a
   * 704 KiB pair exchange). Returns its arena offset, or -1 (then the reader
   * delivers it as before): not mapped, not there yet, already read by the
   * reader, sent through the socket, or no free arena slot.
   */
  #takeFromSlot(want: Frame): number {
    const m = this.#mapping;
    if (
      !m || want.bytes <= MAPPED_MIN_BYTES || this.#filled.length > 0 || this.#holding ||
      this.#free.length === 0 || this.#error
    ) return -1;
    const j = this.#mappedIn % m.depth;
    if (!m.holds(j, this.#received, this.#slotHeader)) return -1;
    const frame = decodeHeader(this.#slotHeader);
    frame.kind = KIND_DATA;
    const at = this.#free.shift()!;
    m.drain(j, this.ctx.arena.u8(at, frame.bytes));
    this.#mappedIn++;
    this.#takenEarly++;
    this.#fromSlots++;
    return this.#handOut({ frame, at }, want);
  }

  release(): void {
    if (this.#current) this.#free.push(this.#current.at);
    this.#current = null;
    this.#readerWake?.();
  }

  async flush(): Promise<void> {
    await this.#writing;
  }

  abort(message: string): void {
    if (this.#closed) return;
    const body = new TextEncoder().encode(message);
    const head = new Uint8Array(HEADER_BYTES + body.length);
    encodeHeader(new Int32Array(head.buffer, 0, HEADER_BYTES / 4), {
      kind: KIND_ABORT,
      op: "barrier",
      seq: 0,
      count: 0,
      elemBytes: 0,
      extra: 0,
      stage: 0,
      sub: 0,
      bytes: body.length,
    });
    head.set(body, HEADER_BYTES);
    this.#writing = this.#writing.catch(() => {}).then(() => writeAll(this.conn, head))
      .catch(() => {});
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#fail(new Error("closed"));
    try {
      this.conn.close();
    } catch { /* already closed */ }
    this.#mapping?.unmap();
  }
}

/** Accepts and dials the per-(group, pair) connections of one rank. */
export class TcpMesh {
  #pending = new Map<string, Deno.TcpConn>();
  #waiters = new Map<string, (c: Deno.TcpConn) => void>();
  #conns = new Set<Deno.Conn>();
  #closed = false;
  /** Connections refused for another run id (named in the timeout error). */
  #refused: string[] = [];

  private constructor(
    readonly rank: number,
    readonly listener: Deno.TcpListener,
    readonly timeoutMs: number,
    readonly runId: string,
  ) {
    this.#acceptLoop();
  }

  /**
   * Listens on an ephemeral port of `hostname`; peers must introduce
   * themselves with the same `runId` (default "": a job without id).
   */
  static listen(rank: number, hostname: string, timeoutMs: number, runId = ""): TcpMesh {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname, port: 0 });
    } catch (e) {
      throw new CollectiveError(
        `rank ${rank}: cannot listen for peers on ${hostname}: ${(e as Error).message}`,
      );
    }
    return new TcpMesh(rank, listener, timeoutMs, runId);
  }

  /** "host:port" peers should dial. */
  get address(): string {
    const a = this.listener.addr as Deno.NetAddr;
    return `${a.hostname}:${a.port}`;
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch {
        return; // listener closed
      }
      this.#conns.add(conn);
      (async () => {
        const hello = await readJson(conn) as { rank: number; key: string; run?: string } | null;
        if (!hello) return conn.close();
        if ((hello.run ?? "") !== this.runId) {
          const from = conn.remoteAddr as Deno.NetAddr;
          this.#refused.push(
            `refused rank ${hello.rank} of ${describeRun(hello.run)} from ` +
              `${from.hostname}:${from.port} (this is ${describeRun(this.runId)})`,
          );
          this.#conns.delete(conn);
          return conn.close();
        }
        conn.setNoDelay(true);
        const id = `${hello.key}|${hello.rank}`;
        const w = this.#waiters.get(id);
        if (w) {
          this.#waiters.delete(id);
          w(conn);
        } else this.#pending.set(id, conn);
      })().catch(() => conn.close());
    }
  }

  /**
   * The connection for `key` to `peer`: the lower rank dials (using `lookup`
   * to find the peer's address), the higher one accepts.
   */
  async connect(key: string, peer: number, lookup: () => Promise<string>): Promise<Deno.TcpConn> {
    if (this.rank < peer) {
      const addr = await lookup();
      const i = addr.lastIndexOf(":");
      const hostname = addr.slice(0, i), port = Number(addr.slice(i + 1));
      let conn: Deno.TcpConn;
      try {
        conn = await Deno.connect({ hostname, port });
      } catch (e) {
        throw new CollectiveError(
          `rank ${this.rank}: cannot connect to rank ${peer} at ${addr}: ${(e as Error).message}`,
          peer,
        );
      }
      conn.setNoDelay(true);
      this.#conns.add(conn);
      await writeJson(conn, { rank: this.rank, key, run: this.runId });
      return conn;
    }
    const id = `${key}|${peer}`;
    const ready = this.#pending.get(id);
    if (ready) {
      this.#pending.delete(id);
      return ready;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await new Promise<Deno.TcpConn>((resolve, reject) => {
        this.#waiters.set(id, resolve);
        timer = setTimeout(() => {
          this.#waiters.delete(id);
          reject(
            new CollectiveError(
              `rank ${this.rank}: rank ${peer} did not connect within ${this.timeoutMs} ms ` +
                `(it died, hung, or never joined; ${TIMEOUT_SETTING})` +
                (this.#refused.length ? `; ${this.#refused.join("; ")}` : ""),
              peer,
            ),
          );
        }, this.timeoutMs);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the listener and every connection. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.listener.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  }
}

/** What the dialing side offers on a new connection. */
interface Offer {
  /** The file it created, or null: no mapping. */
  path: string | null;
  /** The token written into it, as bytes. */
  token?: number[];
}

/** What the other side answers. */
interface Answer {
  /** Whether it mapped the file. */
  mapped: boolean;
}

/** Options of {@link negotiateMapping}. */
export interface MappingOptions {
  /** Whether this side wants a mapping at all (both must, for one to be used). */
  enabled: boolean;
  /** Payload bytes per slot (the link's largest message). */
  slotBytes: number;
  /** Longest wait for the peer's half of the exchange, in milliseconds. */
  timeoutMs: number;
}

/** What {@link negotiateMapping} settled. */
export interface Negotiated {
  /** The mapping both sides use, or null: payloads go through the socket. */
  mapping: PairMapping | null;
  /**
   * Why this side could not make or map the file when both wanted one and the
   * peer is on this host (undefined otherwise): worth telling the user, since
   * the link is then slower than it could be.
   */
  failed?: string;
}

/**
 * Where a link's mapping file is made: this prefix, the creating process's pid,
 * a dash and a random id. A file is named only until its peer has mapped it,
 * but a process killed in between leaves it (see {@link removeMappingFilesOf}).
 */
export const MAPPING_FILE_PREFIX = "/dev/shm/webgpu-megatron-";

/**
 * Removes the mapping files that the processes `pids` made and left behind (a
 * rank killed while its peer had not yet mapped the file). Deno lets a program
 * list `/dev/shm` only with every permission, so `sh` does it (`rm -f` of each
 * pid's names); without the permission to run it, or without `sh`, nothing is
 * removed. The procs launcher calls it once its ranks are gone. Returns the
 * paths removed.
 */
export async function removeMappingFilesOf(pids: readonly number[]): Promise<string[]> {
  if (pids.length === 0) return [];
  const script =
    'for p in "$@"; do for f in "$0$p"-*; do [ -f "$f" ] && rm -f "$f" && echo "$f"; done; done';
  try {
    const out = await new Deno.Command("sh", {
      args: ["-c", script, MAPPING_FILE_PREFIX, ...pids.map(String)],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l);
  } catch {
    return []; // no permission to run sh, or no sh: the files stay, as before
  }
}

/**
 * Settles, on a connection just opened and before any frame, whether its link
 * carries payloads through a {@link PairMapping}. The dialing side (`dialer`)
 * creates the file when the two ends share an address (the same host) and
 * offers it; the other side maps it and answers; the dialer then removes the
 * file's name. Both sides run this exactly once per connection and get the same
 * answer: a mapping, or null for plain TCP.
 */
export async function negotiateMapping(
  conn: Deno.TcpConn,
  dialer: boolean,
  o: MappingOptions,
): Promise<Negotiated> {
  const within = <T>(p: Promise<T>) => withTimeout(p, o.timeoutMs);
  if (dialer) {
    const local = conn.localAddr as Deno.NetAddr, remote = conn.remoteAddr as Deno.NetAddr;
    const token = crypto.getRandomValues(new Uint8Array(TOKEN_BYTES));
    const path = `${MAPPING_FILE_PREFIX}${Deno.pid}-${randomRunId()}`;
    let mine: PairMapping | null = null, failed: string | undefined;
    if (o.enabled && local.hostname === remote.hostname) {
      try {
        mine = PairMapping.create(path, token, o.slotBytes, MAPPING_DEPTH);
      } catch (e) {
        failed = (e as Error).message;
      }
    }
    try {
      const offer: Offer = mine ? { path, token: [...token] } : { path: null };
      await writeJson(conn, offer);
      const answer = await within(readJson(conn)) as Answer | null;
      if (mine && answer?.mapped === true) return { mapping: mine };
      mine?.unmap();
      return { mapping: null, failed };
    } catch (e) {
      mine?.unmap();
      throw e;
    } finally {
      mine?.removeName();
    }
  }
  const offer = await within(readJson(conn)) as Offer | null;
  let theirs: PairMapping | null = null, failed: string | undefined;
  if (o.enabled && offer?.path && Array.isArray(offer.token)) {
    try {
      theirs = PairMapping.open(
        offer.path,
        Uint8Array.from(offer.token),
        o.slotBytes,
        MAPPING_DEPTH,
      );
    } catch (e) {
      failed = (e as Error).message;
    }
  }
  try {
    await writeJson(conn, { mapped: theirs !== null } satisfies Answer);
  } catch (e) {
    theirs?.unmap();
    throw e;
  }
  return { mapping: theirs, failed };
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${ms} ms`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
