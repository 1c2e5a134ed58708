/**
 * One key press, several deliveries. A terminal's Ctrl-C signals its whole
 * foreground process group, so a program run through `deno task` (or
 * `npm run`) gets SIGINT from the terminal and again from the task runner,
 * which passes it on to its child: two deliveries within a few milliseconds.
 * Programs that give a second signal a meaning of its own ("exit at once")
 * must not take such a copy for it.
 * @module
 */

/** A repeat within this many ms of the first signal is a copy of it, not a second signal. */
export const SIGNAL_COPY_MS = 250;

/** Tells a second signal from a copy of the first (see the module notes). */
export class SignalCopies {
  #first: number | null = null;

  /**
   * Notes a signal received at `now` (ms, `performance.now()`'s clock): true
   * when it is a copy of the first, received within {@link SIGNAL_COPY_MS} of it.
   */
  isCopy(now: number = performance.now()): boolean {
    if (this.#first === null) {
      this.#first = now;
      return false;
    }
    return now - this.#first < SIGNAL_COPY_MS;
  }
}
