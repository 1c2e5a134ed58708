/** Megatron's flag spellings (cli/flags.ts, collectives/env.ts): same flags, shown in help. */
import { deepStrictEqual, equal, match, throws } from "node:assert/strict";
import {
  type FlagSpec,
  helpText,
  nearestFlag,
  parseFlags,
  UsageError,
  wasGiven,
} from "../cli/flags.ts";
import { refuseFlagsOfOtherModel, TRAIN_FLAGS } from "../cli/train_config.ts";
import { DIST_FLAG_SPECS } from "../cli/dist.ts";
import { DIST_FLAGS, resolveDistConfig, splitDistArgs } from "../collectives/env.ts";

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
