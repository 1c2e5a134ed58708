/**
 * A Hugging Face GPT directory's own tokenizer files against the tokenizer a
 * command reads its text with. This project reads no tokenizer file of a GPT
 * directory: GPT-2's BPE and bert-base-uncased's WordPiece are built in. A
 * directory whose files are those (GPT-2's `vocab.json` and `merges.txt` or
 * BPE `tokenizer.json`; bert-base-uncased's `vocab.txt` or WordPiece
 * `tokenizer.json`) is read with the built-in one; files of another
 * vocabulary are refused, as its ids would mean other tokens (they were
 * ignored, and the text tokenized with the built-in tokenizer's ids).
 * @module
 */

import { join } from "node:path";
import { readDirFile } from "../data/files.ts";
import { createBertTokenizer, readWordPieceTokenizer } from "../data/wordpiece_tokenizer.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";

/** The tokenizer files of a directory, as what they describe. */
type DirTokenizer =
  | { kind: "bpe"; vocab: string; merges: string; from: string }
  | { kind: "wordpiece"; tokens: readonly string[]; from: string };

async function text(dir: string, name: string): Promise<string | null> {
  const bytes = await readDirFile(dir, name);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

/** What the tokenizer files of `dir` describe, or null where it has none. */
async function dirTokenizer(dir: string): Promise<DirTokenizer | null> {
  const vocab = await text(dir, "vocab.json"), merges = await text(dir, "merges.txt");
  if (vocab !== null || merges !== null) {
    return {
      kind: "bpe",
      vocab: vocab ?? "{}",
      merges: merges ?? "",
      from: "vocab.json and merges.txt",
    };
  }
  const tokJson = await text(dir, "tokenizer.json");
  let model: { type?: unknown; vocab?: unknown; merges?: unknown } | undefined;
  if (tokJson !== null) {
    try {
      model = JSON.parse(tokJson)?.model;
    } catch {
      throw new CheckpointError(`${join(dir, "tokenizer.json")} is not valid JSON`);
    }
    if (model?.type === "BPE" && Array.isArray(model.merges)) {
      const lines = model.merges.map((m) => Array.isArray(m) ? m.join(" ") : String(m));
      return {
        kind: "bpe",
        vocab: JSON.stringify(model.vocab ?? {}),
        merges: lines.join("\n"),
        from: "tokenizer.json",
      };
    }
  }
  const wp = await readWordPieceTokenizer(dir);
  if (wp) return { kind: "wordpiece", tokens: wp.tokens, from: "its WordPiece vocabulary" };
  if (tokJson !== null) {
    throw new CheckpointError(
      `${join(dir, "tokenizer.json")}: a ${String(model?.type ?? "unknown")} tokenizer, which ` +
        "this project cannot read (it reads GPT-2's BPE, bytes, or WordPiece)",
    );
  }
  return null;
}

/**
 * Refuses (a {@link CheckpointError}) a Hugging Face directory `dir` whose own
 * tokenizer files are not those of the built-in `tokenizer` the command reads
 * the model's text with ("gpt2": GPT-2's; "bert": bert-base-uncased's; "byte":
 * none). A directory with no tokenizer files passes: its vocabulary size chose
 * the tokenizer.
 */
export async function checkHfTokenizerFiles(dir: string, tokenizer: string): Promise<void> {
  const own = await dirTokenizer(dir);
  if (own === null) return;
  let differs: string | null;
  let theirs: string;
  if (own.kind === "bpe") {
    const { gpt2FilesDiffer } = await import("../data/gpt2_tokenizer.ts");
    differs = gpt2FilesDiffer(own.vocab, own.merges);
    theirs = "gpt2";
  } else {
    const builtIn = (await createBertTokenizer()).tokens;
    const at = own.tokens.findIndex((t, i) => t !== builtIn[i]);
    differs = at >= 0
      ? `token ${at} is ${JSON.stringify(own.tokens[at])}, bert-base-uncased's ` +
        JSON.stringify(builtIn[at] ?? "")
      : own.tokens.length !== builtIn.length
      ? `${own.tokens.length} tokens against bert-base-uncased's ${builtIn.length}`
      : null;
    theirs = "bert";
  }
  const builtInName = theirs === "gpt2" ? "GPT-2's" : "bert-base-uncased's";
  if (differs !== null) {
    throw new CheckpointError(
      `${dir}: its tokenizer (${own.from}) is not ${builtInName} (${differs}); this project ` +
        "reads no tokenizer file of a GPT and tokenizes its text with GPT-2's BPE, bytes or " +
        "bert-base-uncased's WordPiece, whose ids would mean other tokens to this model",
    );
  }
  if (tokenizer !== theirs) {
    throw new CheckpointError(
      `${dir}: its tokenizer (${own.from}) is ${builtInName}, but the text would be read with ` +
        `the ${tokenizer} tokenizer`,
    );
  }
}
