/**
 * Random streams. A stream is a seed plus a counter; each use takes the next
 * counter value as the Philox offset, so every draw is reproducible from the seed
 * and the order of use, on any device.
 * @module
 */

/** One draw's coordinates: the Philox key and counter offset. */
export interface RngDraw {
  /** Philox key (up to 2^53). */
  seed: number;
  /** Philox counter word distinguishing draws of one stream. */
  offset: number;
}

/**
 * Refuses a draw the kernels would read as another one: they take the seed as
 * two 32-bit words and the offset as one, so a negative or fractional seed, or
 * an offset past 2^32, would silently repeat some other draw's numbers.
 * Returns `draw`; `op` names the caller in the message.
 */
export function checkDraw(op: string, draw: RngDraw): RngDraw {
  const { seed, offset } = draw;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RangeError(`${op}: a draw's seed must be a non-negative integer, got ${seed}`);
  }
  if (!Number.isInteger(offset) || offset < 0 || offset >= 2 ** 32) {
    throw new RangeError(
      `${op}: a draw's offset must be an integer in [0, 2^32), got ${offset}`,
    );
  }
  return draw;
}

/** A reproducible sequence of {@link RngDraw}s. */
export class RngStream {
  /** Next offset to hand out. */
  offset = 0;

  /** A stream for `seed` (a non-negative integer). */
  constructor(readonly seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new Error(`RNG seed must be a non-negative integer, got ${seed}`);
    }
  }

  /** The next draw. */
  next(): RngDraw {
    return { seed: this.seed, offset: this.offset++ };
  }
}

/** Mixes integers into a new 52-bit seed (splitmix64-style, in doubles-safe pieces). */
export function deriveSeed(...parts: number[]): number {
  let h1 = 0x9e3779b9 >>> 0;
  let h2 = 0x7f4a7c15 >>> 0;
  for (const p of parts) {
    if (!Number.isSafeInteger(p)) {
      throw new RangeError(`a seed must be an integer, got ${p}`);
    }
    const lo = p >>> 0;
    const hi = Math.floor(p / 2 ** 32) >>> 0;
    h1 = Math.imul(h1 ^ lo, 0x85ebca6b) >>> 0;
    h1 = (h1 ^ (h1 >>> 13)) >>> 0;
    h2 = Math.imul(h2 ^ hi ^ h1, 0xc2b2ae35) >>> 0;
    h2 = (h2 ^ (h2 >>> 16)) >>> 0;
    h1 = Math.imul(h1 ^ h2, 0x27d4eb2f) >>> 0;
  }
  return (h2 & 0xfffff) * 2 ** 32 + h1;
}
