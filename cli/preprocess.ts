/**
 * `deno task preprocess`: tokenizes text (a file, a folder, or the default book) and writes a
 * `.bin` of little-endian uint16 ids (nanoGPT's format) for `--data-path`.
 * @module
 */

import { parseArgs } from "node:util";
import { loadTokens } from "../data/corpus.ts";
import { DataError } from "../data/errors.ts";
import { MAX_BIN_VOCAB, writeTokenBin } from "../data/token_bin.ts";
import { createTokenizer, TOKENIZER_NAMES } from "../data/tokenizer.ts";
import { handled } from "./errors.ts";
import { UsageError } from "./flags.ts";
import { checkWritableFile } from "./paths.ts";

const HELP =
  `Usage: deno task preprocess --output OUT.bin [--data-path IN] [--tokenizer gpt2|byte|bert]

Tokenizes text and writes little-endian uint16 token ids (nanoGPT's .bin format), which
'deno task train --data-path OUT.bin' reads back without re-tokenizing.

Options:
  --data-path PATH   a text file, or a folder of .txt/.md files (recursive, sorted by path);
                     default: the bundled novel Moby Dick
  --tokenizer NAME   ${
    TOKENIZER_NAMES.join(" | ")
  } (default gpt2); its vocabulary must fit in uint16
  --output PATH      the .bin file to write (required)
  --debug            print the stack trace of any error
  -h, --help         show this help
`;

/** Summary of one preprocessing run. */
export interface PreprocessResult {
  /** Tokens written. */
  tokens: number;
  /** Characters of text read. */
  chars: number;
  /** Bytes written. */
  bytes: number;
}

/** Tokenizes `dataPath` (or the default corpus) with `tokenizerName` and writes `output`. */
export async function preprocess(
  dataPath: string | undefined,
  tokenizerName: string,
  output: string,
): Promise<PreprocessResult> {
  if (dataPath !== undefined && dataPath.toLowerCase().endsWith(".bin")) {
    throw new DataError(`${dataPath} is already a token file; preprocess reads text`);
  }
  const tokenizer = await createTokenizer(tokenizerName);
  if (tokenizer.vocabSize > MAX_BIN_VOCAB) {
    throw new DataError(
      `tokenizer ${tokenizer.name} has ${tokenizer.vocabSize} ids; a uint16 .bin holds at most ${MAX_BIN_VOCAB}`,
    );
  }
  const corpus = await loadTokens(tokenizer, dataPath);
  await writeTokenBin(output, corpus.ids);
  return { tokens: corpus.ids.length, chars: corpus.chars ?? 0, bytes: corpus.ids.length * 2 };
}

/** Command-line entry point; returns the exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    let values;
    try {
      ({ values } = parseArgs({
        args,
        options: {
          "data-path": { type: "string" },
          tokenizer: { type: "string", default: "gpt2" },
          output: { type: "string", short: "o" },
          debug: { type: "boolean" },
          help: { type: "boolean", short: "h" },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (e) {
      const msg = (e as Error).message.replace(/\. To specify.*$/s, "");
      throw new UsageError(`${msg} (--help lists the flags)`);
    }
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (values.output === undefined) throw new UsageError("--output OUT.bin is required");
    if (!(TOKENIZER_NAMES as readonly string[]).includes(values.tokenizer!)) {
      throw new UsageError(
        `--tokenizer must be one of ${TOKENIZER_NAMES.join(", ")}, got "${values.tokenizer}"`,
      );
    }
    await checkWritableFile("--output", values.output);
    const t0 = performance.now();
    let r;
    try {
      r = await preprocess(values["data-path"], values.tokenizer!, values.output);
    } catch (e) {
      if (e instanceof RangeError) throw new DataError(e.message);
      throw e;
    }
    const ms = performance.now() - t0;
    console.log(
      `wrote ${r.tokens} ${values.tokenizer} tokens (${r.bytes} bytes) from ${r.chars} characters ` +
        `to ${values.output} in ${ms.toFixed(0)} ms`,
    );
    return 0;
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
