/**
 * Streaming detokenization that never prints half a character.
 * @module
 */

import type { Tokenizer } from "../data/tokenizer.ts";

/**
 * Turns a growing list of token ids into text pieces that never split a
 * character: ids whose decoding ends in an incomplete UTF-8 sequence wait for
 * the next ones (up to a few), the rest is flushed.
 */
export class TextStream {
  #pending: number[] = [];

  /** A stream decoding with `tokenizer`. */
  constructor(readonly tokenizer: Pick<Tokenizer, "decode">, readonly maxPending = 8) {}

  /** Adds one id; returns the text that is now complete ("" if it waits). */
  push(id: number): string {
    this.#pending.push(id);
    const text = this.tokenizer.decode(this.#pending);
    if (text.endsWith("\uFFFD") && this.#pending.length < this.maxPending) return "";
    this.#pending = [];
    return text;
  }

  /** The text of ids still waiting (possibly with replacement characters). */
  flush(): string {
    const text = this.#pending.length ? this.tokenizer.decode(this.#pending) : "";
    this.#pending = [];
    return text;
  }
}
