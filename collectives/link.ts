/**
 * The transport interface the ring algorithms run on: a bidirectional,
 * message-oriented link to one peer rank, whose payloads live in the {@link Arena}.
 * @module
 */

import type { Arena } from "./arena.ts";
import { CollectiveError, type Frame, TIMEOUT_SETTING } from "./frame.ts";

/** What links need from their owner: identity, memory, and the timeout. */
export interface LinkContext {
  /** This rank's global rank. */
  readonly rank: number;
  /** The process's collectives memory. */
  readonly arena: Arena;
  /** How long any single wait on a peer may take before failing. */
  readonly timeoutMs: number;
}

/** A message link to one peer. Payload offsets are byte offsets into the arena. */
export interface Link {
  /** The peer's global rank. */
  readonly peer: number;
  /** Largest payload of one message. */
  readonly maxMessage: number;
  /**
   * Offset of a free slot where the next outgoing payload can be written in
   * place, or -1 when none is free now or this transport sends from the source.
   */
  reserve(): number;
  /** Publishes the message written into the reserved slot. */
  commit(frame: Frame): void;
  /**
   * Queues `frame.bytes` bytes at arena offset `off` for sending, without
   * waiting; the bytes must stay unchanged until the peer has received them.
   * Failures surface from {@link Link.flush} and later calls.
   */
  send(frame: Frame, off: number): void;
  /**
   * Receives the next message, checks it against `want`, and returns its
   * payload offset. With `eager`, a transport may hand out a message it can
   * see has landed before the usual notice of it arrives (a mapped TCP link:
   * its slot before its header): for a call that has nothing else in flight
   * on the link.
   */
  recv(want: Frame, eager?: boolean): Promise<number>;
  /** Frees the last received message's slot. */
  release(): void;
  /** Resolves when every queued send has been handed to the transport; rejects on failure. */
  flush(): Promise<void>;
  /** Tells the peer this rank failed, best effort. */
  abort(message: string): void;
  /** Closes the link. */
  close(): void;
}

/** A timeout error naming the peer and what was awaited. */
export function timeoutError(ctx: LinkContext, peer: number, what: string): CollectiveError {
  return new CollectiveError(
    `rank ${ctx.rank}: no progress from rank ${peer} for ${ctx.timeoutMs} ms while ${what} ` +
      `(rank ${peer} died, hung, or never called the collective; ${TIMEOUT_SETTING})`,
    peer,
  );
}

/** Spin this long before sleeping on Atomics.waitAsync. */
const SPIN_MS = 0.05;
/** Longest single sleep, so aborts and deadlines are noticed promptly. */
const SLICE_MS = 50;

/**
 * Spins up to {@link SPIN_MS} for `arr[idx]` to leave `value`: returns null if
 * it did, else the time the spin ended (when sleeping waits start).
 */
function spinWhile(arr: Int32Array, idx: number, value: number): number | null {
  if (Atomics.load(arr, idx) !== value) return null;
  let t = performance.now();
  const spinEnd = t + SPIN_MS;
  while (t < spinEnd) {
    for (let i = 0; i < 64; i++) if (Atomics.load(arr, idx) !== value) return null;
    t = performance.now();
  }
  return t;
}

/**
 * How long the next sleep may last: at most {@link SLICE_MS}, so aborts and the
 * deadline are noticed; throws when the arena records an abort or the deadline passed.
 */
function nextSlice(ctx: LinkContext, deadline: number, peer: number, what: string): number {
  const ab = ctx.arena.aborted();
  if (ab) throw abortedError(ab.rank, ab.message);
  const now = performance.now();
  if (now >= deadline) throw timeoutError(ctx, peer, what);
  return Math.min(SLICE_MS, deadline - now);
}

/**
 * Waits until `arr[idx] !== value`, spinning briefly then sleeping without
 * blocking the event loop; fails on timeout or when the arena records an abort.
 */
export async function waitChange(
  ctx: LinkContext,
  arr: Int32Array,
  idx: number,
  value: number,
  peer: number,
  what: string,
): Promise<void> {
  const spunUntil = spinWhile(arr, idx, value);
  if (spunUntil === null) return;
  const deadline = spunUntil + ctx.timeoutMs;
  for (;;) {
    const r = Atomics.waitAsync(arr, idx, value, nextSlice(ctx, deadline, peer, what));
    if (r.async) await r.value;
    if (Atomics.load(arr, idx) !== value) return;
  }
}

/**
 * Like {@link waitChange} but blocks the thread (Atomics.wait): lower wake-up
 * latency, for rings whose every link is shared memory (nothing else needs the
 * event loop meanwhile).
 */
export function waitChangeSync(
  ctx: LinkContext,
  arr: Int32Array,
  idx: number,
  value: number,
  peer: number,
  what: string,
): void {
  const spunUntil = spinWhile(arr, idx, value);
  if (spunUntil === null) return;
  const deadline = spunUntil + ctx.timeoutMs;
  for (;;) {
    Atomics.wait(arr, idx, value, nextSlice(ctx, deadline, peer, what));
    if (Atomics.load(arr, idx) !== value) return;
  }
}

/** The error raised on a rank when another rank reported a failure. */
export function abortedError(rank: number, message: string): CollectiveError {
  if (message.startsWith("rank ")) return new CollectiveError(message, rank);
  return new CollectiveError(`rank ${rank} failed: ${message}`, rank);
}
