/**
 * Shared-memory transport among the Workers of one process: each direction of
 * a link is a ring of message slots in the shared {@link Arena}, with a head
 * (messages written) and a tail (messages consumed) counter and Atomics
 * wait/notify. Senders may write payloads straight into a slot (the ring's
 * reduce kernels do), so a message costs one copy at most.
 * @module
 */

import { type Frame, HEADER_BYTES } from "./frame.ts";
import { checkFrame, decodeHeader, encodeHeader } from "./frame.ts";
import { type Link, type LinkContext, waitChange, waitChangeSync } from "./link.ts";

/** Default payload bytes per slot. */
export const SHM_SLOT_BYTES = 1024 * 1024;
/** Default slots per direction. */
export const SHM_DEPTH = 4;
/**
 * Largest message of a zero-copy link (a pointer into the sender's data):
 * bigger messages mean fewer wait/notify hand-offs per byte.
 */
export const ZERO_COPY_MESSAGE_BYTES = 4 * 1024 * 1024;

const CTRL_BYTES = 256;
const HEAD = 0, TAIL = 16, SLOT = 32, DEPTH = 33;

const DRAIN = (peer: number) => `waiting for rank ${peer} to drain its shared-memory channel`;
const DATA = (peer: number) => `waiting for data from rank ${peer}`;

/** Options of a {@link ShmLink}. */
export interface ShmLinkOptions {
  /** Block the thread while waiting (only for rings made of shared-memory links). */
  blocking?: boolean;
  /**
   * Pass pointers into the sender's arena data instead of copying payloads
   * through slots (default true); sends then complete when the peer releases.
   */
  zeroCopy?: boolean;
  /** Payload bytes per message (copy mode: slot size). */
  slotBytes?: number;
  /** Messages in flight per direction. */
  depth?: number;
}

/** One direction of a shared-memory link. */
class Channel {
  readonly ctrl: Int32Array;
  readonly slotBytes: number;
  readonly depth: number;
  readonly stride: number;

  constructor(ctx: LinkContext, readonly off: number) {
    this.ctrl = ctx.arena.i32(off, CTRL_BYTES / 4);
    this.slotBytes = Atomics.load(this.ctrl, SLOT);
    this.depth = Atomics.load(this.ctrl, DEPTH);
    this.stride = Math.ceil((HEADER_BYTES + this.slotBytes) / 64) * 64;
  }

  /** Byte offset of slot `i`'s header. */
  slot(i: number): number {
    return this.off + CTRL_BYTES + (i % this.depth) * this.stride;
  }
}

function openChannel(ctx: LinkContext, key: string, slotBytes: number, depth: number): Channel {
  const stride = Math.ceil((HEADER_BYTES + slotBytes) / 64) * 64;
  const off = ctx.arena.region(key, CTRL_BYTES + depth * stride, (o) => {
    const c = ctx.arena.i32(o, CTRL_BYTES / 4);
    Atomics.store(c, SLOT, slotBytes);
    Atomics.store(c, DEPTH, depth);
  });
  return new Channel(ctx, off);
}

/**
 * A link to a Worker of the same process, over two message rings in the arena.
 * By default messages carry a pointer to the sender's data (which lives in the
 * same arena), so the receiver reduces or copies straight from it.
 */
export class ShmLink implements Link {
  readonly maxMessage: number;
  #out: Channel;
  #in: Channel;
  #head = 0;
  #tail = 0;
  #hdr: Int32Array;
  #queue: { frame: Frame; off: number }[] = [];
  #pumpActive = false;
  #pumpDone: Promise<void> = Promise.resolve();
  #error: Error | null = null;
  /** Waits block the thread (Atomics.wait) instead of yielding to the event loop. */
  readonly blocking: boolean;
  /** Messages carry a pointer to the sender's data instead of a copy. */
  readonly zeroCopy: boolean;

  /** Opens (or joins) the channels of `group` between this rank and `peer`. */
  constructor(
    readonly ctx: LinkContext,
    group: string,
    readonly peer: number,
    opts: ShmLinkOptions = {},
  ) {
    this.blocking = opts.blocking ?? false;
    this.zeroCopy = opts.zeroCopy ?? true;
    const depth = opts.depth ?? (this.zeroCopy ? 16 : SHM_DEPTH);
    const slot = this.zeroCopy ? 8 : opts.slotBytes ?? SHM_SLOT_BYTES;
    const kind = this.zeroCopy ? "shmz" : "shm";
    this.#out = openChannel(ctx, `${kind}:${group}:${ctx.rank}>${peer}`, slot, depth);
    this.#in = openChannel(ctx, `${kind}:${group}:${peer}>${ctx.rank}`, slot, depth);
    this.maxMessage = this.zeroCopy
      ? opts.slotBytes ?? ZERO_COPY_MESSAGE_BYTES
      : this.#out.slotBytes;
    this.#head = Atomics.load(this.#out.ctrl, HEAD);
    this.#tail = Atomics.load(this.#in.ctrl, TAIL);
    this.#hdr = new Int32Array(HEADER_BYTES / 4);
  }

  reserve(): number {
    const ch = this.#out;
    if (
      this.zeroCopy || this.#queue.length > 0 ||
      this.#head - Atomics.load(ch.ctrl, TAIL) >= ch.depth
    ) return -1;
    return ch.slot(this.#head) + HEADER_BYTES;
  }

  commit(frame: Frame): void {
    const ch = this.#out;
    encodeHeader(this.ctx.arena.i32(ch.slot(this.#head), HEADER_BYTES / 4), frame);
    this.#head++;
    Atomics.store(ch.ctrl, HEAD, this.#head);
    Atomics.notify(ch.ctrl, HEAD);
  }

  send(frame: Frame, off: number): void {
    if (this.#error) throw this.#error;
    const dst = this.reserve();
    if (dst >= 0) {
      this.#copyCommit(frame, off, dst);
      return;
    }
    if (this.blocking) {
      const ch = this.#out;
      while (this.#head - Atomics.load(ch.ctrl, TAIL) >= ch.depth) {
        waitChangeSync(this.ctx, ch.ctrl, TAIL, this.#head - ch.depth, this.peer, DRAIN(this.peer));
      }
      this.#copyCommit(frame, off, ch.slot(this.#head) + HEADER_BYTES);
      return;
    }
    this.#queue.push({ frame: { ...frame }, off });
    if (!this.#pumpActive) {
      this.#pumpActive = true;
      this.#pumpDone = this.#pump();
    }
  }

  #copyCommit(frame: Frame, off: number, dst: number): void {
    if (this.zeroCopy) {
      this.ctx.arena.i32(dst, 1)[0] = off | 0;
    } else if (frame.bytes > 0) {
      const buf = this.ctx.arena.buffer;
      new Uint8Array(buf, dst, frame.bytes).set(new Uint8Array(buf, off, frame.bytes));
    }
    this.commit(frame);
  }

  async #pump(): Promise<void> {
    const ch = this.#out;
    try {
      while (this.#queue.length > 0) {
        while (this.#head - Atomics.load(ch.ctrl, TAIL) >= ch.depth) {
          await waitChange(
            this.ctx,
            ch.ctrl,
            TAIL,
            this.#head - ch.depth,
            this.peer,
            DRAIN(this.peer),
          );
        }
        const m = this.#queue.shift()!;
        this.#copyCommit(m.frame, m.off, ch.slot(this.#head) + HEADER_BYTES);
      }
    } catch (e) {
      this.#error = e as Error;
      this.#queue.length = 0;
    } finally {
      this.#pumpActive = false;
    }
  }

  async recv(want: Frame): Promise<number> {
    const ch = this.#in;
    while (Atomics.load(ch.ctrl, HEAD) === this.#tail) {
      if (this.blocking) {
        waitChangeSync(this.ctx, ch.ctrl, HEAD, this.#tail, this.peer, DATA(this.peer));
        continue;
      }
      await waitChange(
        this.ctx,
        ch.ctrl,
        HEAD,
        this.#tail,
        this.peer,
        DATA(this.peer),
      );
    }
    const at = ch.slot(this.#tail);
    this.#hdr.set(this.ctx.arena.i32(at, HEADER_BYTES / 4));
    checkFrame(decodeHeader(this.#hdr), want, this.peer, this.ctx.rank);
    if (this.zeroCopy) return this.ctx.arena.i32(at + HEADER_BYTES, 1)[0] >>> 0;
    return at + HEADER_BYTES;
  }

  release(): void {
    this.#tail++;
    Atomics.store(this.#in.ctrl, TAIL, this.#tail);
    Atomics.notify(this.#in.ctrl, TAIL);
  }

  async flush(): Promise<void> {
    while (this.#pumpActive) await this.#pumpDone;
    if (this.#error) throw this.#error;
    if (!this.zeroCopy) return;
    // The peer reads our buffers in place: wait until it has consumed every message.
    const ch = this.#out;
    for (let tail; (tail = Atomics.load(ch.ctrl, TAIL)) !== this.#head;) {
      if (this.blocking) waitChangeSync(this.ctx, ch.ctrl, TAIL, tail, this.peer, DRAIN(this.peer));
      else await waitChange(this.ctx, ch.ctrl, TAIL, tail, this.peer, DRAIN(this.peer));
    }
  }

  abort(message: string): void {
    this.ctx.arena.abort(this.ctx.rank, message);
  }

  close(): void {}
}
