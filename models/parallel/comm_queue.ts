/**
 * The order of a device's host exchanges while communication overlaps
 * backward (models/parallel/overlap.ts): collectives whose exchange may run
 * while others are in flight go through the device's {@link CommQueue}, which
 * runs them in issue order. Every rank issues them in the same order, so ranks
 * whose shared-memory waits block their thread cannot wait on each other in a
 * cycle; `allReduced` (models/parallel/mappings.ts) joins the queue whenever
 * something is in flight, so plain f/g all-reduces keep that order too.
 * @module
 */

import type { Device } from "../../core/device.ts";

/**
 * Host exchanges of one device in issue order: `run(f)` calls `f` at once when
 * nothing issued earlier is still running, otherwise after the last one ends.
 */
export class CommQueue {
  #tail: Promise<unknown> = Promise.resolve();
  #running = 0;

  /** Runs `f` after every earlier `f` (at once, synchronously, when none is running). */
  run<T>(f: () => Promise<T>): Promise<T> {
    const p = this.#running === 0 ? f() : this.#tail.then(f, f);
    this.#running++;
    const done = p.finally(() => this.#running--);
    this.#tail = done.catch(() => {});
    return p;
  }

  /** Collectives issued and not finished. */
  get inFlight(): number {
    return this.#running;
  }
}

const queues = new WeakMap<Device, CommQueue>();

/** The {@link CommQueue} of `device`. */
export function commQueue(device: Device): CommQueue {
  let q = queues.get(device);
  if (!q) queues.set(device, q = new CommQueue());
  return q;
}
