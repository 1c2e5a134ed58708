/**
 * How every command of the command line ends on an error: one `error: …` line
 * on stderr, and an exit code that says whose fault it was.
 *
 * | exit | meaning                                                                 |
 * | ---- | ----------------------------------------------------------------------- |
 * | 0    | done (also: stopped by a first SIGTERM/SIGINT/SIGHUP with `--save`)     |
 * | 1    | bad data, checkpoint or model files; an adapter limit; a runtime failure |
 * | 2    | bad command line (flags, values, paths the flags name)                  |
 * | 128+n | killed by signal n (a second signal, or a first one without `--save`) |
 *
 * User errors are typed ({@link UsageError}, {@link DataError},
 * {@link CheckpointError}, {@link RunError}, the OS's file errors …) and print
 * their message alone; anything else is a bug and keeps its stack trace. With
 * `--debug` every error prints its stack.
 * @module
 */

import { CollectiveError } from "../collectives/frame.ts";
import { markReported } from "../collectives/launch.ts";
import { oneLine } from "../core/files.ts";
import { NoAdapterError, UnknownBackendError } from "../core/gpu.ts";
import { DataError } from "../data/errors.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";
import {
  defaultFfnHiddenSize,
  type DropoutConfig,
  type ShapeConfig,
  validateTransformerConfig,
} from "../models/shape.ts";
import { type FlagSpec, FlagsRefusedError, UsageError } from "./flags.ts";
import { inConfigWords } from "../models/hf/config_fields.ts";

export { UsageError };

/**
 * A failure of the run itself that is not a bug: a loss that became NaN, a
 * tensor past the adapter's limits, a file that cannot be written. Exit code 1.
 */
export class RunError extends Error {
  /** A run error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "RunError";
  }
}

/** The `--debug` flag every command takes. */
export const DEBUG_FLAG: Record<string, FlagSpec> = {
  "debug": { type: "boolean", help: "print the stack trace of any error", group: "Errors" },
};

/** Whether `--debug` is among `args`. */
export function wantsDebug(args: readonly string[]): boolean {
  return args.includes("--debug");
}

const OS_ERRORS = [
  Deno.errors.NotFound,
  Deno.errors.PermissionDenied,
  Deno.errors.AlreadyExists,
  Deno.errors.IsADirectory,
  Deno.errors.NotADirectory,
  Deno.errors.InvalidData,
  Deno.errors.UnexpectedEof,
  Deno.errors.NotCapable,
  Deno.errors.FilesystemLoop,
] as const;

/**
 * OS errors Deno reports as a plain Error, by errno: the disk or the quota is
 * full (ENOSPC 28, EDQUOT 122), the file system is read-only (EROFS 30).
 */
const FULL_OR_READ_ONLY = /\(os error (28|30|122)\)/;

/**
 * The exit code and message of a user error, or null for a bug. Usage errors
 * are 2; data, checkpoint, adapter, collective, run and OS file errors are 1.
 */
export function classify(e: unknown): { code: 1 | 2; message: string } | null {
  if (!(e instanceof Error)) return null;
  // Several refused flags at once: a header line, then a line per flag.
  if (e instanceof FlagsRefusedError) return { code: 2, message: e.message.trimEnd() };
  if (e instanceof UsageError || e instanceof UnknownBackendError) {
    // A backend name comes from a flag or WEBGPU_BACKEND: the command line's fault.
    return { code: 2, message: oneLine(e.message) };
  }
  if (e instanceof NoAdapterError) {
    // Its advice spans lines; the first says what happened, the rest how to fix it.
    return { code: 1, message: e.message.trimEnd() };
  }
  if (
    e instanceof DataError || e instanceof CheckpointError || e instanceof RunError ||
    e instanceof CollectiveError || OS_ERRORS.some((c) => e instanceof c) ||
    FULL_OR_READ_ONLY.test(e.message)
  ) {
    return { code: 1, message: oneLine(e.message) };
  }
  return null;
}

/**
 * Prints `e` the way the command line reports errors and returns the exit code:
 * one `error: …` line for a user error (its stack too with `debug`), the full
 * stack for a bug (exit 1); `header` (a rank's `rank N:` line) goes in the same
 * write as the error line.
 */
export function reportError(e: unknown, debug: boolean, header = ""): number {
  const c = classify(e);
  if (c) {
    console.error(`${header}error: ${c.message}`);
    if (debug && e instanceof Error && e.stack) console.error(e.stack);
    return c.code;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  console.error(
    `${header}error: ${oneLine(err.message)} (a bug: please report it with this trace)`,
  );
  console.error(err.stack ?? String(e));
  return 1;
}

/**
 * Runs the body of a command's `main(args)` and returns its exit code; an error
 * it throws is printed by {@link reportError} (its stack too under `--debug` in
 * `args`). Every `cli/*.ts` entry point runs through here.
 */
export async function handled(
  args: readonly string[],
  body: () => Promise<number>,
): Promise<number> {
  const lossy = nonUtf8Warning(args);
  if (lossy) console.error(lossy);
  try {
    return await body();
  } catch (e) {
    // The reader of our output went away (`deno task generate … | head`): stop
    // quietly with the status a process killed by SIGPIPE has.
    if (e instanceof Deno.errors.BrokenPipe) return SIGPIPE_STATUS;
    if (e instanceof LaunchedRankError) {
      if (e.error instanceof Deno.errors.BrokenPipe) return SIGPIPE_STATUS;
      if (!reportRankError(e.error, e.rank, args, e.localRank)) {
        // Leaves the saying to its node's first rank, which a launcher that stops the job at
        // the first failed rank (Open MPI's mpirun) could otherwise kill before it printed.
        await new Promise((r) => setTimeout(r, SILENT_RANK_EXIT_DELAY_MS));
      }
      return classify(e.error)?.code ?? 1;
    }
    return reportError(e, wantsDebug(args));
  }
}

/**
 * The warning for arguments that reached the process with bytes that are not
 * UTF-8 (a Latin-1 file name, a raw byte in a prompt), or null. Deno hands a
 * program its arguments as text, each such byte already replaced by U+FFFD, so
 * a file so named cannot be found and a prompt is not the bytes typed.
 */
export function nonUtf8Warning(args: readonly string[]): string | null {
  const at = args.map((a, i) => (a.includes("\uFFFD") ? i + 1 : 0)).filter((i) => i > 0);
  if (at.length === 0) return null;
  // A prompt is text to the model, not a name: say what it becomes, not that it will not be found.
  const isPrompt = (n: number) => args[n - 2] === "--prompt" || args[n - 1].startsWith("--prompt=");
  const consequence = at.every(isPrompt)
    ? "so the prompt holds U+FFFD in their place (a byte-level model reads U+FFFD's three bytes " +
      "for each); write the prompt in UTF-8"
    : "so a file so named will not be found (rename it, or link it under a UTF-8 name)" +
      (at.some(isPrompt) ? ", and the prompt holds U+FFFD in their place" : "");
  return `warning: argument${at.length === 1 ? "" : "s"} ${
    at.join(", ")
  } held bytes that are not ` +
    `UTF-8; Deno passes arguments as text and replaced them with U+FFFD, ${consequence}`;
}

/**
 * An error of a rank process that an outside launcher (torchrun, SLURM,
 * OpenMPI) started, caught in the command itself (before or outside its
 * collectives): {@link handled} reports it as {@link reportRankError} does, so
 * a mistake every rank makes alike (the command line, the data) is printed
 * once per node, by its first rank, and not by each of its ranks.
 */
export class LaunchedRankError extends Error {
  /**
   * `error` as this process's rank met it; `rank` its global rank, `localRank`
   * its rank on this host.
   */
  constructor(readonly error: unknown, readonly rank: number, readonly localRank: number) {
    super(error instanceof Error ? error.message : String(error));
  }
}

/** Exit status after a write to a closed pipe: 128 + SIGPIPE (13), as the shell reports it. */
export const SIGPIPE_STATUS = 141;

/**
 * In a rank of a multi-rank run (launched with `log: false`): the first rank of
 * each host prints its error as {@link reportError} does, so every node of a
 * multi-node run says why it stopped. The other ranks print, prefixed with
 * their rank, an error only they can have had (no adapter, a lost device, a
 * bug), which the first rank sees only as a peer gone; errors every rank has
 * alike (the user's input, the data, a checkpoint) or that reach them from a
 * failed peer (collectives) they print only under `--debug`. A closed stdout
 * (`… | head`) is not an error: nothing is printed. Returns whether it printed.
 */
export function reportRankError(
  e: unknown,
  rank: number,
  args: readonly string[],
  localRank = rank,
): boolean {
  if (e instanceof Deno.errors.BrokenPipe) return false;
  const debug = wantsDebug(args);
  if (localRank === 0) reportError(e, debug);
  // The rank's line and its error in one write: another rank process's output cannot come between.
  else if (debug || ownToRank(e)) reportError(e, debug, `rank ${rank}:\n`);
  else return false;
  markReported(e); // under `deno task launch`, whose log would print it again
  return true;
}

/**
 * How long a rank process an outside launcher started waits before it exits
 * on an error it leaves its node's first rank to print (see {@link handled}):
 * mpirun stops the whole job when one rank exits with an error, and a rank
 * that exited at once had it killed the first rank before its line was out (2
 * of 14 runs of `mpirun -np 3 … --tp 2`).
 */
export const SILENT_RANK_EXIT_DELAY_MS = 2000;

/**
 * Whether `e` is a rank's own failure (no adapter; anything unclassified: a
 * lost device, a bug) rather than one every rank shares or a peer's.
 */
function ownToRank(e: unknown): boolean {
  return e instanceof NoAdapterError || !classify(e);
}

/**
 * `config`, after checking that it builds at `tp` tensor-parallel ranks,
 * naming `where` (the checkpoint or Hugging Face folder the config came from)
 * rather than giving a model constructor's stack trace: a {@link UsageError}
 * when its heads or MLP do not split over the `--tp` asked (exit 2, as
 * training's), a {@link CheckpointError} when the shape is wrong in itself,
 * its settings named as `fields` maps them (a `config.json`'s names).
 */
export function checkedConfig<C extends ShapeConfig & DropoutConfig>(
  config: C,
  tp: number,
  where: string,
  fields?: Readonly<Record<string, string>>,
): C {
  const misfit = splitMisfit(config, tp);
  if (misfit) throw new UsageError(`${where}: ${misfit}`);
  try {
    validateTransformerConfig(config, tp);
  } catch (e) {
    const message = (e as Error).message;
    throw new CheckpointError(`${where}: ${fields ? inConfigWords(message, fields) : message}`);
  }
  return config;
}

/**
 * Why a model whose shape a file gives (a checkpoint, a config.json) does not
 * split over `tp` ranks, in terms of what the file holds rather than of flags
 * the user did not pass, with the sizes that would split it; undefined when it
 * splits (or when its shape is wrong in itself, which the shape check names).
 */
export function splitMisfit(c: ShapeConfig, tp: number): string | undefined {
  const ffn = c.ffnHiddenSize ?? defaultFfnHiddenSize(c.hiddenSize);
  if (![c.numHeads, ffn, tp].every((n) => Number.isInteger(n) && n > 0)) return undefined;
  const why = c.numHeads % tp !== 0
    ? `its ${c.numHeads} attention heads do not`
    : ffn % tp !== 0
    ? `its MLP size ${ffn} does not`
    : undefined;
  if (!why) return undefined;
  const fits: number[] = [];
  for (let t = 1; t <= c.numHeads && fits.length < 8; t++) {
    if (c.numHeads % t === 0 && ffn % t === 0) fits.push(t);
  }
  const choices = fits.length > 1
    ? `${fits.slice(0, -1).join(", ")} or ${fits[fits.length - 1]}`
    : `${fits[0]}`;
  return `${why} split over --tensor-model-parallel-size ${tp}: use ${choices}`;
}
