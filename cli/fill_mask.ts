/**
 * `deno task fill-mask`: the most likely fillers of each `[MASK]` in a text, with
 * their probabilities (softmax of the masked-LM head over the whole vocabulary), from
 * a BERT checkpoint (`--load`) or a Hugging Face BERT directory (`--init-from-hf`).
 * Bracketed special tokens in the text (`[MASK]`, `[SEP]` …) are taken as tokens, as
 * Hugging Face's tokenizer does; the rest goes through WordPiece. Model facts go to
 * stderr; with `--json` stdout holds one JSON object alone (the table goes to stderr).
 * @module
 */

import { parseBackend } from "../core/gpu.ts";
import { Device } from "../core/device.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { bertBasicTokenize } from "../data/bert_basic.ts";
import type { WordPieceTokenizer } from "../data/wordpiece_tokenizer.ts";
import type { Bert } from "../models/bert.ts";
import { loadBert } from "./bert_model.ts";
import { modelSourceFromFlags, preferWidthForModel } from "./load_model.ts";
import { DEBUG_FLAG, handled } from "./errors.ts";
import { counted, stderrProgress } from "./log.ts";
import {
  backendFlag,
  checkModelSource,
  type FlagSpec,
  type FlagValues,
  parseCommandLine,
  UsageError,
} from "./flags.ts";

/** Every flag of `deno task fill-mask`. */
export const FILL_MASK_FLAGS: Record<string, FlagSpec> = {
  "load": { type: "string", help: "BERT checkpoint directory written by --save", group: "Model" },
  "iteration": { type: "int", min: 0, help: "checkpoint iteration (default: latest)" },
  "init-from-hf": {
    type: "string",
    help: "Hugging Face BERT directory (config.json + model.safetensors + vocab.txt)",
  },
  "text": {
    type: "string",
    help: 'text with one or more [MASK] tokens, e.g. "the [MASK] sat on the mat"',
    group: "Prediction",
    required: true,
  },
  "top-k": { type: "int", default: 5, min: 1, help: "fillers to show per [MASK]" },
  "json": {
    type: "boolean",
    help:
      "print only one JSON object on stdout (the table on stderr): the text and, per [MASK], its fillers and probabilities",
    group: "Output",
  },
  ...backendFlag("Device"),
  ...DEBUG_FLAG,
};

const USAGE =
  `Usage: deno task fill-mask (--load DIR | --init-from-hf DIR) --text "the [MASK] sat on the mat" [flags]

Prints the --top-k most likely fillers of each [MASK] in the text, with their
probabilities under the model's masked-language-model head.`;

/** Validates the flag combination; throws UsageError. */
export function validateFillMaskFlags(f: FlagValues): void {
  checkModelSource(f);
  if (f.text === undefined) throw new UsageError('--text "… [MASK] …" is required');
  if (!(f.text as string).includes("[MASK]")) {
    throw new UsageError("--text has no [MASK] token to fill");
  }
}

/** Bracketed upper-case words are taken as special tokens (`[MASK]`, `[SEP]`, `[CLS]` …). */
const SPECIAL = /\[[A-Z][A-Z0-9_]+\]/g;

/**
 * The ids of `text` (special tokens as themselves, the rest through WordPiece, no
 * [CLS]/[SEP] added); throws UsageError for a bracketed token the vocabulary lacks or a
 * word that would become [UNK].
 */
export function encodeFillMaskText(tok: WordPieceTokenizer, text: string): number[] {
  const ids: number[] = [];
  const words = (segment: string) => {
    for (const w of bertBasicTokenize(segment, tok.basicOptions)) {
      const pieces = tok.encode(w);
      if (pieces.includes(tok.special.unk)) {
        throw new UsageError(`"${w}" in --text is not in the vocabulary (it would be [UNK])`);
      }
      ids.push(...pieces);
    }
  };
  let at = 0;
  for (const m of text.matchAll(SPECIAL)) {
    words(text.slice(at, m.index));
    const id = tok.tokenToId(m[0]);
    if (id === undefined || !tok.isSpecial(id)) {
      throw new UsageError(`unknown token ${m[0]} in --text (write the mask as [MASK])`);
    }
    ids.push(id);
    at = m.index + m[0].length;
  }
  words(text.slice(at));
  return ids;
}

/** One candidate filler. */
export interface Filler {
  /** Vocabulary id. */
  id: number;
  /** Vocabulary string (`##` marks a word continuation). */
  token: string;
  /** Probability under the MLM head (softmax over the whole vocabulary). */
  prob: number;
  /** The text with this [MASK] replaced by the filler. */
  sequence: string;
}

/** The fillers of one [MASK]. */
export interface MaskFillers {
  /** Which [MASK] of the text (0-based). */
  index: number;
  /** Its position in the model input ([CLS] is 0). */
  position: number;
  /** The top-k fillers, most likely first. */
  predictions: Filler[];
}

/**
 * Replaces the `n`-th `[MASK]` of `text` with `token`: a `##` piece joins the
 * word before; a whole word is set apart from letters or digits it touches
 * (`the[MASK]cat` reads `the over cat`, as the tokenizer split it).
 */
export function fillNth(text: string, n: number, token: string): string {
  let k = -1;
  return text.replace(/(\s?)\[MASK\]/g, (all, space: string, at: number) => {
    if (++k !== n) return all;
    if (token.startsWith("##")) return token.slice(2);
    const wordChar = /[\p{L}\p{N}]/u;
    const before = space || !wordChar.test(text[at - 1] ?? "") ? space : " ";
    const after = wordChar.test(text[at + all.length] ?? "") ? " " : "";
    return before + token + after;
  });
}

/**
 * Top-`k` fillers of every [MASK] of `text`: one forward pass over `[CLS] text [SEP]`
 * (segment 0, dropout off); probabilities are the softmax, in float64, of the masked-LM
 * logits over the model's vocabulary (padding excluded).
 */
export async function fillMask(
  model: Bert,
  tok: WordPieceTokenizer,
  text: string,
  k: number,
): Promise<MaskFillers[]> {
  const body = encodeFillMaskText(tok, text);
  const ids = [tok.special.cls, ...body, tok.special.sep];
  const positions = ids.flatMap((id, i) => id === tok.special.mask ? [i] : []);
  if (positions.length === 0) throw new UsageError("--text has no [MASK] token to fill");
  const c = model.config;
  if (ids.length > c.maxPositions) {
    throw new UsageError(
      `--text is ${ids.length} tokens with [CLS] and [SEP], more than the model's ` +
        `${c.maxPositions} positions`,
    );
  }
  const device = model.parallel.device;
  const n = ids.length;
  model.train(false);
  const logits = await device.noGrad(() =>
    tidy(device, async () => {
      const hidden = await model.encode(
        TokenIds.fromHost(device, Int32Array.from(ids), [1, n]),
        TokenIds.fromHost(device, new Int32Array(n), [1, n]),
        Tensor.fromArray(device, new Float32Array(n).fill(1), [1, n]),
      );
      return await (await model.headLogits(hidden, positions)).mlm!.read();
    })
  );
  const V = c.vocabSize, Vp = model.paddedVocab;
  return positions.map((position, index) => {
    const row = logits.subarray(index * Vp, index * Vp + V);
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, row[v]);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(row[v] - m);
    // A vocabulary padded past the tokenizer (Megatron's 30592 for 30522) has ids no word spells.
    const spelled = Math.min(V, tok.vocabSize);
    const order = Array.from({ length: spelled }, (_, v) => v)
      .sort((a, b) => row[b] - row[a] || a - b);
    const predictions = order.slice(0, Math.min(k, spelled)).map((id) => {
      const token = tok.idToToken(id);
      return { id, token, prob: Math.exp(row[id] - m) / z, sequence: fillNth(text, index, token) };
    });
    return { index, position, predictions };
  });
}

/** Runs `deno task fill-mask` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, FILL_MASK_FLAGS, USAGE, validateFillMaskFlags);
  if (typeof f === "number") return f;
  const from = modelSourceFromFlags(f);
  await preferWidthForModel(from);
  let device: Device | undefined;
  try {
    device = await Device.create({ backend: parseBackend(f.backend as string) });
    const { model, tokenizer, source, tokenizerSource } = await loadBert(
      device,
      from,
      undefined,
      stderrProgress("loading"),
    );
    const c = model.config;
    console.error(
      `model: ${source} | BERT (${c.postLayerNorm ? "post-LN" : "pre-LN"}) ` +
        `${counted(c.numLayers, "layer")}, hidden ${c.hiddenSize}, ` +
        `${counted(c.numHeads, "head")} | ${tokenizerSource}`,
    );
    const text = f.text as string;
    const masks = await fillMask(model, tokenizer, text, f["top-k"] as number);
    const say = f.json ? (l: string) => console.error(l) : (l: string) => console.log(l);
    const width = Math.max(...masks.flatMap((m) => m.predictions.map((p) => p.token.length)));
    for (const m of masks) {
      say(
        masks.length > 1 ? `[MASK] ${m.index + 1} of ${masks.length}:` : "[MASK]:",
      );
      for (const p of m.predictions) {
        say(`  ${p.prob.toFixed(4)}  ${p.token.padEnd(width)}  ${p.sequence}`);
      }
    }
    if (f.json) console.log(JSON.stringify({ text, masks }));
    model.dispose();
    return 0;
  } finally {
    await device?.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
