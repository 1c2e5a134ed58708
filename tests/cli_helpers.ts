/**
 * Runs the project's CLIs as subprocesses, as a user would.
 * @module
 */

/** Exit code and output of a CLI run. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

const root = new URL("../", import.meta.url);

/**
 * What a crash of the runtime itself looks like (glibc heap checks, SIGSEGV or
 * SIGABRT): a known hazard of processes whose Workers hold GPU devices
 * (../shared/PLATFORM.md, "Hazards seen"), seen about once in 40 multi-rank runs
 * under load, never as a wrong result.
 */
const RUNTIME_CRASH =
  /corrupted|double free|free\(\): invalid|malloc\(\):|munmap_chunk|Segmentation fault/;

/** Whether `r` is a crash of the runtime rather than an error the CLI reported. */
export function isRuntimeCrash(r: CliResult): boolean {
  return r.code === 134 || r.code === 139 || RUNTIME_CRASH.test(r.stderr);
}

/**
 * Runs `deno run -A <script> ...args` from the repository root. With
 * `retryOnCrash` (only for runs that are safe to repeat), a run the runtime
 * crashed is retried once, with a warning.
 */
export async function runCli(
  script: string,
  args: string[],
  cwd?: string,
  opts: { retryOnCrash?: boolean } = {},
): Promise<CliResult> {
  const r = await runOnce(script, args, cwd);
  if (!opts.retryOnCrash || !isRuntimeCrash(r)) return r;
  console.warn(
    `warning: ${script} crashed in the runtime (exit ${r.code}: ${
      r.stderr.trim().split("\n").pop()
    }); retrying once`,
  );
  return await runOnce(script, args, cwd);
}

async function runOnce(script: string, args: string[], cwd?: string): Promise<CliResult> {
  const xdg = await Deno.makeTempDir({ prefix: "xdg-" });
  await Deno.chmod(xdg, 0o700);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(script, root).pathname, ...args],
    cwd: cwd ?? root.pathname,
    env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(xdg, { recursive: true });
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
