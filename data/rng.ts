/**
 * A small, seedable, serializable pseudo-random generator for the data layer (xoshiro128**),
 * so batches are reproducible from a seed without `Math.random`.
 * @module
 */

/** The serializable state of a {@link DataRng}: four unsigned 32-bit words. */
export type DataRngState = [number, number, number, number];

/** Expands a seed into 32-bit words with splitmix32 (used to seed xoshiro128**). */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** xoshiro128** generator with integer, float and state helpers. */
export class DataRng {
  #s: Uint32Array;

  /** Creates a generator from an integer seed (any safe integer; hashed into the state). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
    const hi = Math.floor(seed / 0x100000000);
    const mix = splitmix32((seed >>> 0) ^ Math.imul(hi, 0x27d4eb2d));
    this.#s = new Uint32Array([mix(), mix(), mix(), mix()]);
    if (hi !== 0) {
      // The high half's own stream mixed in: folded into the low 32 bits alone,
      // seed 0 and seed 2³² + 0x27d4eb2d gave one stream. Seeds under 2³² keep theirs.
      const high = splitmix32(hi >>> 0);
      for (let k = 0; k < 4; k++) this.#s[k] ^= high();
    }
    if ((this.#s[0] | this.#s[1] | this.#s[2] | this.#s[3]) === 0) this.#s[0] = 1;
  }

  /** Next unsigned 32-bit integer. */
  nextU32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextU32() / 0x100000000;
  }

  /**
   * Uniform integer in [0, n), unbiased (rejection sampling); n must be in
   * [1, 2^53]. A bound up to 2^32 takes one 32-bit draw a try; a larger one
   * (a window start in a corpus of more than 2^32 tokens) takes two, 53 bits.
   */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_53) {
      throw new RangeError(`nextInt bound must be an integer in [1, 2^53], got ${n}`);
    }
    if (n <= TWO_32) {
      const limit = TWO_32 - (TWO_32 % n);
      for (;;) {
        const x = this.nextU32();
        if (x < limit) return x % n;
      }
    }
    const limit = TWO_53 - (TWO_53 % n);
    for (;;) {
      const x = (this.nextU32() >>> 11) * TWO_32 + this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** A copy of the current state, safe to JSON-serialize. */
  state(): DataRngState {
    return [this.#s[0], this.#s[1], this.#s[2], this.#s[3]];
  }

  /** Restores a state produced by {@link DataRng.state}. */
  restore(state: DataRngState): void {
    if (!Array.isArray(state) || state.length !== 4 || state.some((w) => !Number.isInteger(w))) {
      throw new TypeError("rng state must be an array of four 32-bit integers");
    }
    this.#s.set(state.map((w) => w >>> 0));
  }
}

const TWO_32 = 0x100000000;
const TWO_53 = 2 ** 53;

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
