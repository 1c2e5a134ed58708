/**
 * Every node of a training job must read the same data. Each node reads its own
 * copy of the files (their paths may differ), and a node holding another
 * version would give its tensor-parallel ranks other tokens than their peers
 * (the group's sums then mix different inputs) or its data-parallel ranks other
 * batches, silently. After reading, before any device, the ranks compare each
 * token stream's length and a sampled hash of its tokens, and stop with the
 * difference named.
 * @module
 */

import { disagreements } from "../collectives/agree.ts";
import type { ProcessGroup } from "../collectives/group.ts";
import { DataError } from "../data/errors.ts";

/** Evenly spaced tokens a fingerprint hashes (besides the first and last {@link ENDS}). */
const SAMPLES = 65_536;

/** Tokens hashed at each end of a stream. */
const ENDS = 256;

/** What the ranks compare of one token stream: its length and a sampled hash. */
export interface StreamFingerprint {
  /** Tokens in the stream. */
  tokens: number;
  /**
   * A 32-bit hash (FNV-1a, then an avalanche; hex) of the first and last 256
   * tokens and 65,536 evenly spaced ones.
   */
  hash: string;
}

/**
 * The fingerprint of a token stream: its length and a hash of a sample of its
 * tokens (all of them up to 66,048), so that comparing two nodes' copies costs
 * the same whatever the corpus size. Two different files of the same length
 * differ in the sample unless they differ only between sampled positions.
 */
export function streamFingerprint(tokens: ArrayLike<number>): StreamFingerprint {
  return fingerprintAt(tokens.length, (i) => tokens[i]);
}

/**
 * {@link streamFingerprint} of a stream of `length` values that `at(i)` gives
 * (integers in the int32 or uint32 range), for a stream not held in one array.
 */
export function fingerprintAt(length: number, at: (i: number) => number): StreamFingerprint {
  let h = 0x811c9dc5;
  const mix = (v: number) => {
    for (let b = 0; b < 4; b++) {
      h ^= (v >>> (8 * b)) & 0xff;
      h = Math.imul(h, 0x01000193);
    }
  };
  if (length <= SAMPLES + 2 * ENDS) {
    for (let i = 0; i < length; i++) mix(at(i));
  } else {
    for (let i = 0; i < ENDS; i++) mix(at(i));
    const step = (length - 2 * ENDS) / SAMPLES;
    for (let k = 0; k < SAMPLES; k++) mix(at(ENDS + Math.floor(k * step)));
    for (let i = length - ENDS; i < length; i++) mix(at(i));
  }
  // FNV-1a's low bits follow the last bytes; a final avalanche spreads every byte over all 32.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return { tokens: length, hash: (h >>> 0).toString(16).padStart(8, "0") };
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
