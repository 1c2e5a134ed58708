/**
 * Megatron's flag spellings (cli/flags.ts, collectives/env.ts): same flags, shown in help; the
 * Megatron flags not implemented here (cli/megatron_flags.ts), accepted or refused; a pasted
 * Megatron script's training flags.
 */
import { deepStrictEqual, equal, match, throws } from "node:assert/strict";
import {
  type FlagSpec,
  helpText,
  nearestFlag,
  parseFlags,
  UsageError,
  wasGiven,
} from "../cli/flags.ts";
import { refuseFlagsOfOtherModel, validateTrainFlags } from "../cli/train_config.ts";
import { TRAIN_FLAGS } from "../cli/train_flags.ts";
import { lrScheduleOf, trainArgsFromFlags } from "../cli/train_args.ts";
import { MEGATRON_UNIMPLEMENTED } from "../cli/megatron_flags.ts";
import { flagRefusal } from "./cli_helpers.ts";
import { NODE_OWN_FLAGS } from "../cli/same_flags.ts";
import { DIST_FLAG_SPECS } from "../cli/dist.ts";
import {
  DIST_FLAGS,
  resolveDistConfig,
  splitDistArgs,
  worldSizeOrigin,
} from "../collectives/env.ts";

const SPECS: Record<string, FlagSpec> = {
  "tokenizer": { type: "string", default: "byte", choices: ["byte", "gpt2"], help: "tokenizer" },
  "dist-timeout": { type: "string", help: "timeout" },
};

Deno.test("--tokenizer-type takes Megatron's names and this project's", () => {
  for (
    const [v, want] of [
      ["GPT2BPETokenizer", "gpt2"],
      ["ByteTokenizer", "byte"],
      ["byte", "byte"],
      ["gpt2", "gpt2"],
      ["BertWordPieceLowerCase", "bert"],
    ]
  ) {
    const f = parseFlags(["--tokenizer-type", v], SPECS);
    equal(f.tokenizer, want, v);
    equal(wasGiven(f, "tokenizer"), true);
  }
  throws(
    () => parseFlags(["--tokenizer-type", "SentencePieceTokenizer"], SPECS),
    (e) =>
      e instanceof UsageError && /--tokenizer-type .*must be one of byte, gpt2/.test(e.message),
  );
  // The project's own spelling keeps its choices.
  throws(() => parseFlags(["--tokenizer", "bert"], SPECS), UsageError);
});

Deno.test("--tokenizer-type BertWordPieceLowerCase is what a BERT run reads: accepted there", () => {
  const bert = (...args: string[]) =>
    refuseFlagsOfOtherModel(parseFlags(["--model", "bert", ...args], TRAIN_FLAGS));
  bert("--tokenizer-type", "BertWordPieceLowerCase");
  throws(
    () => bert("--tokenizer-type", "GPT2BPETokenizer"),
    (e) => e instanceof UsageError && /--tokenizer: for --model gpt only/.test(e.message),
  );
});

Deno.test("Megatron spellings are listed in the help", () => {
  const h = helpText("Usage: x", SPECS);
  match(h, /--tokenizer, --tokenizer-type/);
  match(h, /--dist-timeout, --distributed-timeout-minutes/);
  match(helpText("Usage: train", TRAIN_FLAGS), /--tokenizer, --tokenizer-type/);
  match(helpText("Usage: train", TRAIN_FLAGS), /--distributed-timeout-minutes/);
});

Deno.test("--distributed-timeout-minutes is --dist-timeout in minutes", () => {
  const { flags, rest } = splitDistArgs(["--distributed-timeout-minutes", "2", "--lr", "1"]);
  deepStrictEqual(flags, { "dist-timeout": "2m" });
  deepStrictEqual(rest, ["--lr", "1"]);
  equal(resolveDistConfig(flags, {}).distTimeoutMs, 120000);
  deepStrictEqual(splitDistArgs(["--distributed_timeout_minutes=0.5"]).flags, {
    "dist-timeout": "0.5m",
  });
  equal(parseFlags(["--distributed-timeout-minutes", "3"], SPECS)["dist-timeout"], "3m");
});

Deno.test("eval and generate take train's parallel flags", async () => {
  const { EVAL_FLAGS, validateEvalFlags } = await import("../cli/eval.ts");
  const { GENERATE_FLAGS, validateGenerateFlags } = await import("../cli/generate.ts");
  const base = ["--load", "ck", "--data-path", "d.txt"];
  for (const spelling of ["--tp", "--tensor-model-parallel-size"]) {
    const f = parseFlags([...base, spelling, "2"], EVAL_FLAGS);
    validateEvalFlags(f);
    equal(f["tensor-model-parallel-size"], 2);
  }
  // --nproc-per-node alone sets the TP size; both must agree.
  const n = parseFlags([...base, "--nproc-per-node", "4"], EVAL_FLAGS);
  validateEvalFlags(n);
  equal(n["tensor-model-parallel-size"], 4);
  validateEvalFlags(parseFlags([...base, "--nproc-per-node", "2", "--tp", "2"], EVAL_FLAGS));
  throws(
    () =>
      validateEvalFlags(parseFlags([...base, "--nproc-per-node", "2", "--tp", "4"], EVAL_FLAGS)),
    /--nproc-per-node 2 must equal --tensor-model-parallel-size 4/,
  );
  match(helpText("Usage: eval", EVAL_FLAGS), /--tensor-model-parallel-size, --tp/);
  const g = ["--load", "ck", "--prompt", "hi"];
  for (const spelling of ["--tp", "--tensor-model-parallel-size", "--nproc-per-node"]) {
    const f = parseFlags([...g, spelling, "2"], GENERATE_FLAGS);
    validateGenerateFlags(f);
    equal(f["tensor-model-parallel-size"], 2, spelling);
  }
  throws(
    () =>
      validateGenerateFlags(
        parseFlags([...g, "--nproc-per-node", "2", "--tp", "4"], GENERATE_FLAGS),
      ),
    (e) => e instanceof UsageError && /--nproc-per-node 2 must equal/.test(e.message),
  );
  // Megatron's generation scripts pass --use-checkpoint-args: accepted, as the shape comes from
  // --load anyway; without --load it has nothing to take the arguments from.
  validateGenerateFlags(parseFlags([...g, "--use-checkpoint-args"], GENERATE_FLAGS));
  throws(
    () =>
      validateGenerateFlags(
        parseFlags(
          ["--init-from-hf", "d", "--prompt", "hi", "--use-checkpoint-args"],
          GENERATE_FLAGS,
        ),
      ),
    (e) =>
      e instanceof UsageError &&
      /--use-checkpoint-args takes the arguments from --load/.test(e.message),
  );
});

Deno.test("the distributed flags' help table names exactly the flags the launcher takes", () => {
  deepStrictEqual(Object.keys(DIST_FLAG_SPECS).sort(), [...DIST_FLAGS].sort());
  for (const name of DIST_FLAGS) {
    deepStrictEqual(TRAIN_FLAGS[name], DIST_FLAG_SPECS[name], `train's --${name}`);
  }
});

Deno.test("an unknown flag close to a known one is named: did you mean …?", () => {
  const refused = (args: string[]) => {
    try {
      parseFlags(args, TRAIN_FLAGS);
    } catch (e) {
      if (e instanceof UsageError) return e.message;
      throw e;
    }
    throw new Error(`${args.join(" ")} was accepted`);
  };
  match(refused(["--train-iter", "5"]), /did you mean --train-iters\? --help lists the flags/);
  match(refused(["--hiden-size", "5"]), /did you mean --hidden-size\?/);
  match(refused(["--seq-len", "5"]), /did you mean --seq-length\?/);
  // Nothing close: no guess.
  match(refused(["--no-such-flag"]), /Unknown option '--no-such-flag' \(--help lists the flags\)/);
  equal(nearestFlag("steps", Object.keys(TRAIN_FLAGS)), null);
  // A prefix of several flags is no guess either.
  equal(nearestFlag("lr-", ["lr-warmup-iters", "lr-decay-iters"]), null);
});

Deno.test("Megatron flags not implemented here: accepted where they ask for what is done, else refused with the reason", () => {
  const refusal = (args: string[]) => flagRefusal(args, TRAIN_FLAGS);
  equal(
    refusal(["--pipeline-model-parallel-size", "4"]),
    "--pipeline-model-parallel-size 4: pipeline parallelism is not implemented here (tensor " +
      "and data parallelism are); 1 is accepted",
  );
  for (const [name, s] of Object.entries(MEGATRON_UNIMPLEMENTED)) {
    const u = s.unimplemented!;
    const reason = u.reason.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    // A value of the flag's type that it does not accept.
    const other = s.type === "int" ? "7" : s.type === "float" ? "0.5" : "other";
    if (u.accepts === true) {
      equal(refusal(s.type === "boolean" ? [`--${name}`] : [`--${name}`, other]), null, name);
    } else if (u.accepts) {
      for (const v of u.accepts) equal(refusal([`--${name}`, v]), null, `--${name} ${v}`);
      match(refusal([`--${name}`, other])!, new RegExp(`^--${name} ${other}: ${reason}; `));
    } else if (s.type === "boolean") {
      match(refusal([`--${name}`])!, new RegExp(`^--${name}: ${reason}$`));
    } else {
      match(refusal([`--${name}`, other])!, new RegExp(`^--${name} ${other}: ${reason}$`));
    }
  }
  // Megatron's --rampup-batch-size takes three values (start, increment, samples).
  match(
    refusal(["--rampup-batch-size", "16", "16", "5859375"])!,
    /^--rampup-batch-size 16 16 5859375: the global batch size is constant/,
  );
  match(
    refusal(["--tensorboard-dir", "tb"])!,
    /--log-json FILE writes one JSON object per iteration/,
  );
  match(
    refusal(["--attention-backend", "unfused"])!,
    /unfused with --no-flash-attn; auto or flash are accepted/,
  );
  // The help lists them in one paragraph at the end, not a line each.
  const help = helpText("Usage: train", TRAIN_FLAGS);
  match(help, /Megatron flags of what is not implemented here/);
  match(help, /--pipeline-model-parallel-size 1/);
  match(help, /always refused:\s+--sequence-parallel/);
  equal(/^ {2}--sequence-parallel/m.test(help), false);
});

Deno.test("a pasted Megatron GPT-3 script's training flags: the warm-up fraction, init std and eps reach the run", () => {
  // examples/gpt3/train_gpt3_175b_distributed.sh, less what is refused (pipeline 16, the batch
  // schedule, TensorBoard, its vocabulary files), at TP 8 on 8 ranks.
  const f = parseFlags(
    [
      ...["--num-layers", "96", "--hidden-size", "12288", "--num-attention-heads", "96"],
      ...["--seq-length", "2048", "--max-position-embeddings", "2048"],
      ...["--attention-backend", "auto", "--micro-batch-size", "1", "--global-batch-size", "1536"],
      ...["--train-iters", "500000", "--weight-decay", "0.1", "--adam-beta1", "0.9"],
      ...["--adam-beta2", "0.95", "--init-method-std", "0.006", "--clip-grad", "1.0", "--fp16"],
      ...["--lr", "6.0e-5", "--lr-decay-style", "cosine", "--min-lr", "6.0e-6"],
      ...["--lr-warmup-fraction", ".001", "--lr-decay-iters", "430000"],
      ...["--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "1"],
      ...["--split", "949,50,1", "--log-interval", "100", "--eval-interval", "1000"],
      ...["--eval-iters", "10", "--use-mcore-models", "--distributed-backend", "nccl"],
    ],
    TRAIN_FLAGS,
  );
  validateTrainFlags(f, 8);
  const a = trainArgsFromFlags(f);
  const s = lrScheduleOf(a);
  equal(s.warmupIters, 0.001 * 430000);
  equal(s.initLr, 0);
  equal(s.decayIters, 430000);
  equal(a.model.initStd, 0.006);
  equal(a.adam.eps, 1e-8);
  // The implemented flags are compared across nodes like every other (cli/same_flags.ts).
  for (const n of ["adam-eps", "lr-warmup-fraction", "lr-warmup-init", "init-method-std"]) {
    equal(n in a.flags, true, n);
    equal(NODE_OWN_FLAGS.includes(n), false, n);
  }
  const g = parseFlags(["--lr-warmup-init", "1e-6", "--adam-eps", "1e-6"], TRAIN_FLAGS);
  validateTrainFlags(g, 1);
  equal(lrScheduleOf(trainArgsFromFlags(g)).initLr, 1e-6);
  equal(trainArgsFromFlags(g).adam.eps, 1e-6);
  const refused = (args: string[]) =>
    throws(() => validateTrainFlags(parseFlags(args, TRAIN_FLAGS), 1), UsageError);
  refused(["--lr-warmup-fraction", "0.1", "--lr-warmup-iters", "5"]);
  refused(["--lr-warmup-fraction", "1"]);
  refused(["--lr-warmup-init", "0.1", "--lr", "0.01"]);
  refused(["--adam-eps", "0"]);
  refused(["--init-method-std", "0"]);
  refused(["--attention-backend", "flash", "--no-flash-attn"]);
  // A given warm-up as long as the decay would never decay (Megatron asserts warm-up < decay).
  throws(
    () =>
      validateTrainFlags(
        parseFlags(["--train-iters", "20", "--lr-warmup-iters", "20"], TRAIN_FLAGS),
        1,
      ),
    {
      message: "--lr-warmup-iters 20 is not below the decay's length, 20 (--train-iters): the " +
        "rate would never decay (Megatron asserts a warm-up shorter than the decay)",
    },
  );
  throws(
    () =>
      validateTrainFlags(
        parseFlags(["--lr-decay-iters", "10", "--lr-warmup-iters", "12"], TRAIN_FLAGS),
        1,
      ),
    /--lr-warmup-iters 12 is not below the decay's length, 10 \(--lr-decay-iters\)/,
  );
  throws(
    () =>
      validateTrainFlags(
        parseFlags(["--train-samples", "64", "--lr-warmup-samples", "64"], TRAIN_FLAGS),
        1,
      ),
    /--lr-warmup-samples 64 is not below the decay's length, 64 \(--train-samples\)/,
  );
  validateTrainFlags(
    parseFlags(["--train-iters", "20", "--lr-warmup-iters", "19"], TRAIN_FLAGS),
    1,
  );
  // Megatron's own rule: --lr-warmup-iters 0 may stand beside a fraction.
  validateTrainFlags(
    parseFlags(["--lr-warmup-fraction", "0.1", "--lr-warmup-iters", "0"], TRAIN_FLAGS),
    1,
  );
});

Deno.test("a world size TP does not divide names where it was read: the flags or the launcher's variable", () => {
  const f = parseFlags(["--tp", "2"], TRAIN_FLAGS);
  throws(() => validateTrainFlags(f, 3), /world size 3 \(--nproc-per-node × --nnodes\)/);
  // Under mpirun -np 3 the flags said nothing of 3 (found with a real Open MPI 4.1.4).
  throws(
    () => validateTrainFlags(f, 3, worldSizeOrigin("openmpi")),
    /world size 3 \(Open MPI's OMPI_COMM_WORLD_SIZE\) is not divisible/,
  );
  match(worldSizeOrigin("torchrun"), /WORLD_SIZE/);
  match(worldSizeOrigin("slurm"), /SLURM_NTASKS/);
});

Deno.test("a stray argument names the flag before it; a list's values go together; -inf is a value", () => {
  const stray = (args: string[], re: RegExp) =>
    throws(
      () => parseFlags(args, TRAIN_FLAGS),
      (e: Error) => e instanceof UsageError && re.test(e.message),
    );
  stray(["--seed", "3", "4"], /Unexpected argument '4'.*\(--seed takes one value, here 3\)/);
  stray(["--seed=3", "4"], /\(--seed takes one value\)/);
  stray(["--fp16", "yes"], /\(--fp16 takes no value\)/);
  stray(
    ["--data-path", "a.bin", "--seed", "3", "b.bin"],
    /--seed takes one value, here 3; --data-path's values go together, before the next flag/,
  );
  // -inf is a (refused) weight, not a short flag: the list keeps it.
  deepStrictEqual(parseFlags(["--data-path", "0.5", "a", "-inf", "b"], TRAIN_FLAGS)["data-path"], [
    "0.5",
    "a",
    "-inf",
    "b",
  ]);
});

Deno.test("a flag given twice: the last value counts, but every value must be valid", () => {
  // argparse keeps the last value and converts every one: --lr abc is an error wherever it stands.
  equal(parseFlags(["--lr", "0.5", "--lr", "0.1"], TRAIN_FLAGS).lr, 0.1);
  throws(() => parseFlags(["--lr", "abc", "--lr", "0.1"], TRAIN_FLAGS), {
    message: '--lr expects a number, got "abc"',
  });
  throws(() => parseFlags(["--train-iters", "2.5", "--train-iters", "3"], TRAIN_FLAGS), {
    message: '--train-iters expects an integer, got "2.5"',
  });
  throws(
    () => parseFlags(["--lr-decay-style", "foo", "--lr-decay-style", "linear"], TRAIN_FLAGS),
    {
      message:
        '--lr-decay-style must be one of cosine, linear, constant, inverse-square-root, WSD, got "foo"',
    },
  );
  equal(
    parseFlags(["--lr-decay-style", "cosine", "--lr-decay-style", "linear"], TRAIN_FLAGS)[
      "lr-decay-style"
    ],
    "linear",
  );
});

Deno.test("numbers are read as argparse's int() and float() read them", () => {
  // JavaScript's Number() takes hexadecimal, binary and exponents; argparse's int() does not.
  for (const text of ["1e3", "8.0", "0x10", "0b11", ""]) {
    throws(() => parseFlags(["--train-iters", text], TRAIN_FLAGS), {
      message: `--train-iters expects an integer, got "${text}"`,
    });
  }
  for (const text of ["0x10", "1e", "1.2.3"]) {
    throws(() => parseFlags(["--lr", text], TRAIN_FLAGS), {
      message: `--lr expects a number, got "${text}"`,
    });
  }
  equal(parseFlags(["--train-iters", "+12"], TRAIN_FLAGS)["train-iters"], 12);
  equal(parseFlags(["--train-iters", "1_000"], TRAIN_FLAGS)["train-iters"], 1000); // as int("1_000")
  equal(parseFlags(["--lr", "1e-3"], TRAIN_FLAGS).lr, 1e-3);
  equal(parseFlags(["--lr", ".5"], TRAIN_FLAGS).lr, 0.5);
  equal(parseFlags(["--lr", "5."], TRAIN_FLAGS).lr, 5);
  // A hexadecimal blend weight is a path, as argparse would never read it as a number.
  deepStrictEqual(parseFlags(["--data-path", "0x1", "a"], TRAIN_FLAGS)["data-path"], ["0x1", "a"]);
  // A value the GPU reads as 0 (below f32's smallest normal) is refused, not taken as 0
  // (--clip-grad 0 turns clipping off; 1e-50 did too, silently).
  equal(parseFlags(["--clip-grad", "0.0e5"], TRAIN_FLAGS)["clip-grad"], 0);
  equal(parseFlags(["--clip-grad", "1e-30"], TRAIN_FLAGS)["clip-grad"], 1e-30);
  for (const tiny of ["1e-400", "1e-50", "+1e-40"]) {
    throws(() => parseFlags(["--clip-grad", tiny], TRAIN_FLAGS), {
      message: `--clip-grad ${tiny} is below float32's smallest normal number (1.2e-38): the GPU ` +
        "would read it as 0",
    });
  }
});

Deno.test("a flag whose value was left out says so, whether a flag or the end follows", () => {
  throws(() => parseFlags(["--num-layers", "--tp", "1"], TRAIN_FLAGS), {
    message: "--num-layers needs a value (the next word, --tp, is a flag)",
  });
  throws(() => parseFlags(["--lr"], TRAIN_FLAGS), { message: "--lr needs a value" });
  // A negative number, or text starting with dashes, is a value that must be joined to its flag.
  throws(() => parseFlags(["--lr", "-1"], TRAIN_FLAGS), {
    message: '--lr takes a value; write one starting with "-" as --lr=-…',
  });
  throws(() => parseFlags(["--prompt", "--- a title"], TRAIN_FLAGS), {
    message: '--prompt takes a value; write one starting with "-" as --prompt=-…',
  });
});

Deno.test("eval's and preprocess's one data path: given twice, refused rather than replaced", async () => {
  const { EVAL_FLAGS } = await import("../cli/eval.ts");
  const { PREPROCESS_FLAGS } = await import("../cli/preprocess.ts");
  throws(() => parseFlags(["--data-path", "a.txt", "--data-path", "b.txt"], EVAL_FLAGS), {
    message: "--data-path is given twice (a.txt, then b.txt): eval reads one corpus",
  });
  throws(() => parseFlags(["--input", "a.txt", "--data-path", "b.txt"], PREPROCESS_FLAGS), {
    message:
      "--input is given twice (a.txt, then b.txt): preprocess reads one input (a folder for several files)",
  });
  // Other flags keep argparse's last value.
  equal(
    parseFlags(
      ["--data-path", "a", "--mask-seed", "1", "--mask-seed", "2"],
      EVAL_FLAGS,
    )["mask-seed"],
    2,
  );
});

Deno.test("--help prints the help whatever else the line holds, as argparse's does", () => {
  for (
    const args of [["--help", "--bogus"], ["--train-iters", "abc", "-h"], [
      "--num-layerz",
      "2",
      "--help",
    ]]
  ) {
    equal(parseFlags(args, TRAIN_FLAGS).help, true, args.join(" "));
  }
  // After `--`, it is not a flag.
  throws(() => parseFlags(["--bogus", "--", "--help"], TRAIN_FLAGS));
});

Deno.test("--backend defaults to $WEBGPU_BACKEND, checked as a given value; the flag wins", () => {
  const before = Deno.env.get("WEBGPU_BACKEND");
  try {
    Deno.env.set("WEBGPU_BACKEND", "deno");
    equal(parseFlags([], TRAIN_FLAGS).backend, "deno");
    equal(parseFlags(["--backend", "dawn"], TRAIN_FLAGS).backend, "dawn");
    equal(wasGiven(parseFlags([], TRAIN_FLAGS), "backend"), false);
    Deno.env.set("WEBGPU_BACKEND", "");
    equal(parseFlags([], TRAIN_FLAGS).backend, undefined);
    Deno.env.set("WEBGPU_BACKEND", "metal");
    throws(
      () => parseFlags([], TRAIN_FLAGS),
      /WEBGPU_BACKEND=metal, the default of --backend: --backend must be one of deno, dawn/,
    );
    equal(parseFlags(["--backend", "deno"], TRAIN_FLAGS).backend, "deno");
  } finally {
    if (before === undefined) Deno.env.delete("WEBGPU_BACKEND");
    else Deno.env.set("WEBGPU_BACKEND", before);
  }
});
