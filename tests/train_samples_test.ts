/**
 * Megatron's sample-counted training length and schedule in `deno task train`:
 * `--train-samples S` trains ⌊S / global batch⌋ steps, and `--lr-decay-samples`,
 * `--lr-warmup-samples` (or `--lr-warmup-fraction`) give the schedule in
 * samples. Every logged learning rate is Megatron's `get_lr` at
 * `num_steps` = (iteration − 1) × global batch, written here from
 * `megatron/core/optimizer_param_scheduler.py`; a schedule given in iterations
 * that is the same one trains the same losses bitwise; mixed counts are refused
 * as Megatron's `validate_args` asserts; checkpoints save the schedule in
 * samples, and a resumed run continues it, adopts it, or is refused where it
 * disagrees; nodes compare the flags.
 */

import { deepStrictEqual, equal, match, ok, strictEqual } from "node:assert/strict";
import { parseFlags, UsageError } from "../cli/flags.ts";
import { validateTrainFlags } from "../cli/train_config.ts";
import { TRAIN_FLAGS } from "../cli/train_flags.ts";
import {
  type CliResult,
  logRecords,
  makeRunDir,
  runCli,
  TINY_RUN_FLAGS,
  twoLocalNodes,
} from "./cli_helpers.ts";
import { megatronGetLr } from "./megatron_lr.ts";
import { tempDir } from "./temp_dir.ts";

/** A tiny run (micro-batch 2), deterministic kernels, no validation until the end. */
const tiny = [
  ...TINY_RUN_FLAGS,
  ...["--eval-interval", "100", "--no-matmul-autotune"],
  ...["--lr", "0.01", "--min-lr", "0.001"],
];

interface LogRecord {
  iteration: number;
  loss: number;
  lr: number;
}

const records = (file: string) => logRecords<LogRecord>(file);

/** `deno task train` with the tiny flags and `args`. */
function train(args: string[], cwd?: string): Promise<CliResult> {
  return runCli("cli/train.ts", [...tiny, ...args], cwd, { timeoutMs: 120_000 });
}

function succeeded(r: CliResult): void {
  strictEqual(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
}

/** Refused as a usage error (exit 2) with a message matching `re`, on one line. */
function refused(r: CliResult, re: RegExp): void {
  strictEqual(r.code, 2, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  match(r.stderr, re);
}

/** Every logged lr is Megatron's at num_steps = (iteration − 1) × `g`, to 1e-12 relative. */
function assertMegatronLrs(
  logged: LogRecord[],
  g: number,
  o: Parameters<typeof megatronGetLr>[1],
): void {
  for (const r of logged) {
    const want = megatronGetLr((r.iteration - 1) * g, o);
    ok(
      Math.abs(r.lr - want) <= 1e-12 * Math.abs(want),
      `iteration ${r.iteration}: lr ${r.lr}, Megatron's ${want}`,
    );
  }
}

const iterations = (rs: LogRecord[]) => rs.map((r) => r.iteration);

Deno.test({
  name:
    "--train-samples: ⌊S / global batch⌋ steps; every lr is Megatron's get_lr at (iteration − 1) × global batch samples",
  timeout: 240_000,
  fn: async () => {
    await using temp = await tempDir({ prefix: "train-samples-" });
    const dir = temp.path;
    // Warm-up 12 and decay 36 samples at 8 a step: they end within steps 2 and 5 (1.5, 4.5).
    const linear = await train([
      ...["--train-samples", "40", "--global-batch-size", "8"],
      ...["--lr-warmup-samples", "12", "--lr-decay-samples", "36", "--lr-decay-style", "linear"],
      ...["--log-json", `${dir}/linear.jsonl`],
    ]);
    succeeded(linear);
    match(linear.stdout, /training: 5 steps × 8 sequences \(--train-samples 40\)/);
    match(linear.stdout, /iteration\s+5\/\s+5 \|/);
    match(linear.stdout, /consumed samples:\s+40 \|/);
    const l = await records(`${dir}/linear.jsonl`);
    deepStrictEqual(iterations(l), [1, 2, 3, 4, 5]);
    const base = { maxLr: 0.01, minLr: 0.001, initLr: 0 };
    assertMegatronLrs(l, 8, {
      ...base,
      warmupSteps: 12,
      decaySteps: 36,
      style: "linear",
    });
    // By hand: 0, 8/12 of the peak, then 4/24, 12/24, 20/24 of the decay.
    ok(Math.abs(l[1].lr - 0.01 * 8 / 12) < 1e-15, `${l[1].lr}`);
    ok(Math.abs(l[4].lr - (0.001 + 0.009 * (1 - 20 / 24))) < 1e-15, `${l[4].lr}`);
    // The log header records the flags the run used: not the unused iteration defaults.
    const header = JSON.parse((await Deno.readTextFile(`${dir}/linear.jsonl`)).split("\n")[0]);
    equal(header.config["train-samples"], 40);
    ok(!("train-iters" in header.config) && !("lr-warmup-iters" in header.config));

    // Cosine, from --lr-warmup-init, S not a multiple of the batch (⌊44 / 8⌋ = 5 steps), the
    // last step past the decay (32 > 30 samples: min lr).
    const cosine = await train([
      ...["--train-samples", "44", "--global-batch-size", "8", "--lr-warmup-init", "0.002"],
      ...["--lr-warmup-samples", "5", "--lr-decay-samples", "30", "--lr-decay-style", "cosine"],
      ...["--log-json", `${dir}/cosine.jsonl`],
    ]);
    succeeded(cosine);
    const c = await records(`${dir}/cosine.jsonl`);
    deepStrictEqual(iterations(c), [1, 2, 3, 4, 5]);
    assertMegatronLrs(c, 8, {
      ...base,
      initLr: 0.002,
      warmupSteps: 5,
      decaySteps: 30,
      style: "cosine",
    });
    equal(c[0].lr, 0.002);
    equal(c[4].lr, 0.001);

    // The default global batch (micro-batch 2 × 1 rank), a warm-up fraction of the default
    // decay (--train-samples 9: 4 steps; warm-up 0.25 × 9 = 2.25 samples).
    const fraction = await train([
      ...["--train-samples", "9", "--lr-warmup-fraction", "0.25"],
      ...["--log-json", `${dir}/fraction.jsonl`],
    ]);
    succeeded(fraction);
    const fr = await records(`${dir}/fraction.jsonl`);
    deepStrictEqual(iterations(fr), [1, 2, 3, 4]);
    assertMegatronLrs(fr, 2, {
      ...base,
      warmupSteps: 0.25 * 9,
      decaySteps: 9,
      style: "cosine",
    });
  },
});

Deno.test({
  name:
    "--train-samples: a schedule given in samples that divides into iterations trains the iteration schedule's losses, bitwise",
  timeout: 180_000,
  fn: async () => {
    await using temp = await tempDir({ prefix: "train-samples-" });
    const dir = temp.path;
    const iters = await train([
      ...["--global-batch-size", "8", "--train-iters", "5"],
      ...["--lr-warmup-iters", "2", "--lr-decay-iters", "4"],
      ...["--log-json", `${dir}/iters.jsonl`],
    ]);
    succeeded(iters);
    const samples = await train([
      ...["--global-batch-size", "8", "--train-samples", "40"],
      ...["--lr-warmup-samples", "16", "--lr-decay-samples", "32"],
      ...["--log-json", `${dir}/samples.jsonl`],
    ]);
    succeeded(samples);
    const a = await records(`${dir}/iters.jsonl`), b = await records(`${dir}/samples.jsonl`);
    equal(a.length, 5);
    deepStrictEqual(b.map((r) => r.lr), a.map((r) => r.lr));
    deepStrictEqual(b.map((r) => r.loss), a.map((r) => r.loss));
  },
});

Deno.test({
  name:
    "--train-samples: mixed counts, a warm-up given twice and fewer samples than a batch are refused (exit 2)",
  timeout: 180_000,
  fn: async () => {
    const cases: [string[], RegExp][] = [
      [
        ["--train-iters", "5", "--train-samples", "40"],
        /error: give either --train-iters 5 or --train-samples 40, not both/,
      ],
      [
        ["--lr-decay-samples", "36"],
        /error: --lr-decay-samples 36 counts samples, and this run counts iterations \(the default --train-iters 1000\): give --lr-decay-iters/,
      ],
      [
        ["--train-samples", "40", "--lr-decay-iters", "4"],
        /error: --lr-decay-iters 4 counts iterations, and this run counts samples \(--train-samples 40\): give --lr-decay-samples/,
      ],
      [
        ["--train-samples", "40", "--lr-warmup-fraction", "0.1", "--lr-warmup-samples", "8"],
        /error: give either --lr-warmup-fraction 0\.1 or --lr-warmup-samples 8, not both/,
      ],
      [
        ["--train-samples", "4", "--global-batch-size", "8"],
        /error: --train-samples 4 is less than one global batch \(--global-batch-size 8\): it would train 0 steps/,
      ],
    ];
    for (const [args, re] of cases) refused(await train(args), re);
    // The rest of the pairs, checked in this process (the same function the CLI calls).
    const check = (args: string[]) => {
      try {
        validateTrainFlags(parseFlags([...tiny, ...args], TRAIN_FLAGS), 1);
      } catch (e) {
        if (e instanceof UsageError) return e.message;
        throw e;
      }
      return null;
    };
    match(
      check(["--train-samples", "40", "--lr-warmup-iters", "3"])!,
      /^--lr-warmup-iters 3 counts iterations, .*: give --lr-warmup-samples or --lr-warmup-fraction/,
    );
    match(
      check(["--lr-warmup-samples", "8"])!,
      /^--lr-warmup-samples 8 counts samples, and this run counts iterations/,
    );
    match(check(["--train-samples", "1"])!, /less than one global batch \(2, --micro-batch-size/);
    // Megatron's zeros of the other count stand beside either.
    equal(check(["--train-samples", "40", "--lr-warmup-iters", "0"]), null);
    equal(check(["--lr-warmup-samples", "0", "--lr-warmup-fraction", "0.1"]), null);
    equal(
      check(["--train-samples", "40", "--lr-warmup-samples", "0", "--lr-warmup-fraction", "0.1"]),
      null,
    );
  },
});

Deno.test({
  name:
    "--train-samples with --load: resumed exactly, the schedule and batch adopted or refused; the count of an iteration checkpoint is refused unless overridden",
  timeout: 300_000,
  fn: async () => {
    await using temp = await tempDir({ prefix: "train-samples-" });
    const dir = temp.path;
    const ck = `${dir}/ck`;
    const schedule = [
      ...["--global-batch-size", "8", "--lr-warmup-samples", "12"],
      ...["--lr-decay-samples", "36", "--lr-decay-style", "linear"],
    ];
    const whole = await train([
      ...schedule,
      ...["--train-samples", "40", "--save", ck, "--save-interval", "3"],
      ...["--log-json", `${dir}/whole.jsonl`],
    ]);
    succeeded(whole);
    const w = await records(`${dir}/whole.jsonl`);
    const meta = JSON.parse(await Deno.readTextFile(`${ck}/iter_0000003/checkpoint.json`));
    const args = meta.state.args;
    equal(args["lr-decay-samples"], 36);
    equal(args["lr-warmup-samples"], 12);
    equal(args["train-samples"], 40);
    equal(args["global-batch-size"], 8);
    ok(!("lr-decay-iters" in args) && !("lr-warmup-iters" in args), JSON.stringify(args));
    equal(meta.state.consumedSamples, 24);

    const resume = (log: string, ...extra: string[]) =>
      train(["--load", ck, "--iteration", "3", "--log-json", `${dir}/${log}`, ...extra]);
    // Given again, to a longer end: iterations 4 and 5 as before, 6 past the decay (40 > 36).
    const given = await resume("given.jsonl", ...schedule, "--train-samples", "48");
    succeeded(given);
    const g = await records(`${dir}/given.jsonl`);
    deepStrictEqual(iterations(g), [4, 5, 6]);
    deepStrictEqual(g.slice(0, 2).map((r) => r.loss), w.slice(3).map((r) => r.loss));
    deepStrictEqual(g.slice(0, 2).map((r) => r.lr), w.slice(3).map((r) => r.lr));
    equal(g[2].lr, 0.001);
    // Not given (nor the batch, which would default to 2 here): all adopted.
    const adopted = await resume("adopted.jsonl");
    succeeded(adopted);
    match(adopted.stdout, /training: 5 steps × 8 sequences \(--train-samples 40\)/);
    const a = await records(`${dir}/adopted.jsonl`);
    deepStrictEqual(iterations(a), [4, 5]);
    deepStrictEqual(a.map((r) => r.loss), w.slice(3).map((r) => r.loss));
    deepStrictEqual(a.map((r) => r.lr), w.slice(3).map((r) => r.lr));
    // Ranks that parse the flags again (two Workers, DP=2) get the adopted schedule and batch.
    const workers = await resume("workers.jsonl", "--nproc-per-node", "2");
    succeeded(workers);
    match(workers.stdout, /training: 5 steps × 8 sequences \(--train-samples 40\)/);
    deepStrictEqual(
      (await records(`${dir}/workers.jsonl`)).map((r) => r.lr),
      w.slice(3).map((r) => r.lr),
    );

    // Disagreeing with the saved schedule, batch or count: refused.
    refused(
      await resume("x.jsonl", "--lr-decay-samples", "40"),
      /--lr-decay-samples 40 disagrees with the checkpoint .*iter_0000003 \(iteration 3\) \(lr-decay-samples 36\); drop the flag to continue its learning-rate schedule, or add --override-opt-param-scheduler/,
    );
    refused(
      await resume("x.jsonl", "--global-batch-size", "16"),
      /--global-batch-size 16 disagrees with the checkpoint .* \(global batch 8\); a schedule counted in samples is followed here in updates of 8 samples/,
    );
    refused(
      await resume("x.jsonl", "--train-iters", "5"),
      /--train-iters 5 disagrees with the checkpoint .* \(a schedule counted in samples: lr-decay-samples 36\); resume it counted in samples \(--train-samples; .*\), or add --override-opt-param-scheduler and the run.s length as --train-iters N to replace the schedule with one counted in iterations/,
    );

    // A checkpoint counted in iterations, resumed with a schedule in samples.
    const ck2 = `${dir}/ck2`;
    succeeded(
      await train([
        ...["--global-batch-size", "8", "--train-iters", "3", "--lr-decay-iters", "3"],
        ...["--save", ck2],
      ]),
    );
    const samples = ["--train-samples", "40", "--lr-decay-samples", "36"];
    const inSamples = (...extra: string[]) =>
      train(["--load", ck2, "--log-json", `${dir}/over.jsonl`, ...samples, ...extra]);
    refused(
      await inSamples(),
      /--train-samples 40 disagrees with the checkpoint .*iter_0000003 \(iteration 3\) \(a schedule counted in iterations: lr-decay-iters 3\); resume it counted in iterations .*, or add --override-opt-param-scheduler and the run.s length as --train-samples S to replace the schedule with one counted in samples/,
    );
    const over = await inSamples("--override-opt-param-scheduler");
    succeeded(over);
    const o = await records(`${dir}/over.jsonl`);
    deepStrictEqual(iterations(o), [4, 5]);
    // The command line's schedule: no warm-up (Megatron's default), decay over 36 samples,
    // counted from the checkpoint's 24 samples; cosine, the default style.
    assertMegatronLrs(o, 8, {
      maxLr: 0.01,
      minLr: 0.001,
      initLr: 0,
      warmupSteps: 0,
      decaySteps: 36,
      style: "cosine",
    });
  },
});

Deno.test({
  name: "--train-samples: nodes started with another --lr-decay-samples are refused, naming it",
  timeout: 120_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      const common = [...tiny, "--data-path", `${dir}/data.txt`, "--train-samples", "8"];
      const { results: [n0, n1] } = await twoLocalNodes(dir, [
        [...common, "--lr-decay-samples", "8"],
        [...common, "--lr-decay-samples", "4"],
      ]);
      for (const r of [n0, n1]) strictEqual(r.code, 2, r.stderr);
      match(
        n0.stderr,
        /the ranks were started with different flags: --lr-decay-samples 8 on rank 0, 4 on rank 1\./,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
