/**
 * BERT's "basic" pre-tokenization: clean control characters, put spaces around CJK ideographs,
 * lowercase and strip accents (uncased models), split on whitespace and punctuation; each step
 * that Hugging Face's tokenizer files can turn off, as they say ({@link BertBasicOptions}).
 * @module
 */

// As Hugging Face's BertTokenizer: tab, newline, carriage return and space separators split
// words (line and paragraph separators too, as Python's str.split); every other character of
// the Unicode "Other" categories (controls such as \v and \f, format characters such as
// U+FEFF, private use, unassigned) is dropped.
const CONTROL = /\p{C}/u;
const WHITESPACE = /[\t\n\r\p{Zs}\p{Zl}\p{Zp}]/u;
const PUNCT = /\p{P}/u;
const MARK = /\p{Mn}/gu;

/** True for code points of the CJK ideograph blocks BERT treats as separate words. */
function isCjk(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/** True for characters BERT splits off as their own token (ASCII symbols count as punctuation). */
function isPunctuation(ch: string, cp: number): boolean {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96)) return true;
  if (cp >= 123 && cp <= 126) return true;
  return PUNCT.test(ch);
}

/**
 * How BERT's basic tokenization treats text: Hugging Face's `do_lower_case`,
 * `strip_accents` and `tokenize_chinese_chars` (its `BertNormalizer`'s
 * `lowercase`, `strip_accents` and `handle_chinese_chars`).
 */
export interface BertBasicOptions {
  /** Lowercase the text (uncased vocabularies). Default true. */
  lowercase?: boolean;
  /** Strip accents (marks, after NFD). Default: as `lowercase`, as Hugging Face's `strip_accents: null`. */
  stripAccents?: boolean;
  /** Make each CJK ideograph a word of its own. Default true. */
  splitCjk?: boolean;
}

/** `opts` with BERT's defaults filled in: lowercase, accents stripped as the casing, CJK split. */
export function basicOptionsOf(opts: BertBasicOptions = {}): Required<BertBasicOptions> {
  const lowercase = opts.lowercase ?? true;
  return {
    lowercase,
    stripAccents: opts.stripAccents ?? lowercase,
    splitCjk: opts.splitCjk ?? true,
  };
}

/**
 * Splits text into words and punctuation marks, as BERT does: lowercased and
 * accent-stripped for an uncased vocabulary (the default), as written (NFC) for
 * a cased one; `opts` as Hugging Face's settings ({@link BertBasicOptions}).
 */
export function bertBasicTokenize(text: string, opts: BertBasicOptions = {}): string[] {
  const { lowercase, stripAccents: strip, splitCjk } = basicOptionsOf(opts);
  const words: string[] = [];
  let current = "";
  const flush = () => {
    if (current.length > 0) words.push(current);
    current = "";
  };
  const cased = lowercase ? text.toLowerCase() : text;
  const normalized = strip ? cased.normalize("NFD").replace(MARK, "") : cased.normalize("NFC");
  for (const ch of normalized) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd) continue;
    if (WHITESPACE.test(ch)) {
      flush();
    } else if (CONTROL.test(ch)) {
      continue;
    } else if ((splitCjk && isCjk(cp)) || isPunctuation(ch, cp)) {
      flush();
      words.push(ch);
    } else {
      current += ch;
    }
  }
  flush();
  return words;
}
