/**
 * Ring algorithms over {@link Link}s: all-reduce as reduce-scatter plus
 * all-gather over `n` chunks, each chunk pipelined in sub-chunks so sending,
 * receiving and reducing overlap; all-gather, reduce-scatter and a pipelined
 * chain broadcast. Data lives in the arena; reductions run in WebAssembly SIMD,
 * writing straight into the next rank's shared-memory slot when one is free.
 *
 * Every rank walks the same schedule of events (stage `t`, sub-chunk `k`),
 * ordered by `k + lookahead·t` then `t`; that order is shift-invariant in `t`,
 * so each link carries messages in exactly the order its receiver expects.
 * @module
 */

import type { Arena } from "./arena.ts";
import type { CallDesc, Frame } from "./frame.ts";
import { KIND_DATA } from "./frame.ts";
import type { Link } from "./link.ts";
import type { HalfSummer } from "./half_sum.ts";
import type { ReduceOp } from "./wasm_reduce.ts";

/** A rank's place in a ring. */
export interface Ring {
  /** Position of this rank in the group. */
  pos: number;
  /** Group size. */
  n: number;
  /** Link to position `pos - 1`. */
  prev: Link;
  /** Link to position `pos + 1`. */
  next: Link;
  /** The memory data lives in. */
  arena: Arena;
  /** Schedule lookahead (0: finish a sub-chunk before starting the next). */
  lookahead: number;
  /** Cap on sub-chunk bytes (defaults to the links' message size). */
  subBytes?: number;
  /**
   * The links cross processes (TCP): a send reads its data from the arena until
   * `flush()`, and the peer's messages are read ahead into slots meanwhile.
   */
  crossProcess?: boolean;
}

/** Start and length of chunk `i` when `count` elements are split as evenly as possible in `n`. */
export function chunkRange(count: number, n: number, i: number): [number, number] {
  const base = Math.floor(count / n), rem = count % n;
  return [i * base + Math.min(i, rem), base + (i < rem ? 1 : 0)];
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

/** Calls `fn(t, k)` for stages `0..T` and sub-chunks `0..K-1` in schedule order. */
async function schedule(
  T: number,
  K: number,
  lookahead: number,
  fn: (t: number, k: number) => Promise<void> | void,
): Promise<void> {
  const last = K - 1 + lookahead * T;
  for (let d = 0; d <= last; d++) {
    for (let t = 0; t <= T; t++) {
      const k = d - lookahead * t;
      if (k >= 0 && k < K) await fn(t, k);
    }
  }
}

function subElems(r: Ring, elemBytes: number): number {
  const bytes = Math.min(r.prev.maxMessage, r.next.maxMessage, r.subBytes ?? Infinity);
  return Math.max(1, Math.floor(bytes / elemBytes));
}

/**
 * In-place ring all-reduce (`mode` "allReduce") or reduce-scatter (`"reduceScatter"`:
 * afterwards this rank's chunk {@link chunkRange}(count, n, pos) holds the result;
 * other chunks are scratch) of `count` f32 values at arena offset `off`. With
 * `half` (sum or avg only) the values are 16-bit and so is every message: each
 * hop adds in f32 what the neighbour sent to this rank's values and rounds the
 * partial sum back to 16 bits before passing it on, as NCCL does for bf16.
 */
export async function ringReduce(
  r: Ring,
  desc: CallDesc,
  off: number,
  count: number,
  op: ReduceOp,
  mode: "allReduce" | "reduceScatter",
  half?: HalfSummer,
): Promise<void> {
  const { n, pos: p, prev, next } = r;
  const red = r.arena.reducer;
  if (half && op === "max") throw new Error("ringReduce: a 16-bit ring sums only");
  const eb = half ? 2 : 4;
  const T = mode === "allReduce" ? 2 * (n - 1) : n - 1;
  const S = subElems(r, eb);
  const maxChunk = Math.ceil(count / n);
  const K = Math.max(1, Math.ceil(maxChunk / S));
  const scale = op === "avg" ? 1 / n : 1;
  const sendChunk = (s: number) => s < n - 1 ? mod(p - s - 1, n) : mod(p - (s - (n - 1)), n);
  const sub = (c: number, k: number): [number, number] => {
    const [start, len] = chunkRange(count, n, c);
    const a = Math.min(len, k * S);
    return [off + (start + a) * eb, Math.min(S, len - a)];
  };
  const frame = (stage: number, k: number, len: number): Frame => ({
    ...desc,
    kind: KIND_DATA,
    stage,
    sub: k,
    bytes: len * eb,
  });
  await schedule(T, K, r.lookahead, async (t, k) => {
    if (t === 0) {
      const [at, len] = sub(sendChunk(0), k);
      next.send(frame(0, k, len), at);
      return;
    }
    const s = t - 1;
    const c = sendChunk(t); // what prev sent at stage s: its sendChunk(s) is our sendChunk(s + 1)
    const [at, len] = sub(c, k);
    const got = await prev.recv(frame(s, k, len));
    const forward = t < T;
    if (s < n - 1) {
      const final = s === n - 2;
      const sc = final ? scale : 1;
      const slot = forward ? next.reserve() : -1;
      if (half) {
        // Into the next rank's slot when one is free (the final sum also here).
        const dsts = slot < 0 ? [at] : final ? [at, slot] : [slot];
        half.sumInto(dsts, [at, got], len, sc);
        prev.release();
        if (slot >= 0) next.commit(frame(t, k, len));
        else if (forward) next.send(frame(t, k, len), at);
        return;
      }
      if (slot >= 0) {
        if (op === "max") {
          if (final) red.max2(at, slot, at, got, len);
          else red.max(slot, at, got, len);
        } else if (final) red.add2(at, slot, at, got, len, sc);
        else red.add(slot, at, got, len, sc);
        prev.release();
        next.commit(frame(t, k, len));
        return;
      }
      if (op === "max") red.max(at, at, got, len);
      else red.add(at, at, got, len, sc);
    } else if (len > 0) {
      const buf = r.arena.buffer;
      new Uint8Array(buf, at, len * eb).set(new Uint8Array(buf, got, len * eb));
    }
    prev.release();
    if (forward) next.send(frame(t, k, len), at);
  });
  await next.flush();
}

/**
 * Whether {@link pairReduce} can all-reduce `count` f32 values on `r`: a group
 * of two whose links cross processes, and the values fit one message. (Larger
 * tensors take the ring: a rank sending many messages before it reads any
 * would wait on a peer whose read-ahead slots are full, and vice versa.)
 */
export function pairReduceFits(r: Ring, count: number): boolean {
  return r.n === 2 && r.crossProcess === true &&
    count * 4 <= Math.min(r.prev.maxMessage, r.next.maxMessage, r.subBytes ?? Infinity);
}

/**
 * In-place all-reduce of a group of two across processes ({@link pairReduceFits}):
 * each rank sends its `count` f32 values at arena offset `off` as one message
 * and adds the peer's into them. One exchange, where the ring takes two stages
 * and a copy for the same bytes each way. Two values add (or max) to the same
 * bits in either order, so both ranks end with the same values, and with the
 * ring's.
 */
export async function pairReduce(
  r: Ring,
  desc: CallDesc,
  off: number,
  count: number,
  op: ReduceOp,
): Promise<void> {
  if (!pairReduceFits(r, count)) {
    throw new Error(`pairReduce: ${count} values in a group of ${r.n} do not fit one exchange`);
  }
  const frame: Frame = { ...desc, kind: KIND_DATA, stage: 0, sub: 0, bytes: count * 4 };
  r.next.send(frame, off);
  // The send reads these values until it is written out: add after that.
  await r.next.flush();
  // Nothing else is in flight on the link: the peer's message may be taken the moment it lands.
  const got = await r.prev.recv(frame, true);
  if (op === "max") r.arena.reducer.max(off, off, got, count);
  else r.arena.reducer.add(off, off, got, count, op === "avg" ? 0.5 : 1);
  r.prev.release();
}

/**
 * In-place ring all-gather: `part` elements of `elemBytes` each per rank, laid
 * out rank after rank at arena offset `off`; this rank's part must be in place.
 */
export async function ringAllGather(
  r: Ring,
  desc: CallDesc,
  off: number,
  part: number,
  elemBytes: number,
): Promise<void> {
  const { n, pos: p, prev, next } = r;
  const T = n - 1;
  const S = subElems(r, elemBytes);
  const K = Math.max(1, Math.ceil(part / S));
  const sub = (c: number, k: number): [number, number] => {
    const a = Math.min(part, k * S);
    return [off + (c * part + a) * elemBytes, Math.min(S, part - a) * elemBytes];
  };
  const frame = (stage: number, k: number, bytes: number): Frame => ({
    ...desc,
    kind: KIND_DATA,
    stage,
    sub: k,
    bytes,
  });
  await schedule(T, K, r.lookahead, async (t, k) => {
    const c = mod(p - t, n);
    const [at, bytes] = sub(c, k);
    if (t > 0) {
      const got = await prev.recv(frame(t - 1, k, bytes));
      if (bytes > 0) {
        const buf = r.arena.buffer;
        new Uint8Array(buf, at, bytes).set(new Uint8Array(buf, got, bytes));
      }
      prev.release();
    }
    if (t < T) next.send(frame(t, k, bytes), at);
  });
  await next.flush();
}

/**
 * Pipelined chain broadcast from group position `root` along the ring:
 * `bytes` bytes at arena offset `off`.
 */
export async function ringBroadcast(
  r: Ring,
  desc: CallDesc,
  off: number,
  bytes: number,
  root: number,
): Promise<void> {
  const { n, pos: p, prev, next } = r;
  const q = mod(p - root, n);
  const S = subElems(r, 1);
  const K = Math.max(1, Math.ceil(bytes / S));
  for (let k = 0; k < K; k++) {
    const a = Math.min(bytes, k * S);
    const len = Math.min(S, bytes - a);
    const f: Frame = { ...desc, kind: KIND_DATA, stage: 0, sub: k, bytes: len };
    if (q > 0) {
      const got = await prev.recv(f);
      if (len > 0) {
        const buf = r.arena.buffer;
        new Uint8Array(buf, off + a, len).set(new Uint8Array(buf, got, len));
      }
      prev.release();
    }
    if (q < n - 1) next.send(f, off + a);
  }
  await next.flush();
}
