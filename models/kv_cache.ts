/**
 * The key-value cache of incremental decoding: per transformer layer, the keys
 * and values of every position seen so far, `[batch, localHeads, capacity,
 * headDim]` each. Under tensor parallelism each rank holds the cache of its own
 * heads (`localHeads = heads / tp`), so ranks decode with no extra communication.
 * @module
 */

import type { Device } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";

/** The keys and values of one layer. */
export interface LayerCache {
  /** Keys `[batch, localHeads, capacity, headDim]`. */
  readonly k: Tensor;
  /** Values `[batch, localHeads, capacity, headDim]`. */
  readonly v: Tensor;
}

/** Shape of a {@link KvCache}. */
export interface KvCacheShape {
  /** Transformer layers. */
  numLayers: number;
  /** Sequences decoded together. */
  batch: number;
  /** Attention heads on this rank. */
  localHeads: number;
  /** Size of one head. */
  headDim: number;
  /** Positions the cache holds (at most the model's position table). */
  capacity: number;
}

/**
 * Keys and values of positions `[0, length)` for every layer. Buffers are
 * allocated once and survive `tidy` scopes; call {@link KvCache.dispose} when done.
 */
export class KvCache {
  /** One entry per layer. */
  readonly layers: readonly LayerCache[];
  /** The shape it was built with. */
  readonly shape: Readonly<KvCacheShape>;
  #length = 0;

  /** Allocates the buffers (contents are written before they are read). */
  constructor(readonly device: Device, shape: KvCacheShape) {
    for (const [name, v] of Object.entries(shape)) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new Error(`KvCache: ${name} must be a positive integer, got ${v}`);
      }
    }
    this.shape = { ...shape };
    const dims = [shape.batch, shape.localHeads, shape.capacity, shape.headDim];
    const layers: LayerCache[] = [];
    for (let i = 0; i < shape.numLayers; i++) {
      layers.push({ k: Tensor.empty(device, dims).keep(), v: Tensor.empty(device, dims).keep() });
    }
    this.layers = layers;
  }

  /** Positions held (the next write starts here unless rewound). */
  get length(): number {
    return this.#length;
  }

  /** Positions the cache can hold. */
  get capacity(): number {
    return this.shape.capacity;
  }

  /**
   * Checks that `n` positions can be written at `start`: `start` may not pass the
   * cached length (no gaps; a smaller `start` rewinds) and `start + n` may not
   * pass the capacity. Throws a message naming the positions otherwise.
   */
  checkWrite(start: number, n: number): void {
    if (!Number.isInteger(start) || start < 0 || start > this.#length) {
      throw new Error(
        `KvCache: start position ${start} must be in [0, ${this.#length}] (the cached length)`,
      );
    }
    if (!Number.isInteger(n) || n <= 0) {
      throw new Error(`KvCache: the number of new positions must be ≥ 1, got ${n}`);
    }
    if (start + n > this.capacity) {
      throw new Error(
        `KvCache: positions [${start}, ${start + n}) exceed the cache capacity ${this.capacity} ` +
          "(at most the model's position table); restart from a shorter context",
      );
    }
  }

  /** Records that positions `[start, start + n)` were written; later ones are forgotten. */
  advance(start: number, n: number): void {
    this.checkWrite(start, n);
    this.#length = start + n;
  }

  /** Forgets every position (buffers are kept for reuse). */
  reset(): void {
    this.#length = 0;
  }

  /** Bytes held on the device. */
  get byteLength(): number {
    return this.layers.reduce((s, l) => s + l.k.byteLength + l.v.byteLength, 0);
  }

  /** Frees the buffers. */
  dispose(): void {
    for (const l of this.layers) {
      l.k.dispose();
      l.v.dispose();
    }
    this.#length = 0;
  }
}
