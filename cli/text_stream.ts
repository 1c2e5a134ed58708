/**
 * Streaming detokenization that never prints half a character.
 * @module
 */

import type { Tokenizer } from "../data/tokenizer.ts";

/**
 * Turns a growing list of token ids into text pieces that never split a
 * character: ids whose decoding ends in an incomplete UTF-8 sequence wait for
 * the next ones (up to a few), the rest is flushed. Each piece is decoded after
 * the ids flushed before it, so a tokenizer that puts a space between words
 * (WordPiece) gets its spaces.
 */
export class TextStream {
  #pending: number[] = [];
  /** The ids flushed last, decoded again before the pending ones. */
  #before: number[] = [];

  /**
   * A stream decoding with `tokenizer`; `after` are ids already shown (a prompt),
   * which the first piece follows (a WordPiece word after them gets its space).
   */
  constructor(
    readonly tokenizer: Pick<Tokenizer, "decode">,
    after: ArrayLike<number> = [],
    readonly maxPending = 8,
  ) {
    this.#before = Array.from(after);
  }

  /** Adds one id; returns the text that is now complete ("" if it waits). */
  push(id: number): string {
    this.#pending.push(id);
    const text = this.#pendingText();
    if (text.endsWith("\uFFFD") && this.#pending.length < this.maxPending) return "";
    this.#before = this.#pending;
    this.#pending = [];
    return text;
  }

  /** The text of ids still waiting (possibly with replacement characters). */
  flush(): string {
    const text = this.#pending.length ? this.#pendingText() : "";
    if (this.#pending.length) this.#before = this.#pending;
    this.#pending = [];
    return text;
  }

  /** The pending ids' text as it follows the ids flushed before them. */
  #pendingText(): string {
    if (this.#before.length) {
      const before = this.tokenizer.decode(this.#before);
      const both = this.tokenizer.decode([...this.#before, ...this.#pending]);
      if (both.startsWith(before)) return both.slice(before.length);
    }
    return this.tokenizer.decode(this.#pending);
  }
}

/**
 * `text` with its control characters made visible: C0 controls other than
 * newline and tab (and a carriage return not before a newline) as their Unicode
 * control pictures (␀, ␇, ␈, ␍, ␛, …), DEL as ␡ and C1 controls as U+FFFD. A
 * byte-level model can emit any byte; on a terminal these would ring the bell,
 * move the cursor or start an escape sequence.
 */
export function showControls(text: string): string {
  // deno-lint-ignore no-control-regex -- matching control characters is the point
  return text.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)/g, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x20 ? String.fromCharCode(0x2400 + n) : n === 0x7f ? "\u2421" : "\uFFFD";
  });
}

/**
 * What to write to stdout for generated `text`: {@link showControls} where
 * stdout is a terminal; a pipe or a file gets the text exactly as decoded.
 */
export function forStdout(text: string): string {
  return Deno.stdout.isTerminal() ? showControls(text) : text;
}
