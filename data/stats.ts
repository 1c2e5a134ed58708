/**
 * Baselines a trained language model should beat: the uniform distribution (ln V) and the
 * corpus' unigram entropy.
 * @module
 */

import { forEachPiece, type TokenStreamLike } from "./token_stream.ts";

/** Entropy in nats/token of the empirical unigram distribution of `ids`. */
export function unigramEntropy(ids: ArrayLike<number>): number {
  const counts = new Map<number, number>();
  for (let i = 0; i < ids.length; i++) counts.set(ids[i], (counts.get(ids[i]) ?? 0) + 1);
  const n = ids.length;
  let h = 0;
  for (const c of counts.values()) h -= (c / n) * Math.log(c / n);
  return h;
}

/**
 * Entropy in nats/token of the unigram distribution of a blend: the mixture of
 * each stream's unigram distribution weighted by `weights` (one stream: `[1]`,
 * its own unigram entropy). Each stream is read a piece at a time, so a corpus
 * larger than memory is counted in one pass.
 */
export async function blendUnigramEntropy(
  streams: readonly TokenStreamLike[],
  weights: readonly number[],
): Promise<number> {
  if (weights.length !== streams.length) {
    throw new RangeError(`${streams.length} streams but ${weights.length} weights`);
  }
  const mix = new Map<number, number>();
  for (let k = 0; k < streams.length; k++) {
    const n = streams[k].length;
    if (n === 0) continue;
    let counts = new Float64Array(1024);
    await forEachPiece(streams[k], (piece, at) => {
      for (let i = 0; i < piece.length; i++) {
        const id = piece[i];
        if (id >= counts.length || id >>> 0 !== id) {
          if (id >>> 0 !== id) {
            throw new RangeError(
              `token id ${id} at position ${at + i} is not a non-negative 32-bit integer`,
            );
          }
          const grown = new Float64Array(Math.max(id + 1, 2 * counts.length));
          grown.set(counts);
          counts = grown;
        }
        counts[id]++;
      }
    });
    const w = weights[k] / n;
    counts.forEach((c, id) => {
      if (c > 0) mix.set(id, (mix.get(id) ?? 0) + w * c);
    });
  }
  const total = [...mix.values()].reduce((a, b) => a + b, 0);
  let h = 0;
  for (const q of mix.values()) h -= (q / total) * Math.log(q / total);
  return h;
}

/** Loss in nats/token of the uniform distribution over a vocabulary of `vocabSize`: ln V. */
export function uniformEntropy(vocabSize: number): number {
  return Math.log(vocabSize);
}
