/**
 * Stopping a training run by signal without losing work, as Megatron's
 * `--exit-signal-handler` does. With `--save`, the first SIGTERM, SIGINT or
 * SIGHUP lets every rank finish the step it is in; the ranks agree to stop at
 * the same iteration (a flag all-reduced after each step), save a checkpoint
 * there and exit 0. A second signal exits at once (128 + the signal's number);
 * one within `SIGNAL_COPY_MS` (collectives/signal_copies.ts) of the first is
 * the same Ctrl-C, passed on by `deno task`, and is ignored.
 * Without `--save` there is nothing to keep, and the first signal exits at once;
 * nor is there before the training loop's first step (at the rendezvous, while
 * the data or a checkpoint loads), where it exits at once too.
 *
 * Signals reach the main thread of a process (a Worker's own listeners do not
 * keep the process alive), so the main thread owns them, and trains nothing
 * itself (a single-rank run trains in a Worker too): idle, it answers a signal
 * at once, where a training thread's event loop polled it every few steps. It
 * tells its Workers through a `BroadcastChannel` ({@link STOP_CHANNEL}) and a
 * word of shared memory ({@link SignalHandlerOptions.stopWord}), read at the end
 * of the step a Worker is in. Under `--launcher procs` the launcher passes
 * signals on to each rank process, whose main thread does the same.
 * @module
 */

import { exitAtOnce } from "../collectives/exit.ts";
import { SignalCopies } from "../collectives/signal_copies.ts";

/** The signals that stop a run. */
export const STOP_SIGNALS: readonly Deno.Signal[] = ["SIGTERM", "SIGINT", "SIGHUP"];

/** POSIX numbers of {@link STOP_SIGNALS} (for the all-reduced flag and exit codes). */
export const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** The signal of a POSIX number (one of {@link STOP_SIGNALS}), or null. */
export function signalOfNumber(n: number): Deno.Signal | null {
  return STOP_SIGNALS.find((s) => SIGNAL_NUMBERS[s] === n) ?? null;
}

/** The channel a process's main thread uses to tell its Workers to stop. */
export const STOP_CHANNEL = "webgpu-megatron:stop";

type ChannelMsg =
  | { type: "stop"; signal: Deno.Signal }
  | { type: "hello" }
  | { type: "started" }
  | { type: "finished" };

/** What a training loop reads to learn that it should stop. */
export interface StopRequest {
  /** The stop signal received, or null. */
  readonly signal: Deno.Signal | null;
  /**
   * The loop's first step begins: a signal from now on stops the run after a
   * step, saved (before, nothing has trained since the run began: it exits at once).
   */
  started(): void;
  /** The loop is over (its last checkpoint written): any further signal exits at once. */
  finished(): void;
}

/** What the main thread's handler needs to know. */
export interface SignalHandlerOptions {
  /** Whether a checkpoint can be written (`--save`): else the first signal exits at once. */
  canSave: boolean;
  /** Print what happens (this process hosts rank 0, or is its node's first). */
  print: boolean;
  /** Tell this process's Workers through {@link STOP_CHANNEL}. */
  workers: boolean;
  /**
   * Shared memory the Workers read (`WorkerContext.stopWord`): set to the
   * signal's number, it reaches a Worker busy in a long step at its next read,
   * where a channel message waits for the Worker's event loop (three steps of
   * a GPT-2 small, 14 s).
   */
  stopWord?: Int32Array;
  /** Exits the process (tests pass their own). */
  exit?: (code: number) => void;
}

/**
 * The main thread's handler of {@link STOP_SIGNALS} (see the module notes).
 * Install with {@link SignalHandler.install}; it is also the
 * {@link StopRequest} of a rank trained on the thread that installed it (a
 * library program's own).
 */
export class SignalHandler implements StopRequest {
  #signal: Deno.Signal | null = null;
  #started = false;
  #finished = false;
  readonly #copies = new SignalCopies();
  #channel: BroadcastChannel | null = null;
  readonly #listeners: [Deno.Signal, () => void][] = [];
  readonly #exit: (code: number) => void;

  /** A handler; nothing is listened to before {@link install}. */
  constructor(readonly opts: SignalHandlerOptions) {
    this.#exit = opts.exit ?? exitAtOnce;
  }

  /** The first signal received, or null. */
  get signal(): Deno.Signal | null {
    return this.#signal;
  }

  /** Starts listening (and, for Workers, opens the channel). */
  install(): this {
    if (this.opts.workers) {
      this.#channel = new BroadcastChannel(STOP_CHANNEL);
      this.#channel.onmessage = (e: MessageEvent<ChannelMsg>) => {
        // A Worker that opened its channel after the signal asks for the state.
        if (e.data.type === "hello" && this.#signal) {
          this.#channel!.postMessage({ type: "stop", signal: this.#signal });
        }
        if (e.data.type === "started") this.#started = true;
        if (e.data.type === "finished") this.#finished = true;
      };
    }
    for (const sig of STOP_SIGNALS) {
      const fn = () => this.receive(sig);
      Deno.addSignalListener(sig, fn);
      this.#listeners.push([sig, fn]);
    }
    return this;
  }

  /** Stops listening. */
  dispose(): void {
    for (const [sig, fn] of this.#listeners.splice(0)) Deno.removeSignalListener(sig, fn);
    this.#channel?.close();
    this.#channel = null;
  }

  /** The training loop's first step begins: a first signal now stops after a step, saved. */
  started(): void {
    this.#started = true;
  }

  /** The training loop is over: a signal now exits at once. */
  finished(): void {
    this.#finished = true;
  }

  /** Handles `sig`, received at `now` (called by the listeners; public for tests). */
  receive(sig: Deno.Signal, now: number = performance.now()): void {
    const code = 128 + SIGNAL_NUMBERS[sig];
    if (this.#copies.isCopy(now)) return;
    const say = (line: string) => this.opts.print && console.error(line);
    if (this.#signal) {
      say(`${sig} again: exiting at once (exit ${code}), without a checkpoint of this step`);
      return this.#exit(code);
    }
    if (!this.opts.canSave || this.#finished || !this.#started) {
      // After training the final sample may be streaming: start on a line of our own.
      const over = this.#finished ? "\n" : "";
      say(
        over + `${sig}: exiting (exit ${code}); ` + (
          !this.opts.canSave
            ? `${this.#finished ? "training was over; " : ""}no --save, so nothing is saved`
            : this.#finished
            ? "training was over and its checkpoint written"
            : "training had not started, so there is nothing new to save"
        ),
      );
      return this.#exit(code);
    }
    this.#signal = sig;
    if (this.opts.stopWord) Atomics.store(this.opts.stopWord, 0, SIGNAL_NUMBERS[sig]);
    say(
      `${sig}: finishing this step, then saving a checkpoint and exiting ` +
        `(send it again to exit at once)`,
    );
    this.#channel?.postMessage({ type: "stop", signal: sig });
  }
}

/**
 * The {@link StopRequest} of a Worker: the main thread's {@link SignalHandler}
 * tells it through {@link STOP_CHANNEL}. Close it when done.
 */
export class WorkerStopRequest implements StopRequest {
  #signal: Deno.Signal | null = null;
  readonly #channel = new BroadcastChannel(STOP_CHANNEL);

  /**
   * Opens the channel and asks the main thread for a signal it may already
   * have; `stopWord` is the main thread's shared word, where it gave one
   * ({@link SignalHandlerOptions.stopWord}).
   */
  constructor(readonly stopWord?: Int32Array) {
    this.#channel.onmessage = (e: MessageEvent<ChannelMsg>) => {
      if (e.data.type === "stop") this.#signal ??= e.data.signal;
    };
    this.#channel.postMessage({ type: "hello" });
  }

  /** The stop signal received, or null. */
  get signal(): Deno.Signal | null {
    if (this.#signal === null && this.stopWord) {
      this.#signal = signalOfNumber(Atomics.load(this.stopWord, 0));
    }
    return this.#signal;
  }

  /** Tells the main thread that the loop's first step begins. */
  started(): void {
    this.#channel.postMessage({ type: "started" });
  }

  /** Tells the main thread that the loop is over. */
  finished(): void {
    this.#channel.postMessage({ type: "finished" });
  }

  /** Closes the channel. */
  close(): void {
    this.#channel.close();
  }
}
