/**
 * `deno task train` as a user meets it: bad input gets a clear error before any
 * training starts, and a run stopped at a checkpoint and resumed gives the same
 * losses as the uninterrupted run (bitwise: the kernels are deterministic); two
 * runs never save to one directory at once.
 */

import { deepStrictEqual, doesNotMatch, match, strictEqual } from "node:assert/strict";
import { logLockPath, SAVE_LOCK_FILE } from "../cli/save_lock.ts";
import { globalBatchChange, scheduleWarning } from "../cli/train_run.ts";
import { jsonlLosses, runCli, startCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const tiny = [
  ...TINY_RUN_FLAGS,
];

async function expectError(args: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await runCli("cli/train.ts", args);
  strictEqual(r.code, code, `exit code for ${args.join(" ")}: ${r.stderr}`);
  match(r.stderr, pattern);
  if (/iteration\s+1\//.test(r.stdout)) throw new Error("training started despite bad input");
}

Deno.test("train: clear errors before any work", async () => {
  await expectError(["--no-such-flag"], 2, /Unknown option '--no-such-flag'/);
  await expectError(
    ["--hidden-size", "30", "--num-attention-heads", "4"],
    2,
    /--hidden-size 30 is not divisible by --num-attention-heads 4/,
  );
  await expectError(
    ["--seq-length", "80", "--max-position-embeddings", "64"],
    2,
    /--seq-length 80 is longer than the position table/,
  );
  await expectError(["--num-layers", "two"], 2, /--num-layers expects an integer/);
  await expectError(
    ["--tp", "2", "--nproc-per-node", "3"],
    2,
    /world size 3 .* not divisible by --tensor-model-parallel-size 2/,
  );
  await expectError(
    ["--tp", "2", "--nproc-per-node", "2", "--num-attention-heads", "3", "--hidden-size", "48"],
    2,
    /--num-attention-heads 3 is not divisible by the tensor-parallel size 2/,
  );
  await expectError(
    [...tiny, "--data-path", "/nonexistent/corpus.txt"],
    1,
    /does not exist|not found|No such file/i,
  );
  const empty = await Deno.makeTempFile({ suffix: ".txt" });
  await expectError([...tiny, "--data-path", empty], 1, /empty/i);
  await Deno.remove(empty);
});

Deno.test("train: --help lists the Megatron flags", async () => {
  const r = await runCli("cli/train.ts", ["--help"]);
  strictEqual(r.code, 0);
  for (
    const flag of [
      "--num-layers",
      "--global-batch-size",
      "--lr-decay-style",
      "--tensor-model-parallel-size",
      "--save",
    ]
  ) {
    match(r.stdout, new RegExp(flag));
  }
});

Deno.test("every CLI's --help needs no permission (a module run by URL, with no flags)", async () => {
  // train's distributed flags read the environment, and $WEBGPU_BACKEND is --backend's default:
  // --help is answered before either (it failed with "Requires env access").
  const usage = (name: string) => new RegExp(`^Usage: deno task ${name}`);
  const cases: [string, string[], RegExp][] = [
    ["train", [], usage("train")],
    ["train", ["--nproc-per-node", "2"], usage("train")],
    ["eval", [], usage("eval")],
    ["generate", [], usage("generate")],
    ["fill_mask", [], usage("fill-mask")],
    ["profile", [], usage("profile")],
    ["preprocess", [], usage("preprocess")],
    ["export_hf", [], usage("export-hf")],
    ["plot", [], usage("plot")],
    ["info", [], usage("info")],
  ];
  for (const [cli, extra, says] of cases) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--unstable-webgpu",
        new URL(`../cli/${cli}.ts`, import.meta.url).href,
        ...extra,
        "--help",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    strictEqual(out.code, 0, `${cli}: ${new TextDecoder().decode(out.stderr)}`);
    match(new TextDecoder().decode(out.stdout), says, cli);
  }
});

Deno.test("train: fused attention trains a micro-batch whose unfused scores would pass one binding", async () => {
  // 20 sequences × 2 heads × 1024² f32 scores are 160 MiB, past the 128 MiB binding: refused
  // before, as if the fused kernels (the default) held them; they hold O(seq) per head.
  const args = [
    ...TINY_RUN_FLAGS,
    ...["--seq-length", "1024", "--max-position-embeddings", "1024", "--micro-batch-size", "20"],
    ...["--train-iters", "1", "--eval-iters", "0", "--hidden-dropout", "0"],
  ];
  const fused = await runCli("cli/train.ts", args);
  strictEqual(fused.code, 0, fused.stderr);
  match(fused.stdout, /iteration\s+1\/\s*1 /);
  const unfused = await runCli("cli/train.ts", [...args, "--no-flash-attn"]);
  strictEqual(unfused.code, 1, unfused.stderr);
  match(unfused.stderr, /--micro-batch-size 20 is too large for this adapter at --seq-length 1024/);
});

Deno.test("train: stop at a checkpoint and resume gives the same losses", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const args = [...tiny, "--train-iters", "4", "--eval-interval", "100", "--lr-warmup-iters", "1"];
  const full = await runCli("cli/train.ts", [
    ...args,
    "--save",
    `${dir}/a`,
    "--save-interval",
    "2",
    "--log-json",
    `${dir}/a.jsonl`,
  ]);
  strictEqual(full.code, 0, full.stderr);
  doesNotMatch(full.stdout, /learning rate: the default warm-up/); // --lr-warmup-iters 1 < 4
  // Keep only the iteration-2 checkpoint, as if the run had been killed after it.
  await Deno.remove(`${dir}/a/iter_0000004`, { recursive: true });
  await Deno.writeTextFile(`${dir}/a/latest`, "2\n");
  const resumed = await runCli("cli/train.ts", [
    ...args,
    "--load",
    `${dir}/a`,
    "--log-json",
    `${dir}/b.jsonl`,
  ]);
  strictEqual(resumed.code, 0, resumed.stderr);
  match(resumed.stdout, /loaded .*iteration 2/);
  const a = jsonlLosses(await Deno.readTextFile(`${dir}/a.jsonl`));
  const b = jsonlLosses(await Deno.readTextFile(`${dir}/b.jsonl`));
  deepStrictEqual(b, a.slice(2));
});

Deno.test("train: a run resumed with another batch size counts on from the checkpoint's consumed samples", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const noBatch = tiny.filter((f, i) =>
    f !== "--micro-batch-size" && tiny[i - 1] !== "--micro-batch-size"
  );
  const args = [...noBatch, "--eval-interval", "100", "--save", `${dir}/c`];
  const first = await runCli("cli/train.ts", [
    ...args,
    "--train-iters",
    "3",
    "--micro-batch-size",
    "4",
  ]);
  strictEqual(first.code, 0, first.stderr);
  // 3 steps under the default warm-up of 30: said once, at the start.
  match(
    first.stdout,
    /learning rate: the default warm-up of 30 steps is not shorter than the decay \(3 steps\): the rate rises toward --lr 0\.003 for the whole run and never decays/,
  );
  const resumed = await runCli("cli/train.ts", [
    ...args,
    "--train-iters",
    "5",
    "--micro-batch-size",
    "2",
    "--load",
    `${dir}/c`,
    "--log-json",
    `${dir}/c.jsonl`,
  ]);
  strictEqual(resumed.code, 0, resumed.stderr);
  // 3 steps of 4 sequences, then 2 of 2: 16 sequences, not 5 × 2.
  match(resumed.stdout, /iteration\s+5\/\s+5 \| consumed samples:\s+16 \|/);
  const saved = JSON.parse(await Deno.readTextFile(`${dir}/c/iter_0000005/checkpoint.json`));
  strictEqual(saved.state.consumedSamples, 16);
  const T = Number(tiny[tiny.indexOf("--seq-length") + 1]);
  strictEqual(saved.state.consumedTokens, 16 * T);
  const last = (await Deno.readTextFile(`${dir}/c.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  strictEqual(last[last.length - 1].consumed_tokens, 16 * T);
});

Deno.test("train: --eval-iters 0 trains on all the data with no validation", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const noEval = tiny.filter((f, i) => f !== "--eval-iters" && tiny[i - 1] !== "--eval-iters");
  const r = await runCli("cli/train.ts", [
    ...noEval,
    "--eval-iters",
    "0",
    "--val-fraction",
    "0",
    "--train-iters",
    "3",
    "--eval-interval",
    "1",
    "--log-json",
    `${dir}/log.jsonl`,
  ]);
  strictEqual(r.code, 0, r.stderr);
  match(r.stdout, /train \/ 0 validation tokens\n/);
  match(r.stdout, /\| validation: off \(--eval-iters 0\)/);
  match(r.stdout, /iteration\s+3\/\s+3 \|/);
  match(r.stdout, /no validation \(--eval-iters 0\)/);
  strictEqual(/validation loss/.test(r.stdout), false, r.stdout);
  const records = (await Deno.readTextFile(`${dir}/log.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  strictEqual(records.some((x) => "val_loss" in x), false);
});

Deno.test("train: validation data shorter than --eval-iters says so", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  await Deno.writeTextFile(`${dir}/data.txt`, "It was the best of times. ".repeat(40));
  const noEval = tiny.filter((f, i) => f !== "--eval-iters" && tiny[i - 1] !== "--eval-iters");
  const r = await runCli("cli/train.ts", [
    ...noEval,
    ...["--data-path", `${dir}/data.txt`, "--eval-iters", "500", "--train-iters", "1"],
  ]);
  strictEqual(r.code, 0, r.stderr);
  // It ran fewer batches than asked without a word.
  match(
    r.stdout,
    /\| validation: \d+ batch(es)? of 2 \(all the validation data holds; --eval-iters 500 × 2 sequences\)/,
  );
});

Deno.test("train: --launcher procs (one process per rank) gives the Workers run's losses", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const text = "It was the best of times, it was the worst of times. ".repeat(80);
  await Deno.writeTextFile(`${dir}/data.txt`, text);
  const args = [
    ...tiny,
    "--train-iters",
    "3",
    "--eval-interval",
    "100",
    "--data-path",
    `${dir}/data.txt`,
    "--tp",
    "2",
    "--nproc-per-node",
    "2",
    "--backend",
    "deno",
  ];
  const workers = await runCli(
    "cli/train.ts",
    [...args, "--log-json", `${dir}/w.jsonl`],
  );
  strictEqual(workers.code, 0, workers.stderr);
  const procs = await runCli(
    "cli/train.ts",
    [...args, "--launcher", "procs", "--log-json", `${dir}/p.jsonl`],
  );
  strictEqual(procs.code, 0, procs.stderr);
  const w = jsonlLosses(await Deno.readTextFile(`${dir}/w.jsonl`));
  deepStrictEqual(jsonlLosses(await Deno.readTextFile(`${dir}/p.jsonl`)), w);
  strictEqual(w.length, 3);
});

Deno.test("train: a resumed run whose global batch is not its checkpoint's says so", () => {
  strictEqual(globalBatchChange(5, 40, 8), null);
  match(
    globalBatchChange(5, 40, 4) ?? "",
    /the checkpoint's 5 iterations took 8 sequences each; this run takes 4/,
  );
  strictEqual(globalBatchChange(5, 42, 4), null); // a batch changed before: no one size to name
  strictEqual(globalBatchChange(0, 0, 4), null);
});

Deno.test("train: the schedule's warning fits where the run starts", () => {
  const sched = { lr: 3e-3, minLr: 3e-4, warmupIters: 30, decayIters: 30 };
  // From the start: the default warm-up outlasts the decay.
  match(scheduleWarning(sched, 1) ?? "", /rises toward --lr 0\.003 for the whole run/);
  // Resumed past the decay's end: every step at the final rate (it said "rises" here too).
  match(
    scheduleWarning(sched, 31) ?? "",
    /starts at iteration 31, past the end of the schedule's decay \(30 steps\): every step runs at --min-lr 0\.0003/,
  );
  strictEqual(scheduleWarning({ ...sched, decayIters: 100 }, 31), null);
  // An fp16 run whose first 17 steps overflowed: its schedule is 13 updates in, not 30, so
  // still within the warm-up, which outlasts the decay.
  match(
    scheduleWarning(sched, 31, 13) ?? "",
    /starts at iteration 31, within a warm-up of 30 steps that is not shorter than the decay \(30 steps\): the rate rises toward --lr 0\.003 until step 30, then runs at --min-lr 0\.0003/,
  );
  strictEqual(scheduleWarning({ ...sched, warmupIters: 10 }, 31, 13), null);
  // A run of 5 steps (the default warm-up of 30 outlasting its decay) resumed at 6: still
  // warming up, as the logged rates show; it said every step ran at --min-lr.
  match(
    scheduleWarning({ ...sched, decayIters: 5 }, 6) ?? "",
    /starts at iteration 6, within a warm-up of 30 steps .*\(5 steps\): the rate rises/,
  );
  match(
    scheduleWarning(sched, 48, 30) ?? "",
    /starts at iteration 48 \(its schedule at step 30: skipped steps do not count\), past the end/,
  );
  strictEqual(scheduleWarning({ ...sched, style: "constant" }, 31), null);
});

Deno.test("train: one run at a time per --save directory; a dead run's lock is taken over", async () => {
  await using temp = await tempDir({ prefix: "save_lock-" });
  const dir = temp.path;
  const lock = `${dir}/${SAVE_LOCK_FILE}`;
  // A live holder on this host: another process (a sleep stands in for a training run), whose
  // lock is written after it started, as a run writes its own.
  const holder = new Deno.Command("sleep", { args: ["60"] }).spawn();
  const held = { pid: holder.pid, host: Deno.hostname(), started: new Date().toISOString() };
  await Deno.writeTextFile(lock, JSON.stringify(held));
  const args = [...tiny, "--train-iters", "2", "--save", dir];
  const refused = await runCli("cli/train.ts", args);
  strictEqual(refused.code, 2, refused.stderr);
  match(refused.stderr, new RegExp(`--save .* is in use by another run \\(pid ${holder.pid} on `));
  if (/iteration\s+1\//.test(refused.stdout)) throw new Error("training started despite the lock");
  // Its holder dies (as a run killed with SIGKILL leaves its file behind): the next run takes it.
  holder.kill("SIGKILL");
  await holder.status;
  const taken = await runCli("cli/train.ts", args);
  strictEqual(taken.code, 0, taken.stderr);
  match(taken.stdout, /saved checkpoint at iteration 2/);
  // Released at the end, a multi-rank run's too (its launcher ends with Deno.exit).
  await Deno.stat(lock).then(() => {
    throw new Error(`${lock} left behind`);
  }, () => {});
  // (Into a directory of its own: this one now holds the run's checkpoints.)
  const workers = await runCli("cli/train.ts", [
    ...tiny,
    "--train-iters",
    "2",
    "--save",
    `${dir}/workers`,
    "--nproc-per-node",
    "2",
    "--tp",
    "2",
  ]);
  strictEqual(workers.code, 0, workers.stderr);
  await Deno.stat(`${dir}/workers/${SAVE_LOCK_FILE}`).then(() => {
    throw new Error(`${lock} left behind by a multi-rank run`);
  }, () => {});
});

Deno.test("train: one run at a time per --log-json log (two tore its lines, without a word)", async () => {
  await using temp = await tempDir({ prefix: "log_lock-" });
  const log = `${temp.path}/log.jsonl`;
  const first = startCli("cli/train.ts", [...tiny, "--train-iters", "100000", "--log-json", log]);
  await first.waitFor(/iteration\s+1\/\s*100000/);
  const second = await runCli("cli/train.ts", [...tiny, "--train-iters", "2", "--log-json", log]);
  strictEqual(second.code, 2, second.stderr);
  match(second.stderr, new RegExp(`--log-json .* is in use by another run \\(pid \\d+ on `));
  first.kill("SIGTERM");
  const r = await first.done();
  strictEqual(r.code, 143, r.stderr);
  // Every line whole, every iteration once; the lock gone with its run.
  const records = (await Deno.readTextFile(log)).trim().split("\n").map((l) => JSON.parse(l));
  const iterations = records.filter((x) => x.type !== "header").map((x) => x.iteration);
  deepStrictEqual(iterations, Array.from({ length: iterations.length }, (_, i) => i + 1));
  await Deno.stat(logLockPath(log)).then(() => {
    throw new Error(`${logLockPath(log)} left behind`);
  }, () => {});
});

Deno.test("train: --log-json into a named pipe gives its reader every record", async () => {
  // The path check's test open ended the reader's stream, and the run's own open then blocked.
  await using temp = await tempDir({ prefix: "log_fifo-" });
  const fifo = `${temp.path}/log`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  strictEqual(made.code, 0);
  const reading = Deno.readTextFile(fifo); // opens when the run opens it, reads to its end
  const r = await runCli(
    "cli/train.ts",
    [...tiny, "--train-iters", "3", "--log-json", fifo],
    undefined,
    {
      timeoutMs: 60_000,
    },
  );
  strictEqual(r.code, 0, r.stderr);
  const records = (await reading).trim().split("\n").map((l) => JSON.parse(l));
  deepStrictEqual(records.filter((x) => x.type !== "header").map((x) => x.iteration), [1, 2, 3]);
});

Deno.test("train: two one-node --launcher procs jobs at once both train (each picks a free port)", async () => {
  const job = (seed: string) =>
    runCli("cli/train.ts", [
      ...tiny,
      "--train-iters",
      "3",
      "--seed",
      seed,
      "--nproc-per-node",
      "2",
      "--tp",
      "2",
      "--launcher",
      "procs",
    ]);
  const [a, b] = await Promise.all([job("1"), job("2")]);
  strictEqual(a.code, 0, a.stderr);
  strictEqual(b.code, 0, b.stderr);
  match(a.stdout, /iteration\s+3\/\s+3/);
  match(b.stdout, /iteration\s+3\/\s+3/);
});
