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
import { firstRunOfRestartableJob } from "./resume_flags.ts";

/**
 * A Megatron flag this project does not implement, as a {@link FlagSpec}:
 * refused with `reason`, or accepted at the values of `accepts` (true: given
 * at all), changing nothing.
 */
export function unimplemented(
  type: FlagSpec["type"],
  reason: string,
  accepts?: readonly string[] | true,
  list?: boolean,
): FlagSpec {
  return { type, help: reason, unimplemented: { reason, accepts }, ...(list ? { list } : {}) };
}

/** Why TensorBoard's flags are refused. */
const TENSORBOARD = "TensorBoard logs are not written here; --log-json FILE writes one JSON " +
  "object per iteration (deno task plot draws the curves)";

/** Why Weights & Biases' flags are refused. */
const WANDB = "Weights & Biases is not written to here; --log-json FILE writes one JSON object " +
  "per iteration (deno task plot draws the curves)";

/** Why pipeline parallelism's flags are refused. */
const PIPELINE = "pipeline parallelism is not implemented here (tensor and data parallelism are)";

/** Why mixture-of-experts flags are refused. */
const MOE = "mixture of experts is not implemented here: each layer has one dense GeLU MLP";

/** Why grouped-query attention's flags are refused. */
const MHA = "attention is multi-head here: each head has its own keys and values (GPT-2's and " +
  "BERT's)";

/** Why rotary embeddings' flags are refused. */
const NO_ROTARY = "there are no rotary embeddings here: positions are a learned absolute table " +
  "(GPT-2's and BERT's)";

/** Why Megatron's recompute flags are refused. */
const RECOMPUTE = "recomputation here is of whole layers: --recompute-activations keeps each " +
  "layer's input and runs the layer again in backward (Megatron's full granularity, uniform " +
  "method, 1 layer)";

/** Why Megatron's weight-decay increment flags are refused. */
const WEIGHT_DECAY = "weight decay is constant here (--weight-decay); Megatron's increment " +
  "from --start-weight-decay to --end-weight-decay is not implemented";

/** Why a separate learning rate for the embedding and output layers is refused. */
const ONE_LR = "every parameter follows the one schedule here (--lr, --min-lr); a separate " +
  "rate for the embedding and output layers is not implemented";

/** Why switches that turn off a CUDA fusion of Megatron's are accepted. */
const CUDA_FUSION = "a CUDA fusion of Megatron's, a matter of speed; the kernels here are this " +
  "project's own WebGPU ones";

/**
 * Megatron's flags for what this project does not do. Given with a value they
 * accept (a switch that accepts `true`: given at all), they ask for what it
 * does anyway and change nothing; otherwise `parseFlags` refuses them with
 * the reason (`--pipeline-model-parallel-size 4: pipeline parallelism is not
 * implemented here …; 1 is accepted`). Nodes may differ in them
 * (cli/same_flags.ts): they change nothing.
 */
export const MEGATRON_UNIMPLEMENTED: Readonly<Record<string, FlagSpec>> = {
  "pipeline-model-parallel-size": unimplemented("int", PIPELINE, ["1"]),
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
    "the collectives are this project's own (shared memory among Workers, TCP and /dev/shm " +
      "between processes), so Megatron's choices change nothing here",
    ["nccl", "gloo"],
  ),
  "tensorboard-dir": unimplemented("string", TENSORBOARD),
  // Parallelism.
  "context-parallel-size": unimplemented(
    "int",
    "context parallelism (the sequence split over ranks) is not implemented here (tensor and " +
      "data parallelism are)",
    ["1"],
  ),
  "expert-model-parallel-size": unimplemented(
    "int",
    "expert parallelism is not implemented here: there is no mixture of experts",
    ["1"],
  ),
  "num-layers-per-virtual-pipeline-stage": unimplemented("int", PIPELINE),
  "decoder-first-pipeline-num-layers": unimplemented("int", PIPELINE),
  "decoder-last-pipeline-num-layers": unimplemented("int", PIPELINE),
  "overlap-param-gather": unimplemented(
    "boolean",
    "it overlaps the distributed optimizer's parameter all-gather, and the optimizer state is " +
      "not sharded here (no --use-distributed-optimizer); --overlap-grad-reduce is implemented",
  ),
  // The model.
  "transformer-impl": unimplemented(
    "string",
    "there is no Transformer Engine (NVIDIA's CUDA library) here: the layers run this " +
      "project's own WebGPU kernels",
    ["local"],
  ),
  "use-legacy-models": unimplemented(
    "boolean",
    "it picks Megatron's legacy model classes and their torch checkpoints; the models and " +
      "checkpoints here are this project's own",
  ),
  "num-experts": unimplemented("int", MOE),
  "moe-router-topk": unimplemented("int", MOE),
  "moe-router-load-balancing-type": unimplemented("string", MOE),
  "moe-router-score-function": unimplemented("string", MOE),
  "moe-router-dtype": unimplemented("string", MOE),
  "moe-aux-loss-coeff": unimplemented("float", MOE),
  "moe-z-loss-coeff": unimplemented("float", MOE),
  "moe-grouped-gemm": unimplemented("boolean", MOE),
  "moe-token-dispatcher-type": unimplemented("string", MOE),
  "moe-permute-fusion": unimplemented("boolean", MOE),
  "moe-ffn-hidden-size": unimplemented("int", MOE),
  "moe-shared-expert-intermediate-size": unimplemented("int", MOE),
  "moe-layer-freq": unimplemented("string", MOE),
  "moe-expert-capacity-factor": unimplemented("float", MOE),
  "moe-per-layer-logging": unimplemented("boolean", MOE),
  "group-query-attention": unimplemented("boolean", MHA),
  "num-query-groups": unimplemented("int", MHA),
  "kv-channels": unimplemented(
    "int",
    "a head is --hidden-size / --num-attention-heads wide here (Megatron's default)",
  ),
  "use-rotary-position-embeddings": unimplemented("boolean", NO_ROTARY),
  "rotary-percent": unimplemented("float", NO_ROTARY),
  "rotary-base": unimplemented("int", NO_ROTARY),
  "no-position-embedding": unimplemented(
    "boolean",
    "positions are a learned absolute table here, always added (GPT-2's and BERT's)",
  ),
  "squared-relu": unimplemented("boolean", "the MLP is GPT-2's GeLU MLP here"),
  "apply-layernorm-1p": unimplemented(
    "boolean",
    "layer norms scale by their weight as stored here (GPT-2's and BERT's), not by 1 + weight",
  ),
  "qk-layernorm": unimplemented(
    "boolean",
    "queries and keys are not normalized here (GPT-2's and BERT's attention)",
  ),
  "recompute-granularity": unimplemented("string", RECOMPUTE),
  "recompute-method": unimplemented("string", RECOMPUTE),
  "recompute-num-layers": unimplemented("int", RECOMPUTE),
  // CUDA kernels of Megatron's.
  "no-bias-gelu-fusion": unimplemented(
    "boolean",
    "in Megatron it also trades the fused tanh-approximated GeLU for the exact (erf) one; here " +
      "GPT's MLP takes the tanh GeLU (GPT-2's) and BERT's the exact one (Hugging Face BERT's), " +
      "whatever the flag",
  ),
  "no-bias-dropout-fusion": unimplemented("boolean", CUDA_FUSION, true),
  "no-gradient-accumulation-fusion": unimplemented("boolean", CUDA_FUSION, true),
  "no-persist-layer-norm": unimplemented("boolean", CUDA_FUSION, true),
  "no-async-tensor-model-parallel-allreduce": unimplemented(
    "boolean",
    "deprecated in Megatron, which ignores it; ignored here too",
    true,
  ),
  "manual-gc": unimplemented(
    "boolean",
    "it drives Python's garbage collector; this project runs on JavaScript, whose collector " +
      "(V8's) runs on its own",
  ),
  // BERT's data.
  "mask-prob": unimplemented(
    "float",
    "BERT masks 15% of a row's tokens here (Megatron's default), one WordPiece token at a time " +
      "(not Megatron's whole words)",
    ["0.15"],
  ),
  "short-seq-prob": unimplemented(
    "float",
    "BERT's sentence pairs fill --seq-length here: no shorter rows are drawn (Megatron draws a " +
      "tenth of them shorter by default)",
    ["0"],
  ),
  "bert-no-binary-head": unimplemented(
    "boolean",
    "BERT always trains its sentence-order (binary) head here, as Megatron does without this flag",
  ),
  // The optimizer.
  "optimizer": unimplemented(
    "string",
    "the optimizer here is AdamW with decoupled weight decay (Megatron's adam)",
    ["adam"],
  ),
  "weight-decay-incr-style": unimplemented(
    "string",
    "weight decay is constant here (--weight-decay), not stepped from --start-weight-decay " +
      "to --end-weight-decay",
    ["constant"],
  ),
  "start-weight-decay": unimplemented("float", WEIGHT_DECAY),
  "end-weight-decay": unimplemented("float", WEIGHT_DECAY),
  "decoupled-lr": unimplemented("float", ONE_LR),
  "decoupled-min-lr": unimplemented("float", ONE_LR),
  // Checkpoints.
  "exit-signal-handler": unimplemented(
    "boolean",
    "with --save, a first SIGTERM, SIGINT or SIGHUP always saves a checkpoint and exits here",
    true,
  ),
  "ckpt-format": unimplemented(
    "string",
    "checkpoints are this project's own here (checkpoint.json and a safetensors file per " +
      "tensor-parallel rank, resharded to any --tp at load); none of Megatron's formats is " +
      "read or written",
  ),
  "finetune": unimplemented(
    "boolean",
    "--load resumes a run where it stopped here (iteration, AdamW state, data order, RNG); to " +
      "start a new run from its weights, export them (deno task export-hf) and pass " +
      "--init-from-hf DIR",
  ),
  "no-load-optim": unimplemented(
    "boolean",
    "--load always resumes the AdamW moments and step with the weights here; to start from " +
      "the weights alone, export them (deno task export-hf) and pass --init-from-hf DIR",
  ),
  "no-load-rng": unimplemented(
    "boolean",
    "--load always resumes the dropout and data-order random state here (an exact resume)",
  ),
  // Data.
  "num-workers": {
    ...unimplemented(
      "int",
      "there are no data-loader worker processes here: batches are drawn from the corpus in " +
        "memory",
      true,
    ),
    valueName: "N",
  },
  "dataloader-type": unimplemented(
    "string",
    "training batches are drawn here at random offsets by a seeded sampler with no epochs " +
      "(resumed from the checkpoint), not in one pass over a sample index (single) or in " +
      "reshuffled passes (cyclic)",
  ),
  "data-cache-path": {
    ...unimplemented(
      "string",
      "no index files are built here (windows are drawn at random offsets), so nothing is cached",
      true,
    ),
    valueName: "DIR",
  },
  "data-impl": unimplemented(
    "string",
    "the indexed dataset read here is Megatron's mmap format (a uint16 .bin beside its .idx, read " +
      "from disk a window at a time); the older lazy and cached formats are not read",
    ["mmap", "infer"],
  ),
  "eod-mask-loss": unimplemented(
    "boolean",
    "the loss here counts every token, end-of-document ones included (Megatron's default " +
      "without this flag)",
  ),
  "reset-attention-mask": unimplemented(
    "boolean",
    "attention here is causal over the whole window, across document boundaries (Megatron's " +
      "default without this flag)",
  ),
  "reset-position-ids": unimplemented(
    "boolean",
    "positions here count from each window's start, across document boundaries (Megatron's " +
      "default without this flag)",
  ),
  "no-mmap-bin-files": unimplemented(
    "boolean",
    ".bin files are read from disk a window at a time here, as Megatron reads them with this " +
      "flag, never mapped",
    true,
  ),
  "mock-data": unimplemented(
    "boolean",
    "there is no synthetic data here; without --data-path a run trains on Moby Dick " +
      "(data/assets/moby_dick.txt)",
  ),
  "tokenizer-model": unimplemented(
    "string",
    "no tokenizer model files are read here: the tokenizers are built in (--tokenizer " +
      "byte|gpt2; BERT reads bert-base-uncased's vocabulary, or that of --init-from-hf or --load)",
  ),
  "test-data-path": unimplemented(
    "string",
    "no test set is evaluated here (the third part of --split is held out, unused); validation " +
      "data goes in --valid-data-path",
    undefined,
    true,
  ),
  // Logging.
  "log-throughput": unimplemented(
    "boolean",
    "the log line always has Megatron's throughput per GPU (TFLOP/s/GPU), and tokens/s",
    true,
  ),
  "log-params-norm": unimplemented(
    "boolean",
    "the parameters' norm is not computed here; the log line has the gradients' (grad norm)",
  ),
  "timing-log-level": unimplemented(
    "int",
    "the log line times whole iterations here (Megatron's level 0); --measure-comm times the " +
      "collectives apart",
    ["0"],
  ),
  "timing-log-option": unimplemented(
    "string",
    "no timers are gathered from the ranks here: the log line times whole iterations on the " +
      "logging rank (--measure-comm times the collectives apart)",
  ),
  "tensorboard-log-interval": unimplemented("int", TENSORBOARD),
  "log-timers-to-tensorboard": unimplemented("boolean", TENSORBOARD),
  "log-validation-ppl-to-tensorboard": unimplemented("boolean", TENSORBOARD),
  "log-memory-to-tensorboard": unimplemented("boolean", TENSORBOARD),
  "log-loss-scale-to-tensorboard": unimplemented("boolean", TENSORBOARD),
  "log-learning-rate-to-tensorboard": unimplemented("boolean", TENSORBOARD),
  "log-batch-size-to-tensorboard": unimplemented("boolean", TENSORBOARD),
  "log-world-size-to-tensorboard": unimplemented("boolean", TENSORBOARD),
  "wandb-project": unimplemented("string", WANDB),
  "wandb-exp-name": unimplemented("string", WANDB),
  "wandb-save-dir": unimplemented("string", WANDB),
  "wandb-entity": unimplemented("string", WANDB),
  "log-num-zeros-in-grad": unimplemented(
    "boolean",
    "the gradients' zeros are not counted here; the log line has their norm (grad norm)",
  ),
  // Precision and numerics (the forty-fifth session's audit found these unknown to the parser).
  "apply-query-key-layer-scaling": unimplemented(
    "boolean",
    "the attention softmax runs in f32 here, where Megatron's query-key layer scaling (a guard " +
      "against fp16 overflow, exact in arithmetic) changes nothing",
    true,
  ),
  "no-query-key-layer-scaling": unimplemented(
    "boolean",
    "there is no query-key layer scaling here to turn off",
    true,
  ),
  "fp32-residual-connection": unimplemented(
    "boolean",
    "the residual stream is f32 here at every precision (16 bits are for weight copies, saved " +
      "activations, gradients and the wire)",
    true,
  ),
  "fp16-lm-cross-entropy": unimplemented(
    "boolean",
    "the cross-entropy and its logits are f32 here; there is no 16-bit cross-entropy",
  ),
  "check-for-nan-in-loss-and-grad": unimplemented(
    "boolean",
    "a run here always stops on a non-finite loss, and fp16's scaler skips a step whose " +
      "gradients are not finite",
    true,
  ),
  "calculate-per-token-loss": unimplemented(
    "boolean",
    "the loss here is always the mean over the global batch's tokens (BERT's masked-LM loss " +
      "over its masked tokens), however micro-batches and ranks split it",
    true,
  ),
  "layernorm-epsilon": unimplemented(
    "float",
    "the layer norms' epsilon is fixed here: 1e-5 for GPT (GPT-2's and Megatron's default), " +
      "1e-12 for BERT",
    ["0.00001"],
  ),
  "norm-epsilon": unimplemented(
    "float",
    "the layer norms' epsilon is fixed here: 1e-5 for GPT (GPT-2's and Megatron's default), " +
      "1e-12 for BERT",
    ["0.00001"],
  ),
  "DDP-impl": unimplemented(
    "string",
    "there is one data-parallel implementation here: bucketed all-reduces (--ddp-bucket-size, " +
      "--overlap-grad-reduce)",
    ["local", "torch"],
  ),
  "checkpoint-activations": unimplemented(
    "boolean",
    "Megatron's old name for recomputing whole layers: pass --recompute-activations",
  ),
  "use-cpu-initialization": unimplemented(
    "boolean",
    "weights are drawn on the device here, from the seed, the same at every layout",
    true,
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
 * is refused, naming the built-in tokenizer to use. `family` is the model's
 * (default: `--model`; preprocess names the tokenizer's). Returns the
 * arguments that carry an adopted tokenizer to ranks that parse the flags again.
 */
export async function checkVocabFiles(
  f: FlagValues,
  family = f.model as string | undefined,
): Promise<string[]> {
  const vocab = f["vocab-file"] as string | undefined;
  const merges = f["merge-file"] as string | undefined;
  if (vocab === undefined && merges === undefined) return [];
  if (family === "bert") {
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
  // With --load, the tokenizer is the checkpoint's, unless the directory holds none yet (the
  // first run of a restartable job, --load and --save one empty directory): it said "the
  // checkpoint's tokenizer is byte" of a checkpoint that did not exist.
  const loads = f.load !== undefined &&
    !await firstRunOfRestartableJob(
      f.load as string,
      f.save as string | undefined,
      f.iteration as number | undefined,
    );
  if (wasGiven(f, "tokenizer") || loads) {
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
