/**
 * What the user sees during training: Megatron-style log lines, a progress bar
 * on a terminal (plain lines otherwise), and a JSON-lines log file.
 * @module
 */

/** The numbers of one log line. */
export interface LogFields {
  /** Current iteration (1-based). */
  iteration: number;
  /** Total iterations. */
  total: number;
  /** Tokens consumed so far. */
  consumedTokens: number;
  /** Mean wall time per iteration over the logging window. */
  msPerIter: number;
  /** Training throughput. */
  tokensPerS: number;
  /** Achieved GFLOP/s (matmul FLOPs of the model). */
  gflops: number;
  /** Learning rate. */
  lr: number;
  /** Mean training loss over the window. */
  loss: number;
  /** Mean gradient norm over the window. */
  gradNorm: number;
}

/** One line in Megatron's style. */
export function formatLogLine(f: LogFields): string {
  const w = String(f.total).length;
  return [
    ` iteration ${String(f.iteration).padStart(w)}/${f.total}`,
    ` consumed tokens: ${f.consumedTokens}`,
    ` elapsed time per iteration (ms): ${f.msPerIter.toFixed(1)}`,
    ` tokens/s: ${f.tokensPerS.toFixed(0)}`,
    ` GFLOP/s: ${f.gflops.toFixed(2)}`,
    ` learning rate: ${f.lr.toExponential(3).toUpperCase()}`,
    ` lm loss: ${f.loss.toExponential(6).toUpperCase()}`,
    ` grad norm: ${f.gradNorm.toFixed(3)} |`,
  ].join(" |");
}

/** A one-line progress bar on a terminal; silent when stdout is not a TTY. */
export class Progress {
  readonly #tty: boolean;
  readonly #enc = new TextEncoder();
  readonly #start = performance.now();
  #shown = false;

  /** A bar for `total` steps; `tty` defaults to whether stdout is a terminal. */
  constructor(readonly total: number, tty?: boolean) {
    this.#tty = tty ?? Deno.stdout.isTerminal();
  }

  #clear(): void {
    if (this.#tty && this.#shown) Deno.stdout.writeSync(this.#enc.encode("\r\x1b[2K"));
    this.#shown = false;
  }

  /** Prints a log line above the bar. */
  line(text: string): void {
    this.#clear();
    console.log(text);
  }

  /** Redraws the bar at step `i`. */
  update(i: number): void {
    if (!this.#tty) return;
    const width = 30;
    const done = Math.round((width * i) / this.total);
    const elapsed = (performance.now() - this.#start) / 1000;
    const eta = i > 0 ? (elapsed / i) * (this.total - i) : 0;
    const bar = `[${"#".repeat(done)}${"-".repeat(width - done)}] ${i}/${this.total}  ` +
      `${elapsed.toFixed(0)}s elapsed, ~${eta.toFixed(0)}s left`;
    Deno.stdout.writeSync(this.#enc.encode(`\r\x1b[2K${bar}`));
    this.#shown = true;
  }

  /** Removes the bar. */
  done(): void {
    this.#clear();
  }
}

/**
 * A JSON-lines log: one object per line, flushed as written. A fresh run
 * starts the file anew; a resumed run appends to it, so that the file holds the
 * whole history once: records past the resumed iteration (written by the
 * interrupted run after its last checkpoint, and about to be replayed) and a
 * torn last line are dropped first.
 */
export class JsonLog {
  readonly #enc = new TextEncoder();

  private constructor(readonly file: Deno.FsFile) {}

  /**
   * Opens `path`: truncated when `resumedFrom` is undefined, else kept up to
   * iteration `resumedFrom` (records without an iteration are kept) and
   * appended to.
   */
  static async open(path: string, resumedFrom?: number): Promise<JsonLog> {
    if (resumedFrom === undefined) {
      return new JsonLog(await Deno.open(path, { write: true, create: true, truncate: true }));
    }
    let text = "";
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const kept = keepThrough(text, resumedFrom);
    if (kept !== text) {
      // Rewrite through a temporary file, so a kill now leaves the old or the new log.
      const tmp = `${path}.tmp-${Deno.pid}`;
      await Deno.writeTextFile(tmp, kept);
      await Deno.rename(tmp, path);
    }
    return new JsonLog(await Deno.open(path, { append: true, create: true }));
  }

  /** Appends one record. */
  write(record: Record<string, unknown>): void {
    const bytes = this.#enc.encode(JSON.stringify(record) + "\n");
    let off = 0;
    while (off < bytes.length) off += this.file.writeSync(bytes.subarray(off));
  }

  /** Closes the file. */
  close(): Promise<void> {
    this.file.close();
    return Promise.resolve();
  }
}

/**
 * The lines of a JSON-lines log whose `iteration` is at most `last` (and those
 * without one), each ending in a newline; lines that are not JSON objects (a
 * record torn by a kill) are dropped.
 */
export function keepThrough(text: string, last: number): string {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch {
      continue;
    }
    if (r === null || typeof r !== "object") continue;
    const it = (r as { iteration?: unknown }).iteration;
    if (typeof it === "number" && it > last) continue;
    out.push(line + "\n");
  }
  return out.join("");
}
