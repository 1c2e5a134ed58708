/**
 * The token streams of a GPT run: one corpus or a blend of several (Megatron's
 * `--data-path W1 P1 W2 P2 …`), each corpus cut on its own into training,
 * validation and test parts by `--split`, then each part blended with the
 * same weights; or `--train-data-path` and `--valid-data-path`, each read
 * whole (each may be a blend).
 * @module
 */

import { type CorpusTokens, loadTokens } from "../../data/corpus.ts";
import { DataError } from "../../data/errors.ts";
import { splitStream } from "../../data/split.ts";
import { sidecarTokenizers } from "../../data/token_bin.ts";
import { documentEndId, type Tokenizer } from "../../data/tokenizer.ts";
import type { TokenStream } from "../../data/token_stream.ts";
import type { DataSource } from "../data_source.ts";
import type { TrainArgs } from "../train_args.ts";
import { counted } from "../log.ts";

/** One part (training or validation) of a run's data: streams and their blend weights. */
export interface GptPart {
  /** One token stream per corpus (a `.bin` read from disk as needed). */
  streams: TokenStream[];
  /** Their weights, summing to 1 (a single stream: `[1]`). */
  weights: number[];
  /** The corpora, for messages and the log. */
  names: string[];
  /** Whether the weights were given (else they are each stream's share of the tokens). */
  weighted: boolean;
}

/** Training and validation token streams, and where they came from. */
export interface GptSplits {
  /** Training data. */
  train: GptPart;
  /** Validation data. */
  val: GptPart;
  /** Tokens held out as test data (`--split`'s third part; not used by training). */
  testTokens: number;
  /** Each corpus read and its size in tokens, for the log. */
  corpora: { source: string; tokens: number }[];
  /** Whether training and validation come from separate flags (each read whole). */
  separate: boolean;
}

/** Total tokens of a part. */
export function partTokens(p: GptPart): number {
  return p.streams.reduce((n, s) => n + s.length, 0);
}

/**
 * Refuses a blend of `.bin` files whose sidecars name different tokenizers,
 * naming both (each is also checked against the run's tokenizer on reading).
 */
async function checkSameTokenizer(paths: readonly string[]): Promise<void> {
  const [first, ...rest] = await sidecarTokenizers(paths);
  for (const other of rest) {
    if (first.tokenizer !== other.tokenizer || first.vocabSize !== other.vocabSize) {
      throw new DataError(
        `a blend's corpora must share one tokenizer: ${first.path} was tokenized with ` +
          `${first.tokenizer} (vocabulary ${first.vocabSize}) and ${other.path} with ` +
          `${other.tokenizer} (vocabulary ${other.vocabSize}), per ${first.sidecar} and ` +
          `${other.sidecar}: run deno task preprocess on their text with one tokenizer`,
      );
    }
  }
}

/** The corpora of `source` (the default book when undefined), tokenized. */
async function loadSource(
  tokenizer: Tokenizer,
  source: DataSource | undefined,
): Promise<CorpusTokens[]> {
  if (source === undefined) return [await loadTokens(tokenizer)];
  await checkSameTokenizer(source.paths);
  const out: CorpusTokens[] = [];
  for (const path of source.paths) out.push(await loadTokens(tokenizer, path));
  return out;
}

/** A part of `streams`, weighted by `weights` or else by each stream's tokens. */
function part(streams: TokenStream[], names: string[], weights?: number[]): GptPart {
  const total = streams.reduce((n, s) => n + s.length, 0);
  return {
    streams,
    names,
    weighted: weights !== undefined,
    weights: weights ?? streams.map((s) => total > 0 ? s.length / total : 1 / streams.length),
  };
}

/**
 * The token streams of a run: `--train-data-path` and `--valid-data-path`
 * each read whole, or each corpus of one source cut in order into train,
 * validation and test parts by the split weights (the test part last, then
 * validation before it; each cut at a document boundary where one is near:
 * {@link splitStream}). Every training stream (and, with validation on, every
 * validation stream) must hold one window, `--seq-length` + 1 tokens.
 */
export async function loadGptSplits(a: TrainArgs, tokenizer: Tokenizer): Promise<GptSplits> {
  const d = a.data;
  const separate = d.train !== undefined && d.valid !== undefined;
  let splits: GptSplits;
  if (separate) {
    const train = await loadSource(tokenizer, d.train);
    const val = await loadSource(tokenizer, d.valid);
    splits = {
      train: part(train.map((c) => c.ids), train.map((c) => c.source), d.train!.weights),
      val: part(val.map((c) => c.ids), val.map((c) => c.source), d.valid!.weights),
      testTokens: 0,
      corpora: [...train, ...val].map((c) => ({ source: c.source, tokens: c.ids.length })),
      separate,
    };
  } else {
    const source = d.train ?? d.source;
    const corpora = await loadSource(tokenizer, source);
    const separator = documentEndId(tokenizer);
    const cut = corpora.map((c) => splitStream(c.ids, d.split, separator, c.documentStarts));
    const names = corpora.map((c) => c.source);
    splits = {
      train: part(cut.map((c) => c.train), names, source?.weights),
      val: part(cut.map((c) => c.val), names, source?.weights),
      testTokens: cut.reduce((n, c) => n + c.test, 0),
      corpora: corpora.map((c) => ({ source: c.source, tokens: c.ids.length })),
      separate,
    };
  }
  checkWindows(a, splits);
  return splits;
}

/** Refuses a stream of `splits` shorter than one window, naming it. */
function checkWindows(a: TrainArgs, splits: GptSplits): void {
  const T = a.seqLength;
  const parts = [["training", splits.train], ["validation", splits.val]] as const;
  for (const [name, p] of parts) {
    if (name === "validation" && a.evalIters === 0) continue; // no validation: nothing read from it
    p.streams.forEach((s, k) => {
      if (s.length >= T + 1) return;
      const blend = p.streams.length > 1;
      const corpus = ` of ${p.names[k]}`;
      // Separate files are read whole: --split does not apply to them.
      const what = splits.separate
        ? `the ${name} file ${p.names[k]}`
        : `the ${name} split${corpus}`;
      throw new DataError(
        `${what} has ${counted(s.length, "token")}, fewer than --seq-length + 1 = ${T + 1}; ` +
          `use more data, ${splits.separate ? "" : "another --split (or --val-fraction), "}` +
          `or a shorter --seq-length` +
          (blend && p.streams.some((o) => o.length >= T + 1)
            ? ", or leave it out of the blend"
            : "") +
          (name === "validation" ? " (--eval-iters 0 trains without validation)" : ""),
      );
    });
  }
}

/** Whether `p` blends several streams. */
export function isBlendPart(p: GptPart): boolean {
  return p.streams.length > 1;
}

/** The blend as the `data:` line names it: each corpus with its weight and tokens. */
export function describeBlend(
  p: GptPart,
  tokensOf: (name: string) => number | undefined,
): string {
  const how = p.weighted ? "" : " (weighted by size)";
  return `blend of ${p.streams.length}${how}: ` + p.names.map((n, k) => {
    const tokens = tokensOf(n);
    // Four significant digits: a weight of 1e-5 stays visible (toFixed(4) showed 0).
    return `${n} (weight ${+p.weights[k].toPrecision(4)}${
      tokens === undefined ? "" : `, ${tokens} tokens`
    })`;
  }).join(", ");
}
