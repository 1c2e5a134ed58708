/**
 * Megatron flags that a pasted Megatron script carries and this project does
 * not implement: one table, each with the values that ask for what the project
 * does anyway (accepted, changing nothing) and the one-line reason the others
 * are refused; and Megatron's vocabulary files (`--vocab-file`,
 * `--merge-file`), accepted when they are the vocabulary the run reads anyway.
 * The flags are Megatron's (megatron/training/arguments.py and the config
 * dataclasses it builds its parser from), as its example scripts pass them.
 * @module
 */

import { DataError } from "../data/errors.ts";
import { DEFAULT_VOCAB_MULTIPLE } from "../models/shape.ts";
import { type FlagSpec, type FlagValues, UsageError, wasGiven } from "./flags.ts";

/** A Megatron flag this project does not implement, as a {@link FlagSpec}. */
function unimplemented(
  type: FlagSpec["type"],
  reason: string,
  accepts?: readonly string[] | true,
  list?: boolean,
): FlagSpec {
  return { type, help: reason, unimplemented: { reason, accepts }, ...(list ? { list } : {}) };
}

/**
 * Megatron's flags for what this project does not do. Given with a value they
 * accept (a switch that accepts `true`: given at all), they ask for what it
 * does anyway and change nothing; otherwise `parseFlags` refuses them with
 * the reason (`--pipeline-model-parallel-size 4: pipeline parallelism is not
 * implemented here …; 1 is accepted`). Nodes may differ in them
 * (cli/same_flags.ts): they change nothing.
 */
export const MEGATRON_UNIMPLEMENTED: Readonly<Record<string, FlagSpec>> = {
  "pipeline-model-parallel-size": unimplemented(
    "int",
    "pipeline parallelism is not implemented here (tensor and data parallelism are)",
    ["1"],
  ),
  "sequence-parallel": unimplemented(
    "boolean",
    "sequence parallelism is not implemented here: layer norms and dropout outside the " +
      "parallel regions run replicated on every tensor-parallel rank, as in the paper",
  ),
  "use-distributed-optimizer": unimplemented(
    "boolean",
    "the optimizer state is not sharded over data-parallel ranks here (each keeps all its " +
      "AdamW moments)",
  ),
  "rampup-batch-size": unimplemented(
    "string",
    "the global batch size is constant here (--global-batch-size)",
    undefined,
    true,
  ),
  "step-batch-size-schedule": unimplemented(
    "string",
    "the global batch size is constant here (--global-batch-size)",
  ),
  "untie-embeddings-and-output-weights": unimplemented(
    "boolean",
    "the output layer is tied to the input embedding here (GPT-2's, BERT's and the paper's)",
  ),
  "position-embedding-type": unimplemented(
    "string",
    "positions are a learned absolute table here (GPT-2's and BERT's)",
    ["learned_absolute"],
  ),
  "normalization": unimplemented(
    "string",
    "layer norm is the only normalization here",
    ["LayerNorm"],
  ),
  "disable-bias-linear": unimplemented(
    "boolean",
    "the linear layers have biases here (GPT-2's and BERT's)",
  ),
  "swiglu": unimplemented("boolean", "the MLP is GPT-2's GeLU MLP here"),
  "make-vocab-size-divisible-by": unimplemented(
    "int",
    `the vocabulary is padded to a multiple of ${DEFAULT_VOCAB_MULTIPLE} × the ` +
      "tensor-parallel size here (Megatron's default)",
    [String(DEFAULT_VOCAB_MULTIPLE)],
  ),
  "attention-backend": unimplemented(
    "string",
    "attention runs this project's own kernels: FlashAttention-style fused ones by default, " +
      "unfused with --no-flash-attn",
    ["auto", "flash"],
  ),
  "attention-softmax-in-fp32": unimplemented(
    "boolean",
    "the attention softmax runs in f32 here in every precision",
    true,
  ),
  "no-masked-softmax-fusion": unimplemented(
    "boolean",
    "a CUDA fusion of Megatron's; attention here is as --use-flash-attn / --no-flash-attn say",
    true,
  ),
  "use-mcore-models": unimplemented(
    "boolean",
    "deprecated in Megatron, which ignores it; ignored here too",
    true,
  ),
  "distributed-backend": unimplemented(
    "string",
    "ignored: the collectives are this project's own (shared memory among Workers, TCP and " +
      "/dev/shm between processes); Megatron takes nccl or gloo",
    ["nccl", "gloo"],
  ),
  "tensorboard-dir": unimplemented(
    "string",
    "TensorBoard logs are not written here; --log-json FILE writes one JSON object per " +
      "iteration (deno task plot draws the curves)",
  ),
};

/** Megatron's vocabulary-file flags: checked against the vocabulary a run reads ({@link checkVocabFiles}). */
export const VOCAB_FILE_FLAGS: Readonly<Record<string, FlagSpec>> = {
  "vocab-file": {
    type: "string",
    help: "Megatron's vocabulary file: GPT-2's vocab.json (with --merge-file; the run then reads " +
      "GPT-2's BPE, --tokenizer gpt2) or BERT's vocab.txt, accepted when it is the vocabulary " +
      "the run reads anyway (no other is read)",
  },
  "merge-file": { type: "string", help: "GPT-2's merges.txt, with --vocab-file" },
};

/** `path`'s text, or a {@link DataError} naming `flag`. */
async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DataError(`--${flag} ${path} does not exist`);
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new DataError(`--${flag} ${path} is a directory, not a file`);
    }
    throw e;
  }
}

/**
 * Megatron's `--vocab-file` and `--merge-file`, once the run's model family
 * and tokenizer are settled (after `agreeWithModelSource`). This project reads
 * no vocabulary file of a user's: GPT-2's BPE is built in and BERT reads
 * bert-base-uncased's vocabulary (or that of `--init-from-hf` or `--load`).
 * So a GPT run takes both files only when they are GPT-2's `vocab.json` and
 * `merges.txt` (same tokens, ids and merges: `gpt2FilesDiffer`), and then reads
 * GPT-2's BPE: `--tokenizer gpt2` is adopted unless another tokenizer was
 * given or is the checkpoint's (refused). A BERT run takes `--vocab-file` only
 * when it holds the tokens, in order, of the vocabulary it reads. Anything else
 * is refused, naming the built-in tokenizer to use. Returns the arguments that
 * carry an adopted tokenizer to ranks that parse the flags again.
 */
export async function checkVocabFiles(f: FlagValues): Promise<string[]> {
  const vocab = f["vocab-file"] as string | undefined;
  const merges = f["merge-file"] as string | undefined;
  if (vocab === undefined && merges === undefined) return [];
  if (f.model === "bert") {
    if (merges !== undefined) {
      throw new UsageError("--merge-file: BERT's WordPiece vocabulary has no merges; drop it");
    }
    const wp = await import("../data/wordpiece_tokenizer.ts");
    const from = (f["init-from-hf"] ?? f.load) as string | undefined;
    const own = from ? await wp.readWordPieceTokenizer(from) : null;
    const expected = (own ?? await wp.createBertTokenizer()).tokens;
    const where = own ? `the vocabulary of ${from}` : "bert-base-uncased's vocabulary";
    const tokens = (await readFlagFile("vocab-file", vocab!)).split(/\r?\n/);
    if (tokens[tokens.length - 1] === "") tokens.pop();
    const at = tokens.findIndex((t, i) => t !== expected[i]);
    const differs = at >= 0
      ? `line ${at + 1} is ${clipped(tokens[at])}, there ${clipped(expected[at] ?? "")}`
      : tokens.length !== expected.length
      ? `${tokens.length} tokens against ${expected.length}`
      : null;
    if (differs) {
      throw new UsageError(
        `--vocab-file ${vocab} is not the vocabulary this BERT run reads, ${where} (${differs}): ` +
          "no other vocabulary file is read here; drop the flag, or start from a Hugging Face " +
          "BERT directory holding that vocab.txt (--init-from-hf DIR)",
      );
    }
    return [];
  }
  if (vocab === undefined || merges === undefined) {
    throw new UsageError(
      `${vocab === undefined ? "--merge-file" : "--vocab-file"} without ` +
        `${vocab === undefined ? "--vocab-file" : "--merge-file"}: GPT-2's BPE takes both; ` +
        "its tokenizer is built in here: --tokenizer gpt2 alone does the same",
    );
  }
  const { gpt2FilesDiffer } = await import("../data/gpt2_tokenizer.ts");
  const differs = gpt2FilesDiffer(
    await readFlagFile("vocab-file", vocab),
    await readFlagFile("merge-file", merges),
  );
  if (differs) {
    throw new UsageError(
      `--vocab-file ${vocab} and --merge-file ${merges} are not GPT-2's vocabulary (${differs}): ` +
        "no BPE files are read here; GPT-2's tokenizer is built in (--tokenizer gpt2), or " +
        "--tokenizer byte",
    );
  }
  if (f.tokenizer === "gpt2") return [];
  if (wasGiven(f, "tokenizer") || f.load) {
    const whose = wasGiven(f, "tokenizer") ? "--tokenizer" : "the checkpoint's tokenizer";
    throw new UsageError(
      `--vocab-file and --merge-file are GPT-2's vocabulary, and ${whose} is ${f.tokenizer}: ` +
        "drop them, or the other tokenizer",
    );
  }
  f.tokenizer = "gpt2";
  return ["--tokenizer", "gpt2"];
}

/** `s` quoted, cut to 40 characters (a JSON file's one line can be megabytes). */
function clipped(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
}
