/**
 * GPT-2's byte-pair encoding, as OpenAI's `encoder.py` and tiktoken do it: text
 * split by GPT-2's pattern, each piece's UTF-8 bytes merged pair by pair, the
 * pair that makes the lowest-ranked token first (the leftmost of equals).
 * The merges of a piece take O(n log n) for n bytes (a heap of the pairs), so a
 * long run of letters with no space costs no more than as many short words.
 * @module
 */

/** Unicode's White_Space, which Python's `regex` (OpenAI's and Hugging Face's) reads as `\s`. */
const WS = String.raw`\p{White_Space}`;

/**
 * GPT-2's pre-tokenizer pattern (OpenAI's `encoder.py`): contractions, letters,
 * digits and other symbols, each with an optional leading space, and runs of
 * whitespace. `\s` is written as Unicode's White_Space, as Python's `regex`
 * reads it: JavaScript's `\s` also takes U+FEFF and leaves U+0085 out, which
 * would split such text otherwise than GPT-2 did.
 */
export const GPT2_SPLIT_PATTERN: RegExp = new RegExp(
  String
    .raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^${WS}\p{L}\p{N}]+|${WS}+(?!\P{White_Space})|${WS}+`,
  "gu",
);

/** Pieces up to this many UTF-16 units have their ids remembered (words recur). */
const CACHED_PIECE_UNITS = 64;
/** Remembered pieces at most: the cache starts over past this. */
const CACHED_PIECES = 65_536;
/** Positions packed into a heap key below the rank (`rank · 2^32 + position`). */
const POSITION_SPAN = 2 ** 32;

/** The bytes of `s` (UTF-8) as a string of char codes 0–255: the key of the rank table. */
function utf8Bytes(s: string): string {
  const codes: number[] = [];
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c < 0x80) codes.push(c);
    else if (c < 0x800) codes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) {
      // A lone surrogate is U+FFFD's bytes, as TextEncoder writes it.
      const u = c >= 0xd800 && c < 0xe000 ? 0xfffd : c;
      codes.push(0xe0 | (u >> 12), 0x80 | ((u >> 6) & 63), 0x80 | (u & 63));
    } else {
      codes.push(
        0xf0 | (c >> 18),
        0x80 | ((c >> 12) & 63),
        0x80 | ((c >> 6) & 63),
        0x80 | (c & 63),
      );
    }
  }
  return byteString(codes);
}

/** Char codes 0–255 as a string, in chunks (one call per code would be slow, one for all overflows). */
function byteString(codes: ArrayLike<number>): string {
  let out = "";
  for (let i = 0; i < codes.length; i += 8192) {
    out += String.fromCharCode(...Array.prototype.slice.call(codes, i, i + 8192));
  }
  return out;
}

/**
 * A byte-pair encoder over a table of tokens in rank order (GPT-2's: token `i`
 * is id `i`, the 256 single bytes among them, each merge's token ranked by its
 * id, as tiktoken ranks GPT-2's merges).
 */
export class BytePairEncoder {
  readonly #ranks = new Map<string, number>();
  readonly #cache = new Map<string, readonly number[]>();

  /**
   * `tokens[i]`: the bytes of id `i` (none: an id text never encodes to, such as
   * a special token). Throws unless all 256 single bytes are tokens.
   */
  constructor(tokens: readonly (Uint8Array | null)[]) {
    tokens.forEach((t, id) => {
      if (t !== null) this.#ranks.set(byteString(t), id);
    });
    for (let b = 0; b < 256; b++) {
      if (!this.#ranks.has(String.fromCharCode(b))) {
        throw new RangeError(`a byte-pair table must hold every byte; it lacks ${b}`);
      }
    }
  }

  /** The ids of `text`, split by {@link GPT2_SPLIT_PATTERN}, each piece merged on its own. */
  encode(text: string): number[] {
    const out: number[] = [];
    for (const m of text.matchAll(GPT2_SPLIT_PATTERN)) {
      const piece = m[0];
      let ids = this.#cache.get(piece);
      if (ids === undefined) {
        ids = this.#encodePiece(utf8Bytes(piece));
        if (piece.length <= CACHED_PIECE_UNITS) {
          if (this.#cache.size >= CACHED_PIECES) this.#cache.clear();
          this.#cache.set(piece, ids);
        }
      }
      for (const id of ids) out.push(id);
    }
    return out;
  }

  /** The ids of one piece's bytes `s` (char codes 0–255). */
  #encodePiece(s: string): number[] {
    const whole = this.#ranks.get(s);
    if (whole !== undefined) return [whole];
    const n = s.length;
    // Node `i` (alive while `live[i]`) holds bytes [i, next[i]); `prev` links back.
    const next = new Int32Array(n), prev = new Int32Array(n), live = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    const heap = new PairHeap();
    const pushPair = (i: number) => {
      const j = next[i];
      if (j >= n) return;
      const rank = this.#ranks.get(s.slice(i, next[j]));
      if (rank !== undefined) heap.push(rank * POSITION_SPAN + i, next[j]);
    };
    for (let i = 0; i + 1 < n; i++) pushPair(i);
    while (heap.size > 0) {
      const [key, end] = heap.pop();
      const i = key % POSITION_SPAN, j = next[i];
      // A pair is stale once either side merged elsewhere: its span changed.
      if (!live[i] || j >= n || next[j] !== end) continue;
      live[j] = 0;
      next[i] = end;
      if (end < n) prev[end] = i;
      if (prev[i] >= 0) pushPair(prev[i]);
      pushPair(i);
    }
    const ids: number[] = [];
    for (let i = 0; i < n; i = next[i]) ids.push(this.#ranks.get(s.slice(i, next[i]))!);
    return ids;
  }
}

/** A binary min-heap of (key, end) pairs, ordered by key. */
class PairHeap {
  readonly #keys: number[] = [];
  readonly #ends: number[] = [];

  /** Pairs held. */
  get size(): number {
    return this.#keys.length;
  }

  /** Adds a pair. */
  push(key: number, end: number): void {
    const k = this.#keys, e = this.#ends;
    let i = k.length;
    k.push(key);
    e.push(end);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (k[p] <= key) break;
      k[i] = k[p];
      e[i] = e[p];
      i = p;
    }
    k[i] = key;
    e[i] = end;
  }

  /** Removes and returns the pair of the smallest key. */
  pop(): [number, number] {
    const k = this.#keys, e = this.#ends;
    const top: [number, number] = [k[0], e[0]];
    const key = k.pop()!, end = e.pop()!;
    const n = k.length;
    if (n === 0) return top;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && k[c + 1] < k[c]) c++;
      if (k[c] >= key) break;
      k[i] = k[c];
      e[i] = e[c];
      i = c;
    }
    k[i] = key;
    e[i] = end;
    return top;
  }
}
