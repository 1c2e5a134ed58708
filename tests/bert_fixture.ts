/**
 * A tiny random BERT written in Hugging Face's layout (config.json, model.safetensors
 * with HF names and separate query/key/value, vocab.txt), a small WordPiece vocabulary
 * and a corpus written in it, for the BERT command-line tests. Test-only.
 * @module
 */

import { join } from "node:path";
import type { HostTensor } from "../models/checkpoint/mod.ts";
import { writeHfDir } from "../models/hf/mod.ts";
import { prng, randomArray } from "./helpers.ts";

/** The fixture's vocabulary: specials first, then words, then continuation pieces. */
export const TINY_VOCAB: readonly string[] = [
  "[PAD]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  ".",
  "the",
  "a",
  "cat",
  "dog",
  "bird",
  "sat",
  "ran",
  "saw",
  "on",
  "in",
  "to",
  "mat",
  "house",
  "tree",
  "big",
  "small",
  "red",
  "and",
  "it",
  "was",
  "##s",
];

/** The fixture's `config.json` (HF BERT field names). */
export const TINY_HF_CONFIG = {
  architectures: ["BertForPreTraining"],
  model_type: "bert",
  vocab_size: TINY_VOCAB.length,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 32,
  max_position_embeddings: 24,
  type_vocab_size: 2,
  layer_norm_eps: 1e-12,
  hidden_act: "gelu",
  hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1,
};

/** Random HF BERT tensors (HF names) for {@link TINY_HF_CONFIG}. */
export function tinyHfTensors(seed = 1): [string, HostTensor][] {
  const out: [string, HostTensor][] = [];
  let s = seed * 1000;
  const add = (n: string, shape: number[], lo = -1, hi = 1) =>
    out.push([n, { shape, data: randomArray(shape.reduce((a, b) => a * b, 1), s++, lo, hi) }]);
  const {
    vocab_size: V,
    hidden_size: H,
    intermediate_size: F,
    max_position_embeddings: P,
    num_hidden_layers: L,
  } = TINY_HF_CONFIG;
  const ln = (p: string) => {
    add(`${p}.weight`, [H], 0.8, 1.2);
    add(`${p}.bias`, [H], -0.1, 0.1);
  };
  const dense = (p: string, outF: number, inF: number) => {
    const a = 1 / Math.sqrt(inF);
    add(`${p}.weight`, [outF, inF], -2 * a, 2 * a);
    add(`${p}.bias`, [outF], -0.1, 0.1);
  };
  add("bert.embeddings.word_embeddings.weight", [V, H]);
  add("bert.embeddings.position_embeddings.weight", [P, H], -0.5, 0.5);
  add("bert.embeddings.token_type_embeddings.weight", [2, H], -0.5, 0.5);
  ln("bert.embeddings.LayerNorm");
  for (let i = 0; i < L; i++) {
    const p = `bert.encoder.layer.${i}`;
    for (const q of ["query", "key", "value"]) dense(`${p}.attention.self.${q}`, H, H);
    dense(`${p}.attention.output.dense`, H, H);
    ln(`${p}.attention.output.LayerNorm`);
    dense(`${p}.intermediate.dense`, F, H);
    dense(`${p}.output.dense`, H, F);
    ln(`${p}.output.LayerNorm`);
  }
  dense("bert.pooler.dense", H, H);
  dense("cls.predictions.transform.dense", H, H);
  ln("cls.predictions.transform.LayerNorm");
  add("cls.predictions.bias", [V], -0.5, 0.5);
  // Like a trained BERT: special tokens unlikely, frequent words likely (so that a
  // masked-token accuracy is not trivially 0).
  const bias = out[out.length - 1][1].data;
  for (let i = 0; i < V; i++) {
    if (/^\[.*\]$/.test(TINY_VOCAB[i])) bias[i] -= 4;
    if (TINY_VOCAB[i] === "the" || TINY_VOCAB[i] === "a") bias[i] += 2.5;
  }
  dense("cls.seq_relationship", 2, H);
  return out;
}

/** Writes the fixture as a Hugging Face BERT directory `dir` (with `vocab.txt`). */
export async function writeTinyHfBert(dir: string, seed = 1): Promise<void> {
  await writeHfDir(dir, TINY_HF_CONFIG, tinyHfTensors(seed));
  await Deno.writeTextFile(join(dir, "vocab.txt"), TINY_VOCAB.join("\n") + "\n");
}

/**
 * `docs` documents (separated by two blank lines) of 5–8 sentences each, written in the
 * fixture's vocabulary (plural "cats" becomes cat ##s).
 */
export function tinyCorpus(docs = 4, seed = 5): string {
  const r = prng(seed);
  const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)];
  const nouns = ["cat", "dog", "bird", "mat", "house", "tree", "cats", "dogs"];
  const adj = ["big", "small", "red"];
  const verbs = ["sat on", "ran to", "saw", "was in"];
  const sentence = () => {
    const words = [pick(["the", "a"]), ...(r() < 0.5 ? [pick(adj)] : []), pick(nouns)];
    words.push(pick(verbs), pick(["the", "a"]), pick(nouns));
    if (r() < 0.3) words.push("and", "it", pick(verbs), "the", pick(nouns));
    const s = words.join(" ") + ".";
    return s[0].toUpperCase() + s.slice(1);
  };
  return Array.from(
    { length: docs },
    () => Array.from({ length: 5 + Math.floor(r() * 4) }, sentence).join(" "),
  ).join("\n\n\n");
}
