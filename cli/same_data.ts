/**
 * Every node of a training job must read the same data. Each node reads its own
 * copy of the files (their paths may differ), and a node holding another
 * version would give its tensor-parallel ranks other tokens than their peers
 * (the group's sums then mix different inputs) or its data-parallel ranks other
 * batches, silently. After reading, before any device, the ranks compare each
 * token stream's length and a hash of all its tokens, and stop with the
 * difference named.
 * @module
 */

import { disagreements } from "../collectives/agree.ts";
import type { ProcessGroup } from "../collectives/group.ts";
import { DataError } from "../data/errors.ts";
import { forEachPiece, type TokenStreamLike } from "../data/token_stream.ts";

/** What the ranks compare of one token stream: its length and a hash of its tokens. */
export interface StreamFingerprint {
  /** Tokens in the stream. */
  tokens: number;
  /** A 32-bit hash (hex) of every token in order ({@link TokenStreamHash}). */
  hash: string;
}

/**
 * A running hash of a token stream, fed in pieces: MurmurHash3's 32-bit block
 * step over each value as one 32-bit word (integers in the int32 or uint32
 * range), then its finaliser over the length. Every token counts: 1–3 ns a
 * token (100M tokens in 0.1–0.3 s on a Zen 5 core), far less than reading them.
 */
export class TokenStreamHash {
  #h = 0x9747b28c;
  #count = 0;

  /** Adds `values`, in order, after everything added before. */
  add(values: ArrayLike<number>): void {
    let h = this.#h;
    for (let i = 0; i < values.length; i++) {
      let k = Math.imul(values[i] | 0, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      h ^= Math.imul(k, 0x1b873593);
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
    this.#h = h;
    this.#count += values.length;
  }

  /** The fingerprint of everything added so far. */
  fingerprint(): StreamFingerprint {
    let h = this.#h ^ this.#count;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return { tokens: this.#count, hash: (h >>> 0).toString(16).padStart(8, "0") };
  }
}

/**
 * The fingerprint of a token stream, an array or a stream read a piece at a
 * time (a `.bin` larger than memory): its length and a hash of every token.
 */
export async function streamFingerprint(tokens: TokenStreamLike): Promise<StreamFingerprint> {
  const hash = new TokenStreamHash();
  await forEachPiece(tokens, (piece) => hash.add(piece));
  return hash.fingerprint();
}

/** How many differing streams the error names. */
const SHOWN = 4;

/**
 * Refuses, on every rank at once, a job whose ranks read different data:
 * `streams` maps a stream's name, the same on every node (not a path: paths
 * may differ between nodes), to its {@link streamFingerprint}.
 */
export async function checkSameData(
  group: ProcessGroup,
  streams: Readonly<Record<string, StreamFingerprint>>,
): Promise<void> {
  const found = await disagreements(group, streams);
  if (!found.length) return;
  const keys = [...new Set(found.map((d) => d.key))];
  const shown = (v: unknown) => {
    const f = v as StreamFingerprint | undefined;
    return f ? `${f.tokens} tokens (hash ${f.hash})` : "none";
  };
  const lines = keys.slice(0, SHOWN).map((key) => {
    const ds = found.filter((d) => d.key === key);
    const others = ds.map((d) => `${shown(d.value)} on rank ${d.rank}`).join(", ");
    return `${key}: ${shown(ds[0].firstValue)} on rank ${group.ranks[0]}, ${others}`;
  });
  const more = keys.length > SHOWN ? ` (and ${keys.length - SHOWN} more)` : "";
  throw new DataError(
    `the ranks read different data: ${lines.join("; ")}${more}. Give every node the same ` +
      `data files (each node reads its own copy)`,
  );
}
