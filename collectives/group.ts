/**
 * Process groups: a {@link Communicator} is one rank's transport context (its
 * arena, its TCP listener, its links); a {@link ProcessGroup} is an ordered set
 * of ranks with the collectives on typed arrays and on GPU tensors. Groups are
 * values: pass them to whoever needs them.
 * @module
 */

import { Arena } from "./arena.ts";
import { DEFAULT_DIST_TIMEOUT_MS } from "./env.ts";
import { type CallDesc, CollectiveError, type OpName, TIMEOUT_SETTING } from "./frame.ts";
import { type HalfCodec, HalfSummer } from "./half_sum.ts";
import type { Link, LinkContext } from "./link.ts";
import {
  chunkRange,
  pairReduce,
  pairReduceFits,
  type Ring,
  ringAllGather,
  ringBroadcast,
  ringReduce,
} from "./ring.ts";
import { DirectGroup } from "./direct.ts";
import { ShmLink } from "./shm.ts";
import { RendezvousFailed, StoreClient } from "./store.ts";
import { negotiateMapping, TCP_SLOT_BYTES, TcpLink, TcpMesh } from "./tcp.ts";
import type { ReduceOp } from "./wasm_reduce.ts";

/**
 * A GPU tensor as collectives see it (core's `Tensor` fits): read back to the
 * host and write again; collectives never touch the GPU otherwise.
 */
export interface HostCopyable {
  /** Element count. */
  readonly size: number;
  /** Downloads the contents. */
  read(): Promise<Float32Array>;
  /** Downloads the contents into `dst` (`size` elements), where offered. */
  readInto?(dst: Float32Array): Promise<void>;
  /** Uploads new contents of `size` elements. */
  write(data: Float32Array): void;
}

/** Typed arrays the byte-wise collectives (allGather, broadcast) accept. */
export type AnyTypedArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array;

/** How to build a {@link Communicator}. */
export interface CommunicatorOptions {
  /** This rank (0-based). */
  rank: number;
  /** Number of ranks. */
  world: number;
  /** Global ranks that share this process's arena (reached over shared memory); default `[rank]`. */
  localRanks?: number[];
  /** The process's arena (from the launcher); default: a new one. */
  arena?: Arena;
  /** Rendezvous store address, needed when some rank is in another process. */
  store?: { hostname: string; port: number };
  /** Longest wait on any peer, in milliseconds (default {@link DEFAULT_DIST_TIMEOUT_MS}). */
  timeoutMs?: number;
  /**
   * The job's run id (see collectives/env.ts): the store and the peers refuse
   * ranks of another run. Default: none ("").
   */
  runId?: string;
  /** Schedule lookahead for groups that cross processes (default 4). */
  tcpLookahead?: number;
  /**
   * Let all-shared-memory groups block the thread (Atomics.wait) while waiting
   * on a peer: lower latency; the event loop stalls during such a collective
   * (default true).
   */
  blockingWaits?: boolean;
  /**
   * Algorithm of groups whose ranks all share this arena: `"direct"` (default;
   * each rank reduces its chunk across every member's buffer, see
   * collectives/direct.ts) or `"ring"` (the same ring as across processes).
   */
  shmAlgorithm?: ShmAlgorithm;
  /**
   * Let a TCP link to a process on this host carry its large payloads through
   * shared memory (collectives/mapping.ts; needs Linux and FFI permission, else
   * plain TCP). Default true; both ends must allow it.
   */
  hostShm?: boolean;
}

/** How all-shared-memory groups run their collectives. */
export type ShmAlgorithm = "direct" | "ring";

/** One rank's transport context: arena, TCP mesh and the links of all its groups. */
export class Communicator implements LinkContext {
  /** This rank. */
  readonly rank: number;
  /** World size. */
  readonly world: number;
  /** The process's collectives memory. */
  readonly arena: Arena;
  /** Longest wait on any peer (ms). */
  readonly timeoutMs: number;
  /** Ranks reached over shared memory. */
  readonly localRanks: ReadonlySet<number>;
  /** Lookahead used by groups that include a TCP link. */
  readonly tcpLookahead: number;
  /** Whether all-shared-memory groups block the thread while waiting. */
  readonly blockingWaits: boolean;
  /** Algorithm of all-shared-memory groups. */
  readonly shmAlgorithm: ShmAlgorithm;
  /** Whether TCP links to processes on this host may carry payloads through shared memory. */
  readonly hostShm: boolean;
  #store: StoreClient | null;
  #mesh: TcpMesh | null;
  #links = new Map<string, Promise<Link>>();
  #direct = new Map<string, DirectGroup>();
  #addrs = new Map<number, string>();

  private constructor(o: CommunicatorOptions, store: StoreClient | null, mesh: TcpMesh | null) {
    this.rank = o.rank;
    this.world = o.world;
    this.arena = o.arena ?? Arena.create();
    this.timeoutMs = o.timeoutMs ?? DEFAULT_DIST_TIMEOUT_MS;
    this.localRanks = new Set(o.localRanks ?? [o.rank]);
    this.tcpLookahead = o.tcpLookahead ?? 4;
    this.blockingWaits = o.blockingWaits ?? true;
    this.shmAlgorithm = o.shmAlgorithm ?? "direct";
    this.hostShm = o.hostShm ?? true;
    if (this.shmAlgorithm !== "direct" && this.shmAlgorithm !== "ring") {
      throw new CollectiveError(`unknown shared-memory algorithm "${this.shmAlgorithm}"`);
    }
    this.#store = store;
    this.#mesh = mesh;
  }

  /**
   * Creates the context. When some rank lives in another process, joins the
   * rendezvous: publishes this rank's listening address in the store and waits
   * (up to the timeout) for every other rank's, naming the ones missing.
   */
  static async create(o: CommunicatorOptions): Promise<Communicator> {
    if (!(o.rank >= 0 && o.rank < o.world)) {
      throw new CollectiveError(`rank ${o.rank} is outside the world of ${o.world} ranks`);
    }
    const local = new Set(o.localRanks ?? [o.rank]);
    const remote = o.world > local.size;
    if (!remote) return new Communicator(o, null, null);
    if (!o.store) {
      throw new CollectiveError(
        `rank ${o.rank}: ${o.world - local.size} ranks live in other processes but no ` +
          `rendezvous address was given (--master-addr/--master-port or MASTER_ADDR/MASTER_PORT)`,
      );
    }
    const timeoutMs = o.timeoutMs ?? DEFAULT_DIST_TIMEOUT_MS;
    const store = await StoreClient.connect(o.store.hostname, o.store.port, timeoutMs, {
      rank: o.rank,
      runId: o.runId,
      world: o.world,
    });
    const mesh = TcpMesh.listen(o.rank, store.localHostname, timeoutMs, o.runId ?? "");
    const comm = new Communicator(o, store, mesh);
    await store.set(`addr/${o.rank}`, mesh.address);
    await comm.#rendezvous(timeoutMs);
    return comm;
  }

  async #rendezvous(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const missing: number[] = [];
    for (let r = 0; r < this.world; r++) {
      const left = Math.max(1, deadline - performance.now());
      try {
        this.#addrs.set(r, await this.#store!.get(`addr/${r}`, missing.length ? 1 : left));
      } catch (e) {
        // The store gave up on the job (a node started for another world size): say why.
        if (e instanceof RendezvousFailed) {
          this.close();
          throw new CollectiveError(`rank ${this.rank}: ${(e as Error).message}`);
        }
        missing.push(r);
      }
    }
    if (missing.length) {
      this.close();
      throw new CollectiveError(
        `rank ${this.rank}: rank${missing.length > 1 ? "s" : ""} ${missing.join(", ")} never ` +
          `joined the rendezvous within ${timeoutMs} ms (not started, crashed, or pointed at ` +
          `another master address/port; ${TIMEOUT_SETTING})`,
        missing[0],
      );
    }
  }

  /** The link to `peer` for the group keyed `key` (one per group and pair). */
  link(key: string, peer: number): Promise<Link> {
    const id = `${key}|${peer}`;
    let l = this.#links.get(id);
    if (!l) {
      l = this.#open(key, peer);
      this.#links.set(id, l);
    }
    return l;
  }

  async #open(key: string, peer: number): Promise<Link> {
    if (this.localRanks.has(peer)) {
      // A ring made only of shared-memory links may block its thread while waiting.
      const allLocal = key.split(",").every((r) => this.localRanks.has(Number(r)));
      return new ShmLink(this, key, peer, { blocking: allLocal && this.blockingWaits });
    }
    if (!this.#mesh) throw new CollectiveError(`rank ${peer} is not reachable from ${this.rank}`);
    const conn = await this.#mesh.connect(key, peer, () => Promise.resolve(this.#addrs.get(peer)!));
    let settled;
    try {
      settled = await negotiateMapping(conn, this.rank < peer, {
        enabled: this.hostShm,
        slotBytes: TCP_SLOT_BYTES,
        timeoutMs: this.timeoutMs,
      });
    } catch (e) {
      conn.close();
      throw new CollectiveError(
        `rank ${this.rank}: opening the link to rank ${peer} failed: ${(e as Error).message} ` +
          `(rank ${peer} died, hung, or never called the collective; ${TIMEOUT_SETTING})`,
        peer,
      );
    }
    if (settled.failed) {
      console.warn(
        `rank ${this.rank}: the link to rank ${peer} (same host) sends payloads through its ` +
          `socket, not shared memory: ${settled.failed}`,
      );
    }
    return new TcpLink(this, peer, conn, TCP_SLOT_BYTES, undefined, settled.mapping);
  }

  /**
   * The direct-collective board of the group keyed `key` (global `ranks`, this
   * rank at `pos`), or null when some member is in another process or the
   * ring algorithm was chosen.
   */
  direct(key: string, ranks: readonly number[], pos: number): DirectGroup | null {
    if (this.shmAlgorithm !== "direct" || !ranks.every((r) => this.localRanks.has(r))) return null;
    let d = this.#direct.get(key);
    if (!d) {
      d = new DirectGroup(this, key, ranks, pos, this.blockingWaits);
      this.#direct.set(key, d);
    }
    return d;
  }

  /** The group of all ranks. */
  worldGroup(): ProcessGroup {
    return new ProcessGroup(this, Array.from({ length: this.world }, (_, i) => i));
  }

  /** Closes links, the listener and the store connection. */
  close(): void {
    for (const l of this.#links.values()) l.then((x) => x.close(), () => {});
    this.#mesh?.close();
    this.#store?.close();
  }
}

function opCode(kind: "allReduce" | "reduceScatter", op: ReduceOp): OpName {
  if (op !== "sum" && op !== "avg" && op !== "max") {
    throw new CollectiveError(`unknown reduce op "${op}": expected sum, avg or max`);
  }
  return `${kind}(${op})` as OpName;
}

/** Bytes of an arena staging region for `bytes`: a power of two, at least 4 KiB. */
function regionSize(bytes: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(bytes, 4096)));
}

function isHostCopyable(x: unknown): x is HostCopyable {
  return typeof (x as HostCopyable)?.read === "function" && !ArrayBuffer.isView(x);
}

/** How one call runs: on the group's direct board (all members share the arena) or on its ring. */
type Algorithm = { direct: DirectGroup; ring?: undefined } | { ring: Ring; direct?: undefined };

/** An ordered set of ranks with collectives. Every member must make the same calls in order. */
export class ProcessGroup {
  /** This rank's position in the group. */
  readonly rank: number;
  /** Number of ranks in the group. */
  readonly size: number;
  /** Global ranks of the members, in group order. */
  readonly ranks: readonly number[];
  /** A key naming the group (same on every member). */
  readonly key: string;
  #seq = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #ring: Promise<Ring> | null = null;
  #failed: Error | null = null;
  /** Free arena regions by size (see #takeRegion). */
  #regions = new Map<number, number[]>();
  #halfSummers = new Map<number, HalfSummer>();

  /** Use {@link Communicator.worldGroup} and {@link ProcessGroup.newGroup}. */
  constructor(readonly comm: Communicator, ranks: number[]) {
    const seen = new Set<number>();
    for (const r of ranks) {
      if (!Number.isInteger(r) || r < 0 || r >= comm.world || seen.has(r)) {
        throw new CollectiveError(`invalid group ranks [${ranks}] for a world of ${comm.world}`);
      }
      seen.add(r);
    }
    this.rank = ranks.indexOf(comm.rank);
    if (this.rank < 0) {
      throw new CollectiveError(`rank ${comm.rank} is not a member of group [${ranks}]`);
    }
    this.ranks = [...ranks];
    this.size = ranks.length;
    this.key = ranks.join(",");
  }

  /** This rank's global rank. */
  get globalRank(): number {
    return this.comm.rank;
  }

  /** A sub-group of global `ranks`; only members call this (it creates nothing on others). */
  newGroup(ranks: number[]): ProcessGroup {
    return new ProcessGroup(this.comm, ranks);
  }

  /**
   * A zero-filled Float32Array in the collectives arena: collectives on it run
   * in place without staging copies. Never freed; allocate once and reuse.
   */
  alloc(n: number): Float32Array {
    return this.comm.arena.f32(this.comm.arena.alloc(n * 4), n);
  }

  #getRing(): Promise<Ring> {
    if (!this.#ring) {
      const n = this.size, p = this.rank;
      const prevRank = this.ranks[(p - 1 + n) % n], nextRank = this.ranks[(p + 1) % n];
      const allLocal = this.ranks.every((r) => this.comm.localRanks.has(r));
      this.#ring = (async () => {
        const [prev, next] = await Promise.all([
          this.comm.link(this.key, prevRank),
          this.comm.link(this.key, nextRank),
        ]);
        return {
          pos: p,
          n,
          prev,
          next,
          arena: this.comm.arena,
          lookahead: allLocal ? 0 : this.comm.tcpLookahead,
          crossProcess: !allLocal,
        };
      })();
    }
    return this.#ring;
  }

  /** Runs `fn` after earlier calls on this group, with failure poisoning. */
  #run<T>(
    op: OpName,
    count: number,
    elemBytes: number,
    extra: number,
    fn: (d: CallDesc, algo: Algorithm) => Promise<T>,
  ): Promise<T> {
    const seq = this.#seq++;
    const run = this.#queue.then(async () => {
      if (this.#failed) throw this.#failed;
      const desc: CallDesc = { op, seq, count, elemBytes, extra };
      let ring: Ring | null = null;
      try {
        const direct = this.size > 1 ? this.comm.direct(this.key, this.ranks, this.rank) : null;
        if (direct) return await fn(desc, { direct });
        ring = await this.#getRing();
        return await fn(desc, { ring });
      } catch (e) {
        const err = e instanceof CollectiveError ? e : new CollectiveError(
          `rank ${this.globalRank}: ${op} failed: ${(e as Error)?.message ?? e}`,
        );
        this.#failed = err;
        if (ring) {
          ring.prev.abort(err.message);
          ring.next.abort(err.message);
        } else this.comm.arena.abort(this.globalRank, err.message);
        throw err;
      }
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Arena offset of a free region of at least `bytes` (a power of two from 4 KiB),
   * reused after `#giveRegion`: calls may overlap, so each
   * holds its own until it is done.
   */
  #takeRegion(bytes: number): number {
    const size = regionSize(bytes);
    return this.#regions.get(size)?.pop() ?? this.comm.arena.alloc(size);
  }

  #giveRegion(off: number, bytes: number): void {
    const size = regionSize(bytes);
    let free = this.#regions.get(size);
    if (!free) this.#regions.set(size, free = []);
    free.push(off);
  }

  /**
   * Runs `fn` on the arena offset of `data`: its own when `data` lives in the
   * arena, else a pooled region that holds a copy for the call (copied back
   * after `fn` unless `copyBack` is false) and is freed afterwards.
   */
  async #placed<T>(
    data: AnyTypedArray,
    fn: (off: number) => Promise<T>,
    copyBack = true,
  ): Promise<T> {
    const arena = this.comm.arena;
    if (arena.owns(data)) return await fn(data.byteOffset);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const off = this.#takeRegion(bytes.length);
    try {
      arena.u8(off, bytes.length).set(bytes);
      const result = await fn(off);
      if (copyBack) bytes.set(arena.u8(off, bytes.length));
      return result;
    } finally {
      this.#giveRegion(off, bytes.length);
    }
  }

  /**
   * All-reduce in place: every rank ends with the elementwise sum, mean or max
   * over the group. Accepts a Float32Array or a GPU tensor ({@link HostCopyable}).
   */
  async allReduce(x: Float32Array | HostCopyable, op: ReduceOp = "sum"): Promise<void> {
    if (isHostCopyable(x) && x.readInto) {
      // Straight into a staging region of the arena, reused: no fresh host array
      // per call (its first touch costs more than the copy) and no copy in and out.
      const bytes = x.size * 4;
      const off = this.#takeRegion(bytes);
      try {
        const view = this.comm.arena.f32(off, x.size);
        await x.readInto(view);
        await this.allReduce(view, op);
        x.write(view);
      } finally {
        this.#giveRegion(off, bytes);
      }
      return;
    }
    if (isHostCopyable(x)) {
      const data = await x.read();
      await this.allReduce(data, op);
      x.write(data);
      return;
    }
    if (!(x instanceof Float32Array)) throw new TypeError("allReduce expects a Float32Array");
    await this.#run(opCode("allReduce", op), x.length, 4, 0, async (d, algo) => {
      if (this.size === 1) return;
      await this.#placed(
        x,
        (off) =>
          algo.direct
            ? algo.direct.allReduce(d, off, x.length, op)
            : pairReduceFits(algo.ring, x.length)
            ? pairReduce(algo.ring, d, off, x.length, op)
            : ringReduce(algo.ring, d, off, x.length, op, "allReduce"),
      );
    });
  }

  /**
   * All-reduce in place of 16-bit values (`x` holds their bits; `codec` says
   * the format): the sum (or, with "avg", the mean) over the group, rounded to
   * the format, the same bits on every rank. Only 16-bit values cross links,
   * `2(n−1)/n · 2` bytes per element per rank on a ring, half of an f32
   * all-reduce. Additions run in f32. On shared memory each element is summed
   * in member order and rounded once; on a ring each hop rounds its partial sum
   * (n−1 roundings at most), as NCCL's 16-bit all-reduce does.
   */
  async allReduceHalf(x: Uint16Array, codec: HalfCodec, op: "sum" | "avg" = "sum"): Promise<void> {
    if (!(x instanceof Uint16Array)) throw new TypeError("allReduceHalf expects a Uint16Array");
    if (op !== "sum" && op !== "avg") {
      throw new CollectiveError(`allReduceHalf: unknown op "${op}": expected sum or avg`);
    }
    await this.#run(`allReduceHalf(${op})`, x.length, 2, codec.id, async (d, algo) => {
      if (this.size === 1) return;
      const half = this.#halfSummer(codec);
      await this.#placed(
        x,
        (off) =>
          algo.direct
            ? algo.direct.allReduceHalf(d, off, x.length, op, half)
            : ringReduce(algo.ring, d, off, x.length, op, "allReduce", half),
      );
    });
  }

  /** The group's summer for `codec`'s format (kept: it holds arena scratch). */
  #halfSummer(codec: HalfCodec): HalfSummer {
    let h = this.#halfSummers.get(codec.id);
    if (!h) this.#halfSummers.set(codec.id, h = new HalfSummer(this.comm.arena, codec));
    return h;
  }

  /**
   * Reduce-scatter: reduces `x` over the group and returns this rank's chunk
   * (chunks split as evenly as possible, see {@link chunkRange}). `x` is left
   * unspecified; for GPU tensors the chunk is written to `out`.
   */
  async reduceScatter(
    x: Float32Array | HostCopyable,
    op: ReduceOp = "sum",
    out?: HostCopyable,
  ): Promise<Float32Array> {
    if (isHostCopyable(x)) {
      const res = await this.reduceScatter(await x.read(), op);
      out?.write(res);
      return res;
    }
    if (!(x instanceof Float32Array)) throw new TypeError("reduceScatter expects a Float32Array");
    return await this.#run(opCode("reduceScatter", op), x.length, 4, 0, async (d, algo) => {
      const [start, len] = chunkRange(x.length, this.size, this.rank);
      if (this.size === 1) return x.slice();
      return await this.#placed(x, async (off) => {
        if (algo.direct) await algo.direct.reduceScatter(d, off, x.length, op);
        else await ringReduce(algo.ring, d, off, x.length, op, "reduceScatter");
        return this.comm.arena.f32(off + start * 4, len).slice();
      }, false);
    });
  }

  /**
   * All-gather: returns the concatenation of every rank's `part` in group
   * order (all parts must have the same length). With a GPU tensor, the result
   * is also written to `out`.
   */
  async allGather<T extends AnyTypedArray>(part: T | HostCopyable, out?: HostCopyable): Promise<T> {
    if (isHostCopyable(part)) {
      const res = await this.allGather(await part.read());
      out?.write(res);
      return res as unknown as T;
    }
    const p = part as T;
    const eb = p.BYTES_PER_ELEMENT;
    return await this.#run("allGather", p.length, eb, 0, async (d, algo) => {
      const n = this.size;
      const ctor = p.constructor as new (len: number) => T;
      const result = new ctor(p.length * n);
      result.set(p, this.rank * p.length);
      if (n === 1) return result;
      await this.#placed(
        result,
        (off) =>
          algo.direct
            ? algo.direct.allGather(d, off, p.byteLength)
            : ringAllGather(algo.ring, d, off, p.length, eb),
      );
      return result;
    });
  }

  /** Broadcast in place from group position `root` (default 0); typed arrays or GPU tensors. */
  async broadcast(x: AnyTypedArray | HostCopyable, root = 0): Promise<void> {
    if (!(Number.isInteger(root) && root >= 0 && root < this.size)) {
      throw new CollectiveError(`broadcast root ${root} is outside the group of ${this.size}`);
    }
    if (isHostCopyable(x)) {
      const data = this.rank === root ? await x.read() : new Float32Array(x.size);
      await this.broadcast(data, root);
      if (this.rank !== root) x.write(data);
      return;
    }
    await this.#run("broadcast", x.length, x.BYTES_PER_ELEMENT, root, async (d, algo) => {
      if (this.size === 1) return;
      await this.#placed(
        x,
        (off) =>
          algo.direct
            ? algo.direct.broadcast(d, off, x.byteLength, root)
            : ringBroadcast(algo.ring, d, off, x.byteLength, root),
      );
    });
  }

  /** Returns once every member has called barrier (and finished its earlier calls). */
  async barrier(): Promise<void> {
    await this.#run("barrier", 0, 4, 0, async (d, algo) => {
      if (this.size === 1) return;
      if (algo.direct) await algo.direct.barrier(d);
      else await ringReduce(algo.ring, d, 0, 0, "sum", "allReduce");
    });
  }
}
