/**
 * Direct ("two-shot") collectives for groups whose ranks all share one arena
 * (the Workers of one process). Every rank publishes where its data lives on a
 * small board in the arena; then rank `p` alone owns chunk `p` of every
 * member's buffer: it reduces that chunk across all buffers and writes the
 * result back into all of them. Per rank that is one read and one write of the
 * whole tensor (the traffic of a memcpy) and two synchronisations, against the
 * ring's `2(n−1)` hand-offs and an extra copy per byte.
 *
 * The board holds, per rank, a phase word and the call's description. For its
 * `c`-th call on the board a rank announces phase `2c+1` (data in place, offset
 * published), waits for every member to reach it, checks that they all made
 * the same call, does its share, then announces `2c+2` (done reading and
 * writing) and waits for all again, so nobody reuses a buffer a peer still
 * touches. Results are identical on every rank (one rank computes each chunk)
 * and sums run in member order, so they do not depend on which rank computed.
 * @module
 */

import type { Arena } from "./arena.ts";
import { type CallDesc, CollectiveError, describeCall, OPS } from "./frame.ts";
import { type LinkContext, waitChange, waitChangeSync } from "./link.ts";
import type { HalfSummer } from "./half_sum.ts";
import { chunkRange } from "./ring.ts";
import type { ReduceOp } from "./wasm_reduce.ts";

/** Int32 words per member on the board (one 64-byte line). */
const STRIDE = 16;
const PHASE = 0, OFF = 1, COUNT = 2, OP = 3, SEQ = 4, ELEM = 5, EXTRA = 6;
/** Elements reduced per block (64 KiB of f32): the block stays in cache while it is copied out. */
const BLOCK = 16384;

/** The direct-collective board of one group on one rank. */
export class DirectGroup {
  readonly #board: Int32Array;
  readonly #arena: Arena;
  #scratch = -1;
  #offs: number[];
  /** Calls made on this board so far (continues where an earlier opener of the key left off). */
  #calls: number;

  /**
   * Opens (or joins) the board of the group keyed `key` with global `ranks`, for
   * this rank at group position `pos`; `blocking` waits block the thread.
   */
  constructor(
    readonly ctx: LinkContext,
    key: string,
    readonly ranks: readonly number[],
    readonly pos: number,
    readonly blocking: boolean,
  ) {
    this.#arena = ctx.arena;
    const off = ctx.arena.region(`direct:${key}`, ranks.length * STRIDE * 4);
    this.#board = ctx.arena.i32(off, ranks.length * STRIDE);
    this.#offs = new Array(ranks.length).fill(0);
    this.#calls = Atomics.load(this.#board, pos * STRIDE + PHASE) >> 1;
  }

  /** Group size. */
  get n(): number {
    return this.ranks.length;
  }

  /** In-place all-reduce of `count` f32 at arena offset `off` (sum, avg or max). */
  async allReduce(desc: CallDesc, off: number, count: number, op: ReduceOp): Promise<void> {
    await this.#arrive(desc, off);
    this.#reduceOwnChunk(count, op, true);
    await this.#finish(desc);
  }

  /**
   * In-place all-reduce of `count` 16-bit values at `off` (sum or avg): this
   * rank adds its chunk of every member's buffer in f32, in member order,
   * rounds once, and writes the result into all of them.
   */
  async allReduceHalf(
    desc: CallDesc,
    off: number,
    count: number,
    op: "sum" | "avg",
    half: HalfSummer,
  ): Promise<void> {
    await this.#arrive(desc, off);
    const scale = op === "avg" ? 1 / this.n : 1;
    const [start, len] = chunkRange(count, this.n, this.pos);
    for (let done = 0; done < len; done += BLOCK) {
      const at = this.#offs.map((o) => o + (start + done) * 2);
      half.sumInto(at, at, Math.min(BLOCK, len - done), scale);
    }
    await this.#finish(desc);
  }

  /** Reduce-scatter: afterwards this rank's chunk ({@link chunkRange}) of its buffer holds the result. */
  async reduceScatter(desc: CallDesc, off: number, count: number, op: ReduceOp): Promise<void> {
    await this.#arrive(desc, off);
    this.#reduceOwnChunk(count, op, false);
    await this.#finish(desc);
  }

  /** All-gather in place: `partBytes` per rank, rank after rank at `off`; this rank's part is in place. */
  async allGather(desc: CallDesc, off: number, partBytes: number): Promise<void> {
    await this.#arrive(desc, off);
    const src = this.#offs[this.pos] + this.pos * partBytes;
    for (let q = 0; q < this.n; q++) {
      if (q !== this.pos) this.#copy(this.#offs[q] + this.pos * partBytes, src, partBytes);
    }
    await this.#finish(desc);
  }

  /** Broadcast in place of `bytes` at `off` from group position `root`: each rank copies from the root. */
  async broadcast(desc: CallDesc, off: number, bytes: number, root: number): Promise<void> {
    await this.#arrive(desc, off);
    if (this.pos !== root) this.#copy(off, this.#offs[root], bytes);
    await this.#finish(desc);
  }

  /** Returns once every member has arrived. */
  async barrier(desc: CallDesc): Promise<void> {
    await this.#arrive(desc, 0);
    await this.#finish(desc);
  }

  #copy(dst: number, src: number, bytes: number): void {
    if (bytes <= 0) return;
    const buf = this.#arena.buffer;
    new Uint8Array(buf, dst, bytes).set(new Uint8Array(buf, src, bytes));
  }

  /** Reduces chunk `pos` across every member's buffer; writes it to all (`toAll`) or only here. */
  #reduceOwnChunk(count: number, op: ReduceOp, toAll: boolean): void {
    const n = this.n, p = this.pos, offs = this.#offs;
    const red = this.#arena.reducer;
    const scale = op === "avg" ? 1 / n : 1;
    const [start, len] = chunkRange(count, n, p);
    if (n === 2 && toAll) {
      // One pass: dst[i] = peer[i] = (buf0[i] + buf1[i]) * scale.
      const a = offs[0] + start * 4, b = offs[1] + start * 4;
      if (op === "max") red.max2(a, b, a, b, len);
      else red.add2(a, b, a, b, len, scale);
      return;
    }
    if (this.#scratch < 0) this.#scratch = this.#arena.alloc(BLOCK * 4);
    const s = this.#scratch;
    for (let done = 0; done < len; done += BLOCK) {
      const m = Math.min(BLOCK, len - done);
      const at = (q: number) => offs[q] + (start + done) * 4;
      // Accumulate in member order into scratch (buffers stay inputs until the block is done).
      for (let q = 1; q < n; q++) {
        const acc = q === 1 ? at(0) : s;
        if (op === "max") red.max(s, acc, at(q), m);
        else red.add(s, acc, at(q), m, q === n - 1 ? scale : 1);
      }
      if (toAll) { for (let q = 0; q < n; q++) this.#copy(at(q), s, m * 4); }
      else this.#copy(at(p), s, m * 4);
    }
  }

  #publish(phase: number, desc: CallDesc, off: number): void {
    const b = this.#board, base = this.pos * STRIDE;
    Atomics.store(b, base + OFF, off);
    Atomics.store(b, base + COUNT, desc.count);
    Atomics.store(b, base + OP, OPS.indexOf(desc.op));
    Atomics.store(b, base + SEQ, desc.seq);
    Atomics.store(b, base + ELEM, desc.elemBytes);
    Atomics.store(b, base + EXTRA, desc.extra);
    Atomics.store(b, base + PHASE, phase);
    Atomics.notify(b, base + PHASE);
  }

  async #waitAll(phase: number, desc: CallDesc, what: string): Promise<void> {
    const b = this.#board;
    for (let q = 0; q < this.n; q++) {
      if (q === this.pos) continue;
      const idx = q * STRIDE + PHASE;
      for (let v; (v = Atomics.load(b, idx)) < phase;) {
        const peer = this.ranks[q];
        const msg = `${what} ${describeCall(desc)}`;
        if (this.blocking) waitChangeSync(this.ctx, b, idx, v, peer, msg);
        else await waitChange(this.ctx, b, idx, v, peer, msg);
      }
    }
  }

  async #arrive(desc: CallDesc, off: number): Promise<void> {
    const phase = 2 * this.#calls + 1;
    this.#publish(phase, desc, off);
    await this.#waitAll(phase, desc, "waiting for the other ranks to enter");
    const b = this.#board;
    for (let q = 0; q < this.n; q++) {
      const base = q * STRIDE;
      const got: CallDesc = {
        op: OPS[Atomics.load(b, base + OP)] ?? "barrier",
        seq: Atomics.load(b, base + SEQ),
        count: Atomics.load(b, base + COUNT),
        elemBytes: Atomics.load(b, base + ELEM),
        extra: Atomics.load(b, base + EXTRA),
      };
      if (
        got.op !== desc.op || got.seq !== desc.seq || got.count !== desc.count ||
        got.elemBytes !== desc.elemBytes || got.extra !== desc.extra
      ) {
        const peer = this.ranks[q];
        throw new CollectiveError(
          `collective mismatch: rank ${peer} called ${describeCall(got)} but rank ` +
            `${this.ctx.rank} called ${describeCall(desc)}; every rank of a group must make ` +
            `the same calls in the same order`,
          peer,
        );
      }
      this.#offs[q] = Atomics.load(b, base + OFF) >>> 0;
    }
  }

  async #finish(desc: CallDesc): Promise<void> {
    const b = this.#board, base = this.pos * STRIDE;
    const phase = 2 * ++this.#calls;
    Atomics.store(b, base + PHASE, phase);
    Atomics.notify(b, base + PHASE);
    await this.#waitAll(phase, desc, "waiting for the other ranks to finish");
  }
}
