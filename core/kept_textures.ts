/**
 * Stream textures kept for buffers whose contents hold still for a while (a
 * training step's weights, from the forward pass to the optimizer's read; its
 * gradients, from the gradient norm to the update): the first op that reads
 * such a buffer through a texture fills one, and later ops that read the same
 * range reuse it instead of copying again (see
 * `Device.keepStreamTextures`). Textures outlive a release, so that the next
 * step reuses them (and the bind groups that name them) instead of allocating.
 * @module
 */

import { STREAM_ROW_BYTES } from "../kernels/texture.ts";

/** One kept texture. */
export interface KeptTexture {
  /** The texture (rgba32float, 1024 texels a row). */
  texture: GPUTexture;
  /** Its view, stable for as long as the entry lives. */
  view: GPUTextureView;
  /** Rows of texels. */
  rows: number;
  /** Whether it holds the buffer range's contents in the current hold. */
  filled: boolean;
  /** Whether an op asked for it since the last release. */
  used: boolean;
}

/** The bookkeeping of kept stream textures: which buffers, and their textures by range. */
export class KeptTextures {
  /** Buffers whose ranges are kept until {@link KeptTextures.release}. */
  readonly #held = new Set<GPUBuffer>();
  /** Entries by buffer range (`id/offset/vec4s`). */
  readonly #byRange = new Map<string, KeptTexture>();
  /** Entries no range asked for in the last hold, by rows, for reuse. */
  readonly #free = new Map<number, KeptTexture[]>();

  /** Reads answered from a kept texture without a copy, since creation. */
  hits = 0;

  /** Rows of texels in all entries, held or free (what the textures cost: 16 KiB a row). */
  #rows = 0;

  /** Bytes of every kept texture, held or free. */
  get bytes(): number {
    return this.#rows * STREAM_ROW_BYTES;
  }

  /** Holds `buffers`: their contents must not change until {@link KeptTextures.release}. */
  hold(buffers: Iterable<GPUBuffer>): void {
    for (const b of buffers) this.#held.add(b);
  }

  /** Whether `buffer` is held. */
  holds(buffer: GPUBuffer): boolean {
    return this.#held.has(buffer);
  }

  /**
   * The entry of range `key` (`rows` rows), made by `create` or taken from the
   * free ones when new; the caller fills it when `filled` is false and sets it.
   */
  entry(key: string, rows: number, create: () => GPUTexture): KeptTexture {
    let e = this.#byRange.get(key);
    if (!e) {
      e = this.#free.get(rows)?.pop();
      if (!e) {
        const texture = create();
        e = { texture, view: texture.createView(), rows, filled: false, used: false };
        this.#rows += rows;
      }
      e.filled = false;
      this.#byRange.set(key, e);
    }
    e.used = true;
    if (e.filled) this.hits++;
    return e;
  }

  /**
   * Ends the hold: no buffer is held and every entry is stale. Entries that no
   * range asked for since the previous release become free for other ranges.
   * Nothing to do when nothing is held (no entry was asked for since the last
   * release), so a second release in a row keeps the entries where they are.
   */
  release(): void {
    if (this.#held.size === 0) return;
    this.#held.clear();
    for (const [key, e] of this.#byRange) {
      e.filled = false;
      if (e.used) e.used = false;
      else this.#makeFree(key, e);
    }
  }

  /**
   * Ends the hold and frees every entry, stale, for the next hold's ranges of the
   * same size: a step's gradients take its weights' textures, and the next step's
   * weights the gradients', so one set of textures serves both.
   */
  recycle(): void {
    this.#held.clear();
    for (const [key, e] of this.#byRange) {
      e.filled = false;
      e.used = false;
      this.#makeFree(key, e);
    }
  }

  /** Moves range `key`'s entry `e` to the free entries of its size. */
  #makeFree(key: string, e: KeptTexture): void {
    this.#byRange.delete(key);
    const list = this.#free.get(e.rows);
    if (list) list.push(e);
    else this.#free.set(e.rows, [e]);
  }

  /** Destroys every texture (with the device). */
  destroy(): void {
    this.#held.clear();
    for (const e of this.#byRange.values()) e.texture.destroy();
    for (const list of this.#free.values()) for (const e of list) e.texture.destroy();
    this.#byRange.clear();
    this.#free.clear();
    this.#rows = 0;
  }
}
