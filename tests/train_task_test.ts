/**
 * The training program's Megatron habits: `--use-checkpoint-args`, the tracker
 * file `latest_checkpointed_iteration.txt`, `--split`, `--train-data-path` with
 * `--valid-data-path`, validation batches split over data-parallel ranks, the
 * flags a pasted Megatron script carries (cli/megatron_flags.ts), and BERT's
 * steps equal however one global batch is split into micro-batches and ranks.
 */

import { deepEqual, equal, match, ok, strictEqual } from "node:assert/strict";
import {
  gpt2VocabFiles,
  makeRunDir,
  runCli,
  TINY_MODEL_FLAGS,
  TINY_RUN_FLAGS,
} from "./cli_helpers.ts";
import { megatronGetLr, type MegatronLrOptions } from "./megatron_lr.ts";
import { tempDir } from "./temp_dir.ts";

const tiny = [
  ...TINY_RUN_FLAGS,
  "--eval-interval",
  "100",
];

function records(jsonl: string): Record<string, number>[] {
  return jsonl.trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.type !== "header");
}

/** `train --load DIR --use-checkpoint-args` to iteration 3, no model flag repeated. */
function resumeWithCheckpointArgs(dir: string, ...extra: string[]) {
  return runCli("cli/train.ts", [
    "--load",
    dir,
    "--use-checkpoint-args",
    "--train-iters",
    "3",
    "--eval-iters",
    "1",
    "--sample-tokens",
    "0",
    ...extra,
  ]);
}

Deno.test("train: an fp16 run whose every step overflows says so; a BERT log header names WordPiece, not GPT's flags", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  // 1e37 × the loss overflows fp16 in every gradient: every step is skipped.
  const skipped = await runCli("cli/train.ts", [
    ...tiny,
    "--train-iters",
    "3",
    "--fp16",
    "--loss-scale",
    "1e37",
  ]);
  strictEqual(skipped.code, 0, skipped.stderr);
  match(
    skipped.stdout,
    /trained 3 steps in [\d.]+ s \(3 of them skipped, their gradients past fp16's range at the loss scale: the weights did not change\)/,
  );
  const bert = await runCli("cli/train.ts", [
    ...TINY_MODEL_FLAGS,
    "--model",
    "bert",
    "--train-iters",
    "1",
    "--eval-iters",
    "1",
    "--log-json",
    `${dir}/bert.jsonl`,
  ]);
  strictEqual(bert.code, 0, bert.stderr);
  const header = JSON.parse((await Deno.readTextFile(`${dir}/bert.jsonl`)).split("\n")[0]);
  equal(header.config.tokenizer, "bert");
  for (const n of ["prompt", "sample-tokens", "temperature", "loss-scale-window"]) {
    ok(!(n in header.config), n);
  }
});

Deno.test("train: a resume given no dropout flags keeps the checkpoint's dropout (it took the default 0.1)", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const noDropout = ["--hidden-dropout", "0", "--attention-dropout", "0"];
  const whole = await runCli("cli/train.ts", [
    ...tiny,
    ...noDropout,
    ...["--train-iters", "4", "--log-json", `${dir}/whole.jsonl`],
  ]);
  strictEqual(whole.code, 0, whole.stderr);
  const first = await runCli("cli/train.ts", [
    ...tiny,
    ...noDropout,
    ...["--train-iters", "4", "--exit-interval", "2", "--save", `${dir}/ck`],
  ]);
  strictEqual(first.code, 0, first.stderr);
  const resumed = await runCli("cli/train.ts", [
    ...tiny,
    ...["--load", `${dir}/ck`, "--train-iters", "4", "--log-json", `${dir}/resumed.jsonl`],
  ]);
  strictEqual(resumed.code, 0, resumed.stderr);
  const header = JSON.parse((await Deno.readTextFile(`${dir}/resumed.jsonl`)).split("\n")[0]);
  deepEqual([header.config["hidden-dropout"], header.config["attention-dropout"]], [0, 0]);
  const losses = async (f: string) =>
    records(await Deno.readTextFile(`${dir}/${f}`)).map((r) => r.loss);
  deepEqual(await losses("resumed.jsonl"), (await losses("whole.jsonl")).slice(2));
});

Deno.test("train: --load continues the saved learning-rate schedule; a disagreeing flag is refused unless overridden", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const schedule = ["--lr", "0.001", "--min-lr", "0.0001", "--lr-warmup-iters", "1"];
  const first = await runCli("cli/train.ts", [
    ...tiny,
    ...schedule,
    "--train-iters",
    "4",
    "--save",
    `${dir}/ck`,
    "--save-interval",
    "2",
  ]);
  strictEqual(first.code, 0, first.stderr);
  const meta = JSON.parse(await Deno.readTextFile(`${dir}/ck/iter_0000004/checkpoint.json`));
  equal(meta.state.args["lr"], 0.001);
  equal(meta.state.args["lr-decay-iters"], 4);
  // Resumed to 6 without the schedule's flags: decayed at 4, the rest at --min-lr (the
  // defaults, lr 3e-3 warmed up over 30 steps, would give 4e-4 at iteration 5).
  const resume = (...extra: string[]) =>
    runCli("cli/train.ts", [
      ...tiny,
      "--load",
      `${dir}/ck`,
      "--train-iters",
      "6",
      "--log-json",
      `${dir}/log.jsonl`,
      ...extra,
    ]);
  const resumed = await resume();
  strictEqual(resumed.code, 0, resumed.stderr);
  const lrs = records(await Deno.readTextFile(`${dir}/log.jsonl`)).map((r) => r.lr);
  equal(lrs.length, 2);
  for (const lr of lrs) ok(Math.abs(lr - 1e-4) < 1e-12, `lr ${lr}`);
  const disagree = await resume("--lr", "0.1");
  strictEqual(disagree.code, 2, disagree.stderr);
  match(
    disagree.stderr,
    /--lr 0\.1 disagrees with the checkpoint .*\(lr 0\.001\); drop the flag to continue its learning-rate schedule, or add --override-opt-param-scheduler/,
  );
  await Deno.remove(`${dir}/log.jsonl`);
  const overridden = await resume("--lr", "0.1", "--override-opt-param-scheduler");
  strictEqual(overridden.code, 0, overridden.stderr);
  // The command line's schedule: lr 0.1, min a tenth of it by default, 30 warm-up steps; iteration 5
  // applies the fifth update, Megatron's lr·4/30.
  const first5 = records(await Deno.readTextFile(`${dir}/log.jsonl`))[0].lr;
  ok(Math.abs(first5 - 0.1 * 4 / 30) < 1e-9, `lr ${first5}`);
  // An earlier saved iteration, as eval and export-hf take it.
  const earlier = await resume("--iteration", "2");
  strictEqual(earlier.code, 0, earlier.stderr);
  match(earlier.stdout, /loaded .*iter_0000002 \(iteration 2\)/);
  match(earlier.stdout, /iteration\s+3\/\s*6/);
  // A checkpoint written before checkpoints kept their schedule (before 2026-12-05): the command
  // line's is used, and said so (the defaults were taken silently, and a warning said "as saved").
  const file = `${dir}/ck/iter_0000004/checkpoint.json`;
  const aged = JSON.parse(await Deno.readTextFile(file));
  for (const k of Object.keys(aged.state.args)) {
    if (k.startsWith("lr") || k === "min-lr") delete aged.state.args[k];
  }
  await Deno.writeTextFile(file, JSON.stringify(aged));
  const old = await resume();
  strictEqual(old.code, 0, old.stderr);
  match(
    old.stderr,
    /warning: the checkpoint .*iter_0000004 \(iteration 4\) records no learning-rate schedule \(written by an older version\): this run uses the command line's/,
  );
  ok(!/as saved/.test(old.stderr), old.stderr);
});

Deno.test("train: Megatron's WSD and inverse-square-root styles follow its get_lr step by step and resume; a low --lr decays to a tenth of it", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const G = 2; // TINY_MODEL_FLAGS' micro-batch, one rank: Megatron's scheduler steps G samples
  const run = (log: string, ...extra: string[]) =>
    runCli("cli/train.ts", [
      ...tiny,
      "--log-json",
      `${dir}/${log}`,
      "--optimizer",
      "adam",
      ...extra,
    ]);
  const lrs = async (log: string) =>
    records(await Deno.readTextFile(`${dir}/${log}`)).map((r) => r.lr);
  const megatron = (o: Partial<MegatronLrOptions>, from: number, n: number) =>
    Array.from({ length: n }, (_, i) =>
      megatronGetLr((from + i) * G, {
        maxLr: 1e-3,
        minLr: 1e-4,
        initLr: 0,
        warmupSteps: G,
        decaySteps: 6 * G,
        style: "WSD",
        ...o,
      }));
  const close = (got: number[], want: number[], what: string) => {
    equal(got.length, want.length, what);
    got.forEach((g, i) => ok(Math.abs(g - want[i]) <= 1e-15 + 1e-12 * want[i], `${what} ${i}`));
  };
  // WSD: warm-up 1, stable, the last 3 of a 6-iteration decay annealing linearly to --min-lr, which
  // is --lr / 10 when not given; saved, and continued by a resume that names none of it.
  const wsd = ["--lr", "0.001", "--lr-warmup-iters", "1", "--lr-decay-style", "WSD"];
  const first = await run(
    "wsd.jsonl",
    ...wsd,
    ...["--lr-wsd-decay-iters", "3", "--lr-wsd-decay-style", "linear", "--train-iters", "4"],
    ...["--lr-decay-iters", "6"],
    ...["--save", `${dir}/ck`],
  );
  strictEqual(first.code, 0, first.stderr);
  close(
    await lrs("wsd.jsonl"),
    megatron({ wsdDecaySteps: 3 * G, wsdStyle: "linear" }, 0, 4),
    "WSD",
  );
  const header = JSON.parse((await Deno.readTextFile(`${dir}/wsd.jsonl`)).split("\n")[0]);
  equal(header.config["min-lr"], 1e-4);
  const meta = JSON.parse(await Deno.readTextFile(`${dir}/ck/iter_0000004/checkpoint.json`));
  deepEqual(
    [meta.state.args["lr-wsd-decay-style"], meta.state.args["lr-wsd-decay-iters"]],
    ["linear", 3],
  );
  const resumed = await runCli("cli/train.ts", [
    ...tiny,
    ...["--load", `${dir}/ck`, "--train-iters", "7", "--log-json", `${dir}/resumed.jsonl`],
  ]);
  strictEqual(resumed.code, 0, resumed.stderr);
  close(
    await lrs("resumed.jsonl"),
    megatron({ wsdDecaySteps: 3 * G, wsdStyle: "linear" }, 4, 3),
    "WSD resumed",
  );
  // Megatron's default annealing shape, exponential.
  const expo = await run("expo.jsonl", ...wsd, "--lr-wsd-decay-iters", "4", "--train-iters", "6");
  strictEqual(expo.code, 0, expo.stderr);
  close(await lrs("expo.jsonl"), megatron({ wsdDecaySteps: 4 * G }, 0, 6), "WSD exponential");
  // Inverse square root without a warm-up: Megatron's floor is one sample, 1/G of an update.
  const isr = await run(
    "isr.jsonl",
    ...["--lr", "0.001", "--min-lr", "0.0002", "--lr-warmup-iters", "0"],
    ...["--lr-decay-style", "inverse-square-root", "--train-iters", "6"],
  );
  strictEqual(isr.code, 0, isr.stderr);
  close(
    await lrs("isr.jsonl"),
    megatron({ style: "inverse-square-root", warmupSteps: 0, minLr: 2e-4 }, 0, 6),
    "inverse square root",
  );
  // A fine-tuning rate below the old fixed default --min-lr (3e-4) trains, decaying to 1e-6.
  const low = await run(
    "low.jsonl",
    "--lr",
    "1e-5",
    "--lr-warmup-iters",
    "0",
    "--train-iters",
    "2",
  );
  strictEqual(low.code, 0, low.stderr);
  const lowHeader = JSON.parse((await Deno.readTextFile(`${dir}/low.jsonl`)).split("\n")[0]);
  equal(lowHeader.config["min-lr"], 1e-6);
  close(await lrs("low.jsonl"), [1e-5, 1e-6 + 9e-6 * 0.5], "--lr 1e-5");
});

Deno.test("train: --use-checkpoint-args resumes with no model flags; the tracker file is written and read", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const first = await runCli("cli/train.ts", [...tiny, "--train-iters", "2", "--save", dir]);
  strictEqual(first.code, 0, first.stderr);
  equal((await Deno.readTextFile(`${dir}/latest_checkpointed_iteration.txt`)).trim(), "2");
  const meta = JSON.parse(await Deno.readTextFile(`${dir}/iter_0000002/checkpoint.json`));
  equal(meta.model.shape.ffnHiddenSize, 128);
  equal(meta.model.shape.kvChannels, 16);
  equal(meta.state.args["seq-length"], 16);

  // A Megatron-style directory: only the tracker file names the iteration.
  await Deno.remove(`${dir}/latest`);
  const resumed = await resumeWithCheckpointArgs(dir, "--micro-batch-size", "2");
  strictEqual(resumed.code, 0, resumed.stderr);
  match(resumed.stdout, /loaded .*iteration 2/);
  match(resumed.stdout, /1 layer, hidden 32, 2 heads, seq 16/);
  // The same command again, the checkpoint already at --train-iters: it is evaluated, not NaN.
  const again = await runCli("cli/train.ts", [
    "--load",
    dir,
    "--use-checkpoint-args",
    "--train-iters",
    "2",
    "--eval-iters",
    "1",
    "--sample-tokens",
    "0",
  ]);
  strictEqual(again.code, 0, again.stderr);
  match(again.stdout, /the checkpoint is at iteration 2, --train-iters 2: nothing to train/);
  match(again.stdout, /trained 0 steps/);
  match(again.stdout, /final validation loss \d+\.\d+ nats\/token/);

  const disagree = await runCli("cli/train.ts", [
    "--load",
    dir,
    "--use-checkpoint-args",
    "--hidden-size",
    "64",
  ]);
  strictEqual(disagree.code, 2, disagree.stderr);
  match(disagree.stderr, /--hidden-size 64 disagrees with the checkpoint .*hiddenSize 32/);
  const tok = await runCli("cli/train.ts", [
    "--load",
    dir,
    "--use-checkpoint-args",
    "--tokenizer",
    "gpt2",
  ]);
  strictEqual(tok.code, 2, tok.stderr);
  match(tok.stderr, /--tokenizer gpt2 disagrees with the checkpoint/);
  const noLoad = await runCli("cli/train.ts", ["--use-checkpoint-args"]);
  strictEqual(noLoad.code, 2);
  match(noLoad.stderr, /--use-checkpoint-args needs --load/);

  // eval takes the saved sequence length and tokenizer; an explicit flag wins.
  const text = `${dir}/eval.txt`;
  await Deno.writeTextFile(text, "It was the best of times, it was the worst. ".repeat(8));
  const ev = await runCli("cli/eval.ts", [
    "--load",
    dir,
    "--use-checkpoint-args",
    "--data-path",
    text,
  ]);
  strictEqual(ev.code, 0, ev.stderr);
  match(ev.stdout, /tokenizer byte\).*seq length 16/);
  const ev8 = await runCli("cli/eval.ts", [
    "--load",
    dir,
    "--use-checkpoint-args",
    "--seq-length",
    "8",
    "--data-path",
    text,
  ]);
  strictEqual(ev8.code, 0, ev8.stderr);
  match(ev8.stdout, /seq length 8/);
  const evNoLoad = await runCli("cli/eval.ts", [
    "--use-checkpoint-args",
    "--init-from-hf",
    dir,
    "--data-path",
    text,
  ]);
  strictEqual(evNoLoad.code, 2);
  match(evNoLoad.stderr, /--use-checkpoint-args takes the arguments from --load/);
});

Deno.test("train: --use-checkpoint-args resumes a model whose position table is longer than its sequence", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  // 64 is also --seq-length's default: the saved table must still be taken.
  const first = await runCli("cli/train.ts", [
    ...tiny,
    "--max-position-embeddings",
    "64",
    "--train-iters",
    "2",
    "--save",
    dir,
  ]);
  strictEqual(first.code, 0, first.stderr);
  const resumed = await resumeWithCheckpointArgs(dir);
  strictEqual(resumed.code, 0, resumed.stderr);
  match(resumed.stdout, /loaded .*iteration 2/);
  match(resumed.stdout, /seq 16/);
});

Deno.test("train: --split and --train-data-path/--valid-data-path", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const split = await runCli("cli/train.ts", [
    ...tiny,
    "--train-iters",
    "1",
    "--split",
    "949,50,1",
  ]);
  strictEqual(split.code, 0, split.stderr);
  match(split.stdout, /train \/ \d+ validation tokens \(\d+ test tokens held out, unused\)/);
  const both = await runCli("cli/train.ts", [...tiny, "--split", "98,2", "--val-fraction", "0.1"]);
  strictEqual(both.code, 2);
  match(both.stderr, /either --split or --val-fraction/);
  const bad = await runCli("cli/train.ts", [...tiny, "--split", "98,x"]);
  strictEqual(bad.code, 2);
  match(bad.stderr, /--split expects/);

  // nanoGPT's habit: a train.bin and a val.bin of uint16 ids (byte tokenizer here).
  const enc = new TextEncoder();
  const train = enc.encode("Call me Ishmael. Some years ago, never mind how long. ".repeat(20));
  const val = enc.encode("It was the best of times, it was the worst of times. ".repeat(4));
  await Deno.writeFile(`${dir}/train.bin`, new Uint8Array(Uint16Array.from(train).buffer));
  await Deno.writeFile(`${dir}/val.bin`, new Uint8Array(Uint16Array.from(val).buffer));
  const files = await runCli("cli/train.ts", [
    ...tiny,
    "--train-iters",
    "1",
    "--train-data-path",
    `${dir}/train.bin`,
    "--valid-data-path",
    `${dir}/val.bin`,
  ]);
  strictEqual(files.code, 0, files.stderr);
  match(files.stdout, new RegExp(`${train.length} train / ${val.length} validation tokens`));
  const lone = await runCli("cli/train.ts", [...tiny, "--valid-data-path", `${dir}/val.bin`]);
  strictEqual(lone.code, 2);
  match(lone.stderr, /--valid-data-path needs --train-data-path/);
  const missing = await runCli("cli/train.ts", [
    ...tiny,
    "--train-data-path",
    `${dir}/train.bin`,
    "--valid-data-path",
    `${dir}/nope.bin`,
  ]);
  strictEqual(missing.code, 1);
  match(missing.stderr, /nope\.bin.* does not exist \(--valid-data-path\)/);
});

Deno.test("train: data-parallel ranks split the validation batches; the loss is the single rank's", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  // No update (lr 0), so both runs evaluate the initial model on the same 3 global
  // batches of 4 sequences: one rank all 6 micro-batches of 2, or two ranks 3 + 3.
  const args = [
    ...TINY_MODEL_FLAGS,
    "--train-iters",
    "1",
    "--eval-iters",
    "3",
    "--lr",
    "0",
    "--min-lr",
    "0",
    "--sample-tokens",
    "0",
    "--global-batch-size",
    "4",
    "--backend",
    "deno",
  ];
  const one = await runCli("cli/train.ts", [...args, "--log-json", `${dir}/one.jsonl`]);
  strictEqual(one.code, 0, one.stderr);
  const two = await runCli(
    "cli/train.ts",
    [
      ...args,
      "--nproc-per-node",
      "2",
      "--log-json",
      `${dir}/two.jsonl`,
    ],
  );
  strictEqual(two.code, 0, two.stderr);
  match(
    two.stdout,
    /tensor 1 × data 2 .* validation: 6 batches of 2 split over the 2 data-parallel ranks/,
  );
  const a = records(await Deno.readTextFile(`${dir}/one.jsonl`)).at(-1)!.val_loss;
  const b = records(await Deno.readTextFile(`${dir}/two.jsonl`)).at(-1)!.val_loss;
  ok(Number.isFinite(a) && Number.isFinite(b), `${a} ${b}`);
  ok(Math.abs(a - b) < 1e-5 * Math.abs(a), `single rank ${a}, two DP ranks ${b}`);
});

Deno.test("train --model bert: a train and a valid text file; DP ranks split validation", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const para = (s: string) =>
    `${s} sailed at dawn. The sea was calm and grey. Birds followed the ship. ` +
    `Nobody spoke of the whale. The captain watched the horizon.\n\n`;
  await Deno.writeTextFile(`${dir}/train.txt`, para("The ship").repeat(30));
  await Deno.writeTextFile(`${dir}/valid.txt`, para("A boat").repeat(10));
  const args = [
    "--model",
    "bert",
    ...TINY_MODEL_FLAGS,
    "--train-iters",
    "1",
    "--eval-iters",
    "3",
    "--lr",
    "0",
    "--min-lr",
    "0",
    "--global-batch-size",
    "4",
    "--backend",
    "deno",
    "--train-data-path",
    `${dir}/train.txt`,
    "--valid-data-path",
    `${dir}/valid.txt`,
  ];
  const one = await runCli("cli/train.ts", [...args, "--log-json", `${dir}/one.jsonl`]);
  strictEqual(one.code, 0, one.stderr);
  match(one.stdout, /data: .*train\.txt \+ .*valid\.txt \| WordPiece/);
  const two = await runCli(
    "cli/train.ts",
    [
      ...args,
      "--nproc-per-node",
      "2",
      "--log-json",
      `${dir}/two.jsonl`,
    ],
  );
  strictEqual(two.code, 0, two.stderr);
  const a = records(await Deno.readTextFile(`${dir}/one.jsonl`)).at(-1)!.val_loss;
  const b = records(await Deno.readTextFile(`${dir}/two.jsonl`)).at(-1)!.val_loss;
  ok(Number.isFinite(a) && Math.abs(a - b) < 1e-5 * Math.abs(a), `single rank ${a}, DP 2 ${b}`);
});

Deno.test("train: a pasted Megatron script's flags: no-ops accepted, GPT-2's vocabulary files as --tokenizer gpt2; the warm-up fraction and start, init std and eps saved and continued on --load", async () => {
  const dir = await makeRunDir();
  try {
    const { vocab, merges } = await gpt2VocabFiles();
    await Deno.writeTextFile(`${dir}/gpt2-vocab.json`, vocab);
    await Deno.writeTextFile(`${dir}/gpt2-merges.txt`, merges);
    // What Megatron's example scripts pass that changes nothing here.
    const megatron = [
      ...["--vocab-file", `${dir}/gpt2-vocab.json`, "--merge-file", `${dir}/gpt2-merges.txt`],
      ...["--pipeline-model-parallel-size", "1", "--use-mcore-models"],
      ...["--attention-backend", "auto", "--position-embedding-type", "learned_absolute"],
      ...["--normalization", "LayerNorm", "--distributed-backend", "nccl"],
      ...["--no-masked-softmax-fusion", "--attention-softmax-in-fp32"],
      ...["--make-vocab-size-divisible-by", "128"],
    ];
    // A warm-up of 0.25 × 4 = 1 iteration from 2e-4, then cosine to 1e-4 at iteration 4.
    const schedule = [
      ...["--lr", "0.001", "--min-lr", "0.0001", "--lr-warmup-fraction", "0.25"],
      ...["--lr-warmup-init", "0.0002", "--init-method-std", "0.01", "--adam-eps", "1e-6"],
    ];
    const run = (...extra: string[]) =>
      runCli("cli/train.ts", [
        ...tiny,
        ...["--data-path", `${dir}/data.txt`, "--log-json", `${dir}/log.jsonl`],
        ...megatron,
        ...extra,
      ]);
    const lrs = async () => {
      const lines = (await Deno.readTextFile(`${dir}/log.jsonl`)).trim().split("\n");
      await Deno.remove(`${dir}/log.jsonl`);
      return {
        header: JSON.parse(lines[0]),
        lrs: records(lines.join("\n")).map((r) => r.lr),
      };
    };
    // Megatron's restartable pattern: --load and --save one empty directory (with the vocab
    // files this said "the checkpoint's tokenizer is byte" of a checkpoint not there).
    const first = await run(
      ...schedule,
      ...["--train-iters", "4", "--load", `${dir}/ck`, "--save", `${dir}/ck`],
    );
    strictEqual(first.code, 0, first.stderr);
    match(first.stdout, /tokenizer gpt2 \(vocab 50257, padded 50304\)/);
    const one = await lrs();
    equal(one.header.config.tokenizer, "gpt2");
    // Flags left out whose defaults follow from others, as the run resolved them.
    const c = one.header.config;
    deepEqual(
      [
        c["ffn-hidden-size"],
        c["max-position-embeddings"],
        c["global-batch-size"],
        c["lr-decay-iters"],
      ],
      [128, 16, 2, 4],
    );
    equal(c["data-path"], `${dir}/data.txt`);
    ok(c.backend === "dawn" || c.backend === "deno", c.backend);
    const want = [2e-4, 1e-3, 1e-4 + 9e-4 * 0.75, 1e-4 + 9e-4 * 0.25];
    one.lrs.forEach((lr, i) => ok(Math.abs(lr - want[i]) < 1e-12, `iteration ${i + 1}: lr ${lr}`));
    const meta = JSON.parse(await Deno.readTextFile(`${dir}/ck/iter_0000004/checkpoint.json`));
    equal(meta.state.args["lr-warmup-fraction"], 0.25);
    equal(meta.state.args["lr-warmup-init"], 0.0002);
    equal(meta.state.args["init-method-std"], 0.01);
    ok(!("lr-warmup-iters" in meta.state.args), "the warm-up is the fraction");

    // The same script again, longer: it resumes (decayed at 4: --min-lr after), and the next
    // checkpoint still says how its weights were drawn.
    const again = await run(
      ...schedule,
      ...["--train-iters", "6", "--load", `${dir}/ck`, "--save", `${dir}/ck`],
    );
    strictEqual(again.code, 0, again.stderr);
    for (const lr of (await lrs()).lrs) ok(Math.abs(lr - 1e-4) < 1e-12, `lr ${lr}`);
    const meta6 = JSON.parse(await Deno.readTextFile(`${dir}/ck/iter_0000006/checkpoint.json`));
    equal(meta6.state.args["init-method-std"], 0.01);

    // Without the schedule's flags: the checkpoint's (its warm-up fraction, not the default 30
    // iterations, which would still be warming up at 5 and 6).
    const resume = (...extra: string[]) =>
      run("--load", `${dir}/ck`, "--iteration", "4", "--train-iters", "6", ...extra);
    const adopted = await resume();
    strictEqual(adopted.code, 0, adopted.stderr);
    const two = await lrs();
    for (const lr of two.lrs) ok(Math.abs(lr - 1e-4) < 1e-12, `lr ${lr}`);
    equal(two.header.config["lr-warmup-fraction"], 0.25);
    ok(!("lr-warmup-iters" in two.header.config), "the fraction replaces it");
    equal(two.header.config["init-method-std"], 0.01);
    for (
      const [args, says] of [
        [
          ["--lr-warmup-iters", "2"],
          /--lr-warmup-iters 2 disagrees with the checkpoint .*\(lr-warmup-fraction 0\.25\); drop the flag to continue its learning-rate schedule, or add --override-opt-param-scheduler/,
        ],
        [
          ["--lr-warmup-init", "0.0005"],
          /--lr-warmup-init 0\.0005 disagrees with the checkpoint .*\(lr-warmup-init 0\.0002\)/,
        ],
        [
          ["--init-method-std", "0.02"],
          /--init-method-std 0\.02 disagrees with the checkpoint .*\(weights drawn with std 0\.01\); it sets the init of a fresh model only: drop it to resume/,
        ],
        [
          ["--tokenizer", "byte"],
          /--tokenizer byte disagrees with the checkpoint/,
        ],
      ] as const
    ) {
      const r = await resume(...args);
      strictEqual(r.code, 2, r.stderr);
      match(r.stderr, says);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train: --load continues AdamW's settings (eps, betas, weight decay); a refused command line or unreadable checkpoint leaves no --save directory", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const optimizer = ["--adam-eps", "1e-3", "--adam-beta2", "0.95", "--weight-decay", "0.05"];
  const common = [...tiny, "--hidden-dropout", "0", "--attention-dropout", "0"];
  const whole = await runCli("cli/train.ts", [
    ...common,
    ...optimizer,
    ...["--train-iters", "4", "--save", `${dir}/ck`, "--save-interval", "2"],
    ...["--log-json", `${dir}/whole.jsonl`],
  ]);
  strictEqual(whole.code, 0, whole.stderr);
  const resume = (...extra: string[]) =>
    runCli("cli/train.ts", [
      ...common,
      ...["--load", `${dir}/ck`, "--iteration", "2", "--train-iters", "4"],
      ...["--log-json", `${dir}/resumed.jsonl`],
      ...extra,
    ]);
  // Without the flags: the checkpoint's settings, so the same steps (eps 1e-8 changed them).
  const resumed = await resume();
  strictEqual(resumed.code, 0, resumed.stderr);
  const losses = (f: string) => records(Deno.readTextFileSync(`${dir}/${f}`)).map((r) => r.loss);
  equal(JSON.stringify(losses("resumed.jsonl")), JSON.stringify(losses("whole.jsonl").slice(2)));
  const other = await resume("--adam-eps", "1e-6");
  strictEqual(other.code, 2, other.stderr);
  match(
    other.stderr,
    /--adam-eps 0\.000001 disagrees with the checkpoint .*\(adam-eps 0\.001\); drop the flag to continue its optimizer, or add --override-opt-param-scheduler/,
  );
  strictEqual((await resume("--adam-eps", "1e-6", "--override-opt-param-scheduler")).code, 0);

  // Refused after the paths were checked: the --save directory is not left behind.
  const refused = await runCli("cli/train.ts", [
    ...tiny,
    ...["--adam-eps", "0", "--save", `${dir}/new`],
  ]);
  strictEqual(refused.code, 2, refused.stderr);
  equal(await Deno.stat(`${dir}/new`).then(() => true, () => false), false);
  // The same for a file the command line names that does not exist (a data error, exit 1).
  const missing = await runCli("cli/train.ts", [
    ...tiny,
    ...["--vocab-file", `${dir}/none.json`, "--merge-file", `${dir}/none.txt`],
    ...["--save", `${dir}/job`, "--load", `${dir}/job`],
  ]);
  strictEqual(missing.code, 1, missing.stderr);
  match(missing.stderr, /--vocab-file .*none\.json does not exist/);
  equal(await Deno.stat(`${dir}/job`).then(() => true, () => false), false);
  // And for a checkpoint the rank cannot read (a truncated file: exit 1 from the rank).
  await Deno.truncate(`${dir}/ck/iter_0000002/model_tp00.safetensors`, 1000);
  const unreadable = await runCli("cli/train.ts", [
    ...common,
    ...["--load", `${dir}/ck`, "--iteration", "2", "--train-iters", "4"],
    ...["--save", `${dir}/fresh/sub`],
  ]);
  strictEqual(unreadable.code, 1, unreadable.stderr);
  match(
    unreadable.stderr,
    /is 1000 bytes but checkpoint\.json says \d+ \(truncated or replaced file\)/,
  );
  equal(await Deno.stat(`${dir}/fresh`).then(() => true, () => false), false);
});

Deno.test("train: --load and --save the same empty directory start a restartable job; --load elsewhere must hold a checkpoint", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const job = (iters: string) =>
    runCli("cli/train.ts", [
      ...tiny,
      ...["--train-iters", iters, "--load", `${dir}/ck`, "--save", `${dir}/ck`],
    ]);
  const first = await job("2");
  strictEqual(first.code, 0, first.stderr);
  match(first.stderr, /warning: no checkpoint in .*\/ck yet: training from scratch/);
  equal(/loaded .*iter_/.test(first.stdout), false);
  const again = await job("3");
  strictEqual(again.code, 0, again.stderr);
  match(again.stdout, /loaded .*iter_0000002 \(iteration 2\)/);
  const elsewhere = await runCli("cli/train.ts", [
    ...tiny,
    ...["--train-iters", "2", "--load", `${dir}/typo`, "--save", `${dir}/ck2`],
  ]);
  strictEqual(elsewhere.code, 1, elsewhere.stderr);
  match(elsewhere.stderr, /typo: no checkpoint/);
});

for (const model of ["gpt", "bert"]) {
  Deno.test(`train --model ${model}: one global batch takes the same steps, and validates on the same rows, however it is split into micro-batches and ranks`, async () => {
    // BERT's MLM loss averages over masked tokens, whose count varies between
    // micro-batches (rows shorter than the sequence are padded): each micro-batch
    // divided by its own count, so accumulating 2 micro-batches of 2 rows gave
    // another step than 1 of 4 (loss 11.0466 against 11.0428 at step 1), and
    // DP 2 differed from DP 1 with accumulation. And --eval-iters counted
    // micro-batches, so the validation rows changed with the split.
    await using temp = await tempDir();
    const dir = temp.path;
    const base = [
      "--model",
      model,
      ...TINY_MODEL_FLAGS.filter((f, i, all) =>
        f !== "--micro-batch-size" && all[i - 1] !== "--micro-batch-size"
      ),
      ...["--seq-length", "48", "--global-batch-size", "4", "--train-iters", "3"],
      ...["--eval-iters", "2", "--eval-interval", "3", "--sample-tokens", "0"],
      ...["--hidden-dropout", "0", "--attention-dropout", "0"],
      ...["--lr-warmup-iters", "1", "--backend", "deno"],
    ];
    const layouts = [
      ["--micro-batch-size", "4"],
      ["--micro-batch-size", "2"],
      ["--micro-batch-size", "1"],
      ["--micro-batch-size", "1", "--nproc-per-node", "2"],
    ];
    const runs: Record<string, number>[][] = [];
    for (const [k, layout] of layouts.entries()) {
      const log = `${dir}/run${k}.jsonl`;
      const r = await runCli("cli/train.ts", [...base, ...layout, "--log-json", log]);
      strictEqual(r.code, 0, r.stderr);
      runs.push(records(await Deno.readTextFile(log)));
    }
    for (const [k, run] of runs.entries()) {
      equal(run.length, 3);
      for (const [i, rec] of run.entries()) {
        const want = runs[0][i];
        const what = `${layouts[k].join(" ")}, step ${i + 1}: ${rec.loss} / ${rec.grad_norm} / ` +
          `${rec.val_loss} against ${want.loss} / ${want.grad_norm} / ${want.val_loss}`;
        // Float sums in another order: 1e-5 relative, as the DP and TP equalities.
        const near = (x: number, y: number) => Math.abs(x - y) <= 1e-5 * Math.abs(y);
        ok(near(rec.loss, want.loss) && near(rec.grad_norm, want.grad_norm), what);
        equal(rec.val_loss === undefined, want.val_loss === undefined, what);
        if (want.val_loss !== undefined) ok(near(rec.val_loss, want.val_loss), what);
        // BERT's parts (Megatron's lm loss and sop loss): the same under every split, and
        // adding up to the loss.
        const parts = model === "bert"
          ? [
            "lm_loss",
            "sop_loss",
            ...(want.val_loss !== undefined ? ["val_lm_loss", "val_sop_loss"] : []),
          ]
          : [];
        for (const p of parts) {
          ok(near(rec[p], want[p]), `${what}: ${p} ${rec[p]} against ${want[p]}`);
        }
        if (model === "bert") {
          ok(
            near(rec.lm_loss + rec.sop_loss, rec.loss),
            `${what}: parts ${rec.lm_loss} + ${rec.sop_loss}`,
          );
        } else equal(rec.lm_loss, undefined);
      }
    }
  });
}
