/**
 * Baselines a trained language model should beat: the uniform distribution (ln V) and the
 * corpus' unigram entropy.
 * @module
 */

/** Entropy in nats/token of the empirical unigram distribution of `ids`. */
export function unigramEntropy(ids: ArrayLike<number>): number {
  const counts = new Map<number, number>();
  for (let i = 0; i < ids.length; i++) counts.set(ids[i], (counts.get(ids[i]) ?? 0) + 1);
  const n = ids.length;
  let h = 0;
  for (const c of counts.values()) h -= (c / n) * Math.log(c / n);
  return h;
}

/** Loss in nats/token of the uniform distribution over a vocabulary of `vocabSize`: ln V. */
export function uniformEntropy(vocabSize: number): number {
  return Math.log(vocabSize);
}
