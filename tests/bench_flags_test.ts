/**
 * The benchmark scripts take their command lines as the CLIs do (cli/flags.ts,
 * cli/errors.ts), run as their tasks run them (`deno run -q -P=bench …`,
 * subprocesses): `--help` exits 0 with the usage and every flag of the script's
 * table on stdout and nothing else (no device opened, no table measured); an
 * unknown flag (`--no-such-flag`) and a bad value (a count of 0, a word for a
 * number, a bad item of a comma list) exit 2 with one `error: …` line on stderr
 * naming the flag, without a stack trace. Each table still holds the flags the
 * script took before it had one, with the same defaults. The list of scripts is
 * every `deno run` bench task of deno.json and every bench/ script that reads
 * `Deno.args`, so a new bench script without flag handling fails here. And the
 * flags `bench:torch` runs bench/gpt2_scale.ts with are flags that script takes.
 * No GPU.
 */

import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { type FlagSpec, parseFlags } from "../cli/flags.ts";
import { BACKENDS } from "../core/gpu.ts";
import { ATTENTION_FLAGS } from "../bench/attention.ts";
import { DEFAULT_CHAINS, FMA_CEILING_FLAGS } from "../bench/fma_ceiling.ts";
import { GPT2_SCALE_FLAGS, gpt2ScaleOptions } from "../bench/gpt2_scale.ts";
import { LAYERNORM_FLAGS } from "../bench/layernorm.ts";
import { MATMUL_STORE_FLAGS } from "../bench/matmul_store.ts";
import { MATMUL_TEXTURE_FLAGS } from "../bench/matmul_texture.ts";
import { MEMORY_PATHS_FLAGS } from "../bench/memory_paths.ts";
import { MIXED_PRECISION_FLAGS } from "../bench/mixed_precision.ts";
import { RESIDUAL_FLAGS } from "../bench/residual_norm.ts";
import { SCALING_FLAGS } from "../bench/scaling.ts";
import {
  gpt2Outcome,
  gpt2ScaleArgs,
  TORCH_COMPARE_FLAGS,
  torchCompareOptions,
} from "../bench/torch_compare.ts";
import { withTimeLimit } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

const root = new URL("../", import.meta.url);

/** One bench script and what is checked of it. */
interface Bench {
  /** Path from the repository root. */
  script: string;
  /** Its `deno task`, or null for a script run with `deno run -P=bench` (README). */
  task: string | null;
  /** Its flag table. */
  table: Record<string, FlagSpec>;
  /** The flags it took before it had a table, with their defaults (undefined: none). */
  was: Record<string, number | string | boolean | undefined>;
  /** Bad command lines, each with the flag its error must name. */
  bad: [string[], string][];
}

const BENCHES: Bench[] = [
  {
    script: "bench/attention.ts",
    task: "bench:attention",
    table: ATTENTION_FLAGS,
    was: {
      reps: 5,
      seqs: "1024,2048",
      heads: 4,
      "head-dim": 32,
      backend: undefined,
      "skip-model": false,
    },
    bad: [
      [["--reps", "0"], "reps"],
      [["--seqs", "1024,abc"], "seqs"],
      // A head size the fused kernels refuse crashed as "a bug" after the reference rows.
      [["--head-dim", "6"], "head-dim"],
    ],
  },
  {
    script: "bench/fma_ceiling.ts",
    task: "bench:fma-ceiling",
    table: FMA_CEILING_FLAGS,
    was: { backend: "dawn", chains: DEFAULT_CHAINS },
    bad: [
      [["--chains", "abc"], "chains"],
      [["--backend", "metal"], "backend"],
      // A shader past the compiler's expression depth timed nothing and printed 2e7 GFLOP/s.
      [["--chains", "520"], "chains"],
    ],
  },
  {
    script: "bench/gpt2_scale.ts",
    task: "bench:gpt2",
    table: GPT2_SCALE_FLAGS,
    was: {
      sizes: "small,medium,large",
      tp: "1,2",
      seq: 128,
      batch: 1,
      steps: 2,
      "eval-only": "large",
      dir: undefined, // $TMPDIR/gpt2-random, else /tmp/gpt2-random: read when it runs
      backend: "deno",
      placement: "workers",
    },
    bad: [
      [["--seq", "0"], "seq"],
      [["--sizes", "small,huge"], "sizes"],
      [["--tp", "1,x"], "tp"],
      [["--placement", "nodes"], "placement"],
      // Known before a model is written (a 475 MB GPT-2 was written, then every row failed).
      [["--seq", "2000"], "seq"],
      [["--sizes", "small", "--tp", "5"], "tp 5"],
    ],
  },
  {
    script: "bench/layernorm.ts",
    task: "bench:layernorm",
    table: LAYERNORM_FLAGS,
    was: { steps: 300, depths: "2,12", hidden: 64, lr: 1e-3, warmup: 10 },
    bad: [[["--steps=-1"], "steps"], [["--depths", "2,x"], "depths"], [["--lr", "fast"], "lr"]],
  },
  {
    script: "bench/matmul_texture.ts",
    task: "bench:matmul-texture",
    table: MATMUL_TEXTURE_FLAGS,
    was: { backend: "dawn", rounds: 5 },
    bad: [[["--rounds", "abc"], "rounds"]],
  },
  {
    script: "bench/matmul_store.ts",
    task: "bench:matmul-store",
    table: MATMUL_STORE_FLAGS,
    was: { backend: "dawn", rounds: 5 },
    bad: [[["--rounds", "0"], "rounds"]],
  },
  {
    script: "bench/memory_paths.ts",
    task: "bench:memory-paths",
    table: MEMORY_PATHS_FLAGS,
    was: { backend: "dawn", "log2-floats": 22 },
    bad: [[["--log2-floats", "2.5"], "log2-floats"], [["--log2-floats", "40"], "log2-floats"]],
  },
  {
    script: "bench/mixed_precision.ts",
    task: "bench:mixed-precision",
    table: MIXED_PRECISION_FLAGS,
    was: {
      steps: 10,
      shape: "reference",
      "read-only": false,
      recompute: false,
      tp: 1,
      dp: 1,
      "dp-wire": "both",
      layers: undefined,
      seq: undefined,
      batch: undefined,
      modes: "fp32,bf16,fp16", // before: unset, read as this
    },
    bad: [
      [["--tp", "0"], "tp"],
      [["--modes", "fp32,fp8"], "modes"],
      [["--dp-wire", "half,x"], "dp-wire"],
      [["--shape", "huge"], "shape"],
      // Every row failed, and the bench exited 0.
      [["--tp", "3"], "tp 3"],
    ],
  },
  {
    script: "bench/residual_norm.ts",
    task: "bench:residual",
    table: RESIDUAL_FLAGS,
    was: { reps: 30, tokens: 512, hidden: 128, seq: 64, vocab: 256, backend: undefined },
    bad: [[["--reps", "abc"], "reps"], [["--tokens", "500"], "tokens"]],
  },
  {
    script: "bench/scaling.ts",
    task: "bench:scaling",
    table: SCALING_FLAGS,
    was: {
      "max-ranks": 2,
      backend: undefined,
      placement: "procs",
      steps: 8,
      warmup: 3,
      batch: 16,
      seq: 64,
      ladder: "base",
      repeats: 3,
      overlap: "off",
      "host-shm": "on",
    },
    bad: [
      [["--repeats", "0"], "repeats"],
      [["--overlap", "maybe"], "overlap"],
      [["--ladder", "huge"], "ladder"],
    ],
  },
  {
    script: "bench/torch_compare.ts",
    task: "bench:torch",
    table: TORCH_COMPARE_FLAGS,
    was: {
      backends: "deno,dawn",
      steps: 10,
      rounds: 3,
      "gpt2-tp": "1,2",
      "gpt2-steps": 3,
      "gpt2-rounds": 1,
      "gpt2-placement": "procs",
      "gpt2-tp1": "both",
      "gpt2-backend": "dawn",
      python: "/usr/bin/python3",
      "torch-malloc": "keep",
    },
    bad: [
      [["--rounds", "abc"], "rounds"],
      [["--gpt2-tp", "1,x"], "gpt2-tp"],
      [["--backends", "dawn,metal"], "backends"],
      [["--torch-malloc", "jemalloc"], "torch-malloc"],
      [["--gpt2-tp", "5"], "gpt2-tp 5"],
      // A Python named by its path must be there (an absent default is a note in the report).
      [["--python", "/nonexistent/python"], "python"],
    ],
  },
];

const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));

/** The bench scripts deno.json's tasks `deno run`, by task name. */
function benchTasks(): Map<string, string> {
  const tasks = new Map<string, string>();
  for (const [name, command] of Object.entries(config.tasks as Record<string, string>)) {
    const m = /^deno run\b.*\s(bench\/\S+\.ts)(\s|$)/.exec(command);
    if (m) tasks.set(name, m[1]);
  }
  return tasks;
}

/** The command words that run `b`: its task's (`deno run -q -P=bench …`), or the README's. */
function commandOf(b: Bench): string[] {
  const words = b.task
    ? (config.tasks[b.task] as string).split(/\s+/)
    : ["deno", "run", "-q", "-P=bench", b.script];
  deepStrictEqual(words.slice(0, 2), ["deno", "run"], `${b.task} is not a deno run task`);
  ok(words.includes("-P=bench"), `${b.task ?? b.script} runs without the bench permission set`);
  return words.slice(1);
}

/** Exit code, stdout and stderr of `b` run with `args`. */
function runBench(
  b: Bench,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runDeno([...commandOf(b), ...args], env);
}

/** Exit code, stdout and stderr of `deno` run with `args` in the repository, `env` added. */
async function runDeno(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  await using temp = await tempDir({ prefix: "xdg-" });
  const xdg = temp.path;
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root.pathname,
    env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Checks that `r` is a usage error: exit 2, one `error:` line naming `needle`, nothing else. */
function assertRefused(
  r: { code: number; stdout: string; stderr: string },
  needle: string,
  what: string,
): void {
  const context = `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  strictEqual(r.code, 2, context);
  strictEqual(r.stdout, "", context);
  const lines = r.stderr.trimEnd().split("\n");
  strictEqual(lines.length, 1, `not one line (a stack trace?): ${context}`);
  match(lines[0], /^error: /, context);
  ok(lines[0].includes(needle), `"${needle}" not named: ${context}`);
}

Deno.test("bench flags: the list is every deno run bench task and every script reading Deno.args", async () => {
  const tasks = benchTasks();
  deepStrictEqual(
    new Map(BENCHES.filter((b) => b.task).map((b) => [b.task!, b.script])),
    tasks,
    "deno.json's deno run bench tasks",
  );
  const readsArgs: string[] = [];
  for await (const e of Deno.readDir(new URL("bench/", root))) {
    if (!e.isFile || !e.name.endsWith(".ts")) continue;
    const text = await Deno.readTextFile(new URL(`bench/${e.name}`, root));
    if (text.includes("Deno.args")) readsArgs.push(`bench/${e.name}`);
  }
  deepStrictEqual(
    readsArgs.sort(),
    BENCHES.map((b) => b.script).sort(),
    "scripts reading Deno.args",
  );
});

for (const b of BENCHES) {
  Deno.test(`bench flags: ${b.task ?? b.script}`, withTimeLimit(120, {}), async () => {
    // The flags it took before, with the same defaults (a switch's was false).
    for (const [name, was] of Object.entries(b.was)) {
      const spec = b.table[name];
      ok(spec, `${b.script}: --${name} is gone`);
      strictEqual(spec.default ?? (spec.type === "boolean" ? false : undefined), was, `--${name}`);
    }
    const [help, unknown, ...bad] = await Promise.all([
      runBench(b, ["--help"]),
      runBench(b, ["--no-such-flag"]),
      ...b.bad.map(([args]) => runBench(b, args)),
    ]);
    // --help: the usage and every flag, and nothing else.
    const context = `--help: exit ${help.code}\nstdout: ${help.stdout}\nstderr: ${help.stderr}`;
    strictEqual(help.code, 0, context);
    strictEqual(help.stderr, "", context);
    const usage = b.task ? `deno task ${b.task}` : `deno run -P=bench ${b.script}`;
    match(help.stdout, /^Usage: /, context);
    ok(help.stdout.split("\n")[0].includes(usage), `the usage names ${usage}: ${context}`);
    for (const name of Object.keys(b.table)) {
      match(help.stdout, new RegExp(`^  --${name}\\b`, "m"), `--${name} missing: ${context}`);
    }
    match(help.stdout, /-h, --help +this text\n$/, `more than the help: ${context}`);
    assertRefused(unknown, "no-such-flag", "--no-such-flag");
    b.bad.forEach(([args, flag], i) => assertRefused(bad[i], `--${flag}`, args.join(" ")));
  });
}

Deno.test("bench flags: an unknown WEBGPU_BACKEND is the user's error (exit 2, one line)", async () => {
  const attention = BENCHES.find((b) => b.script === "bench/attention.ts")!;
  const r = await runBench(attention, ["--reps", "1"], { WEBGPU_BACKEND: "metal" });
  assertRefused(r, 'unknown backend "metal": expected one of deno, dawn', "WEBGPU_BACKEND=metal");
});

Deno.test("bench flags: the training-step bench refuses a bad TRAIN_BENCH_* value (exit 2, one line)", async () => {
  const train: Bench = { script: "bench/train_bench.ts", task: null, table: {}, was: {}, bad: [] };
  const cases: [Record<string, string>, string][] = [
    [{ TRAIN_BENCH_STEPS: "abc" }, "TRAIN_BENCH_STEPS=abc: expected a whole number of at least 1"],
    [{ TRAIN_BENCH_STEPS: "0" }, "TRAIN_BENCH_STEPS=0"],
    [{ TRAIN_BENCH_STEPS: "1e3" }, "TRAIN_BENCH_STEPS=1e3"],
    [{ TRAIN_BENCH_TFJS: "false" }, "TRAIN_BENCH_TFJS=false: expected 0 (leave TF.js out) or 1"],
    [{ TRAIN_BENCH_WARMUP: "-1" }, "TRAIN_BENCH_WARMUP=-1: expected a whole number of at least 0"],
    [{ TRAIN_BENCH_BACKENDS: "dawn,metal" }, 'unknown backend "metal"'],
  ];
  const results = await Promise.all(cases.map(([env]) => runBench(train, [], env)));
  cases.forEach(([env, needle], i) => assertRefused(results[i], needle, JSON.stringify(env)));
  // Under `deno bench` too, where the rows are registered as the module loads.
  const bench = await runDeno(["bench", "-q", "-P=bench", "bench/train_bench.ts"], {
    TRAIN_BENCH_STEPS: "abc",
  });
  assertRefused(bench, "TRAIN_BENCH_STEPS=abc", "deno bench with TRAIN_BENCH_STEPS=abc");
});

Deno.test("bench flags: bench:torch runs bench/gpt2_scale.ts with flags it takes", () => {
  for (const placement of ["procs", "workers"] as const) {
    for (const backend of BACKENDS) {
      const args = gpt2ScaleArgs(2, placement, 3, backend);
      const o = gpt2ScaleOptions(parseFlags(args, GPT2_SCALE_FLAGS));
      deepStrictEqual(
        [o.sizes, o.tps, o.steps, [...o.evalOnly], o.placement, o.backend],
        [["small"], [2], 3, [], placement, backend],
        args.join(" "),
      );
    }
  }
  // --gpt2-dir reaches bench:gpt2's --dir (where the ~475 MB random model goes).
  const o = torchCompareOptions(parseFlags(["--gpt2-dir", "/data/g2"], TORCH_COMPARE_FLAGS));
  const args = gpt2ScaleArgs(1, "procs", 3, "dawn", o.gpt2Dir);
  deepStrictEqual(gpt2ScaleOptions(parseFlags(args, GPT2_SCALE_FLAGS)).dir, "/data/g2");
});

Deno.test("bench flags: bench:torch reads a failed GPT-2 row as failed, not as 0 ms a step", () => {
  // bench/gpt2_scale.ts exits 0 with a failed row whose ms cell is empty: that read as 0 ms,
  // printed as "∞ tokens/s" and "Infinity×".
  const failed = "| small | | 5 | failed: numHeads 12 is not divisible by 5 | | | | | | | |\n";
  match(gpt2Outcome(failed, 0, "procs") as string, /^failed: .*not divisible by 5/);
  const ok = "| small | 124.4M | 2 | load, eval, 2 steps (2 processes, pinned) | 3.1 | 10.9 | " +
    "1.2 | 3300 | 250 | 1000 | 1200 |\n";
  deepStrictEqual(gpt2Outcome(ok, 0, "procs"), { ms: 3300, placed: "2 processes, pinned" });
  match(gpt2Outcome(ok, 1, "procs") as string, /^failed: /);
  match(gpt2Outcome("", 1, "procs") as string, /exited 1/);
});
