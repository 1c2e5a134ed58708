/**
 * Child processes of the benchmarks (a training run, the PyTorch peer, a row
 * measured in a process of its own) that go when the benchmark is stopped: a
 * signal that stops the benchmark (Ctrl-C, SIGTERM, SIGHUP) is passed on to the
 * child, waited for, and the benchmark's temporary files are removed before it
 * exits with 128 + the signal's number. Without it, a stopped `bench:layernorm`
 * left its `train` child running, reparented, and its log behind.
 * @module
 */

import { SIGNAL_NUMBERS, STOP_SIGNALS } from "../cli/signals.ts";

/** How long a stopped child gets to exit before it is killed. */
const CHILD_GRACE_MS = 10_000;

/**
 * Runs `command` to its end, as `Deno.Command(…).output()` does, unless this
 * process is stopped first: then the child gets the same signal (and SIGKILL
 * after {@link CHILD_GRACE_MS}), `temporary` files are removed, and this
 * process exits 128 + the signal's number.
 */
export async function outputOrStop(
  command: string | URL,
  options: Deno.CommandOptions,
  temporary: readonly string[] = [],
): Promise<Deno.CommandOutput> {
  const child = new Deno.Command(command, {
    stdout: "piped",
    stderr: "piped",
    ...options,
    stdin: "null",
  }).spawn();
  let stopping = false;
  const listeners = STOP_SIGNALS.map((signal) => {
    const stop = async () => {
      stopping = true;
      try {
        child.kill(signal);
      } catch { /* already gone */ }
      const kill = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, CHILD_GRACE_MS);
      await child.status;
      clearTimeout(kill);
      for (const path of temporary) await Deno.remove(path).catch(() => {});
      Deno.exit(128 + SIGNAL_NUMBERS[signal]);
    };
    Deno.addSignalListener(signal, stop);
    return [signal, stop] as const;
  });
  let out: Deno.CommandOutput;
  try {
    out = await child.output();
  } finally {
    if (!stopping) {
      for (const [signal, stop] of listeners) Deno.removeSignalListener(signal, stop);
    }
  }
  // Stopped: the child's end is the stop's, and this process exits from the listener once the
  // files are gone; the benchmark does not go on with the output meanwhile.
  if (stopping) await new Promise<never>(() => {});
  return out;
}
