/**
 * `deno task preprocess`: tokenizes text (a file, a folder, or the default book) and writes a
 * `.bin` of little-endian uint16 ids (nanoGPT's format) for `--data-path`.
 * @module
 */

import { fileURLToPath } from "node:url";
import { isInside } from "../core/files.ts";
import { assetUrl } from "../data/assets.ts";
import { streamTokens } from "../data/corpus.ts";
import { writeMegatronDataset } from "../data/megatron_dataset.ts";
import { DataError } from "../data/errors.ts";
import {
  isTokenBinPath,
  MAX_BIN_VOCAB,
  tokenBinMetaOf,
  tokenBinMetaPath,
  writeTokenBinFrom,
} from "../data/token_bin.ts";
import { createTokenizer, TOKENIZER_NAMES } from "../data/tokenizer.ts";
import { DEBUG_FLAG, handled } from "./errors.ts";
import {
  type FlagSpec,
  type FlagValues,
  helpText,
  parseFlags,
  UsageError,
  wasGiven,
} from "./flags.ts";
import { checkVocabFiles, unimplemented, VOCAB_FILE_FLAGS } from "./megatron_flags.ts";
import { counted, stderrProgress } from "./log.ts";
import { checkWritableFile, realOrNull, sameFile, writeTarget } from "./paths.ts";

const USAGE =
  `Usage: deno task preprocess --output OUT.bin [--data-path IN] [--tokenizer byte|gpt2|bert]

Tokenizes text and writes little-endian uint16 token ids (nanoGPT's .bin format), which
'deno task train --data-path OUT.bin' reads back without re-tokenizing, and OUT.bin.json,
which names the tokenizer (train and eval refuse the file with another one). The files of a
folder, or the lines of a .jsonl file (their "text" field), are documents, separated by the
tokenizer's end-of-text id (<|endoftext|> for gpt2), [SEP] for bert, or a blank line for byte.

Megatron's command line works too, writing its indexed dataset:
  deno task preprocess --input corpus.jsonl --output-prefix my-gpt2 \\
    --tokenizer-type GPT2BPETokenizer --append-eod --workers 8
writes my-gpt2_text_document.bin and .idx ('deno task train --data-path
my-gpt2_text_document --tokenizer gpt2' reads them), as Megatron's
tools/preprocess_data.py does.`;

/** Flags of `deno task preprocess` (parsing adds Megatron's spelling `--tokenizer-type`). */
export const PREPROCESS_FLAGS: Record<string, FlagSpec> = {
  "data-path": {
    type: "string",
    aliases: ["input"],
    help: 'a text file, a .jsonl of {"text": …} documents (Megatron\'s input), ' +
      "or a folder of .txt/.md files (recursive, sorted by path); " +
      "default: the bundled novel Moby Dick",
    once: "preprocess reads one input (a folder for several files)",
  },
  "tokenizer": {
    type: "string",
    default: "byte",
    choices: TOKENIZER_NAMES,
    once: "one tokenizer writes the ids",
    help: "tokenizer, as train's default; its vocabulary must fit in uint16",
  },
  "output": {
    type: "string",
    help: "the .bin file to write (this or --output-prefix is required)",
    required: true,
  },
  "output-prefix": {
    type: "string",
    help: "Megatron's: write Megatron's indexed dataset PREFIX_KEY_document.bin and .idx " +
      "(and the .bin's sidecar) for each --json-keys KEY, from the JSON lines of --input, as its " +
      "tools/preprocess_data.py does (train reads it as --data-path PREFIX_KEY_document)",
    group: "Megatron's preprocess_data.py",
  },
  "json-keys": {
    type: "string",
    list: true,
    help: "with --output-prefix: the keys of each JSON line to write, a dataset each " +
      "(default: text)",
    group: "Megatron's preprocess_data.py",
  },
  "append-eod": {
    type: "boolean",
    help: "with --output-prefix: end each document with <|endoftext|> (without it, Megatron's " +
      "documents follow each other with nothing between)",
    group: "Megatron's preprocess_data.py",
  },
  "workers": {
    type: "int",
    min: 1,
    help: "accepted for Megatron's command lines: tokenizing runs on one thread here",
    group: "Megatron's preprocess_data.py",
  },
  "log-interval": {
    type: "int",
    min: 1,
    help: "accepted for Megatron's command lines: progress is shown as bytes read",
    group: "Megatron's preprocess_data.py",
  },
  "split-sentences": unimplemented(
    "boolean",
    "sentences are not split here (Megatron splits them with NLTK's punkt, " +
      "not at hand): each string is one sequence; BERT training here reads the text itself " +
      "(--data-path corpus.jsonl) and splits its sentences",
  ),
  "keep-newlines": unimplemented(
    "boolean",
    "newlines are kept here (Megatron's flag matters only with " +
      "--split-sentences)",
    true,
  ),
  "partitions": unimplemented(
    "int",
    "the input is read in one partition here, a piece at a time",
    ["1"],
  ),
  "lang": unimplemented(
    "string",
    "the language only chooses NLTK's sentence splitter, and sentences are not split here",
    true,
  ),
  "keep-sequential-samples": unimplemented(
    "boolean",
    "the input is read in order, in one partition",
    true,
  ),
  "find-optimal-num-workers": unimplemented(
    "boolean",
    "tokenizing runs on one thread here: there is no number of workers to find",
  ),
  "tokenizer-model": unimplemented(
    "string",
    "no tokenizer model files are read here: the tokenizers are built in " +
      "(--tokenizer-type GPT2BPETokenizer or BertWordPieceLowerCase, --tokenizer byte)",
  ),
  "dataset-impl": unimplemented(
    "string",
    "the dataset written here is Megatron's mmap format (MMIDIDX); the older " +
      "lazy and cached formats are not written",
    ["mmap"],
  ),
  ...VOCAB_FILE_FLAGS,
  ...DEBUG_FLAG,
};

/** Summary of one preprocessing run. */
export interface PreprocessResult {
  /** Tokens written. */
  tokens: number;
  /** Characters of text read, or bytes (see `unit`). */
  chars: number;
  /** What `chars` counts: the byte tokenizer reads a file's bytes. */
  unit: "characters" | "bytes";
  /** Bytes written. */
  bytes: number;
  /** Documents joined. */
  documents: number;
}

/** Refuses a `.bin` input: it is token ids already, and preprocess reads text. */
function refuseTokenInput(dataPath: string | undefined): void {
  if (dataPath !== undefined && isTokenBinPath(dataPath)) {
    throw new DataError(`${dataPath} is already a token file; preprocess reads text`);
  }
}

/** Tokenizes `dataPath` (or the default corpus) with `tokenizerName` and writes `output`. */
export async function preprocess(
  dataPath: string | undefined,
  tokenizerName: string,
  output: string,
  progress?: (done: number, total: number) => void,
): Promise<PreprocessResult> {
  refuseTokenInput(dataPath);
  const tokenizer = await createTokenizer(tokenizerName);
  if (tokenizer.vocabSize > MAX_BIN_VOCAB) {
    throw new DataError(
      `tokenizer ${tokenizer.name} has ${tokenizer.vocabSize} ids; a uint16 .bin holds at most ${MAX_BIN_VOCAB}`,
    );
  }
  const { result: corpus, tokens } = await writeTokenBinFrom(
    output,
    (write) => streamTokens(tokenizer, dataPath, write, { progress }),
    (corpus) => tokenBinMetaOf(tokenizer, corpus.documents),
  );
  return {
    tokens,
    chars: corpus.chars,
    unit: corpus.unit,
    bytes: tokens * 2,
    documents: corpus.documents,
  };
}

/**
 * Refuses ({@link UsageError}) an `output` that would overwrite what preprocess
 * reads: the output or its sidecar (`OUT.bin.json`) is the input file (by real
 * path or inode, so symlinks, hard links and other spellings count), or lies inside the input folder.
 * `dataPath` undefined is the bundled corpus; an input that does not exist is
 * left to the reader's error.
 */
export async function checkOutputApartFromInput(
  output: string,
  dataPath: string | undefined,
): Promise<void> {
  const book = assetUrl("moby_dick.txt");
  const input = dataPath ?? (book.protocol === "file:" ? fileURLToPath(book) : undefined);
  if (input === undefined) return;
  const realInput = await realOrNull(input);
  if (realInput === null) return;
  const folder = (await Deno.stat(realInput).catch(() => null))?.isDirectory ?? false;
  const named = dataPath === undefined ? `the default corpus ${input}` : `--data-path ${dataPath}`;
  const side = tokenBinMetaPath(output);
  for (const path of [output, side]) {
    const target = await writeTarget(path);
    if (target === null) continue;
    const what = path === output ? `--output ${output}` : `--output ${output}: its sidecar ${side}`;
    if (folder && isInside(realInput, target)) {
      throw new UsageError(
        `${what} lies inside the input folder (${named}): write it outside the folder`,
      );
    }
    if (!folder && await sameFile(target, realInput)) {
      throw new UsageError(
        `${what} is the input (${named}), which would be replaced by ` +
          `${path === output ? "token ids" : "the sidecar's JSON"}: ` +
          `name another file, such as ${input.replace(/\.[^./]*$/, "")}.bin`,
      );
    }
  }
}

/** Command-line entry point; returns the exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    const f = parseFlags(args, PREPROCESS_FLAGS);
    if (f.help) {
      console.log(helpText(USAGE, PREPROCESS_FLAGS));
      return 0;
    }
    // --vocab-file and --merge-file are checked against the tokenizer's own vocabulary (a GPT-2
    // pair adopts --tokenizer gpt2), as train checks them.
    await checkVocabFiles(f, f.tokenizer === "bert" ? "bert" : "gpt");
    if (f["output-prefix"] !== undefined) return await megatronMain(f);
    for (const flag of ["json-keys", "append-eod"]) {
      if (wasGiven(f, flag)) {
        throw new UsageError(
          `--${flag} is Megatron's, for --output-prefix (its indexed dataset from a .jsonl); ` +
            "--output writes documents separated by the end-of-text id",
        );
      }
    }
    const values = {
      output: f.output as string | undefined,
      tokenizer: f.tokenizer as string,
      "data-path": f["data-path"] as string | undefined,
    };
    if (values.output === undefined) {
      throw new UsageError("--output OUT.bin (or Megatron's --output-prefix PREFIX) is required");
    }
    refuseTokenInput(values["data-path"]); // before the output's checks, which would name it
    await checkOutputApartFromInput(values.output, values["data-path"]);
    if (!isTokenBinPath(values.output)) {
      // A data path is read as token ids only when its name ends in .bin: any other name
      // would later be trained on as text, its uint16 ids read as characters.
      throw new UsageError(
        `--output ${values.output}: name the token file FILE.bin (train and eval read a ` +
          `--data-path as token ids only when it ends in .bin, as text otherwise)`,
      );
    }
    await checkWritableFile("--output", values.output);
    const t0 = performance.now();
    let r;
    try {
      r = await preprocess(
        values["data-path"],
        values.tokenizer,
        values.output,
        stderrProgress("tokenizing (bytes read)"),
      );
    } catch (e) {
      if (e instanceof RangeError) throw new DataError(e.message);
      throw e;
    }
    const ms = performance.now() - t0;
    console.log(
      `wrote ${r.tokens} ${values.tokenizer} tokens (${r.bytes} bytes) from ${r.chars} ${r.unit} ` +
        `(${counted(r.documents, "document")}) to ${values.output} ` +
        `and ${tokenBinMetaPath(values.output)} in ${ms.toFixed(0)} ms`,
    );
    return 0;
  });
}

/**
 * `preprocess --output-prefix PREFIX`: Megatron's indexed dataset of each
 * `--json-keys` key of a `.jsonl` input, `PREFIX_KEY_document.bin` and `.idx`,
 * as its `tools/preprocess_data.py` writes them (data/megatron_dataset.ts).
 */
async function megatronMain(f: FlagValues): Promise<number> {
  const prefix = f["output-prefix"] as string;
  const input = f["data-path"] as string | undefined;
  if (f.output !== undefined) {
    throw new UsageError(
      "--output and --output-prefix: give one (--output writes FILE.bin; --output-prefix " +
        "Megatron's indexed dataset)",
    );
  }
  if (input === undefined) {
    throw new UsageError("--output-prefix needs --input, a file of JSON lines (.json or .jsonl)");
  }
  if (!wasGiven(f, "tokenizer") && f["vocab-file"] === undefined) {
    // Megatron's script requires one; the byte default of --output would be a silent surprise.
    throw new UsageError(
      "--output-prefix needs --tokenizer-type (GPT2BPETokenizer, BertWordPieceLowerCase) or " +
        "--tokenizer, as Megatron's preprocess_data.py does",
    );
  }
  const tokenizer = await createTokenizer(f.tokenizer as string);
  const appendEod = f["append-eod"] === true;
  if (appendEod && tokenizer.eosId === undefined) {
    throw new UsageError(
      `--append-eod: the ${tokenizer.name} tokenizer has no end-of-document id here ` +
        "(GPT-2's <|endoftext|> is one: --tokenizer-type GPT2BPETokenizer)",
    );
  }
  const given = f["json-keys"] as string | string[] | undefined;
  const keys = given === undefined ? ["text"] : Array.isArray(given) ? given : [given];
  const outputs = new Map(keys.map((key) => [key, `${prefix}_${key}_document`]));
  for (const out of outputs.values()) {
    for (const path of [`${out}.bin`, `${out}.idx`, tokenBinMetaPath(`${out}.bin`)]) {
      await checkWritableFile("--output-prefix", path);
    }
  }
  const t0 = performance.now();
  const results = await writeMegatronDataset(tokenizer, input, outputs, {
    appendEod,
    eod: tokenizer.eosId,
    warn: (msg) => console.error(`warning: ${msg}`),
    progress: stderrProgress("tokenizing (bytes read)"),
  });
  const ms = (performance.now() - t0).toFixed(0);
  for (const [key, r] of results) {
    const out = outputs.get(key)!;
    const empty = r.emptyDocuments > 0 ? `, ${r.emptyDocuments} of them empty` : "";
    console.log(
      `wrote ${r.tokens} ${tokenizer.name} tokens (${2 * r.tokens} bytes) from ${r.chars} ` +
        `characters (${counted(r.documents, "document")}${empty}) to ${out}.bin, ${out}.idx and ` +
        `${tokenBinMetaPath(`${out}.bin`)} in ${ms} ms`,
    );
  }
  if (tokenizer.name === "bert") {
    console.log(
      "(a GPT trains on WordPiece ids with --tokenizer-type BertWordPieceLowerCase; BERT " +
        "training here reads text, --data-path corpus.jsonl, and splits its sentences itself)",
    );
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
