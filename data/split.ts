/**
 * Cutting one corpus's token stream into training, validation and test parts
 * (`--split`), in that order. Megatron cuts between documents, so that no
 * document is in two parts; a stream here is cut at the token the fractions
 * give, then each cut moves to the nearest document boundary (just after a
 * separator id, or where a Megatron index says a document begins) when that
 * changes neither part it separates by more than half its size. A corpus of one document, a stream without separators (the byte
 * tokenizer's), or documents longer than the parts keep the token cut, and
 * one document then straddles it.
 * @module
 */

import { DOCUMENT_GAP, PARAGRAPH_GAP } from "./sentences.ts";
import { asTokenStream, type TokenStream, type TokenStreamLike } from "./token_stream.ts";

/** One corpus's parts. */
export interface StreamSplit {
  /** The leading part (a part of the stream: nothing copied or read). */
  train: TokenStream;
  /** The part after it. */
  val: TokenStream;
  /** Tokens of the trailing test part (not read by training). */
  test: number;
}

/**
 * Cuts `ids` into parts of the fractions `valid` and `test` (the rest is
 * training), moving each cut to a document boundary as the module says;
 * `separator` is the id set between documents (none: cuts at tokens);
 * `documentStarts`, where a Megatron index says the documents begin, takes
 * its place when given (documents written without `--append-eod` have no
 * separator between them).
 */
export function splitStream(
  ids: TokenStreamLike,
  fractions: { valid: number; test: number },
  separator?: number,
  documentStarts?: ArrayLike<number>,
): StreamSplit {
  const stream = asTokenStream(ids);
  const n = stream.length;
  const nTest = Math.round(n * fractions.test);
  const nVal = Math.round(n * fractions.valid);
  let end = Math.max(0, n - nVal - nTest);
  let valEnd = n - nTest;
  if (documentStarts !== undefined) {
    end = toStart(documentStarts, end, 0, valEnd);
    valEnd = toStart(documentStarts, valEnd, end, n);
  } else if (separator !== undefined) {
    end = toBoundary(stream, separator, end, 0, valEnd);
    valEnd = toBoundary(stream, separator, valEnd, end, n);
  }
  return { train: stream.part(0, end), val: stream.part(end, valEnd), test: n - valEnd };
}

/**
 * {@link toBoundary} for documents whose starts are known (a Megatron index's,
 * ascending): the start nearest `cut` (the earlier on a tie) inside
 * `(from, to)` and within half of each part, else `cut`.
 */
function toStart(starts: ArrayLike<number>, cut: number, from: number, to: number): number {
  const reach = Math.floor(Math.min(cut - from, to - cut) / 2);
  let lo = 0, hi = starts.length; // the first start at or after the cut
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (starts[mid] < cut) lo = mid + 1;
    else hi = mid;
  }
  const before = lo > 0 && starts[lo - 1] > from ? cut - starts[lo - 1] : Infinity;
  const after = lo < starts.length && starts[lo] < to ? starts[lo] - cut : Infinity;
  if (after === 0) return cut;
  if (before <= after && before <= reach) return starts[lo - 1];
  if (after < before && after <= reach) return starts[lo];
  return cut;
}

/** Distances from a cut that {@link toBoundary} reads at a time, on each side. */
const SCAN_IDS = 1 << 16;

/**
 * The document boundary nearest `cut` (a position just after a `separator`;
 * the earlier on a tie) when it lies within half of each part the cut
 * separates (`[from, cut)` and `[cut, to)`), else `cut`. The ids around the
 * cut are read a block at a time, outward.
 */
function toBoundary(
  ids: TokenStream,
  separator: number,
  cut: number,
  from: number,
  to: number,
): number {
  const reach = Math.floor(Math.min(cut - from, to - cut) / 2);
  for (let lo = 0; lo <= reach; lo += SCAN_IDS) {
    const hi = Math.min(reach, lo + SCAN_IDS - 1);
    // Distance d looks at ids[cut − d − 1] (a boundary at cut − d) and, past 0,
    // at ids[cut + d − 1] (a boundary at cut + d, inside [from, to)).
    const leftStart = Math.max(from, cut - hi - 1);
    const left = ids.read(leftStart, Math.max(leftStart, cut - lo));
    const rightStart = cut + Math.max(lo, 1) - 1;
    const right = ids.read(rightStart, Math.max(rightStart, Math.min(cut + hi, to - 1)));
    for (let d = lo; d <= hi; d++) {
      const l = cut - d - 1;
      if (l >= from && left[l - leftStart] === separator) return cut - d;
      if (d > 0 && cut + d < to && right[cut + d - 1 - rightStart] === separator) return cut + d;
    }
  }
  return cut;
}

/**
 * Where to cut `text` near character `cut` between the parts `[from, cut)` and
 * `[cut, to)` as BERT's corpora split into documents (data/sentences.ts
 * `splitDocuments`): just after the run of two or more blank lines nearest the
 * cut (the earlier on a tie), else after the nearest blank line (a paragraph),
 * else after the nearest white space, each only within half of either part;
 * else `cut`. So no document (or paragraph, or word) is in two parts where
 * the text allows.
 */
export function textCut(text: string, cut: number, from: number, to: number): number {
  const reach = Math.floor(Math.min(cut - from, to - cut) / 2);
  if (reach <= 0) return cut;
  for (const kind of [DOCUMENT_GAP, PARAGRAPH_GAP, /\s+/]) {
    const gap = new RegExp(kind.source, "g");
    let best = cut, bestDistance = Infinity;
    // A gap ending within reach of the cut may start before that window.
    gap.lastIndex = Math.max(from, cut - reach - 1024);
    for (let m = gap.exec(text); m !== null; m = gap.exec(text)) {
      const end = m.index + m[0].length;
      if (end > cut + reach || end >= to) break;
      const distance = Math.abs(end - cut);
      if (end > from && distance <= reach && distance < bestDistance) {
        best = end;
        bestDistance = distance;
      }
    }
    if (bestDistance !== Infinity) return best;
  }
  return cut;
}
