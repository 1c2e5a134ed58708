/**
 * `deno task generate`: continues a prompt with a GPT loaded from a checkpoint
 * (`--load`) or a Hugging Face GPT-2 directory (`--init-from-hf`), sampling with
 * temperature, top-k and top-p, and streaming the text to stdout as tokens come.
 * Uses the key-value cache, so each new token costs one position's work.
 * Model facts and timings go to stderr, so stdout is the prompt and its
 * continuation only.
 * @module
 */

import type { Device } from "../core/device.ts";
import { DataRng } from "../data/rng.ts";
import { generate } from "../models/generate.ts";
import { loadGpt } from "./eval.ts";
import { modelSourceFromFlags, preferWidthForModel } from "./load_model.ts";
import { counted, stderrProgress } from "./log.ts";
import { modelTokenizer } from "./model_tokenizer.ts";
import { documentEndId } from "../data/tokenizer.ts";
import { forStdout, TextStream } from "./text_stream.ts";
export { TextStream };
import { checkTopP, samplingFlags } from "./sampling_flags.ts";
import { DEBUG_FLAG, handled } from "./errors.ts";
import {
  backendFlag,
  checkModelSource,
  type FlagSpec,
  type FlagValues,
  parseCommandLine,
  resolveTensorOnlyParallel,
  tensorOnlyParallelFlags,
  UsageError,
} from "./flags.ts";
import { runTensorParallel } from "./tp_command.ts";
import type { ParallelLayers } from "../models/parallel/layers.ts";

/** Every flag of `deno task generate`. */
export const GENERATE_FLAGS: Record<string, FlagSpec> = {
  "load": {
    type: "string",
    help: "checkpoint directory written by --save",
    group: "Model",
    once: "generate reads one model",
  },
  "iteration": { type: "int", min: 0, help: "checkpoint iteration (default: latest)" },
  "use-checkpoint-args": {
    type: "boolean",
    help:
      "Megatron's switch, accepted: generate always takes the model's shape and tokenizer from --load",
  },
  "init-from-hf": {
    type: "string",
    help: "Hugging Face GPT-2 directory (config.json + model.safetensors)",
    once: "generate reads one model",
  },
  "prompt": {
    type: "string",
    allowEmpty: true,
    help: "text to continue",
    group: "Generation",
    once: "generate continues one prompt",
  },
  "max-new-tokens": { type: "int", default: 100, min: 0, help: "tokens to generate" },
  ...samplingFlags(),
  "seed": { type: "int", default: 1234, min: 0, help: "sampling seed" },
  "ignore-eos": {
    type: "boolean",
    help:
      "keep going past the end of a document (the tokenizer's end-of-text token; WordPiece's [SEP])",
  },
  "no-kv-cache": {
    type: "boolean",
    help: "recompute the whole context for every token (slow; for comparison)",
  },
  "tokenizer": {
    type: "string",
    choices: ["gpt2", "byte"],
    help:
      "tokenizer (default: the checkpoint's, else the one the model's vocabulary is; --tokenizer-type BertWordPieceLowerCase for WordPiece)",
  },
  ...backendFlag("Device"),
  ...tensorOnlyParallelFlags("generate"),
  ...DEBUG_FLAG,
};

const USAGE = `Usage: deno task generate (--load DIR | --init-from-hf DIR) --prompt TEXT [flags]

Continues TEXT with the model, streaming the text to stdout as it is generated
(model facts and timings go to stderr).`;

/** Validates the flag combination; throws UsageError. */
export function validateGenerateFlags(f: FlagValues): void {
  checkModelSource(f);
  if (f["use-checkpoint-args"] && !f.load) {
    throw new UsageError("--use-checkpoint-args takes the arguments from --load DIR; pass it");
  }
  if (f.prompt === undefined) throw new UsageError("--prompt TEXT is required");
  checkTopP(f);
  resolveTensorOnlyParallel(f, "generate");
}

async function writeOut(text: string): Promise<void> {
  if (text) await Deno.stdout.write(new TextEncoder().encode(forStdout(text)));
}

/** Runs generation with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, GENERATE_FLAGS, USAGE, validateGenerateFlags);
  if (typeof f === "number") return f;
  await preferWidthForModel(modelSourceFromFlags(f));
  // At TP > 1 every rank samples the same tokens from the same gathered logits
  // and seed; rank 0 prints.
  return await runTensorParallel(
    f,
    args,
    new URL("./generate_worker.ts", import.meta.url),
    generateRank,
  );
}

/**
 * Generates on this rank: loads the model (this rank's shards over `layers`
 * when given) and samples; streams the text and prints the facts when `print`.
 */
export async function generateRank(
  device: Device,
  f: FlagValues,
  print: boolean,
  layers?: ParallelLayers,
): Promise<void> {
  const write = print ? writeOut : () => Promise.resolve();
  const say = print ? (s: string) => console.error(s) : () => {};
  const { model, source, tokenizer } = await loadGpt(
    device,
    f,
    layers,
    print ? stderrProgress("loading") : undefined,
  );
  const c = model.config;
  // Ids past the tokenizer's (a padded vocabulary) are never sampled.
  const tok = await modelTokenizer(
    c.vocabSize,
    f.tokenizer as string | undefined,
    tokenizer,
    f["init-from-hf"] as string | undefined,
  );
  const name = tok.name;
  // The id the training text had between documents (GPT-2's <|endoftext|>, WordPiece's
  // [SEP]: data/corpus.ts): where a document ends, generation stops (it ran past [SEP]).
  const endId = documentEndId(tok);
  if (f["ignore-eos"] && endId === undefined) {
    throw new UsageError(
      `--ignore-eos: the ${name} tokenizer has no end-of-text id to ignore; drop it`,
    );
  }
  const text = f.prompt as string;
  let prompt = Array.from(tok.encode(text));
  if (prompt.length === 0) {
    if (endId === undefined) {
      throw new UsageError(`--prompt is empty and the ${name} tokenizer has no end-of-text id`);
    }
    prompt = [endId];
  }
  const cache = !f["no-kv-cache"];
  say(
    `model: ${source} | GPT ${counted(c.numLayers, "layer")}, hidden ${c.hiddenSize}, ` +
      `${counted(c.numHeads, "head")}, ${c.maxPositions} positions | tokenizer ${name} | ` +
      `prompt ${counted(prompt.length, "token")}` +
      (prompt.length > c.maxPositions
        ? ` (past the ${c.maxPositions} positions: the first token sees the last ` +
          `${c.maxPositions}; a full window restarts from its last ${
            Math.ceil(c.maxPositions / 2)
          })`
        : ""),
  );
  const rng = new DataRng(f.seed as number);
  const stream = new TextStream(tok, prompt);
  // A byte-level model's ids are bytes: a pipe or a file gets them as they are (text would
  // turn each byte that is not UTF-8 into U+FFFD); a terminal gets text.
  const rawBytes = print && tok.name === "byte" && !Deno.stdout.isTerminal();
  const emit = rawBytes
    ? (id: number) => Deno.stdout.write(Uint8Array.of(id)).then(() => {})
    : (id: number) => write(stream.push(id));
  await write(text);
  const t0 = performance.now();
  let first = 0;
  let n = 0;
  for await (
    const id of generate(model, prompt, {
      maxNewTokens: f["max-new-tokens"] as number,
      temperature: f.temperature as number,
      topK: f["top-k"] as number,
      topP: f["top-p"] as number,
      uniform: () => rng.nextFloat(),
      stopToken: f["ignore-eos"] ? undefined : endId,
      vocabLimit: tok.vocabSize,
      cache,
    })
  ) {
    if (n++ === 0) first = performance.now() - t0;
    // The end-of-text token ends the text; it is not part of it (Hugging Face's
    // text-generation pipeline decodes with its special tokens skipped, too).
    if (id === endId && !f["ignore-eos"]) break;
    await emit(id);
  }
  // A terminal gets a line break after the text, so that its prompt starts on a line of its
  // own; a pipe or a file gets exactly the prompt and what was sampled.
  await write((rawBytes ? "" : stream.flush()) + (Deno.stdout.isTerminal() ? "\n" : ""));
  const total = performance.now() - t0;
  const per = n > 1 ? (total - first) / (n - 1) : 0;
  say(
    `generated ${counted(n, "token")} in ${(total / 1000).toFixed(2)} s | first token ` +
      `${first.toFixed(1)} ms | then ${per.toFixed(2)} ms/token | kv cache ${
        cache ? "on" : "off"
      }` + (layers && layers.tpSize > 1 ? ` | tensor parallel ${layers.tpSize}` : ""),
  );
  model.dispose();
}

if (import.meta.main) Deno.exit(await main(Deno.args));
