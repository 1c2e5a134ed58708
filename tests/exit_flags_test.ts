/**
 * Megatron's `--exit-interval N` and `--exit-duration-in-mins M`: the run stops
 * after the iteration that is a multiple of N, or after the first step that
 * ends M minutes after the start (agreed by every rank), writes its checkpoint
 * there with `--save` (once, where `--save-interval` falls on it too) and exits
 * 0; a run resumed from it counts on from the checkpoint's iteration, and the
 * pieces give the uninterrupted run's losses and weights, bitwise. In one
 * process, as Workers (`--tp 2`), with `--launcher procs` (DP=2) and as two
 * processes started with torchrun's variables. Bad values exit 2; nodes started
 * with other exit flags are refused.
 */

import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { exitReason } from "../cli/train_run.ts";
import {
  type CliResult,
  logRecords,
  makeRunDir,
  runCli,
  TINY_RUN_FLAGS,
  torchrunStyleRanks,
  twoLocalNodes,
} from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

/** Validation every 3 iterations, so that the exits at 3, 6 and 9 fall on one. */
const tiny = [...TINY_RUN_FLAGS, "--eval-interval", "3"];

interface LogRecord {
  iteration: number;
  loss: number;
  val_loss?: number;
}

const records = (file: string) => logRecords<LogRecord>(file);

const iterations = (rs: LogRecord[]) => rs.map((r) => r.iteration);
const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

async function latest(ck: string): Promise<number> {
  return Number((await Deno.readTextFile(`${ck}/latest`)).trim());
}

/** The iterations `ck` holds. */
async function savedIterations(ck: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir(ck)) {
    const m = /^iter_(\d+)$/.exec(e.name);
    if (m) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}

/** The iteration the run said it exited after, or a failure naming its output. */
function exitedAfter(r: CliResult, reason: RegExp): number {
  strictEqual(r.code, 0, r.stderr);
  const m = new RegExp(`exiting after iteration (\\d+)${reason.source}`).exec(r.stdout);
  ok(m, r.stdout);
  return Number(m[1]);
}

Deno.test({
  name:
    "--exit-interval with --save: exits 0 after the iteration, saved once there; a resumed run counts on and the pieces equal the uninterrupted run bitwise",
  timeout: 240_000,
  fn: async () => {
    await using temp = await tempDir({ prefix: "exit-interval-" });
    const dir = temp.path;
    const ck = `${dir}/ck`, log = `${dir}/log.jsonl`;
    const run = (...extra: string[]) =>
      runCli(
        "cli/train.ts",
        [...tiny, "--train-iters", "10", "--log-json", log, ...extra],
        undefined,
        { timeoutMs: 90_000 },
      );
    const first = await run("--exit-interval", "3", "--save", ck);
    strictEqual(exitedAfter(first, / \(--exit-interval 3\); resume with --load /), 3);
    match(first.stdout, new RegExp(`resume with --load ${ck}\n`));
    match(first.stdout, /saved checkpoint at iteration 3 to /);
    match(first.stdout, /validation loss at iteration 3 \|/); // evaluated as usual
    ok(!/trained \d+ steps/.test(first.stdout), first.stdout);
    strictEqual(await latest(ck), 3);
    deepStrictEqual(await savedIterations(ck), [3]);
    deepStrictEqual(iterations(await records(log)), upTo(3));

    // Resumed at 3, --exit-interval 3 stops at 6, where --save-interval 3 saves too: once.
    const second = await run(
      "--exit-interval",
      "3",
      "--save-interval",
      "3",
      "--load",
      ck,
      "--save",
      ck,
    );
    match(second.stdout, /loaded .*\(iteration 3\)/);
    strictEqual(exitedAfter(second, / \(--exit-interval 3\); resume with --load /), 6);
    strictEqual(second.stdout.match(/saved checkpoint at iteration \d+/g)?.length, 1);
    strictEqual(await latest(ck), 6);
    const third = await run("--exit-interval", "3", "--load", ck, "--save", ck);
    strictEqual(exitedAfter(third, / \(--exit-interval 3\)/), 9);
    // Iteration 10 is the last: a multiple of --exit-interval there ends the run as usual.
    const last = await run("--exit-interval", "10", "--load", ck, "--save", ck);
    strictEqual(last.code, 0, last.stderr);
    match(last.stdout, /trained 1 step in/);
    ok(!/exiting after/.test(last.stdout), last.stdout);
    deepStrictEqual(await savedIterations(ck), [3, 6, 9, 10]);
    const pieces = await records(log);
    deepStrictEqual(iterations(pieces), upTo(10));

    // The uninterrupted run: the same losses, validation losses, weights and checkpoint.json,
    // bitwise.
    const whole = await runCli("cli/train.ts", [
      ...tiny,
      "--train-iters",
      "10",
      "--save",
      `${dir}/whole`,
      "--log-json",
      `${dir}/whole.jsonl`,
    ]);
    strictEqual(whole.code, 0, whole.stderr);
    const w = await records(`${dir}/whole.jsonl`);
    deepStrictEqual(pieces.map((r) => r.loss), w.map((r) => r.loss));
    deepStrictEqual(pieces.map((r) => r.val_loss), w.map((r) => r.val_loss));
    for (
      const file of ["model_tp00.safetensors", "optimizer_tp00.safetensors", "checkpoint.json"]
    ) {
      deepStrictEqual(
        await Deno.readFile(`${ck}/iter_0000010/${file}`),
        await Deno.readFile(`${dir}/whole/iter_0000010/${file}`),
        file,
      );
    }
  },
});

Deno.test({
  name:
    "the exit flags without --save exit 0 saying nothing is saved; an --exit-interval past --train-iters never stops the run",
  timeout: 120_000,
  fn: async () => {
    const interval = await runCli("cli/train.ts", [
      ...tiny,
      "--train-iters",
      "10",
      "--exit-interval",
      "2",
    ]);
    strictEqual(
      exitedAfter(interval, / \(--exit-interval 2\); no --save, so nothing is saved/),
      2,
    );
    const timed = await runCli("cli/train.ts", [
      ...tiny,
      "--train-iters",
      "1000",
      "--exit-duration-in-mins",
      "0.0001",
    ]);
    // 6 ms after the program started: the first step ends later.
    strictEqual(
      exitedAfter(
        timed,
        /, [\d.e-]+ minutes after the start \(--exit-duration-in-mins 0\.0001\); no --save, so nothing is saved/,
      ),
      1,
    );
    const beyond = await runCli("cli/train.ts", [
      ...tiny,
      "--train-iters",
      "3",
      "--exit-interval",
      "4",
    ]);
    strictEqual(beyond.code, 0, beyond.stderr);
    match(beyond.stdout, /trained 3 steps in/);
    ok(!/exiting after/.test(beyond.stdout), beyond.stdout);
  },
});

/**
 * How much later than rank 0 the torchrun-style launch starts rank 1: its clock, which
 * `--exit-duration-in-mins` reads, is that much behind, many steps of the tiny model.
 */
const RANK1_LATE_MS = 2000;

/** Launch modes of a 2-rank job, and the shards each iteration of its checkpoint holds. */
const modes: { name: string; flags: string[]; env?: boolean; shards: string[] }[] = [
  {
    name: "Workers, --tp 2",
    flags: ["--nproc-per-node", "2", "--tp", "2", "--backend", "deno"],
    shards: ["model_tp00.safetensors", "model_tp01.safetensors"],
  },
  {
    name: "--launcher procs, data parallel 2",
    flags: ["--nproc-per-node", "2", "--backend", "deno", "--launcher", "procs"],
    shards: ["model_tp00.safetensors"],
  },
  {
    name: "torchrun's variables, --tp 2",
    flags: ["--tp", "2", "--backend", "deno"],
    env: true,
    shards: ["model_tp00.safetensors", "model_tp01.safetensors"],
  },
];

for (const mode of modes) {
  Deno.test({
    name:
      `--exit-duration-in-mins: every rank stops after the same step, saved, exit 0 (${mode.name})`,
    timeout: 240_000,
    fn: async () => {
      const dir = await makeRunDir();
      try {
        const ck = `${dir}/ck`, log = `${dir}/log.jsonl`;
        // 6 s. The ranks started at different moments (rank 1 2 s late in the torchrun case),
        // so each rank's own clock passes it after a different step: the all-reduce makes it
        // one (without it, rank 0 would stop and save while rank 1 steps on alone).
        const args = [
          ...tiny,
          ...mode.flags,
          "--data-path",
          `${dir}/data.txt`,
          "--eval-interval",
          "100000",
          "--train-iters",
          "100000",
          "--exit-duration-in-mins",
          "0.1",
          "--save",
          ck,
          "--log-json",
          log,
        ];
        const rs = mode.env
          ? await torchrunStyleRanks(dir, args, { rank1LateMs: RANK1_LATE_MS })
          : [await runCli("cli/train.ts", args, dir, { timeoutMs: 120_000 })];
        for (const r of rs) strictEqual(r.code, 0, r.stderr);
        const r = rs[0];
        const n = exitedAfter(
          r,
          /, ([\d.]+) minutes after the start \(--exit-duration-in-mins 0\.1\); resume with --load /,
        );
        const minutes = Number(/, ([\d.]+) minutes after the start/.exec(r.stdout)![1]);
        ok(minutes > 0.1 && minutes < 1, `${minutes} minutes`);
        ok(n >= 1 && n < 100000, `stopped at ${n}`);
        strictEqual(await latest(ck), n);
        deepStrictEqual(await savedIterations(ck), [n]);
        const files = [...Deno.readDirSync(`${ck}/iter_${String(n).padStart(7, "0")}`)]
          .map((e) => e.name).filter((f) => f.startsWith("model_")).sort();
        deepStrictEqual(files, mode.shards);
        deepStrictEqual(iterations(await records(log)), upTo(n));
        if (mode.env) return;
        // The checkpoint loads, and the run goes on from it.
        const resumed = await runCli(
          "cli/train.ts",
          [
            ...tiny,
            ...mode.flags,
            "--data-path",
            `${dir}/data.txt`,
            "--train-iters",
            String(n + 2),
            "--load",
            ck,
            "--log-json",
            log,
          ],
          dir,
          { timeoutMs: 120_000 },
        );
        strictEqual(resumed.code, 0, resumed.stderr);
        match(resumed.stdout, new RegExp(`loaded .*\\(iteration ${n}\\)`));
        deepStrictEqual(iterations(await records(log)), upTo(n + 2));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "bad --exit-interval and --exit-duration-in-mins values exit 2, naming the flag",
  timeout: 120_000,
  fn: async () => {
    const cases: [string[], RegExp][] = [
      [["--exit-interval", "0"], /--exit-interval must be ≥ 1, got 0/],
      [["--exit-interval=-3"], /--exit-interval must be ≥ 1, got -3/],
      [["--exit-interval", "abc"], /--exit-interval expects an integer, got "abc"/],
      [["--exit-interval", "2.5"], /--exit-interval expects an integer, got "2\.5"/],
      [
        ["--exit-duration-in-mins", "0"],
        /--exit-duration-in-mins must be a positive number of minutes, got 0/,
      ],
      [
        ["--exit-duration-in-mins=-1"],
        /--exit-duration-in-mins must be a positive number of minutes, got -1/,
      ],
      [["--exit-duration-in-mins", "abc"], /--exit-duration-in-mins expects a number, got "abc"/],
      [
        ["--exit-duration-in-mins", "Infinity"],
        /--exit-duration-in-mins expects a number, got "Infinity"/,
      ],
    ];
    for (const [flags, pattern] of cases) {
      const r = await runCli("cli/train.ts", [...tiny, "--train-iters", "2", ...flags]);
      strictEqual(r.code, 2, `${flags.join(" ")}: ${r.stderr}`);
      match(r.stderr, pattern);
      ok(!/iteration\s+1\//.test(r.stdout), `${flags.join(" ")} trained`);
    }
  },
});

Deno.test({
  name: "nodes started with other exit flags are refused at once, naming them",
  timeout: 120_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      const common = [...tiny, "--train-iters", "4", "--data-path", `${dir}/data.txt`];
      const { results: [n0, n1], ms } = await twoLocalNodes(dir, [
        [...common, "--exit-interval", "2", "--exit-duration-in-mins", "30"],
        [...common, "--exit-interval", "3"],
      ]);
      strictEqual(n0.code, 2, n0.stderr);
      strictEqual(n1.code, 2, n1.stderr);
      match(
        n0.stderr,
        /the ranks were started with different flags: --exit-duration-in-mins 30 on rank 0, not given on rank 1; --exit-interval 2 on rank 0, 3 on rank 1\./,
      );
      ok(ms < 30_000); // well inside the 60 s dist timeout
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "exitReason: the duration before the interval; never at the last iteration",
  timeout: 10_000,
  fn: () => {
    const both = { exitInterval: 40, exitDurationMins: 230 };
    strictEqual(exitReason(both, 80, 1000, 12), " (--exit-interval 40)");
    strictEqual(exitReason(both, 81, 1000, 12), null);
    strictEqual(
      exitReason(both, 81, 1000, 230.04),
      ", 230.04 minutes after the start (--exit-duration-in-mins 230)",
    );
    // Shown with the digits that put it past the limit, not rounded onto it.
    strictEqual(
      exitReason({ exitDurationMins: 0.05 }, 3, 10, 0.050412),
      ", 0.0504 minutes after the start (--exit-duration-in-mins 0.05)",
    );
    strictEqual(
      exitReason({ exitDurationMins: 0.05 }, 3, 10, 0.0500004),
      ", 0.0500004 minutes after the start (--exit-duration-in-mins 0.05)",
    );
    strictEqual(
      exitReason({ exitDurationMins: 0.5 }, 3, 10, 0.50123),
      ", 0.501 minutes after the start (--exit-duration-in-mins 0.5)",
    );
    // Not past it yet, as Megatron's train_time > exit_duration_in_mins.
    strictEqual(exitReason({ exitDurationMins: 0.5 }, 3, 10, 0.5), null);
    strictEqual(exitReason(both, 1000, 1000, 999), null);
    strictEqual(exitReason({ exitInterval: 40 }, 40, 30, 0), null);
    strictEqual(exitReason({}, 40, 1000, 1e9), null);
  },
});
