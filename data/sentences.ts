/**
 * Sentence splitting for BERT's sentence-pair data. Documents are separated by two or more
 * blank lines (the default book's sections); paragraphs inside a document are not breaks.
 * @module
 */

const ABBREVIATIONS = new Set([
  "mr",
  "mrs",
  "ms",
  "dr",
  "st",
  "capt",
  "mt",
  "messrs",
  "no",
  "vol",
  "ch",
  "jr",
  "sr",
  "rev",
  "gen",
  "col",
  "lieut",
  "prof",
  "esq",
  "etc",
  "vs",
  "viz",
  "i.e",
  "e.g",
  "co",
  "ft",
]);

const CLOSER = `["'”’)\\]」』）]`;
const CLOSERS = `${CLOSER}*`;
const CJK_END = `[。！？]+${CLOSERS}(?!${CLOSER})(?=.)`;
const CASED_END = new RegExp(`[.!?]+${CLOSERS}(?= +["'“‘(\\[]*[\\p{Lu}\\d])|${CJK_END}`, "gu");
const UNCASED_END = new RegExp(`[.!?]+${CLOSERS}(?= +["'“‘(\\[]*[\\p{L}\\d])|${CJK_END}`, "gu");

/** Splits one block of text (whitespace collapsed) into sentences. */
export function splitParagraphSentences(paragraph: string): string[] {
  const text = paragraph.replace(/\s+/g, " ").trim();
  if (text.length === 0) return [];
  const out: string[] = [];
  // A candidate end: terminal punctuation, optional closing quotes/brackets, a space, then a
  // character that can start a sentence: a capital or a digit where the text has capitals, any
  // letter or digit in text without any (lowercased corpora). Chinese and Japanese full stops,
  // exclamation and question marks end a sentence wherever more text follows.
  const end = /\p{Lu}/u.test(text) ? CASED_END : UNCASED_END;
  let from = 0;
  for (const m of text.matchAll(end)) {
    const stop = m.index! + m[0].length;
    if (m[0].startsWith(".") && m[0].length === 1) {
      const word = /([\p{L}.]+)$/u.exec(text.slice(from, m.index!))?.[1]?.toLowerCase() ?? "";
      if (ABBREVIATIONS.has(word) || /^\p{L}$/u.test(word)) continue;
    }
    const s = text.slice(from, stop).trim();
    if (s.length > 0) out.push(s);
    from = stop;
  }
  const rest = text.slice(from).trim();
  if (rest.length > 0) out.push(rest);
  return out;
}

/** What ends a document of BERT's text: a run of two or more blank lines. */
export const DOCUMENT_GAP = /\n[ \t]*\n(?:[ \t]*\n)+/;

/** What ends a paragraph: a blank line. */
export const PARAGRAPH_GAP = /\n[ \t]*\n/;

/** Splits text into documents (at 2+ blank lines), each a list of sentences (paragraphs joined). */
export function splitDocuments(text: string): string[][] {
  return text
    .replace(/\r\n?/g, "\n")
    .split(DOCUMENT_GAP)
    .map((doc) => doc.split(PARAGRAPH_GAP).flatMap(splitParagraphSentences))
    .filter((sentences) => sentences.length > 0);
}
