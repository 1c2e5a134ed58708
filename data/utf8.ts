/**
 * UTF-8 decoding that says what it changed: how many bytes of the input were not
 * valid UTF-8 and became U+FFFD. The count follows the WHATWG Encoding Standard's
 * decoder (the one `TextDecoder` implements): each maximal ill-formed subsequence
 * becomes one U+FFFD, and all its bytes count as invalid.
 * @module
 */

/** Text decoded from bytes, and what the decoder replaced. */
export interface DecodedText {
  /** The text; invalid sequences are U+FFFD. */
  text: string;
  /** Bytes that were part of an invalid sequence (0 for valid UTF-8). */
  invalidBytes: number;
  /** U+FFFD characters the decoder inserted (one per invalid sequence). */
  replacements: number;
}

const strict = new TextDecoder("utf-8", { fatal: true });
const lenient = new TextDecoder("utf-8", { fatal: false });

/**
 * Counts the invalid bytes and the replacements of decoding `bytes` as UTF-8,
 * as the WHATWG decoder would (without decoding).
 */
export function countInvalidUtf8(
  bytes: Uint8Array,
): { invalidBytes: number; replacements: number } {
  let invalidBytes = 0, replacements = 0;
  let needed = 0, seen = 0, lower = 0x80, upper = 0xbf;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (needed === 0) {
      if (b <= 0x7f) continue;
      if (b >= 0xc2 && b <= 0xdf) needed = 1;
      else if (b >= 0xe0 && b <= 0xef) {
        if (b === 0xe0) lower = 0xa0;
        if (b === 0xed) upper = 0x9f;
        needed = 2;
      } else if (b >= 0xf0 && b <= 0xf4) {
        if (b === 0xf0) lower = 0x90;
        if (b === 0xf4) upper = 0x8f;
        needed = 3;
      } else {
        invalidBytes++;
        replacements++;
        continue;
      }
      seen = 1;
      continue;
    }
    if (b < lower || b > upper) {
      // The sequence so far is invalid; this byte starts afresh.
      invalidBytes += seen;
      replacements++;
      needed = 0;
      lower = 0x80;
      upper = 0xbf;
      i--;
      continue;
    }
    lower = 0x80;
    upper = 0xbf;
    seen++;
    if (seen === needed + 1) needed = 0;
  }
  if (needed !== 0) {
    invalidBytes += seen;
    replacements++;
  }
  return { invalidBytes, replacements };
}

/**
 * Decodes `bytes` as UTF-8 (a leading byte-order mark is dropped, as
 * `Deno.readTextFile` does), replacing invalid sequences by U+FFFD and counting them. Valid
 * input costs one native decode.
 */
export function decodeUtf8Counted(bytes: Uint8Array): DecodedText {
  try {
    return { text: strict.decode(bytes), invalidBytes: 0, replacements: 0 };
  } catch {
    return { text: lenient.decode(bytes), ...countInvalidUtf8(bytes) };
  }
}

/** The warning line for `file` when `d` replaced bytes, else null. */
export function invalidUtf8Warning(file: string, d: DecodedText): string | null {
  if (d.invalidBytes === 0) return null;
  return `${file}: ${d.invalidBytes} byte${d.invalidBytes === 1 ? " is" : "s are"} not valid ` +
    `UTF-8 and ${d.invalidBytes === 1 ? "was" : "were"} replaced by U+FFFD ` +
    `(${d.replacements} replacement character${d.replacements === 1 ? "" : "s"})`;
}
