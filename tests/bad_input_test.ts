/**
 * Every bad input gets one clear line: each case below runs a command of the
 * CLI as a subprocess and asserts that stderr holds exactly one `error: …` line
 * (besides Dawn's two known start-up warnings) and no stack trace, the
 * documented exit code (2 for the command line, 1 for data, checkpoints and
 * runtime), and, where work was done before the failure, that it is on disk.
 * Most cases fail before any device is opened.
 */

import { RANK_HOST_BYTES } from "../cli/limits.ts";
import { listHostGpus } from "../collectives/devices.ts";
import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { classify, reportError, RunError, SIGPIPE_STATUS, splitMisfit } from "../cli/errors.ts";
import { UsageError } from "../cli/flags.ts";
import { NON_FINITE_LOSS, nonFiniteLossMessage } from "../cli/train_run.ts";
import { freeLocalPort } from "../collectives/tcp.ts";
import { UnknownBackendError } from "../core/gpu.ts";
import { DataError } from "../data/errors.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";
import { type CliResult, permissionArgs, runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";

const tiny = [
  ...TINY_RUN_FLAGS,
];

/** One bad input: the command, what it must print and return, and what must be on disk after. */
interface Case {
  /** What is wrong. */
  name: string;
  /** `cli/….ts`. */
  script: string;
  /** Its arguments. */
  args: string[];
  /** Exit code. */
  code: 1 | 2;
  /** The error line (after `error: `) must match. */
  says: RegExp;
  /** Checks of the files after the run. */
  after?: (r: CliResult) => Promise<void>;
  /** Run with `-A` instead of the CLI's permission set (see {@link readOnlyDir}). */
  allowAll?: boolean;
}

/** Stderr lines that are not the program's: Dawn's start-up warnings on Mesa's GL. */
const NOISE = /^Warning: max\w+ artificially reduced from \d+ to \d+/;

function assertOneLine(c: Case, r: CliResult): void {
  const label = `${c.name}: ${c.script} ${c.args.join(" ")}`;
  strictEqual(r.code, c.code, `${label}: exit code ${r.code}\n${r.stderr}`);
  const lines = r.stderr.split("\n").filter((l) => l.trim() && !NOISE.test(l));
  deepStrictEqual(lines.length, 1, `${label}: stderr is not one line:\n${r.stderr}`);
  ok(lines[0].startsWith("error: "), `${label}: ${lines[0]}`);
  match(lines[0].slice(7), c.says, label);
  ok(!/^\s+at /m.test(r.stderr), `${label}: stack trace\n${r.stderr}`);
}

/** Runs `cases`, two at a time, each bounded in time. */
async function runCases(cases: Case[]): Promise<void> {
  const queue = [...cases];
  const worker = async () => {
    for (let c = queue.shift(); c; c = queue.shift()) {
      const t0 = performance.now();
      const r = await runCli(c.script, c.args, undefined, {
        timeoutMs: 60000,
        allowAll: c.allowAll,
      });
      assertOneLine(c, r);
      await c.after?.(r);
      const s = ((performance.now() - t0) / 1000).toFixed(1);
      console.log(`  ${s.padStart(5)} s  exit ${r.code}  ${c.name}`);
    }
  };
  await Promise.all([worker(), worker()]);
}

/** A run that must not have trained: no iteration line on stdout. */
function noTraining(c: Case): Case {
  const after = c.after;
  return {
    ...c,
    after: async (r) => {
      ok(!/iteration\s+1\//.test(r.stdout), `${c.name}: training started:\n${r.stdout}`);
      await after?.(r);
    },
  };
}

// Fixtures, made once: a tiny GPT checkpoint (iteration 2), its Hugging Face export, a
// corrupt copy, an HF directory with a config.json that is not JSON, a pre-LN BERT checkpoint,
// small files.
const dir = await Deno.makeTempDir({ prefix: "bad_input-" });
const ck = `${dir}/ck`, hf = `${dir}/hf`, corrupt = `${dir}/corrupt`, hfBad = `${dir}/hf_bad`;
const hfOddHeads = `${dir}/hf_odd_heads`;
const bertCk = `${dir}/bert_ck`;
const aFile = `${dir}/a_file`;
const fixtures = (async () => {
  const train = await runCli("cli/train.ts", [...tiny, "--train-iters", "2", "--save", ck]);
  strictEqual(train.code, 0, train.stderr);
  const exp = await runCli("cli/export_hf.ts", ["--load", ck, "--output", hf]);
  strictEqual(exp.code, 0, exp.stderr);
  const bert = await runCli("cli/train.ts", [
    ...tiny,
    "--model",
    "bert",
    "--train-iters",
    "1",
    "--save",
    bertCk,
  ]);
  strictEqual(bert.code, 0, bert.stderr);
  await Deno.mkdir(`${corrupt}/iter_0000002`, { recursive: true });
  for (const e of Deno.readDirSync(`${ck}/iter_0000002`)) {
    await Deno.copyFile(`${ck}/iter_0000002/${e.name}`, `${corrupt}/iter_0000002/${e.name}`);
  }
  await Deno.copyFile(`${ck}/latest`, `${corrupt}/latest`);
  await Deno.writeTextFile(`${corrupt}/iter_0000002/model_tp00.safetensors`, "garbage");
  await Deno.mkdir(hfBad);
  await Deno.writeTextFile(`${hfBad}/config.json`, "{not json");
  await Deno.copyFile(`${hf}/model.safetensors`, `${hfBad}/model.safetensors`);
  // 3 heads do not divide its 32 wide layers
  await Deno.mkdir(hfOddHeads);
  const config = JSON.parse(await Deno.readTextFile(`${hf}/config.json`));
  await Deno.writeTextFile(`${hfOddHeads}/config.json`, JSON.stringify({ ...config, n_head: 3 }));
  await Deno.copyFile(`${hf}/model.safetensors`, `${hfOddHeads}/model.safetensors`);
  await Deno.writeTextFile(aFile, "a file, not a directory\n");
  await Deno.writeTextFile(`${dir}/vocab.json`, '{"a": 0}');
  await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\na b\n");
  await Deno.writeTextFile(`${dir}/empty.txt`, "");
  await Deno.writeTextFile(`${dir}/short.txt`, "far too short");
  await Deno.writeTextFile(`${dir}/log.txt`, "not a log\n");
  await Deno.writeFile(`${dir}/odd.bin`, new Uint8Array(400));
  await Deno.writeTextFile(
    `${dir}/odd.bin.json`,
    JSON.stringify({ tokenizer: "GPT2BPETokenizer" }),
  );
})();
fixtures.catch(() => {}); // reported by the tests that await it

/** A directory nobody may write: /sys as root (permissions do not bind root), else chmod 555. */
/**
 * A directory this process cannot write: for root, `/sys` (which Deno lets only `-A` inspect, so
 * the cases that use it run with `-A` rather than the task's permission set).
 */
async function readOnlyDir(): Promise<string> {
  if (Deno.uid() === 0) return "/sys";
  const d = `${dir}/read_only`;
  await Deno.mkdir(d, { recursive: true });
  await Deno.chmod(d, 0o555);
  return d;
}

const unchanged = (path: string, text: string) => async () => {
  strictEqual(await Deno.readTextFile(path), text, `${path} changed`);
};

/** More ranks than this host's memory holds devices for ({@link RANK_HOST_BYTES} each). */
const ranksPastMemory = Math.floor(Deno.systemMemoryInfo().total / RANK_HOST_BYTES) + 1;

Deno.test("bad input, train: the command line (exit 2, before any work)", async () => {
  const T = (name: string, args: string[], says: RegExp): Case =>
    noTraining({ name, script: "cli/train.ts", args: [...tiny, ...args], code: 2, says });
  await runCases([
    T("unknown flag", ["--no-such-flag"], /Unknown option '--no-such-flag'/),
    T(
      "misspelled flag",
      ["--train-iter", "3"],
      /Unknown option '--train-iter' \(did you mean --train-iters\?/,
    ),
    T("--devices that does not parse", ["--devices", "abc"], /--devices: cannot parse "abc"/),
    // More ranks than this host's memory holds devices for (with a GPU, more than its GPUs):
    // refused at once, not killed for memory after minutes of starting Workers.
    T(
      "more ranks than memory",
      ["--nproc-per-node", String(ranksPastMemory)],
      new RegExp(
        `^${ranksPastMemory} ranks need at least .* GiB of memory for their devices alone|` +
          `${ranksPastMemory} ranks on this node but only`,
      ),
    ),
    T(
      "--tp without the ranks to run it",
      ["--tp", "2"],
      /not divisible by --tensor-model-parallel-size 2; to run its 2 ranks on this machine, add --nproc-per-node 2/,
    ),
    T("--save empty (an unset $CKPT)", ["--save", ""], /--save is empty: give it a value/),
    T("--data-path empty", ["--data-path="], /--data-path is empty: give it a value/),
    // The distributed flags too: `--node-rank "$NODE_RANK"` unset made a second node 0.
    T("--node-rank empty", ["--nnodes", "2", "--node-rank", ""], /--node-rank is empty: give it/),
    T("--master-port empty", ["--master-port="], /--master-port is empty: give it a value/),
    T("--devices empty", ["--devices", ""], /--devices is empty: give it a value/),
    T("not an integer", ["--num-layers", "two"], /--num-layers expects an integer, got "two"/),
    T(
      "heads do not divide hidden",
      ["--hidden-size", "30", "--num-attention-heads", "4"],
      /--hidden-size 30 is not divisible by --num-attention-heads 4/,
    ),
    T(
      "sequence longer than positions",
      ["--seq-length", "80", "--max-position-embeddings", "64"],
      /--seq-length 80 is longer than the position table/,
    ),
    T(
      "world not divisible by tp",
      ["--tp", "2", "--nproc-per-node", "3"],
      /world size 3 .* not divisible by --tensor-model-parallel-size 2/,
    ),
    T(
      "heads not divisible by tp",
      ["--tp", "2", "--nproc-per-node", "2", "--num-attention-heads", "3", "--hidden-size", "48"],
      /--num-attention-heads 3 is not divisible by the tensor-parallel size 2/,
    ),
    T(
      "--dist-timeout not a duration",
      ["--dist-timeout", "abc", "--nproc-per-node", "2"],
      /--dist-timeout "abc" is not a duration/,
    ),
    T(
      "--dist-timeout 0",
      ["--dist-timeout", "0s", "--nproc-per-node", "2"],
      /--dist-timeout "0s" must be at least 1 ms/,
    ),
    T("--launcher unknown", ["--launcher", "foo", "--nproc-per-node", "2"], /--launcher must be/),
    T("--nproc-per-node without value", ["--nproc-per-node"], /--nproc-per-node needs a value/),
    T("--adam-beta1 1", ["--adam-beta1", "1"], /--adam-beta1 must be in \[0, 1\), got 1/),
    T("--adam-beta2 2", ["--adam-beta2", "2"], /--adam-beta2 must be in \[0, 1\), got 2/),
    T("--adam-beta2 1", ["--adam-beta2", "1"], /--adam-beta2 must be in \[0, 1\), got 1/),
    T("negative value without =", ["--adam-beta1", "-0.5"], /--adam-beta1 takes a value/),
    T("--min-lr above --lr", ["--lr", "0.1", "--min-lr", "1"], /--min-lr 1 is above --lr 0.1/),
    T(
      "WSD without its annealing's length",
      ["--lr-decay-style", "WSD"],
      /--lr-decay-style WSD needs --lr-wsd-decay-iters N: the annealing's length, the last iterations of the decay/,
    ),
    T(
      "--lr-wsd-decay-iters without WSD",
      ["--lr-wsd-decay-iters", "3"],
      /--lr-wsd-decay-iters 3 applies to --lr-decay-style WSD only, and the style is cosine/,
    ),
    T(
      "WSD's annealing longer than the decay",
      ["--lr-decay-style", "WSD", "--lr-wsd-decay-iters", "50", "--train-iters", "10"],
      /--lr-wsd-decay-iters 50 is longer than the decay, 10 \(--train-iters\)/,
    ),
    T(
      "WSD's annealing in iterations in a run counted in samples",
      ["--train-samples", "64", "--lr-decay-style", "WSD", "--lr-wsd-decay-iters", "2"],
      /--lr-wsd-decay-iters 2 counts iterations, and this run counts samples .*: give --lr-wsd-decay-samples/,
    ),
    T(
      "WSD's annealing in samples in a run counted in iterations",
      ["--lr-decay-style", "WSD", "--lr-wsd-decay-samples", "8"],
      /--lr-wsd-decay-samples 8 counts samples, and this run counts iterations/,
    ),
    T(
      "BERT sequence too short",
      ["--model", "bert", "--seq-length", "4"],
      /BERT needs --seq-length/,
    ),
    T(
      "--top-p above 1",
      ["--sample-tokens", "5", "--top-p", "2"],
      /--top-p must be in \(0, 1\], got 2/,
    ),
    T("--top-p 0", ["--sample-tokens", "5", "--top-p", "0"], /--top-p must be in \(0, 1\], got 0/),
    T(
      "--overlap-tp-comm at --tp 1",
      ["--overlap-tp-comm"],
      /--overlap-tp-comm overlaps the tensor-parallel all-reduce, and at --tensor-model-parallel-size 1 there is none: drop it/,
    ),
    T(
      "the final sample's settings with --sample-tokens 0",
      ["--prompt", "Hi", "--top-k", "5"],
      /--prompt, --top-k: --sample-tokens 0 writes no sample, so they change nothing; drop them/,
    ),
    T(
      "BERT-only flag to GPT",
      ["--apply-residual-connection-post-layernorm"],
      /--apply-residual-connection-post-layernorm: for --model bert only/,
    ),
    T("--save-interval without --save", ["--save-interval", "5"], /--save-interval needs --save/),
    T(
      "empty --prompt for the final sample",
      ["--sample-tokens", "5", "--prompt", ""],
      /--prompt is empty: give the text the final sample continues, or --sample-tokens 0/,
    ),
    T("a --seed past 2^53", ["--seed", "9007199254740993"], /--seed 9007199254740993 is too large/),
    T(
      "loss scaling without --fp16",
      ["--bf16", "--loss-scale-window", "100"],
      /--loss-scale-window sets fp16's loss scaling; give --fp16/,
    ),
    T(
      "fp32 all-reduce of fp32 gradients",
      ["--accumulate-allreduce-grads-in-fp32"],
      /--accumulate-allreduce-grads-in-fp32 is for --fp16 or --bf16/,
    ),
    T(
      "a loss scale past f32's range",
      ["--fp16", "--loss-scale", "1e-45"],
      /--loss-scale 1e-45 is below float32's smallest normal number \(1\.2e-38\)/,
    ),
    T(
      "dynamic loss-scale flags beside a fixed --loss-scale",
      ["--fp16", "--loss-scale", "128", "--initial-loss-scale", "64"],
      /--initial-loss-scale sets the dynamic loss scale, and --loss-scale fixes it: give one/,
    ),
    T(
      "--devices name: without Dawn",
      ["--devices", "name:llvmpipe", "--backend", "deno"],
      /--devices name:… picks an adapter through Dawn's adapter= option; add --backend dawn/,
    ),
    T(
      "--split with train and validation files",
      ["--train-data-path", "README.md", "--valid-data-path", "README.md", "--split", "9,1,0"],
      /--split splits one corpus; --train-data-path with --valid-data-path are already split/,
    ),
    T(
      "GPT-only flags to BERT",
      ["--model", "bert", "--tokenizer", "gpt2", "--prompt", "Hi"],
      /--tokenizer, --prompt: for --model gpt only \(BERT uses WordPiece and samples no text\); drop them/,
    ),
    T(
      "a Megatron flag not implemented here, at a value other than what is done",
      ["--pipeline-model-parallel-size", "4"],
      /^--pipeline-model-parallel-size 4: pipeline parallelism is not implemented here \(tensor and data parallelism are\); 1 is accepted$/,
    ),
    T(
      "Megatron's --tensorboard-dir",
      ["--tensorboard-dir", "tb"],
      /--tensorboard-dir tb: TensorBoard logs are not written here; --log-json FILE writes one JSON object per iteration/,
    ),
    T(
      "a warm-up fraction beside a warm-up length",
      ["--lr-warmup-fraction", ".001", "--lr-warmup-iters", "5"],
      /give either --lr-warmup-fraction 0\.001 or --lr-warmup-iters 5, not both/,
    ),
    T("--adam-eps 0", ["--adam-eps", "0"], /--adam-eps must be a positive number in f32's range/),
  ]);
});

Deno.test("bad input, train: paths it will write are checked before the first step", async () => {
  await fixtures;
  const ro = await readOnlyDir();
  const text = await Deno.readTextFile(aFile);
  const T = (name: string, args: string[], says: RegExp, after?: Case["after"]): Case =>
    noTraining({
      name,
      script: "cli/train.ts",
      args: [...tiny, "--train-iters", "30", ...args],
      code: 2,
      says,
      after,
      allowAll: ro === "/sys" && args.some((a) => a === ro || a.startsWith(`${ro}/`)),
    });
  await runCases([
    T(
      "--save onto a file",
      ["--save", aFile],
      /--save .*a_file is a file, not a directory/,
      unchanged(aFile, text),
    ),
    T(
      "--save onto another run's checkpoints, not resumed",
      ["--save", ck],
      /--save .*ck already holds checkpoints \(latest: iteration 2\), which this run would overwrite: pass --load/,
      async () => strictEqual((await Deno.readTextFile(`${ck}/latest`)).trim(), "2"),
    ),
    T("--save in a read-only directory", ["--save", ro], /--save .* is not writable/),
    T(
      "--save that cannot be created",
      ["--save", `${ro}/sub/ck`],
      /--save .*: cannot create the directory/,
    ),
    T(
      "--save onto a file, Workers",
      ["--save", aFile, "--nproc-per-node", "2", "--tp", "2"],
      /--save .*a_file is a file, not a directory/,
    ),
    T(
      "--log-json in a missing directory",
      ["--log-json", `${dir}/no/such/dir/log.jsonl`],
      /--log-json .*: the directory .*no\/such\/dir does not exist/,
    ),
    T("--log-json onto a directory", ["--log-json", dir], /--log-json .* is a directory/),
    T(
      "--log-json onto a file that is no log (the run's own text)",
      ["--log-json", aFile],
      /--log-json .*a_file already holds something that is not a JSON log of this program/,
      unchanged(aFile, text),
    ),
  ]);
});

Deno.test("bad input, train: data, checkpoints and models", async () => {
  await fixtures;
  const size = (await Deno.stat(`${corrupt}/iter_0000002/model_tp00.safetensors`)).size;
  const T = (name: string, args: string[], code: 1 | 2, says: RegExp, after?: Case["after"]) =>
    noTraining({
      name,
      script: "cli/train.ts",
      args: [...tiny, "--train-iters", "2", ...args],
      code,
      says,
      after,
    });
  await runCases([
    T(
      "a .bin whose sidecar names an unknown tokenizer",
      ["--data-path", `${dir}/odd.bin`],
      1,
      /odd\.bin: its sidecar .*odd\.bin\.json names an unknown tokenizer "GPT2BPETokenizer" \(this program has gpt2, byte, bert\)/,
    ),
    T(
      "missing data",
      ["--data-path", `${dir}/none.txt`],
      1,
      /data path .*none\.txt.* does not exist/,
    ),
    T(
      "missing data, Workers",
      ["--data-path", `${dir}/none.txt`, "--nproc-per-node", "2", "--tp", "2"],
      1,
      /does not exist/,
    ),
    T("empty data", ["--data-path", `${dir}/empty.txt`], 1, /empty/i),
    T(
      "data too short",
      ["--data-path", `${dir}/short.txt`],
      1,
      /the training split of .*short\.txt has \d+ tokens, fewer than --seq-length \+ 1/,
    ),
    T(
      "a validation file too short (the advice leaves --split out: files are read whole)",
      ["--train-data-path", "README.md", "--valid-data-path", `${dir}/short.txt`],
      1,
      /the validation file .*short\.txt has 13 tokens, fewer than --seq-length \+ 1 = 17; use more data, or a shorter --seq-length/,
    ),
    T("missing checkpoint", ["--load", `${dir}/none`], 1, /none: no checkpoint/),
    T(
      "Megatron's vocabulary files, not GPT-2's",
      ["--vocab-file", `${dir}/vocab.json`, "--merge-file", `${dir}/merges.txt`],
      2,
      /--vocab-file .*vocab\.json and --merge-file .*merges\.txt are not GPT-2's vocabulary \(the vocabulary has 1 token, GPT-2's 50257\): no BPE files are read here; GPT-2's tokenizer is built in \(--tokenizer gpt2\)/,
    ),
    T(
      "a BERT --vocab-file that is not the vocabulary it reads",
      ["--model", "bert", "--vocab-file", aFile],
      2,
      /--vocab-file .*a_file is not the vocabulary this BERT run reads, bert-base-uncased's vocabulary \(line 1 is "a file, not a directory", there "\[PAD\]"\)/,
    ),
    T(
      "--init-method-std with --init-from-hf",
      ["--init-from-hf", hf, "--init-method-std", "0.006"],
      2,
      /--init-method-std sets the init of a fresh model; with --init-from-hf the weights come from .*hf: drop it/,
    ),
    T(
      "--init-method-std other than the checkpoint's",
      ["--load", ck, "--init-method-std", "0.006"],
      2,
      /--init-method-std 0\.006 disagrees with the checkpoint .*\(weights drawn with std 0\.02\); it sets the init of a fresh model only/,
    ),
    T(
      "corrupt safetensors",
      ["--load", corrupt],
      1,
      /model_tp00\.safetensors/,
      async () => {
        strictEqual((await Deno.stat(`${corrupt}/iter_0000002/model_tp00.safetensors`)).size, size);
        strictEqual((await Deno.readTextFile(`${corrupt}/latest`)).trim(), "2");
      },
    ),
    T(
      "--seed disagrees with the checkpoint",
      ["--load", ck, "--seed", "99"],
      2,
      /--seed 99 disagrees with the checkpoint .*\(seed 1234\); drop --seed/,
    ),
    T(
      "model flags disagree with the checkpoint",
      ["--load", ck, "--hidden-size", "48"],
      2,
      /--hidden-size 48 disagrees with the checkpoint .*\(hiddenSize 32\)/,
    ),
    T(
      "--model disagrees with the checkpoint",
      ["--load", ck, "--model", "bert"],
      2,
      /--model bert disagrees with the checkpoint .*a gpt/,
    ),
    T(
      "sequence longer than the checkpoint's positions",
      ["--load", ck, "--seq-length", "32"],
      2,
      /--seq-length 32 is longer than the position table of the checkpoint .* \(16\)/,
    ),
    T(
      "sequence longer than the HF positions",
      ["--init-from-hf", hf, "--seq-length", "32"],
      2,
      /--seq-length 32 is longer than the position table of .*config\.json \(16\)/,
    ),
    T(
      "HF heads not divisible by tp",
      ["--init-from-hf", hf, "--tp", "4", "--nproc-per-node", "4"],
      2,
      /config\.json: its 2 attention heads do not split over --tensor-model-parallel-size 4: use 1 or 2/,
    ),
    T(
      "HF vocabulary of another tokenizer",
      ["--init-from-hf", hf, "--tokenizer", "gpt2"],
      1,
      /has a vocabulary of 256, the gpt2 tokenizer 50257; use --tokenizer byte for this checkpoint/,
    ),
    T("config.json not JSON", ["--init-from-hf", hfBad], 1, /config\.json: not valid JSON/),
    noTraining({
      name: "config.json's heads do not divide its width, named as config.json names them",
      script: "cli/train.ts",
      args: ["--train-iters", "2", "--init-from-hf", hfOddHeads],
      code: 2,
      says: /hf_odd_heads\/config\.json: n_embd 32 is not divisible by n_head 3$/,
    }),
    T("missing HF directory", ["--init-from-hf", `${dir}/none`], 1, /config\.json: no such file/),
    T("--load a file", ["--load", aFile], 1, /a_file is a file, not a checkpoint directory/),
    T(
      "--load one iteration's folder",
      ["--load", `${ck}/iter_0000002`],
      1,
      /iter_0000002 is one iteration of a checkpoint: pass its directory, .*ck, with --iteration 2/,
    ),
    T(
      "flag the HF config overrides",
      ["--init-from-hf", hf, "--hidden-size", "64"],
      2,
      /--hidden-size 64 disagrees with .*config\.json \(n_embd 32\).*drop the flag/,
    ),
  ]);
});

Deno.test("bad input, train: failures found on the device or during training", async () => {
  await fixtures;
  const nan = `${dir}/nan`;
  // Without a GPU (a software adapter: device memory is host memory), a model past the host's
  // memory is refused once the rank has its adapter, before it is built (--num-layers 2000
  // --hidden-size 2048 was killed for memory after 13 s).
  const softwareOnly = listHostGpus().length === 0
    ? [noTraining({
      name: "a model past host memory on a software adapter",
      script: "cli/train.ts",
      args: [
        ...tiny,
        "--num-layers",
        "2000",
        "--hidden-size",
        "2048",
        "--num-attention-heads",
        "16",
      ],
      code: 2,
      says: /^this run needs at least 1500\.\d GiB of memory \(1 rank × /,
    })]
    : [];
  await runCases([
    ...softwareOnly,
    noTraining({
      name: "sequence past the adapter's binding limit",
      script: "cli/train.ts",
      args: [
        ...tiny.slice(0, 6),
        "--seq-length",
        "8192",
        "--max-position-embeddings",
        "8192",
        "--micro-batch-size",
        "2",
        "--train-iters",
        "1",
        "--sample-tokens",
        "0",
        // The unfused scores; fused attention holds none (tests/train_cli_test.ts).
        "--no-flash-attn",
      ],
      code: 1,
      says:
        /--seq-length 8192 is too long for this adapter: .*maxStorageBufferBindingSize.*--seq-length ≤ \d+/,
    }),
    noTraining({
      // A position table of 2.56 GB (--hidden-size 100000 is refused first now, past host memory).
      name: "a parameter past the adapter's maxBufferSize",
      script: "cli/train.ts",
      args: [...tiny, "--train-iters", "1", "--max-position-embeddings", "20000000"],
      code: 1,
      says:
        /a parameter of this model is past an adapter limit; lower .*--max-position-embeddings.*maxBufferSize/,
    }),
    noTraining({
      // Its qkv passes one binding too, so fused attention cannot run it either.
      name: "a micro-batch whose attention scores pass one binding",
      script: "cli/train.ts",
      args: [...tiny, "--train-iters", "1", "--seq-length", "32", "--micro-batch-size", "100000"],
      code: 1,
      says:
        /--micro-batch-size 100000 is too large for this adapter at --seq-length 32: .*use --micro-batch-size ≤ \d+/,
    }),
    noTraining({
      name: "BERT with an empty validation part names the split, not the corpus",
      script: "cli/train.ts",
      args: [...tiny, "--model", "bert", "--train-iters", "1", "--split", "100,0"],
      code: 1,
      says:
        /the validation part of the split has no document with two or more sentences for sentence pairs: .*--eval-iters 0/,
    }),
    noTraining({
      name: "a node that cannot reach the rendezvous store (fails before any rank runs)",
      script: "cli/train.ts",
      args: [
        ...tiny,
        "--train-iters",
        "1",
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--nproc-per-node",
        "1",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        String(freeLocalPort()),
        "--dist-timeout",
        "2s",
      ],
      code: 1,
      says: /could not reach the rendezvous store at 127\.0\.0\.1:\d+ within 2000 ms/,
    }),
    noTraining({
      name: "--devices name: that matches no adapter (one rank: still chosen, not ignored)",
      script: "cli/train.ts",
      args: [...tiny, "--train-iters", "1", "--devices", "name:NoSuchGPU", "--backend", "dawn"],
      code: 1,
      says: /No WebGPU adapter from the dawn backend \(no adapter .*name 'NoSuchGPU'/,
    }),
    {
      name: "loss becomes NaN (the checkpoint and log before it stay)",
      script: "cli/train.ts",
      args: [
        ...tiny,
        "--lr",
        "1e12",
        "--min-lr",
        "0",
        "--lr-warmup-iters",
        "0",
        "--clip-grad",
        "0",
        "--train-iters",
        "20",
        "--save",
        `${nan}/ck`,
        "--save-interval",
        "1",
        "--log-json",
        `${nan}/log.jsonl`,
      ],
      code: 1,
      says:
        /the loss became NaN at iteration (\d+), after the update of iteration \d+ \(learning rate 1\.00E\+12, gradient norm .*\): .*lower --lr/,
      after: async (r) => {
        const it = Number(/became NaN at iteration (\d+)/.exec(r.stderr)![1]);
        strictEqual((await Deno.readTextFile(`${nan}/ck/latest`)).trim(), String(it - 1));
        const logged = (await Deno.readTextFile(`${nan}/log.jsonl`)).trim().split("\n")
          .filter((l) => JSON.parse(l).type !== "header");
        strictEqual(logged.length, it - 1);
      },
    },
    {
      name: "corrupt safetensors, Workers (rank 0 prints the one line)",
      script: "cli/train.ts",
      args: [...tiny, "--load", corrupt, "--nproc-per-node", "2", "--tp", "2", "--backend", "deno"],
      code: 1,
      says: /model_tp00\.safetensors/,
    },
  ]);
});

Deno.test("bad input, eval, generate, fill-mask, export-hf", async () => {
  await fixtures;
  const text = await Deno.readTextFile(aFile);
  const C = (script: string, name: string, args: string[], code: 1 | 2, says: RegExp) => ({
    name: `${script.slice(4, -3)}: ${name}`,
    script,
    args,
    code,
    says,
  });
  await runCases([
    C("cli/eval.ts", "no model", ["--data-path", "README.md"], 2, /exactly one of --load/),
    C("cli/eval.ts", "no data", ["--load", ck], 2, /--data-path is required/),
    C(
      "cli/eval.ts",
      "--mask-seed for a GPT",
      ["--load", ck, "--data-path", "README.md", "--mask-seed", "5"],
      2,
      /--mask-seed is BERT's \(its masking\); this model is a GPT: drop it$/,
    ),
    C(
      "cli/eval.ts",
      "a batch past the adapter's binding limit",
      ["--load", ck, "--micro-batch-size", "60000", "--data-path", "data/assets/moby_dick.txt"],
      1,
      /past an adapter limit at --seq-length 16 and --micro-batch-size 60000; lower them/,
    ),
    C(
      "cli/eval.ts",
      "a .bin whose sidecar names an unknown tokenizer",
      ["--load", ck, "--data-path", `${dir}/odd.bin`],
      1,
      /odd\.bin\.json: unknown tokenizer "GPT2BPETokenizer"/,
    ),
    C(
      "cli/eval.ts",
      "--iteration of a Hugging Face directory",
      ["--init-from-hf", hfBad, "--iteration", "3", "--data-path", "README.md"],
      2,
      /--iteration picks a checkpoint of --load DIR/,
    ),
    C(
      "cli/eval.ts",
      "missing checkpoint",
      ["--load", `${dir}/none`, "--data-path", "README.md"],
      1,
      /no checkpoint/,
    ),
    C(
      "cli/eval.ts",
      "corrupt safetensors",
      ["--load", corrupt, "--data-path", "README.md"],
      1,
      /model_tp00\.safetensors/,
    ),
    C(
      "cli/eval.ts",
      "config.json not JSON",
      ["--init-from-hf", hfBad, "--data-path", "README.md"],
      1,
      /not valid JSON/,
    ),
    C(
      "cli/eval.ts",
      "config.json's heads do not divide its width",
      ["--init-from-hf", hfOddHeads, "--data-path", "README.md"],
      1,
      /hf_odd_heads: n_embd 32 is not divisible by n_head 3$/,
    ),
    C(
      "cli/eval.ts",
      "checkpoint heads not divisible by --tp",
      ["--load", ck, "--tp", "4", "--data-path", "README.md"],
      2,
      /iter_0000002: its 2 attention heads do not split over --tensor-model-parallel-size 4: use 1 or 2$/,
    ),
    C(
      "cli/train.ts",
      "resumed checkpoint's heads not divisible by --tp (named as the checkpoint's, not as a flag)",
      ["--load", ck, "--tp", "4", "--nproc-per-node", "4", "--data-path", "README.md"],
      2,
      /iter_0000002 \(iteration 2\): its 2 attention heads do not split over --tensor-model-parallel-size 4: use 1 or 2$/,
    ),
    C(
      "cli/train.ts",
      "resumed with another tokenizer than the checkpoint's (whose vocabulary is the model's)",
      ["--load", ck, "--tokenizer", "gpt2", "--data-path", "README.md"],
      2,
      /--tokenizer gpt2 disagrees with the checkpoint .*iter_0000002 \(iteration 2\) \(tokenizer byte\); drop --tokenizer$/,
    ),
    C(
      "cli/generate.ts",
      "--ignore-eos with the byte tokenizer (it has none)",
      ["--load", ck, "--ignore-eos", "--prompt", "hi"],
      2,
      /--ignore-eos: the byte tokenizer has no end-of-text id to ignore; drop it/,
    ),
    C(
      "cli/generate.ts",
      "HF heads not divisible by --tp",
      ["--init-from-hf", hf, "--tp", "4", "--prompt", "hi", "--tokenizer", "byte"],
      2,
      /hf: its 2 attention heads do not split over --tensor-model-parallel-size 4: use 1 or 2$/,
    ),
    C(
      "cli/eval.ts",
      "missing data",
      ["--load", ck, "--data-path", `${dir}/none.txt`],
      1,
      /does not exist/,
    ),
    C(
      "cli/eval.ts",
      "sequence past the positions",
      ["--load", ck, "--data-path", "README.md", "--seq-length", "99"],
      2,
      /--seq-length 99 is longer than the model's position table \(16\)/,
    ),
    C("cli/generate.ts", "no prompt", ["--load", ck], 2, /--prompt TEXT is required/),
    C(
      "cli/generate.ts",
      "missing checkpoint",
      ["--load", `${dir}/none`, "--prompt", "a"],
      1,
      /no checkpoint/,
    ),
    C("cli/fill_mask.ts", "no [MASK]", ["--load", ck, "--text", "a b"], 2, /has no \[MASK\] token/),
    C(
      "cli/fill_mask.ts",
      "a GPT checkpoint",
      ["--load", ck, "--text", "a [MASK]"],
      1,
      /holds a gpt, not a BERT/,
    ),
    C("cli/export_hf.ts", "no --output", ["--load", ck], 2, /--load and --output are required/),
    C(
      "cli/export_hf.ts",
      "a pre-LN BERT (HF's BERT is post-LN)",
      ["--load", bertCk, "--output", `${dir}/bert_hf`],
      1,
      /this BERT is pre-LN; .*train BERT with --apply-residual-connection-post-layernorm/,
    ),
    {
      ...C(
        "cli/export_hf.ts",
        "--output holding a training checkpoint",
        ["--load", ck, "--output", ck],
        2,
        /--output .*ck holds a training checkpoint \(its latest file\); .*export into another directory/,
      ),
      after: async () => {
        ok(!await Deno.stat(`${ck}/config.json`).then(() => true, () => false), "exported");
      },
    },
    {
      ...C(
        "cli/export_hf.ts",
        "--output onto a file",
        ["--load", ck, "--output", aFile],
        2,
        /--output .* is a file/,
      ),
      after: unchanged(aFile, text),
    },
    {
      ...C(
        "cli/export_hf.ts",
        "missing checkpoint",
        ["--load", `${dir}/none`, "--output", `${dir}/out_hf`],
        1,
        /no checkpoint/,
      ),
      after: async () => {
        ok(!await Deno.stat(`${dir}/out_hf`).then(() => true, () => false), "output made");
      },
    },
  ]);
});

Deno.test("bad input, preprocess, plot, info, launch", async () => {
  await fixtures;
  const C = (script: string, name: string, args: string[], code: 1 | 2, says: RegExp) => ({
    name: `${script.slice(4, -3)}: ${name}`,
    script,
    args,
    code,
    says,
  });
  await runCases([
    C(
      "cli/preprocess.ts",
      "no --output",
      ["--tokenizer", "byte"],
      2,
      /--output OUT\.bin \(or Megatron's --output-prefix PREFIX\) is required/,
    ),
    C("cli/preprocess.ts", "unknown flag", ["--bogus"], 2, /Unknown option '--bogus'/),
    C(
      "cli/profile.ts",
      "heads that do not divide the hidden size",
      ["--hidden-size", "100", "--num-attention-heads", "3"],
      2,
      /--hidden-size 100 is not divisible by --num-attention-heads 3/,
    ),
    C("cli/serve.ts", "a port past 65535", ["--port", "70000"], 2, /--port must be ≤ 65535/),
    C(
      "cli/serve.ts",
      "a host with a port in it",
      ["--host", "localhost:8000", "--port", "0"],
      2,
      /^--host localhost:8000 is not a host name or an address .*a port goes in --port/,
    ),
    C(
      "cli/train.ts",
      "a tuning cache beside --no-matmul-autotune",
      ["--no-matmul-autotune", "--matmul-tuning-cache", "x.json"],
      2,
      /^--matmul-tuning-cache changes nothing with --no-matmul-autotune/,
    ),
    C(
      "cli/profile.ts",
      "a train flag it does not apply",
      ["--fp16"],
      2,
      /^--fp16: a train flag profile does not apply \(it runs fp32 steps/,
    ),
    C(
      "cli/profile.ts",
      "a train flag with a value it does not apply",
      ["--train-iters", "10"],
      2,
      /^--train-iters: a train flag profile does not apply/,
    ),
    C(
      "cli/preprocess.ts",
      "unknown tokenizer",
      ["--output", `${dir}/x.bin`, "--tokenizer", "foo"],
      2,
      /--tokenizer must be one of/,
    ),
    C(
      "cli/preprocess.ts",
      "--output in a missing directory",
      ["--output", `${dir}/no/x.bin`, "--tokenizer", "byte", "--data-path", "README.md"],
      2,
      /--output .*: the directory .* does not exist/,
    ),
    C(
      "cli/preprocess.ts",
      "missing data",
      ["--output", `${dir}/x.bin`, "--tokenizer", "byte", "--data-path", `${dir}/none.txt`],
      1,
      /does not exist/,
    ),
    C("cli/plot.ts", "no log", [], 2, /give one LOG\.jsonl/),
    C("cli/plot.ts", "an empty log path", [""], 2, /a LOG\.jsonl path is empty/),
    C(
      "cli/plot.ts",
      "an empty label",
      [`${dir}/log.txt`, "--labels", ","],
      2,
      /--labels , has an empty label/,
    ),
    C("cli/plot.ts", "missing log", [`${dir}/none.jsonl`], 1, /cannot read .*none\.jsonl/),
    C("cli/plot.ts", "not JSON lines", [`${dir}/log.txt`], 1, /log\.txt: line 1 is not JSON/),
    C(
      "cli/preprocess.ts",
      "--output the input",
      ["--data-path", `${dir}/short.txt`, "--output", `${dir}/short.txt`],
      2,
      /--output .*short\.txt is the input \(--data-path .*short\.txt\), which would be replaced/,
    ),
    C(
      "cli/preprocess.ts",
      "--output the input, a token file already",
      ["--data-path", `${dir}/odd.bin`, "--output", `${dir}/odd.bin`],
      1,
      /odd\.bin is already a token file; preprocess reads text$/,
    ),
    C(
      "cli/plot.ts",
      "--output not an SVG (here the log itself)",
      [`${dir}/log.txt`, "--output", `${dir}/log.txt`],
      2,
      /--output .*log\.txt: the plot is an SVG; name it FILE\.svg$/,
    ),
    C(
      "cli/train.ts",
      "BERT given a .bin of token ids",
      ["--model", "bert", ...tiny, "--data-path", `${dir}/odd.bin`],
      1,
      /odd\.bin holds token ids, not text, and BERT reads text/,
    ),
    C(
      "cli/info.ts",
      "unknown backend",
      ["--backend", "metal"],
      2,
      /--backend must be one of deno, dawn/,
    ),
    C(
      "cli/launch.ts",
      "--dist-timeout not a duration",
      ["--dist-timeout", "abc", "x.ts"],
      2,
      /--dist-timeout "abc"/,
    ),
    C(
      "cli/launch.ts",
      "--devices that does not parse (refused by the launcher: 2, not 'launch failed')",
      ["--devices", "abc", "--nproc-per-node", "2", "collectives/bench_worker.ts"],
      2,
      /--devices: cannot parse "abc"/,
    ),
    C("cli/launch.ts", "no module", [], 2, /no WORKER_MODULE: usage: deno task launch/),
    C("cli/launch.ts", "an empty module", [""], 2, /an empty WORKER_MODULE: usage/),
    C("cli/launch.ts", "missing module", [`${dir}/none.ts`], 2, /worker module .* does not exist/),
  ]);
});

for (const tp of ["1", "2"]) {
  Deno.test(`generate at --tp ${tp} into a pipe its reader closed stops quietly, as SIGPIPE would (141)`, async () => {
    await fixtures;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...permissionArgs("cli/generate.ts"),
        "cli/generate.ts",
        "--load",
        ck,
        "--prompt",
        "Call me",
        "--max-new-tokens",
        "5000",
        "--tp",
        tp,
      ],
      cwd: new URL("../", import.meta.url).pathname,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).spawn();
    const reader = child.stdout.getReader();
    await reader.read(); // the prompt, then the reader goes away (`| head -c 5`)
    await reader.cancel();
    const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    strictEqual(status.code, SIGPIPE_STATUS, err);
    ok(!/a bug|error:/.test(err), err);
  });
}

Deno.test("NON_FINITE_LOSS matches every message of a loss that is not finite (bench:layernorm reads it)", () => {
  const prev = { lr: 1e-3, gradNorm: 5 };
  for (const loss of [NaN, Infinity, -Infinity]) {
    match(nonFiniteLossMessage(loss, 1, true, "random init", null, 1), NON_FINITE_LOSS);
    match(nonFiniteLossMessage(loss, 7, false, "random init", prev, 0), NON_FINITE_LOSS);
  }
});

Deno.test("--debug adds the stack trace; a bug always shows it", async () => {
  const r = await runCli("cli/train.ts", ["--adam-beta2", "2", "--debug"], undefined, {
    timeoutMs: 60000,
  });
  strictEqual(r.code, 2);
  match(r.stderr, /^error: --adam-beta2 must be in \[0, 1\), got 2$/m);
  match(r.stderr, /^\s+at /m);
  // Typed errors are the user's; anything else is a bug.
  deepStrictEqual(classify(new UsageError("u")), { code: 2, message: "u" });
  deepStrictEqual(classify(new UnknownBackendError("metal")), {
    code: 2,
    message: 'unknown backend "metal": expected one of deno, dawn',
  });
  deepStrictEqual(classify(new DataError("d\nmore")), { code: 1, message: "d more" });
  deepStrictEqual(classify(new CheckpointError("c")), { code: 1, message: "c" });
  deepStrictEqual(classify(new RunError("r")), { code: 1, message: "r" });
  deepStrictEqual(classify(new Deno.errors.NotFound("n")), { code: 1, message: "n" });
  // A full disk or a read-only file system come from Deno as a plain Error, by errno.
  const full = "No space left on device (os error 28)";
  deepStrictEqual(classify(new Error(full)), { code: 1, message: full });
  strictEqual(classify(new Error("Read-only file system (os error 30)"))?.code, 1);
  strictEqual(classify(new Deno.errors.FilesystemLoop("loop"))?.code, 1);
  strictEqual(classify(new TypeError("t")), null);
  const printed: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => printed.push(a.join(" "));
  try {
    strictEqual(reportError(new TypeError("x is undefined"), false), 1);
  } finally {
    console.error = orig;
  }
  match(printed.join("\n"), /^error: x is undefined \(a bug/);
  match(printed.join("\n"), /\n\s*at /);
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* gone */ }
});

Deno.test("a model from a file that does not split over --tp: what it holds, and the sizes that fit", () => {
  const shape = { vocabSize: 256, numLayers: 1, hiddenSize: 64, numHeads: 2, maxPositions: 16 };
  strictEqual(
    splitMisfit(shape, 4),
    "its 2 attention heads do not split over --tensor-model-parallel-size 4: use 1 or 2",
  );
  strictEqual(
    splitMisfit({ ...shape, numHeads: 8, ffnHiddenSize: 100 }, 8),
    "its MLP size 100 does not split over --tensor-model-parallel-size 8: use 1, 2 or 4",
  );
  strictEqual(splitMisfit({ ...shape, hiddenSize: 48, numHeads: 3 }, 3), undefined);
  strictEqual(splitMisfit(shape, 2), undefined);
});
