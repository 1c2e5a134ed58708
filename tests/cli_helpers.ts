import { freeLocalPort } from "../collectives/tcp.ts";
import { type FlagSpec, parseFlags, UsageError } from "../cli/flags.ts";
import { LLVMPIPE_WIDTH_ENV } from "../core/simd.ts";
/**
 * Runs the project's CLIs as subprocesses, as a user would.
 * @module
 */

/** The model of the CLI tests: 1 layer, hidden 32, 2 heads, sequence 16, micro-batch 2. */
export const TINY_MODEL_FLAGS: readonly string[] = [
  "--num-layers",
  "1",
  "--hidden-size",
  "32",
  "--num-attention-heads",
  "2",
  "--seq-length",
  "16",
  "--micro-batch-size",
  "2",
];

/**
 * {@link TINY_MODEL_FLAGS} plus a quick run: one validation batch, no sample,
 * a log line every iteration.
 */
export const TINY_RUN_FLAGS: readonly string[] = [
  ...TINY_MODEL_FLAGS,
  "--eval-iters",
  "1",
  "--sample-tokens",
  "0",
  "--log-interval",
  "1",
];

/**
 * A fresh temporary folder for a multi-process run: `xdg/` (mode 0700, for the
 * ranks' `XDG_RUNTIME_DIR`) and `data.txt`, 3,520 bytes of byte-level text.
 */
export async function makeRunDir(): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/xdg`, { mode: 0o700 });
  await Deno.writeTextFile(
    `${dir}/data.txt`,
    "It was the best of times, it was the worst. ".repeat(80),
  );
  return dir;
}

/** The message `parseFlags` refuses `args` with against `table`, or null where they parse. */
export function flagRefusal(args: string[], table: Record<string, FlagSpec>): string | null {
  try {
    parseFlags(args, table);
  } catch (e) {
    if (e instanceof UsageError) return e.message;
    throw e;
  }
  return null;
}

/** The iteration records of a `--log-json` text, in order (its header lines skipped). */
export function jsonlRecords<R = Record<string, unknown>>(jsonl: string): R[] {
  return jsonl.trim().split("\n").filter((l) => l).map((l) => JSON.parse(l))
    .filter((r) => r.type !== "header");
}

/** {@link jsonlRecords} of the `--log-json` file `path`. */
export async function logRecords<R = Record<string, unknown>>(path: string): Promise<R[]> {
  return jsonlRecords<R>(await Deno.readTextFile(path));
}

/** The training losses of a `--log-json` file, in order (its header line skipped). */
export function jsonlLosses(jsonl: string): number[] {
  return jsonlRecords<{ loss: number }>(jsonl).map((r) => r.loss);
}

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

/** deno.json's permission sets, by name (`deno task train` runs `deno run -P=train …`). */
const PERMISSION_SETS = new Set(
  Object.keys(JSON.parse(Deno.readTextFileSync(new URL("deno.json", root))).permissions ?? {}),
);

/**
 * How `deno run` is given permissions for `script`: a CLI with a permission set of its own
 * (`cli/fill_mask.ts` → `fill-mask`) runs with it, as its task does (`-q` hides Deno's
 * "experimental" warning about config permissions, as the tasks do), so a CLI that needs more
 * than its set fails here; anything else gets `-A`.
 */
export function permissionArgs(script: string): string[] {
  const m = /^cli\/([a-z_]+)\.ts$/.exec(script);
  const set = m?.[1].replaceAll("_", "-");
  if (set === undefined || !PERMISSION_SETS.has(set)) return ["-A"];
  return ["-q", "--config", new URL("deno.json", root).pathname, `-P=${set}`];
}

/**
 * What a crash of the runtime itself looks like (glibc heap checks, SIGSEGV or
 * SIGABRT). Multi-rank runs used to die so about once in 40 under load, after
 * their work was done: a Worker's Vulkan drivers unloading while the process
 * exited (fixed, core/gpu.ts `requestAdapterPinningDrivers`). No run is retried:
 * a crash fails its test, named as one.
 */
const RUNTIME_CRASH =
  /corrupted|double free|free\(\): invalid|malloc\(\):|munmap_chunk|Segmentation fault/;

/** Whether `r` is a crash of the runtime rather than an error the CLI reported. */
export function isRuntimeCrash(r: CliResult): boolean {
  return r.code === 134 || r.code === 139 || RUNTIME_CRASH.test(r.stderr);
}

/**
 * Runs `deno run <permissions> <script> ...args` from the repository root (the permission set of
 * the CLI's task: {@link permissionArgs}; `-A` with `allowAll`). A run the
 * runtime crashed gets a first stderr line that says so, so the test's failure
 * names it.
 */
export async function runCli(
  script: string,
  args: string[],
  cwd?: string,
  opts: { timeoutMs?: number; allowAll?: boolean } = {},
): Promise<CliResult> {
  const perms = opts.allowAll ? ["-A"] : permissionArgs(script);
  const r = await runOnce(script, perms, args, cwd, opts.timeoutMs);
  if (!isRuntimeCrash(r)) return r;
  return { ...r, stderr: `RUNTIME CRASH of ${script} (exit ${r.code}):\n${r.stderr}` };
}

async function runOnce(
  script: string,
  perms: string[],
  args: string[],
  cwd?: string,
  timeoutMs?: number,
): Promise<CliResult> {
  const xdg = await Deno.makeTempDir({ prefix: "xdg-" });
  await Deno.chmod(xdg, 0o700);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...perms, new URL(script, root).pathname, ...args],
    cwd: cwd ?? root.pathname,
    env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    // A run past its time limit is killed (SIGKILL): exit code 137.
    signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined,
  }).output();
  await Deno.remove(xdg, { recursive: true });
  return cliResult(out);
}

/** A CLI started with {@link startCli}: its output so far, signals, and its end. */
export interface RunningCli {
  /** The child process id. */
  pid: number;
  /** Standard output so far. */
  stdout(): string;
  /** Standard error so far. */
  stderr(): string;
  /**
   * Resolves when `pattern` matches the output (`stdout` or `stderr`); rejects
   * when the process ends first or `timeoutMs` passes.
   */
  waitFor(pattern: RegExp, stream?: "stdout" | "stderr", timeoutMs?: number): Promise<void>;
  /** Sends `sig` to the process. */
  kill(sig: Deno.Signal): void;
  /** Resolves with the result when the process has exited (killed after `timeoutMs`). */
  done(timeoutMs?: number): Promise<CliResult>;
}

/**
 * Starts `deno run <permissions> <script> ...args` (see {@link permissionArgs}) from the
 * repository root, reading its
 * output as it comes (for tests that signal a run in progress).
 */
export function startCli(script: string, args: string[]): RunningCli {
  const path = new URL(script, root).pathname;
  return startCommand(Deno.execPath(), ["run", ...permissionArgs(script), path, ...args]);
}

/**
 * Starts `command ...args` from the repository root as {@link startCli} does
 * (`npm run train -- …`, say), reading its output as it comes.
 */
export function startCommand(command: string, args: string[]): RunningCli {
  const xdg = Deno.makeTempDirSync({ prefix: "xdg-" });
  Deno.chmodSync(xdg, 0o700);
  const child = new Deno.Command(command, {
    args,
    cwd: root.pathname,
    env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const text = { stdout: "", stderr: "" };
  let wake = () => {};
  const pump = async (name: "stdout" | "stderr", s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of s) {
      text[name] += dec.decode(chunk, { stream: true });
      wake();
    }
  };
  const pumps = Promise.all([pump("stdout", child.stdout), pump("stderr", child.stderr)]);
  let exited = false;
  const status = child.status.then(async (s) => {
    await pumps;
    exited = true;
    wake();
    await Deno.remove(xdg, { recursive: true }).catch(() => {});
    return s;
  });
  return {
    pid: child.pid,
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    async waitFor(pattern, stream = "stdout", timeoutMs = 60000) {
      const deadline = Date.now() + timeoutMs;
      while (!pattern.test(text[stream])) {
        if (exited) {
          throw new Error(
            `exited before ${pattern} appeared on ${stream}:\n${text.stdout}\n${text.stderr}`,
          );
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`${pattern} did not appear on ${stream} in ${timeoutMs} ms`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((r) => {
          wake = r;
          timer = setTimeout(r, Math.min(left, 1000));
        });
        clearTimeout(timer);
      }
    },
    kill(sig) {
      child.kill(sig);
    },
    async done(timeoutMs = 60000) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const limit = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
      const s = await Promise.race([status, limit.then(() => null)]);
      clearTimeout(timer);
      if (!s) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
        const k = await status;
        return { code: k.code, stdout: text.stdout, stderr: text.stderr + "\n[killed: timeout]" };
      }
      return { code: s.code, stdout: text.stdout, stderr: text.stderr };
    },
  };
}

/**
 * The two nodes of a 2-node `cli/train.ts` job on loopback (one rank each, a
 * free port, a 60 s dist timeout), run in `dir`: node `i` with `args[i]`. Also
 * how long the two took.
 */
export async function twoLocalNodes(
  dir: string,
  args: [string[], string[]],
  timeoutMs = 90_000,
): Promise<{ results: CliResult[]; ms: number }> {
  const port = String(freeLocalPort());
  const node = (i: number) =>
    runCli(
      "cli/train.ts",
      [
        ...args[i],
        ...["--nnodes", "2", "--node-rank", String(i), "--nproc-per-node", "1"],
        ...["--master-addr", "127.0.0.1", "--master-port", port, "--dist-timeout", "60s"],
      ],
      dir,
      { timeoutMs },
    );
  const t0 = performance.now();
  const results = await Promise.all([node(0), node(1)]);
  return { results, ms: performance.now() - t0 };
}

/**
 * A `cli/train.ts` rank process as an outside launcher starts it: no launcher,
 * `env` its variables (torchrun's, Open MPI's, …), stdout and stderr piped.
 * `dir` is a {@link makeRunDir} directory.
 */
export function launchedRank(
  dir: string,
  env: Record<string, string>,
  args: string[],
  timeoutMs = 120_000,
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissionArgs("cli/train.ts"),
      new URL("../cli/train.ts", import.meta.url).pathname,
      ...args,
    ],
    cwd: new URL("../", import.meta.url).pathname,
    env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  });
}

/** The exit code and the text of a finished process's piped output. */
export function cliResult(out: Deno.CommandOutput): CliResult {
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Both ranks of a 2-rank `cli/train.ts` job started as torchrun starts them:
 * two processes with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
 * `MASTER_ADDR` and `MASTER_PORT` (a free port), no launcher; rank 1 started
 * `rank1LateMs` after rank 0. `dir` is a {@link makeRunDir} directory.
 */
export function torchrunStyleRanks(
  dir: string,
  args: string[],
  opts: { rank1LateMs?: number; timeoutMs?: number } = {},
): Promise<CliResult[]> {
  const port = String(freeLocalPort());
  return Promise.all([0, 1].map(async (rank) => {
    if (rank === 1 && opts.rank1LateMs) await new Promise((r) => setTimeout(r, opts.rank1LateMs));
    const env = {
      RANK: String(rank),
      WORLD_SIZE: "2",
      LOCAL_RANK: String(rank),
      LOCAL_WORLD_SIZE: "2",
      MASTER_ADDR: "127.0.0.1",
      MASTER_PORT: port,
    };
    return cliResult(await launchedRank(dir, env, args, opts.timeoutMs).output());
  }));
}

/** Debian's Python, which runs the PyTorch peers (`apt-get install -y python3-torch libopenblas0-pthread`). */
export const PYTHON = "/usr/bin/python3";

/**
 * Why {@link PYTHON} cannot import torch (the last line of its error), or null when it can: the
 * tests that run PyTorch skip, saying so, without it.
 */
export function torchMissing(): string | null {
  try {
    const r = new Deno.Command(PYTHON, {
      args: ["-c", "import torch"],
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (r.success) return null;
    return new TextDecoder().decode(r.stderr).trim().split("\n").pop() ?? "import failed";
  } catch (e) {
    return `${PYTHON}: ${(e as Error).message}`;
  }
}

/**
 * GPT-2's `vocab.json` and `merges.txt` (Megatron's `--vocab-file` and `--merge-file`), written
 * from the GPT-2 token table the tokenizer is built from (npm gpt-tokenizer's r50k_base), with
 * GPT-2's byte-to-character map written here from its `bytes_to_unicode` (printable bytes as
 * themselves, the rest from U+0100 on): each token under its id, `<|endoftext|>` last, and for
 * token 256 + i the i-th merge, split where both halves are earlier tokens. Their order and ids
 * are what GPT-2's files hold (tiktoken checks its r50k_base ranks against them); a merge's split
 * point may differ from GPT-2's own where several exist.
 */
export async function gpt2VocabFiles(): Promise<{ vocab: string; merges: string }> {
  const { importGpt2Ranks } = await import("../deps/gpt_tokenizer.ts");
  const { default: ranks } = await importGpt2Ranks();
  const printable = [
    ...Array.from({ length: 126 - 33 + 1 }, (_, i) => 33 + i),
    ...Array.from({ length: 172 - 161 + 1 }, (_, i) => 161 + i),
    ...Array.from({ length: 255 - 174 + 1 }, (_, i) => 174 + i),
  ];
  const charOf: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    charOf[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + n++);
  }
  const utf8 = new TextEncoder();
  const texts = ranks.map((t) =>
    [...(typeof t === "string" ? utf8.encode(t) : new Uint8Array(t))].map((b) => charOf[b]).join("")
  );
  const vocab: Record<string, number> = {};
  texts.forEach((t, id) => vocab[t] = id);
  vocab["<|endoftext|>"] = texts.length;
  const merges = ["#version: 0.2"];
  for (let id = 256; id < texts.length; id++) {
    const t = [...texts[id]];
    const k = t.findIndex((_, k) =>
      k > 0 && (vocab[t.slice(0, k).join("")] ?? id) < id && (vocab[t.slice(k).join("")] ?? id) < id
    );
    if (k < 0) throw new Error(`no split of GPT-2's token ${id}`);
    merges.push(`${t.slice(0, k).join("")} ${t.slice(k).join("")}`);
  }
  return { vocab: JSON.stringify(vocab), merges: merges.join("\n") + "\n" };
}

/**
 * Runs Deno with `args` in this process's environment less any llvmpipe width
 * (`LP_NATIVE_VECTOR_WIDTH`), so that the child picks its own, plus `env` (which
 * may set a width, as a user would).
 */
export async function runWithoutWidth(
  args: string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const childEnv = Deno.env.toObject();
  delete childEnv[LLVMPIPE_WIDTH_ENV];
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env: { ...childEnv, ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return cliResult(out);
}
