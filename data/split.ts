/**
 * Cutting one corpus's token stream into training, validation and test parts
 * (`--split`), in that order. Megatron cuts between documents, so that no
 * document is in two parts; a stream here is cut at the token the fractions
 * give, then each cut moves to the nearest document boundary (just after a
 * separator id) when that changes neither part it separates by more than half
 * its size. A corpus of one document, a stream without separators (the byte
 * tokenizer's), or documents longer than the parts keep the token cut, and
 * one document then straddles it.
 * @module
 */

/** One corpus's parts. */
export interface StreamSplit {
  /** The leading part (views of the stream, not copies). */
  train: Uint32Array;
  /** The part after it. */
  val: Uint32Array;
  /** Tokens of the trailing test part (not read by training). */
  test: number;
}

/**
 * Cuts `ids` into parts of the fractions `valid` and `test` (the rest is
 * training), moving each cut to a document boundary as the module says;
 * `separator` is the id set between documents (none: cuts at tokens).
 */
export function splitStream(
  ids: Uint32Array,
  fractions: { valid: number; test: number },
  separator?: number,
): StreamSplit {
  const n = ids.length;
  const nTest = Math.round(n * fractions.test);
  const nVal = Math.round(n * fractions.valid);
  let end = Math.max(0, n - nVal - nTest);
  let valEnd = n - nTest;
  if (separator !== undefined) {
    end = toBoundary(ids, separator, end, 0, valEnd);
    valEnd = toBoundary(ids, separator, valEnd, end, n);
  }
  return { train: ids.subarray(0, end), val: ids.subarray(end, valEnd), test: n - valEnd };
}

/**
 * The document boundary nearest `cut` (a position just after a `separator`;
 * the earlier on a tie) when it lies within half of each part the cut
 * separates (`[from, cut)` and `[cut, to)`), else `cut`.
 */
function toBoundary(
  ids: Uint32Array,
  separator: number,
  cut: number,
  from: number,
  to: number,
): number {
  const reach = Math.floor(Math.min(cut - from, to - cut) / 2);
  for (let d = 0; d <= reach; d++) {
    if (cut - d - 1 >= from && ids[cut - d - 1] === separator) return cut - d;
    if (cut + d < to && d > 0 && ids[cut + d - 1] === separator) return cut + d;
  }
  return cut;
}
