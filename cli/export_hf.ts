/**
 * `deno task export-hf`: writes a checkpoint (saved at any TP size) as a Hugging
 * Face model directory, `config.json` + `model.safetensors`, in HF's names and
 * layouts (GPT-2: Conv1D [in, out] weights; BERT: separate query/key/value), with
 * the vocabulary padding removed; a BERT's `vocab.txt` goes along. Needs no GPU.
 * @module
 */

import { join } from "node:path";
import {
  createBertTokenizer,
  readWordPieceTokenizer,
  writeWordPieceTokenizer,
} from "../data/wordpiece_tokenizer.ts";
import { documentEndId } from "../data/tokenizer.ts";
import { openCheckpoint } from "../models/checkpoint/read.ts";
import { CheckpointError, HalfOverflowError } from "../models/checkpoint/safetensors.ts";
import { BERT_LAYER_NORM_EPS, BERT_TYPE_VOCAB_SIZE, type BertConfig } from "../models/bert.ts";
import type { GptConfig } from "../models/gpt.ts";
import { DEFAULT_DROPOUT, resolveShape } from "../models/shape.ts";
import { bertConfigToHf, type BertHfConfig, bertTensorSourceToHf } from "../models/hf/bert.ts";
import { type HfDType, writeHfDir } from "../models/hf/io.ts";
import { writeHfGpt2 } from "../models/hf/gpt2.ts";
import { iterationOfDirName, readLatest, resolveIterDir } from "../models/checkpoint/layout.ts";
import { DEBUG_FLAG, handled } from "./errors.ts";
import { type FlagSpec, parseCommandLine, UsageError } from "./flags.ts";
import { stderrProgress } from "./log.ts";
import { ensureWritableDir } from "./paths.ts";
import { hostName, processExists } from "./processes.ts";
import { SIGNAL_NUMBERS, STOP_SIGNALS } from "./signals.ts";
import { INIT_STD_FLAG } from "./resume_flags.ts";

/** Every flag of `deno task export-hf`. */
export const EXPORT_FLAGS: Record<string, FlagSpec> = {
  "load": { type: "string", help: "checkpoint directory written by --save" },
  "iteration": { type: "int", min: 0, help: "checkpoint iteration (default: latest)" },
  "output": { type: "string", help: "directory to write config.json and model.safetensors into" },
  "dtype": {
    type: "string",
    default: "fp32",
    choices: ["fp32", "fp16", "bf16"],
    help: "type of the written weights: safetensors F32, F16 or BF16 (rounded to nearest even)",
  },
  ...DEBUG_FLAG,
};

const USAGE = `Usage: deno task export-hf --load DIR --output OUT_DIR [--dtype fp32|fp16|bf16]

Writes a checkpoint as a Hugging Face model directory (GPT-2 or BERT layout).`;

/**
 * The Hugging Face config of a saved BERT: the saved config with its shape
 * resolved ({@link resolveShape}) and BERT's defaults for the rest.
 */
function hfBertConfigOf(c: BertConfig, where: string): BertHfConfig {
  let shape;
  try {
    shape = resolveShape(c);
  } catch (e) {
    throw new CheckpointError(`${where}: ${(e as Error).message}`);
  }
  return {
    ...shape,
    typeVocabSize: c.typeVocabSize ?? BERT_TYPE_VOCAB_SIZE,
    layerNormEps: c.layerNormEps ?? BERT_LAYER_NORM_EPS,
    hiddenDropout: c.hiddenDropout ?? DEFAULT_DROPOUT,
    attentionDropout: c.attentionDropout ?? DEFAULT_DROPOUT,
    postLayerNorm: true,
  };
}

/** The safetensors dtype of each `--dtype`. */
export const EXPORT_DTYPES: Readonly<Record<string, HfDType>> = {
  fp32: "F32",
  fp16: "F16",
  bf16: "BF16",
};

/**
 * Exports checkpoint `dir` (iteration: latest unless given) to `out`, its weights
 * stored as `dtype` (default F32); returns a summary line.
 */
export async function exportHf(
  dir: string,
  out: string,
  iteration?: number,
  progress?: (done: number, total: number) => void,
  dtype: HfDType = "F32",
): Promise<string> {
  // Written into a hidden folder of `out` first, then moved into place: a failure (a full
  // disk, a stop signal) leaves `out` as it was, and a directory it had to create is removed
  // again. The folder is named after this process, so an export killed outright (SIGKILL)
  // leaves one that the next export into `out` removes.
  const created = !(await Deno.stat(out).then(() => true, () => false));
  await Deno.mkdir(out, { recursive: true });
  const host = hostName();
  if (host !== null) await removeDeadStaging(out, host);
  const staging = await Deno.makeTempDir({
    dir: out,
    prefix: `${STAGING_PREFIX}${Deno.pid}-${host ?? "unnamed"}-`,
  });
  let done = false;
  try {
    const { summary, keep } = await writeExport(dir, staging, out, iteration, progress, dtype)
      .catch((e) => {
        if (!(e instanceof HalfOverflowError)) throw e;
        const flags = e.dtype === "F16" ? "--dtype bf16 or --dtype fp32" : "--dtype fp32";
        throw new CheckpointError(`${e.message} (${flags}); ${out} is unchanged`);
      });
    const removed = await install(staging, out, keep);
    done = true;
    return removed.length === 0 ? summary : `${summary} (replacing ${removed.join(", ")})`;
  } finally {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    if (!done && created) await Deno.remove(out).catch(() => {});
  }
}

/**
 * Files of a Hugging Face model directory that describe its weights or its
 * tokenizer: an export removes those it did not write (an earlier export's
 * shards, another model's vocabulary), and leaves every other file alone.
 */
const MODEL_FILES =
  /^(model\.safetensors(\.index\.json)?|model-\d+-of-\d+\.safetensors|pytorch_model(\.bin(\.index\.json)?|-\d+-of-\d+\.bin)|vocab\.(txt|json)|merges\.txt|tokenizer(_config)?\.json|special_tokens_map\.json|config\.json|generation_config\.json)$/;

/**
 * Moves the files of `staging` into `out`, removing `out`'s model files it does
 * not replace (but those `keep` matches); returns the names of those removed.
 */
async function install(staging: string, out: string, keep: RegExp | null): Promise<string[]> {
  const written = new Set<string>();
  for await (const e of Deno.readDir(staging)) written.add(e.name);
  const removed: string[] = [];
  for await (const e of Deno.readDir(out)) {
    const stale = MODEL_FILES.test(e.name) && !written.has(e.name) && !keep?.test(e.name);
    if (e.isFile && stale) {
      await Deno.remove(join(out, e.name));
      removed.push(e.name);
    }
  }
  for (const name of written) await Deno.rename(join(staging, name), join(out, name));
  return removed.sort();
}

/**
 * The start of the name of an export's staging folder; the exporting process's
 * pid and host name follow (`.export-4242-node7-…`).
 */
export const STAGING_PREFIX = ".export-";

/**
 * Removes staging folders of `out` left by exports on this host (`host`) that
 * no longer run (killed outright): those whose pid no longer exists. Another
 * host's folders (an `--output` on shared storage), a live process's, and
 * those whose liveness cannot be checked are left.
 */
async function removeDeadStaging(out: string, host: string): Promise<void> {
  for await (const e of Deno.readDir(out)) {
    if (!e.isDirectory || !e.name.startsWith(STAGING_PREFIX)) continue;
    const rest = e.name.slice(STAGING_PREFIX.length);
    const pid = /^(\d+)-/.exec(rest)?.[1];
    if (pid === undefined || !rest.startsWith(`${pid}-${host}-`)) continue;
    if (+pid <= 0x7fffffff && processExists(+pid) === false) {
      await Deno.remove(join(out, e.name), { recursive: true }).catch(() => {});
    }
  }
}

/**
 * Refuses an `--output` that holds a training checkpoint (its `latest` or
 * Megatron's tracker file, or iteration folders named as saves and Megatron
 * name them, `iter_0000100`): the export would replace the
 * tokenizer files the checkpoint is read with.
 */
async function refuseCheckpointDir(out: string): Promise<void> {
  const latest = await readLatest(out);
  let iterDir = false;
  if (latest === null) {
    try {
      for await (const e of Deno.readDir(out)) {
        // Iteration folders as saves (and Megatron, `iter_%07d`) name them.
        if (e.isDirectory && iterationOfDirName(e.name) !== null) iterDir = true;
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  if (latest !== null || iterDir) {
    throw new UsageError(
      `--output ${out} holds a training checkpoint (${
        latest !== null ? "its latest file" : "iteration folders, iter_0000100 and the like"
      }); an export there would replace the tokenizer files it is read with: export into ` +
        "another directory",
    );
  }
}

/**
 * GPT-2's own tokenizer files, which an export of a model trained with GPT-2's
 * tokenizer does not write (the vocabulary comes from npm's gpt-tokenizer) and
 * so leaves in place: they are that model's vocabulary.
 */
const GPT2_TOKENIZER_FILES =
  /^(vocab\.json|merges\.txt|tokenizer(_config)?\.json|special_tokens_map\.json)$/;

/**
 * Writes the export of checkpoint `dir` into `target`; returns its summary
 * (naming `out`) and which of `out`'s tokenizer files belong with it unwritten.
 */
async function writeExport(
  dir: string,
  target: string,
  out: string,
  iteration: number | undefined,
  progress: ((done: number, total: number) => void) | undefined,
  dtype: HfDType,
): Promise<{ summary: string; keep: RegExp | null }> {
  // Opened, not read: each tensor is read from the checkpoint as the export writes it.
  const ck = await openCheckpoint(dir, { iteration });
  const model = ck.meta.model;
  const args = ck.meta.state?.args as Record<string, unknown> | undefined;
  // The std the weights were drawn with (--init-method-std), where the checkpoint says.
  const saved = args?.[INIT_STD_FLAG];
  const initStd = typeof saved === "number" ? saved : undefined;
  if (model?.arch === "gpt") {
    const config = model.config as unknown as GptConfig;
    // A GPT trained on WordPiece (the bundled vocabulary): its vocab.txt goes along, and its
    // generation ends at [SEP], as `generate`'s does.
    const wordPiece = args?.tokenizer === "bert" ? await createBertTokenizer() : null;
    const endId = wordPiece ? documentEndId(wordPiece) : undefined;
    await writeHfGpt2(target, config, ck.tensors, progress, dtype, initStd, endId);
    if (wordPiece) await writeWordPieceTokenizer(target, wordPiece);
  } else if (model?.arch === "bert") {
    if (!model.config.postLayerNorm) {
      throw new CheckpointError(
        `${ck.path}: this BERT is pre-LN; Hugging Face BERT is post-LN, so it has no HF ` +
          "equivalent (train BERT with --apply-residual-connection-post-layernorm to export it)",
      );
    }
    const cfg = hfBertConfigOf(model.config as unknown as BertConfig, ck.path);
    const hf = bertConfigToHf(cfg, initStd);
    await writeHfDir(target, hf, bertTensorSourceToHf(ck.tensors, cfg), progress, dtype);
    // The vocabulary `deno task train` keeps next to a BERT checkpoint.
    const tok = await readWordPieceTokenizer(dir);
    if (tok) await writeWordPieceTokenizer(target, tok);
  } else {
    throw new CheckpointError(
      `${ck.path}: cannot export a model of arch ${JSON.stringify(model?.arch)}`,
    );
  }
  const summary = `exported ${model.arch} iteration ${ck.iteration} (saved at tp ` +
    `${ck.meta.parallel.tp}) to ${out}${dtype === "F32" ? "" : ` as ${dtype}`}`;
  const gpt2 = model.arch === "gpt" && args?.tokenizer === "gpt2";
  return { summary, keep: gpt2 ? GPT2_TOKENIZER_FILES : null };
}

/** Ends an export at its next file after a stop signal. */
class ExportStopped extends Error {
  constructor(readonly signal: Deno.Signal) {
    super(`stopped by ${signal}`);
  }
}

/** Runs the export with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    const f = parseCommandLine(args, EXPORT_FLAGS, USAGE, (f) => {
      if (!f.load || !f.output) throw new UsageError("--load and --output are required");
    });
    if (typeof f === "number") return f;
    const dir = f.load as string, out = f.output as string;
    // The checkpoint first (cheap), then the output, so a bad --load leaves nothing behind.
    await resolveIterDir(dir, f.iteration as number | undefined);
    await ensureWritableDir("--output", out, { create: false });
    await refuseCheckpointDir(out);
    const bar = stderrProgress("exporting");
    const dtype = EXPORT_DTYPES[f.dtype as string];
    // A first stop signal ends the export at its next file, leaving `out` as it was; a
    // second one exits at once (the next export removes what that leaves).
    let stopped: Deno.Signal | null = null;
    const listeners = STOP_SIGNALS.map((signal) => {
      const on = () => {
        if (stopped) Deno.exit(128 + SIGNAL_NUMBERS[signal]);
        stopped = signal;
      };
      Deno.addSignalListener(signal, on);
      return () => Deno.removeSignalListener(signal, on);
    });
    const progress = (done: number, total: number) => {
      if (stopped) throw new ExportStopped(stopped);
      bar(done, total);
    };
    try {
      console.log(await exportHf(dir, out, f.iteration as number | undefined, progress, dtype));
      return 0;
    } catch (e) {
      if (!(e instanceof ExportStopped)) throw e;
      console.error(`export-hf: stopped by ${e.signal}; ${out} is as it was`);
      return 128 + SIGNAL_NUMBERS[e.signal];
    } finally {
      for (const remove of listeners) remove();
    }
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
