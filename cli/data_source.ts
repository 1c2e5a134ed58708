/**
 * The values of train's data-path flags (`--data-path`, `--train-data-path`,
 * `--valid-data-path`), in Megatron's forms: one path; weight-path pairs
 * `W1 P1 W2 P2 …` (a blend, weights normalized to sum 1); or several paths
 * without weights (a blend weighted by each corpus's size).
 * @module
 */

import { normalizeWeights } from "../data/blend.ts";
import { decimalNumber, UsageError } from "./flags.ts";

/** One corpus, or a blend of corpora, as a data-path flag gives it. */
export interface DataSource {
  /** The corpora's paths, in the order given. */
  paths: string[];
  /**
   * Their weights, normalized to sum 1; undefined for one path, and for several
   * paths given without weights (each then weighs its share of the tokens).
   */
  weights?: number[];
}

/** The flags that take a {@link DataSource}. */
export const DATA_PATH_FLAGS: readonly string[] = [
  "data-path",
  "train-data-path",
  "valid-data-path",
];

/** What a data-path flag takes, for its help and errors. */
export const DATA_PATH_FORM = "PATH | W1 P1 W2 P2 …";

/** Whether `s` is written as a number (a weight), finite or not ("inf", "nan", "-1"). */
export function looksNumeric(s: string): boolean {
  return !Number.isNaN(decimalNumber(s, false)) || /^[+-]?nan$/i.test(s.trim());
}

/**
 * The {@link DataSource} of `flag`'s value (a string, or the several values of
 * a list flag). Throws {@link UsageError} for an odd pairing (weights and
 * paths that do not alternate), and a weight that is not a positive finite
 * number. In a list, a path that looks like a number is read as a weight:
 * write it `./2`.
 */
export function parseDataSource(flag: string, value: string | readonly string[]): DataSource {
  const values = typeof value === "string" ? [value] : [...value];
  if (values.length === 1) return { paths: values }; // a path, whatever it looks like
  const numeric = values.map(looksNumeric);
  if (!numeric.some((n) => n)) return { paths: values };
  const bad = numeric.findIndex((n, i) => n !== (i % 2 === 0));
  if (bad >= 0 || values.length % 2 === 1) {
    const why = bad < 0
      ? `the last weight, ${values.at(-1)}, has no path after it`
      : bad % 2 === 0
      ? `${values[bad]} has no weight before it`
      : `the weight ${values[bad - 1]} is followed by ${values[bad]}, not by a path`;
    throw new UsageError(
      `--${flag} ${values.join(" ")}: ${why}. Give weight-path pairs (--${flag} W1 P1 W2 P2 …) ` +
        `or paths only (a path that reads as a number is written ./NAME)`,
    );
  }
  const weights: number[] = [], paths: string[] = [];
  for (let i = 0; i < values.length; i += 2) {
    const w = decimalNumber(values[i], false);
    if (!(w > 0 && Number.isFinite(w))) {
      throw new UsageError(
        `--${flag}: the weight of ${values[i + 1]} is ${values[i]}; a weight must be a ` +
          `positive finite number`,
      );
    }
    weights.push(w);
    paths.push(values[i + 1]);
  }
  try {
    return { paths, weights: normalizeWeights(weights) };
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new UsageError(`--${flag} ${values.join(" ")}: ${e.message}`);
  }
}

/**
 * `path`, or `path.bin` where `path` does not exist and `path.bin` (or
 * `path.idx`, so that the error names the missing `.bin`) does:
 * Megatron names an indexed dataset by its prefix (`corpus` for `corpus.bin`
 * and `corpus.idx`), and its uint16 `.bin` is a stream of ids this project reads.
 */
export function megatronPrefix(path: string): string {
  const exists = (p: string) => {
    try {
      Deno.statSync(p);
      return true;
    } catch {
      return false;
    }
  };
  // A prefix whose index is there but not its .bin: the error names the missing .bin.
  return !exists(path) && (exists(`${path}.bin`) || exists(`${path}.idx`)) ? `${path}.bin` : path;
}

/**
 * The {@link DataSource} of `flag` in parsed flags (a Megatron dataset prefix
 * read as its `.bin`, see {@link megatronPrefix}), or undefined when it was
 * not given.
 */
export function dataSourceOf(
  f: Readonly<Record<string, unknown>>,
  flag: string,
): DataSource | undefined {
  const v = f[flag];
  if (v === undefined) return undefined;
  const s = parseDataSource(flag, v as string | string[]);
  return { ...s, paths: s.paths.map(megatronPrefix) };
}

/** Whether `s` blends several corpora. */
export function isBlend(s: DataSource | undefined): boolean {
  return (s?.paths.length ?? 0) > 1;
}

/**
 * `flag`'s value with the paths replaced by `PATH`, to compare across nodes:
 * each node names its own files, but they must blend the same number of
 * corpora with the same weights. One path compares as `PATH`.
 */
export function blendShape(flag: string, value: unknown): unknown {
  if (typeof value === "string") return "PATH";
  if (!Array.isArray(value)) return value;
  try {
    const s = parseDataSource(flag, value as string[]);
    return s.paths.map((_, k) => `${s.weights ? `${s.weights[k]} ` : ""}PATH`).join(" ");
  } catch {
    return value.join(" ");
  }
}
