/**
 * A Hugging Face GPT directory's own tokenizer files against the tokenizer a
 * command reads its text with. This project reads no BPE files: GPT-2's is
 * built in. A directory whose `vocab.json` and `merges.txt` (or BPE
 * `tokenizer.json`) are GPT-2's is read with it; one whose files are another
 * vocabulary's is refused, as its ids would mean other tokens (they were
 * ignored, and its text tokenized with GPT-2's or the byte tokenizer's ids).
 * @module
 */

import { join } from "node:path";
import { readDirFile } from "../data/files.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";

/** The directory's BPE files as `vocab.json` and `merges.txt` texts, or null if it has none. */
async function bpeFiles(
  dir: string,
): Promise<{ vocab: string; merges: string; from: string } | null> {
  const text = async (name: string) => {
    const bytes = await readDirFile(dir, name);
    return bytes === null ? null : new TextDecoder().decode(bytes);
  };
  const vocab = await text("vocab.json"), merges = await text("merges.txt");
  if (vocab !== null || merges !== null) {
    return { vocab: vocab ?? "{}", merges: merges ?? "", from: "vocab.json and merges.txt" };
  }
  const tokJson = await text("tokenizer.json");
  if (tokJson === null) return null;
  let model: { type?: unknown; vocab?: unknown; merges?: unknown } | undefined;
  try {
    model = JSON.parse(tokJson)?.model;
  } catch {
    throw new CheckpointError(`${join(dir, "tokenizer.json")} is not valid JSON`);
  }
  if (model?.type !== "BPE" || !Array.isArray(model.merges)) {
    return { vocab: "{}", merges: "", from: "tokenizer.json (not a BPE tokenizer)" };
  }
  const lines = model.merges.map((m) => Array.isArray(m) ? m.join(" ") : String(m));
  return {
    vocab: JSON.stringify(model.vocab ?? {}),
    merges: lines.join("\n"),
    from: "tokenizer.json",
  };
}

/**
 * Refuses (a {@link CheckpointError}) a Hugging Face directory `dir` whose own
 * tokenizer files are not GPT-2's, or are GPT-2's while the command reads the
 * model's text with `tokenizer` (another one). A directory with no tokenizer
 * files passes: its vocabulary size chose the tokenizer.
 */
export async function checkHfTokenizerFiles(dir: string, tokenizer: string): Promise<void> {
  const files = await bpeFiles(dir);
  if (files === null) return;
  const { gpt2FilesDiffer } = await import("../data/gpt2_tokenizer.ts");
  const differs = gpt2FilesDiffer(files.vocab, files.merges);
  if (differs !== null) {
    throw new CheckpointError(
      `${dir}: its tokenizer (${files.from}) is not GPT-2's (${differs}); this project reads ` +
        "no tokenizer files and tokenizes a GPT's text with GPT-2's BPE or bytes only, whose ids " +
        "would mean other tokens to this model",
    );
  }
  if (tokenizer !== "gpt2") {
    throw new CheckpointError(
      `${dir}: its tokenizer (${files.from}) is GPT-2's, but the text would be read with the ` +
        `${tokenizer} tokenizer: use --tokenizer gpt2`,
    );
  }
}
