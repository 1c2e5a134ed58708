/**
 * A pasted Megatron script: every flag this project does not take (unknown, or
 * a Megatron flag for what is not implemented here at a value it does not
 * accept) is named in one refusal, one line each in command-line order, where
 * there are two or more; one alone keeps its own message. The Megatron flags of
 * cli/megatron_flags.ts: accepted where they ask for what the project does
 * anyway, else refused with their reason; a script of accepted ones trains.
 */
import { deepStrictEqual, equal, match, ok, throws } from "node:assert/strict";
import { FlagsRefusedError, helpText, parseFlags, UsageError } from "../cli/flags.ts";
import { MEGATRON_UNIMPLEMENTED } from "../cli/megatron_flags.ts";
import { TRAIN_FLAGS } from "../cli/train_flags.ts";
import { flagRefusal, runCli } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

/** The message `args` are refused with, or null where they parse. */
const refusal = (args: string[]) => flagRefusal(args, TRAIN_FLAGS);

/** The refusal of several flags, as {@link parseFlags} words it. */
function several(lines: string[]): string {
  return `${lines.length} flags are refused (--help lists the flags):\n` +
    lines.map((l) => `  • ${l}`).join("\n");
}

/** `s` with every run of white space one space (the CLI prints a usage error on one line). */
const squashed = (s: string) => s.replace(/\s+/g, " ").trim();

const reason = (flag: string) => MEGATRON_UNIMPLEMENTED[flag].unimplemented!.reason;

/** 3,520 bytes of byte-level text. */
const TEXT = "It was the best of times, it was the worst. ".repeat(80);

/**
 * Megatron's examples/gpt3/train_gpt3_175b_distributed.sh, scaled down (1 layer,
 * hidden 32, sequence 16, TP 1, one iteration), its arrays as they are passed:
 * torchrun's DISTRIBUTED_ARGS first (`deno task train` takes them too).
 */
function gpt3Script(o: {
  data: string;
  ck: string;
  tb: string;
  pipeline: string;
  batchSchedule: boolean;
}): string[] {
  return [
    ...["--nproc_per_node", "1", "--nnodes", "1", "--master_addr", "localhost"],
    ...["--master_port", "29500"],
    // GPT_MODEL_ARGS
    ...["--num-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2"],
    ...["--seq-length", "16", "--max-position-embeddings", "16", "--attention-backend", "auto"],
    // TRAINING_ARGS
    ...["--micro-batch-size", "2", "--global-batch-size", "4"],
    ...(o.batchSchedule ? ["--step-batch-size-schedule", "0:16 2.4B:320 4.8B:624"] : []),
    ...["--train-iters", "1", "--weight-decay", "0.1", "--adam-beta1", "0.9"],
    ...["--adam-beta2", "0.95", "--init-method-std", "0.006", "--clip-grad", "1.0", "--fp16"],
    ...["--lr", "6.0e-5", "--lr-decay-style", "cosine", "--min-lr", "6.0e-6"],
    ...["--lr-warmup-fraction", ".001", "--lr-decay-iters", "430000"],
    // MODEL_PARALLEL_ARGS
    ...["--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", o.pipeline],
    // DATA_ARGS
    ...["--data-path", o.data, "--split", "949,50,1"],
    // EVAL_AND_LOGGING_ARGS
    ...["--log-interval", "1", "--save-interval", "10000", "--eval-interval", "1000"],
    ...["--save", o.ck, "--load", o.ck, "--eval-iters", "1"],
    ...(o.tb ? ["--tensorboard-dir", o.tb] : []),
  ];
}

Deno.test("a pasted Megatron script is refused in one message naming every flag not taken, in order", async () => {
  await using temp = await tempDir({ prefix: "megatron_script-" });
  const dir = temp.path;
  await Deno.writeTextFile(`${dir}/data.txt`, TEXT);
  const args = [
    ...gpt3Script({
      data: `${dir}/data.txt`,
      ck: `${dir}/ck`,
      tb: `${dir}/tb`,
      pipeline: "16",
      batchSchedule: true,
    }),
    // What a Mixtral-style script adds, and one flag this project has never heard of.
    ...["--context-parallel-size", "2", "--num-experts", "8", "--moe-router-topk", "2"],
    ...["--log-params-norm", "--calculate-per-token-loss"],
    // Accepted: they ask for what is done anyway.
    ...["--exit-signal-handler", "--num-workers", "2", "--transformer-impl", "local"],
  ];
  const r = await runCli("cli/train.ts", args, undefined, { timeoutMs: 60000 });
  equal(r.code, 2, r.stderr);
  const want = several([
    `--step-batch-size-schedule 0:16 2.4B:320 4.8B:624: ${reason("step-batch-size-schedule")}`,
    `--pipeline-model-parallel-size 16: ${reason("pipeline-model-parallel-size")}; 1 is accepted`,
    `--tensorboard-dir ${dir}/tb: ${reason("tensorboard-dir")}`,
    `--context-parallel-size 2: ${reason("context-parallel-size")}; 1 is accepted`,
    `--num-experts 8: ${reason("num-experts")}`,
    `--moe-router-topk 2: ${reason("moe-router-topk")}`,
    `--log-params-norm: ${reason("log-params-norm")}`,
    // --calculate-per-token-loss was an unknown option; the loss is per token here (accepted).
  ]);
  // One error, whether printed on one line (cli/errors.ts joins a usage error's lines) or on
  // its own lines; no stack trace.
  ok(r.stderr.startsWith("error: "), r.stderr);
  equal(squashed(r.stderr), squashed(`error: ${want}`));
  ok(!/^\s+at /m.test(r.stderr), r.stderr);
  console.log(r.stderr);
  // Refused before any work: the checkpoint directory was not made.
  deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["data.txt"]);
});

Deno.test("a pasted Megatron script whose flags are all taken trains", async () => {
  await using temp = await tempDir({ prefix: "megatron_script-" });
  const dir = temp.path;
  await Deno.writeTextFile(`${dir}/data.txt`, TEXT);
  const args = [
    ...gpt3Script({
      data: `${dir}/data.txt`,
      ck: `${dir}/ck`,
      tb: "",
      pipeline: "1",
      batchSchedule: false,
    }),
    "--sample-tokens",
    "0",
    // Every Megatron flag that is accepted, at a value it accepts.
    ...Object.entries(MEGATRON_UNIMPLEMENTED).flatMap(([name, s]) => {
      const a = s.unimplemented!.accepts;
      if (a === true) {
        return s.type === "boolean"
          ? [`--${name}`]
          : [`--${name}`, s.type === "string" ? `${dir}/cache` : "2"];
      }
      return a?.length ? [`--${name}`, a[0]] : [];
    }),
  ];
  const r = await runCli("cli/train.ts", args, undefined, { timeoutMs: 120000 });
  equal(r.code, 0, `${args.join(" ")}\n${r.stderr}`);
  match(r.stdout, /iteration\s+1\/\s+1 \|/);
  match(r.stdout, /saved checkpoint at iteration 1/);
  // --data-cache-path changes nothing: no index files are written.
  equal(await Deno.stat(`${dir}/cache`).then(() => true, () => false), false);
});

Deno.test("one flag not taken: its message is what it always was", async () => {
  equal(refusal(["--foo-bar"]), "Unknown option '--foo-bar' (--help lists the flags)");
  equal(
    refusal(["--train-iter", "3", "--transformer-impl", "local"]),
    "Unknown option '--train-iter' (did you mean --train-iters? --help lists the flags)",
  );
  equal(
    refusal(["--num-experts", "8", "--context-parallel-size", "1", "--exit-signal-handler"]),
    `--num-experts 8: ${reason("num-experts")}`,
  );
  // A flag given twice is one problem: an unknown one, or a refused one (its last value counts,
  // as the parse keeps it).
  equal(refusal(["--foo", "--foo"]), "Unknown option '--foo' (--help lists the flags)");
  equal(
    refusal([
      "--pipeline-model-parallel-size",
      "4",
      "--pipeline-model-parallel-size",
      "1",
      "--swiglu",
    ]),
    `--swiglu: ${reason("swiglu")}`,
  );
  // An accepted value written otherwise (01 is 1) is accepted, as the parse reads it.
  equal(refusal(["--context-parallel-size", "01", "--swiglu"]), `--swiglu: ${reason("swiglu")}`);
  // Other errors keep the first-error behaviour: a bad value, a short option, a positional.
  equal(refusal(["--num-layers", "two", "--swiglu"]), '--num-layers expects an integer, got "two"');
  equal(refusal(["-x", "--swiglu"]), "Unknown option '-x'");
  match(refusal(["--swiglu", "--", "--foo"])!, /^Unexpected argument '--foo'/);
  // Through the CLI: one line, exit 2.
  const r = await runCli("cli/train.ts", ["--num-experts", "8", "--num-workers", "4"]);
  equal(r.code, 2, r.stderr);
  equal(r.stderr.trim(), `error: --num-experts 8: ${reason("num-experts")}`);
});

Deno.test("several flags not taken: --flag=value, lists, did-you-mean, command-line order", () => {
  // A usage error of its own kind, with one refusal per flag.
  throws(
    () => parseFlags(["--swiglu", "--foo"], TRAIN_FLAGS),
    (e) =>
      e instanceof FlagsRefusedError && e instanceof UsageError &&
      e.refusals.length === 2 && e.refusals[1] === "--foo: unknown option",
  );
  equal(
    refusal(["--context-parallel-size=2", "--lr", "1e-3", "--foo=3"]),
    several([
      `--context-parallel-size 2: ${reason("context-parallel-size")}; 1 is accepted`,
      "--foo: unknown option",
    ]),
  );
  equal(
    refusal([
      ...["--test-data-path", "a.bin", "b.bin", "--swiglu", "--train-iter", "3"],
      ...["--rampup-batch-size", "16", "16", "5859375", "--seq-len", "4"],
    ]),
    several([
      `--test-data-path a.bin b.bin: ${reason("test-data-path")}`,
      `--swiglu: ${reason("swiglu")}`,
      "--train-iter: unknown option (did you mean --train-iters?)",
      `--rampup-batch-size 16 16 5859375: ${reason("rampup-batch-size")}`,
      "--seq-len: unknown option (did you mean --seq-length?)",
    ]),
  );
  // A value that looks like a flag stays its flag's; Megatron's spellings are known flags.
  equal(
    refusal([
      ...["--prompt", "--not-a-flag", "--tokenizer-type", "GPT2BPETokenizer"],
      ...["--distributed-timeout-minutes", "3", "--swiglu", "--qk-layernorm"],
    ]),
    several([`--swiglu: ${reason("swiglu")}`, `--qk-layernorm: ${reason("qk-layernorm")}`]),
  );
});

Deno.test("Megatron's flags named here: accepted where they ask for what is done, else refused with the reason", () => {
  const accepted: string[][] = [
    ["--exit-signal-handler"],
    ["--no-bias-dropout-fusion"],
    ["--no-gradient-accumulation-fusion"],
    ["--no-async-tensor-model-parallel-allreduce"],
    ["--no-persist-layer-norm"],
    ["--log-throughput"],
    ["--num-workers", "8"],
    ["--num-workers", "0"],
    ["--transformer-impl", "local"],
    ["--context-parallel-size", "1"],
    ["--expert-model-parallel-size", "1"],
    ["--timing-log-level", "0"],
    ["--lr-warmup-samples", "0"],
    ["--data-cache-path", "/tmp/cache"],
    ["--no-mmap-bin-files"],
    ["--data-impl", "mmap"],
    ["--optimizer", "adam"],
    ["--weight-decay-incr-style", "constant"],
    ["--mask-prob", "0.15"],
    ["--short-seq-prob", "0"],
  ];
  for (const args of accepted) equal(refusal(args), null, args.join(" "));
  const refused: [string[], RegExp][] = [
    [["--transformer-impl", "transformer_engine"], /no Transformer Engine .*; local is accepted$/],
    [["--context-parallel-size", "2"], /context parallelism .*; 1 is accepted$/],
    [["--expert-model-parallel-size", "8"], /no mixture of experts; 1 is accepted$/],
    [["--num-layers-per-virtual-pipeline-stage", "2"], /pipeline parallelism is not implemented/],
    [["--decoder-first-pipeline-num-layers", "2"], /pipeline parallelism is not implemented/],
    [["--ckpt-format", "torch"], /this project's own .*safetensors/],
    [["--ckpt-format", "torch_dist"], /none of Megatron's formats/],
    [["--dataloader-type", "single"], /random offsets/],
    [
      ["--data-impl", "lazy"],
      /the older lazy and cached formats are not read; mmap or infer are accepted$/,
    ],
    [["--eod-mask-loss"], /the loss here counts every token, end-of-document ones included/],
    [["--reset-attention-mask"], /causal over the whole window, across document boundaries/],
    [["--reset-position-ids"], /from each window's start, across document boundaries/],
    [["--dataloader-type", "cyclic"], /random offsets/],
    [["--timing-log-level", "2"], /--measure-comm times the collectives apart; 0 is accepted$/],
    [["--timing-log-option", "minmax"], /no timers are gathered/],
    [["--num-experts", "8"], /mixture of experts is not implemented/],
    [["--moe-router-topk", "2"], /mixture of experts/],
    [["--moe-aux-loss-coeff", "1e-2"], /^--moe-aux-loss-coeff 0\.01: mixture of experts/],
    [["--moe-grouped-gemm"], /mixture of experts/],
    [["--moe-token-dispatcher-type", "alltoall"], /mixture of experts/],
    [["--moe-router-load-balancing-type", "aux_loss"], /mixture of experts/],
    [["--group-query-attention"], /multi-head/],
    [["--num-query-groups", "8"], /multi-head/],
    [["--kv-channels", "128"], /--hidden-size \/ --num-attention-heads/],
    [["--use-rotary-position-embeddings"], /no rotary embeddings/],
    [["--rotary-percent", "0.5"], /no rotary embeddings/],
    [["--rotary-base", "1000000"], /no rotary embeddings/],
    [["--no-position-embedding"], /learned absolute table/],
    [["--squared-relu"], /GeLU MLP/],
    [["--apply-layernorm-1p"], /1 \+ weight/],
    [["--qk-layernorm"], /not normalized/],
    [["--recompute-granularity", "full"], /--recompute-activations keeps each layer's input/],
    [["--recompute-granularity", "selective"], /--recompute-activations/],
    [["--recompute-method", "uniform"], /--recompute-activations/],
    [["--recompute-num-layers", "1"], /--recompute-activations/],
    [["--overlap-param-gather"], /--overlap-grad-reduce is implemented/],
    [["--no-bias-gelu-fusion"], /exact \(erf\)/],
    [["--manual-gc"], /garbage collector/],
    [["--wandb-project", "p"], /Weights & Biases .*--log-json FILE/],
    [["--wandb-exp-name", "e"], /Weights & Biases/],
    [["--wandb-save-dir", "d"], /Weights & Biases/],
    [["--log-timers-to-tensorboard"], /TensorBoard .*--log-json FILE/],
    [["--log-validation-ppl-to-tensorboard"], /TensorBoard/],
    [["--log-memory-to-tensorboard"], /TensorBoard/],
    [["--tensorboard-log-interval", "1"], /TensorBoard/],
    [["--log-params-norm"], /grad norm/],
    [["--mock-data"], /no synthetic data .*Moby Dick/],
    [["--no-load-optim"], /AdamW moments .*--init-from-hf/],
    [["--no-load-rng"], /random state/],
    [["--finetune"], /export-hf.*--init-from-hf DIR/],
    [["--tokenizer-model", "tok.model"], /built in/],
    [["--test-data-path", "t_text_document"], /--valid-data-path/],
    [["--use-legacy-models"], /this project's own/],
    [["--optimizer", "sgd"], /AdamW with decoupled weight decay .*; adam is accepted$/],
    [["--weight-decay-incr-style", "linear"], /weight decay is constant here/],
    [["--start-weight-decay", "0.01"], /weight decay is constant here \(--weight-decay\)/],
    [["--end-weight-decay", "0.1"], /increment from --start-weight-decay/],
    [["--decoupled-lr", "0.0001"], /one schedule here .*embedding and output layers/],
    [["--decoupled-min-lr", "0.00001"], /embedding and output layers/],
    [["--mask-prob", "0.2"], /masks 15% .*; 0\.15 is accepted$/],
    [["--short-seq-prob", "0.1"], /no shorter rows are drawn .*; 0 is accepted$/],
    [["--bert-no-binary-head"], /always trains its sentence-order \(binary\) head/],
  ];
  for (const [args, re] of refused) {
    const m = refusal(args);
    ok(m !== null, `${args.join(" ")} was accepted`);
    ok(m.startsWith(`${args.join(" ").replace("1e-2", "0.01").replace("1e-4", "0.0001")}: `), m);
    match(m, re, args.join(" "));
  }
  // Megatron's sample-counted length and schedule are implemented (tests/train_samples_test.ts):
  // they parse, and their combinations are checked with the other training flags.
  for (const n of ["train-samples", "lr-decay-samples", "lr-warmup-samples"]) {
    equal(n in MEGATRON_UNIMPLEMENTED, false, n);
    equal(refusal([`--${n}`, "1000"]), null, n);
  }
  // Megatron's value types: an integer flag takes integers only, a float a number.
  for (const n of ["num-experts", "context-parallel-size", "num-workers", "kv-channels"]) {
    equal(MEGATRON_UNIMPLEMENTED[n].type, "int", n);
    match(refusal([`--${n}`, "1.5"])!, new RegExp(`^--${n} expects an integer`));
  }
  for (const n of ["rotary-percent", "moe-aux-loss-coeff", "moe-z-loss-coeff"]) {
    equal(MEGATRON_UNIMPLEMENTED[n].type, "float", n);
  }
  // Switches take no value.
  match(refusal(["--log-throughput", "1"])!, /Unexpected argument '1'.*takes no value/);
});

Deno.test("no flag of the table is one train implements (spread last into TRAIN_FLAGS, it would hide it)", async () => {
  const source = await Deno.readTextFile(new URL("../cli/train_flags.ts", import.meta.url));
  for (const n of Object.keys(MEGATRON_UNIMPLEMENTED)) {
    equal(source.includes(`"${n}": {`), false, `--${n} is defined in cli/train_flags.ts`);
  }
  for (
    const n of [
      "exit-interval",
      "exit-duration-in-mins",
      "train-samples",
      "lr-decay-samples",
      "lr-warmup-samples",
    ]
  ) {
    equal(n in MEGATRON_UNIMPLEMENTED, false, n);
  }
});

Deno.test("the help lists the Megatron flags in its last paragraph, each with its value on one line", () => {
  const help = helpText("Usage: train", TRAIN_FLAGS);
  const paragraph = help.slice(help.indexOf("Megatron flags of what is not implemented here"));
  const flat = squashed(paragraph);
  for (const s of ["--num-workers N", "--data-cache-path DIR", "--context-parallel-size 1"]) {
    ok(flat.includes(s), s);
  }
  ok(flat.includes("--transformer-impl local"));
  match(flat, /always refused: .*--num-experts, /);
  // A flag and its value are never split over two lines; no non-breaking space is printed.
  for (const line of paragraph.split("\n")) {
    ok(!/^\d|^(local|N|DIR)\b/.test(line), line);
    ok(!line.includes("\u00a0"), line);
    ok(line.length <= 90, line);
  }
  // As argparse's help action, --help prints the help whatever else is refused.
  ok(parseFlags(["--help", "--swiglu", "--foo"], TRAIN_FLAGS).help);
});
