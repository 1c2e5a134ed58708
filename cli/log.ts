/**
 * What the user sees during training: Megatron-style log lines, a progress bar
 * on a terminal (plain lines otherwise), and a JSON-lines log file.
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };
import { readEnv } from "../core/env.ts";

/** The numbers of one log line. */
export interface LogFields {
  /** Current iteration (1-based). */
  iteration: number;
  /** Total iterations. */
  total: number;
  /** Tokens consumed so far. */
  consumedTokens: number;
  /** Samples (sequences) consumed so far: Megatron's `consumed samples`. */
  consumedSamples?: number;
  /** Mean wall time per iteration over the logging window. */
  msPerIter: number;
  /** Training throughput (printed after Megatron's fields). */
  tokensPerS: number;
  /** Achieved GFLOP/s of the whole job (matmul FLOPs of the model). */
  gflops: number;
  /** Ranks (GPUs) sharing {@link gflops}, for Megatron's per-GPU TFLOP/s (default 1). */
  worldSize?: number;
  /** Learning rate. */
  lr: number;
  /** Sequences per optimizer step. */
  globalBatchSize?: number;
  /**
   * Mean training loss over the window's applied iterations (Megatron's average
   * over advanced iterations); null when every one was skipped: the field is
   * then left out, as Megatron leaves out a loss that averages to 0.
   */
  loss: number | null;
  /** Loss scale of mixed precision (1 in fp32). */
  lossScale?: number;
  /**
   * The gradient norm of the window's last iteration; null when it was skipped
   * (the field is then left out, as Megatron's `training_log` leaves it out when
   * its grad norm is None, which it is for a skipped iteration).
   */
  gradNorm: number | null;
  /** Iterations skipped in the window (mixed precision overflow). */
  skipped?: number;
  /** Skipped iterations whose loss was not finite, in the window (Megatron's nan iterations). */
  nan?: number;
  /** Name of the loss (default `lm loss`). */
  lossName?: string;
  /**
   * The loss's parts by name (BERT's `lm loss` and `sop loss`, as Megatron's
   * `pretrain_bert` reports them), printed in its place; left out with it.
   */
  losses?: Record<string, number>;
  /** Wall-clock time of the line (default now). */
  time?: Date;
}

function pad2(n: number): string {
  return String(n).padStart(2, "0");
}

/** `YYYY-MM-DD HH:MM:SS` in local time, as Python's `datetime.now().strftime`. */
export function timestamp(d: Date = new Date()): string {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** Python's `{:.6E}` (and `{:.pE}`): mantissa with `digits` decimals, a signed two-digit exponent. */
export function pyExp(x: number, digits = 6): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "NAN" : x > 0 ? "INF" : "-INF";
  const [m, e] = x.toExponential(digits).split("e");
  const exp = Number(e);
  return `${m}E${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
}

/** Python's `{:Nd}`: right-aligned in `width`. */
function pyInt(n: number, width: number): string {
  return String(Math.round(n)).padStart(width);
}

/**
 * Megatron's `{:.1f}` for the TFLOP/s field, with two significant digits
 * under 0.1 (a CPU adapter's tens of GFLOP/s would read 0.0): still one
 * number a Megatron log parser reads.
 */
function tflopsField(tflops: number): string {
  return tflops > 0 && tflops < 0.1 ? tflops.toPrecision(2) : tflops.toFixed(1);
}

/**
 * One training line in Megatron's fields and formats (its `training_log`):
 * ` [2024-05-01 12:00:00] iteration        5/     100 | consumed samples:           40 |
 * elapsed time per iteration (ms): 123.4 | throughput per GPU (TFLOP/s/GPU): 0.1 |
 * learning rate: 3.000000E-04 | global batch size:     8 | lm loss: 2.444200E+00 |
 * loss scale: 1.0 | grad norm: 0.512 | number of skipped iterations:   0 |
 * number of nan iterations:   0 |`, then this project's `tokens/s` (on one line).
 */
export function formatLogLine(f: LogFields): string {
  const gb = f.globalBatchSize ?? 0;
  const samples = f.consumedSamples ?? (gb ? f.iteration * gb : 0);
  const tflops = f.gflops / 1000 / (f.worldSize ?? 1);
  return ` [${timestamp(f.time)}]` +
    ` iteration ${pyInt(f.iteration, 8)}/${pyInt(f.total, 8)} |` +
    ` consumed samples: ${pyInt(samples, 12)} |` +
    ` elapsed time per iteration (ms): ${f.msPerIter.toFixed(1)} |` +
    ` throughput per GPU (TFLOP/s/GPU): ${tflopsField(tflops)} |` +
    ` learning rate: ${pyExp(f.lr)} |` +
    ` global batch size: ${pyInt(gb, 5)} |` +
    (f.loss === null
      ? ""
      : f.losses
      ? Object.entries(f.losses).map(([n, v]) => ` ${n}: ${pyExp(v)} |`).join("")
      : ` ${f.lossName ?? "lm loss"}: ${pyExp(f.loss)} |`) +
    ` loss scale: ${(f.lossScale ?? 1).toFixed(1)} |` +
    (f.gradNorm === null ? "" : ` grad norm: ${f.gradNorm.toFixed(3)} |`) +
    ` number of skipped iterations: ${pyInt(f.skipped ?? 0, 3)} |` +
    ` number of nan iterations: ${pyInt(f.nan ?? 0, 3)} |` +
    ` tokens/s: ${f.tokensPerS.toFixed(0)} |`;
}

/**
 * Megatron's validation report (its `evaluate_and_print_results`): the line
 * ` validation loss at iteration N | lm loss value: 2.444200E+00 | lm loss PPL: 1.152170E+01 | `
 * between two dashed lines one longer than it. `where` is what follows
 * "validation loss at" (`iteration N`); the perplexity is exp(min(20, loss)).
 */
export function formatValidationLines(
  where: string | number,
  losses: Record<string, number> | number,
): string[] {
  const named = typeof losses === "number" ? { "lm loss": losses } : losses;
  let line = ` validation loss at ${typeof where === "number" ? `iteration ${where}` : where} | `;
  for (const [name, v] of Object.entries(named)) {
    // A sum of two losses (BERT's mlm+sop) has no perplexity.
    const ppl = name.includes("+") ? "" : ` ${name} PPL: ${pyExp(Math.exp(Math.min(20, v)))} |`;
    line += `${name} value: ${pyExp(v)} |${ppl} `;
  }
  const dashes = "-".repeat(line.length + 1);
  return [dashes, line, dashes];
}

/**
 * The header record that begins each run's part of a `--log-json` file: the
 * flags, the world layout and the start time.
 */
export interface LogHeader {
  /** The run's flags (kebab-case names, as given or defaulted). */
  config: Record<string, unknown>;
  /** World layout. */
  world: { size: number; tp: number; dp: number; nodes: number };
  /** Start time, ISO 8601 (default now). */
  start_time?: string;
  /** The project's version (default: {@link LOG_VERSION}). */
  version?: string;
  /** Iteration the run starts from (1, or one past a loaded checkpoint). */
  first_iteration?: number;
}

/** The project's version (deno.json), written in log headers. */
export const LOG_VERSION: string = denoJson.version;

/** Version of the `--log-json` record format, written in log headers. */
export const LOG_FORMAT = 1;

/** The full header record written by {@link JsonLog.open}. */
export function headerRecord(h: LogHeader): Record<string, unknown> {
  return {
    type: "header",
    version: h.version ?? LOG_VERSION,
    log_format: LOG_FORMAT,
    start_time: h.start_time ?? new Date().toISOString(),
    world: h.world,
    ...(h.first_iteration !== undefined ? { first_iteration: h.first_iteration } : {}),
    config: h.config,
  };
}

/** `n` and `noun`, plural unless `n` is 1: `counted(1, "layer")` is "1 layer". */
export function counted(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/**
 * Whether Open MPI's `mpirun` started this process: it gives its ranks a
 * pseudo-terminal whatever its own output is (a log file), so that is no
 * terminal of the user's; and it stops reading it once it passes on a signal,
 * where a bar redrawn every step soon fills it and blocks the rank.
 */
function startedByMpirun(): boolean {
  return readEnv("OMPI_COMM_WORLD_RANK") !== undefined;
}

/**
 * A one-line progress bar on a terminal; silent when its stream is not a TTY
 * (nor under `mpirun`, {@link startedByMpirun}).
 * Training's bar is on stdout; the other commands' ({@link stderrProgress}) on
 * stderr, so their stdout stays plain lines for scripts.
 */
export class Progress {
  readonly #tty: boolean;
  readonly #enc = new TextEncoder();
  readonly #start = performance.now();
  readonly #out: { writeSync(p: Uint8Array): number };
  readonly #label: string;
  #shown = false;

  /**
   * A bar for `total` steps; `tty` defaults to whether the stream (stdout, or
   * stderr with `opts.stderr`) is a terminal. `opts.label` is printed before it.
   */
  constructor(
    readonly total: number,
    tty?: boolean,
    opts: { stderr?: boolean; label?: string } = {},
  ) {
    const stream = opts.stderr ? Deno.stderr : Deno.stdout;
    this.#out = stream;
    this.#label = opts.label ? `${opts.label} ` : "";
    this.#tty = tty ?? (stream.isTerminal() && !startedByMpirun());
  }

  #clear(): void {
    if (this.#tty && this.#shown) this.#out.writeSync(this.#enc.encode("\r\x1b[2K"));
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
    const bar =
      `${this.#label}[${"#".repeat(done)}${"-".repeat(width - done)}] ${i}/${this.total}  ` +
      `${elapsed.toFixed(0)}s elapsed, ~${eta.toFixed(0)}s left`;
    this.#out.writeSync(this.#enc.encode(`\r\x1b[2K${bar}`));
    this.#shown = true;
  }

  /** Removes the bar. */
  done(): void {
    this.#clear();
  }

  /** {@link Progress.done}, for `using`: an error is printed on a line of its own, not after the bar. */
  [Symbol.dispose](): void {
    this.done();
  }
}

/**
 * A progress callback `(done, total)` drawing a bar on stderr when stderr is a
 * terminal (and `quiet` is false, e.g. not under `--json`); a no-op otherwise.
 * The bar is removed when `done` reaches `total`.
 */
export function stderrProgress(
  label: string,
  quiet = false,
): (done: number, total: number) => void {
  if (quiet || !Deno.stderr.isTerminal()) return () => {};
  let bar: Progress | null = null;
  let last = 0;
  return (done, total) => {
    if (!bar || bar.total !== total) {
      bar = new Progress(Math.max(1, total), true, { stderr: true, label });
    }
    const now = performance.now();
    if (done >= total) {
      bar.done();
      return;
    }
    if (now - last < 100 && done > 0) return;
    last = now;
    bar.update(done);
  };
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

  private constructor(readonly file: Deno.FsFile, readonly path: string) {}

  /**
   * Opens `path`: truncated when `resumedFrom` is undefined, else kept up to
   * iteration `resumedFrom` (records without an iteration, such as earlier
   * runs' headers, are kept) and appended to. With `header`, the run's
   * {@link headerRecord} is written first.
   */
  static async open(path: string, resumedFrom?: number, header?: LogHeader): Promise<JsonLog> {
    const log = await JsonLog.#open(path, resumedFrom);
    if (header) log.write(headerRecord(header));
    return log;
  }

  static async #open(path: string, resumedFrom?: number): Promise<JsonLog> {
    if (resumedFrom === undefined) {
      return new JsonLog(
        await Deno.open(path, { write: true, create: true, truncate: true }),
        path,
      );
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
    return new JsonLog(await Deno.open(path, { append: true, create: true }), path);
  }

  /** Appends one record; a failed write (a full disk) names the file in its error. */
  write(record: Record<string, unknown>): void {
    const bytes = this.#enc.encode(JSON.stringify(record) + "\n");
    let off = 0;
    try {
      while (off < bytes.length) off += this.file.writeSync(bytes.subarray(off));
    } catch (e) {
      if (e instanceof Error) e.message = `--log-json ${this.path}: ${e.message}`;
      throw e;
    }
  }

  /** Closes the file. */
  close(): Promise<void> {
    this.file.close();
    return Promise.resolve();
  }

  /** {@link JsonLog.close}, for `await using`: a run that throws closes its log too. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * What `path` holds, as a `--log-json` target: `"none"` (missing, empty, or
 * no regular file: a named pipe),
 * `"log"` (its first line is a header {@link JsonLog.open} wrote), or
 * `"other"` (anything else: the run would truncate or rewrite a file that is
 * not a log, such as its own training text). Reads at most the first 64 KiB.
 */
export async function logFileKind(path: string): Promise<"none" | "log" | "other"> {
  // A named pipe (or a device) is written to, never read from.
  const info = await Deno.stat(path).catch(() => null);
  if (!info?.isFile) return "none";
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "none";
    throw e;
  }
  const head = new Uint8Array(64 * 1024);
  let n = 0;
  try {
    while (n < head.length) {
      const got = await file.read(head.subarray(n));
      if (got === null) break;
      n += got;
    }
  } finally {
    file.close();
  }
  const text = new TextDecoder().decode(head.subarray(0, n));
  const first = text.split("\n").find((l) => l.trim() !== "");
  if (first === undefined) return "none";
  try {
    const r = JSON.parse(first);
    return r?.type === "header" && typeof r.log_format === "number" ? "log" : "other";
  } catch {
    return "other";
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
