/**
 * A small declarative flag parser over `node:util` parseArgs: typed defaults,
 * help text generated from the same table, and clear errors for unknown flags
 * and bad values.
 * @module
 */

import { parseArgs } from "node:util";
import { BACKEND_ENV, type BackendName, BACKENDS, DEFAULT_BACKEND } from "../core/gpu.ts";
import { F32_MIN_NORMAL } from "../core/optim.ts";

/** One flag: its type, default and help line. */
export interface FlagSpec {
  /** Value type. */
  type: "int" | "float" | "string" | "boolean";
  /** Default value (undefined = unset). */
  default?: number | string | boolean;
  /** Help text. */
  help: string;
  /** Allowed values for strings. */
  choices?: readonly string[];
  /**
   * A string flag may be given empty (default false: `--save ""`, what an
   * unset `--save "$CKPT"` passes, is refused rather than read as "not given").
   */
  allowEmpty?: boolean;
  /** Lower bound for numbers (inclusive). */
  min?: number;
  /** Upper bound for numbers (inclusive). */
  max?: number;
  /** Alternative spellings (long names, without dashes). */
  aliases?: string[];
  /** Section heading in the help text. */
  group?: string;
  /** What the help text calls the value (default: the type, e.g. `FLOAT`). */
  valueName?: string;
  /**
   * A string flag that takes every value up to the next `--flag`, as
   * argparse's `nargs='*'` (Megatron's `--data-path W1 P1 W2 P2 …`): one
   * value parses to a string, several to a string array. Given twice, it is
   * refused naming both, rather than one silently replacing the other.
   */
  list?: boolean;
  /**
   * Refuse the flag given twice, saying why one value only (`eval reads one
   * corpus`), where a later value silently replacing an earlier one would
   * hide a mistake (a path, say); other flags take their last value, as
   * argparse's do.
   */
  once?: string;
  /**
   * An environment variable that gives the value where the flag is left out
   * (set and not empty), checked as a value given on the command line is.
   */
  env?: string;
  /** The command cannot run without it (its check is the command's): said when it is given empty. */
  required?: boolean;
  /**
   * Another command's flag this one does not take, refused with this reason
   * (`--train-iters: a train flag profile does not apply …`) rather than as
   * an unknown option; left out of the help.
   */
  refused?: string;
  /**
   * A Megatron flag this project does not implement (cli/megatron_flags.ts):
   * given with a value in `accepts` (a switch whose `accepts` is true: given at
   * all) it asks for what the project does anyway and is accepted, changing
   * nothing; otherwise {@link parseFlags} refuses it with `reason`. The help
   * lists such flags together, after the others.
   */
  unimplemented?: { reason: string; accepts?: readonly string[] | true };
}

/**
 * Megatron's values of `--tokenizer-type`, and this project's names, as the
 * names of `--tokenizer` (case-insensitive).
 */
export const TOKENIZER_TYPES: Readonly<Record<string, string>> = {
  gpt2bpetokenizer: "gpt2",
  gpt2: "gpt2",
  bertwordpiecelowercase: "bert",
  bert: "bert",
  bytetokenizer: "byte",
  byte: "byte",
};

/**
 * Megatron's spellings of this project's flags: a command whose table has the
 * target flag also accepts the spelling (shown in its help), with the value
 * translated. `accepts` widens the target's choices for values given so.
 */
export const MEGATRON_SPELLINGS: Readonly<
  Record<string, { flag: string; value?: (v: string) => string; accepts?: string[] }>
> = {
  "tokenizer-type": {
    flag: "tokenizer",
    value: (v) => TOKENIZER_TYPES[v.toLowerCase()] ?? v,
    accepts: ["bert"],
  },
  // Minutes, as Megatron's; --dist-timeout takes a duration.
  "distributed-timeout-minutes": { flag: "dist-timeout", value: (v) => `${v}m` },
};

/** `specs` with the Megatron spellings of its flags added as aliases (a copy). */
export function withMegatronSpellings(
  specs: Record<string, FlagSpec>,
): Record<string, FlagSpec> {
  const out: Record<string, FlagSpec> = { ...specs };
  for (const [spelling, m] of Object.entries(MEGATRON_SPELLINGS)) {
    const s = out[m.flag];
    if (!s || spelling in out || s.aliases?.includes(spelling)) continue;
    out[m.flag] = { ...s, aliases: [...(s.aliases ?? []), spelling] };
  }
  return out;
}

/** Thrown for bad command lines; the CLI prints it with the usage and exits 2. */
export class UsageError extends Error {
  /** A usage error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Several flags refused at once by {@link parseFlags} (unknown ones, and
 * Megatron flags for what is not implemented here): its message names how
 * many, then one line per flag (`refusals`), in command-line order.
 */
export class FlagsRefusedError extends UsageError {
  /** The refusal of each flag, in command-line order. */
  readonly refusals: readonly string[];
  /** The error for `refusals` (two or more). */
  constructor(refusals: readonly string[]) {
    super(
      `${refusals.length} flags are refused (--help lists the flags):\n` +
        refusals.map((l) => `  • ${l}`).join("\n"),
    );
    this.refusals = refusals;
  }
}

/** Parsed values keyed by flag name (kebab-case); a {@link FlagSpec.list} flag's several values are an array. */
export type FlagValues = Record<string, number | string | boolean | string[] | undefined>;

/** The flags each parse result was given explicitly (not by default). */
const given = new WeakMap<FlagValues, Set<string>>();

/**
 * Whether `name` was on the command line that produced `f` (rather than a
 * default); false for values not made by {@link parseFlags}.
 */
export function wasGiven(f: FlagValues, name: string): boolean {
  return given.get(f)?.has(name) ?? false;
}

/**
 * The model source of `eval`, `generate` and `fill-mask`: exactly one of
 * `--load DIR` and `--init-from-hf DIR`; `--iteration` picks a checkpoint of
 * `--load`'s only. Throws {@link UsageError}.
 */
export function checkModelSource(f: FlagValues): void {
  if (!f.load === !f["init-from-hf"]) {
    throw new UsageError("pass exactly one of --load DIR and --init-from-hf DIR");
  }
  if (f.iteration !== undefined && !f.load) {
    throw new UsageError(
      "--iteration picks a checkpoint of --load DIR; a Hugging Face directory has one model",
    );
  }
}

/**
 * The flag among `names` closest to the unknown `name`, if one is close: the
 * only one that `name` (four letters or more) begins (`--train-iter` for
 * `--train-iters`), else one at most two edits away (one for names of four
 * letters or fewer).
 */
export function nearestFlag(name: string, names: readonly string[]): string | null {
  const extending = names.filter((n) => n.startsWith(name));
  if (name.length >= 4 && extending.length === 1) return extending[0];
  let best: string | null = null, bestD = Infinity;
  for (const n of names) {
    const d = editDistance(name, n);
    if (d < bestD) [best, bestD] = [n, d];
  }
  return bestD <= (name.length <= 4 ? 1 : 2) ? best : null;
}

/** Levenshtein distance between `a` and `b`. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** `node:util` parseArgs options for a flag table (with `-h`/`--help`), and each alias's flag. */
export function parseArgsOptions(specs: Record<string, FlagSpec>): {
  options: Record<string, { type: "string" | "boolean"; short?: string }>;
  aliasOf: Map<string, string>;
} {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  const aliasOf = new Map<string, string>();
  for (const [name, s] of Object.entries(specs)) {
    options[name] = { type: s.type === "boolean" ? "boolean" : "string" };
    for (const a of s.aliases ?? []) {
      options[a] = options[name];
      aliasOf.set(a, name);
    }
  }
  return { options, aliasOf };
}

/** Whether `token` ends a {@link FlagSpec.list} flag's values: a flag (`--x`, `-h`), not `-0.5`. */
function isFlagToken(token: string): boolean {
  return token.startsWith("--") ||
    (/^-[^\d.]/.test(token) && !/^-(inf|infinity|nan)$/i.test(token));
}

/**
 * Why `arg` was left over (parseArgs' "Unexpected argument"), from the
 * arguments before it: the flag before it took one value, or none; and a list
 * flag's values end at the next flag.
 */
function strayHint(
  arg: string,
  rest: string[],
  specs: Record<string, FlagSpec>,
  aliasOf: Map<string, string>,
  lists: Map<string, { spelled: string }>,
): string {
  const i = rest.indexOf(arg);
  const flagAt = (j: number) => {
    const m = j >= 0 ? /^--([^=]+)(=.*)?$/s.exec(rest[j]) : null;
    const name = m ? aliasOf.get(m[1]) ?? m[1] : undefined;
    return m && name && specs[name] ? { spelled: m[1], inline: !!m[2], spec: specs[name] } : null;
  };
  const hints: string[] = [];
  const prev = flagAt(i - 1), before = flagAt(i - 2);
  if (prev?.spec.type === "boolean") hints.push(`--${prev.spelled} takes no value`);
  else if (prev?.inline) hints.push(`--${prev.spelled} takes one value`);
  else if (before && before.spec.type !== "boolean" && !before.inline) {
    hints.push(`--${before.spelled} takes one value, here ${rest[i - 1]}`);
  }
  for (const { spelled } of lists.values()) {
    hints.push(`--${spelled}'s values go together, before the next flag`);
  }
  return hints.length ? ` (${hints.join("; ")})` : "";
}

/** A {@link FlagSpec.list} flag as given: its spelling, values and index in the arguments. */
interface ListFlag {
  spelled: string;
  values: string[];
  at: number;
}

/**
 * The values of `specs`' {@link FlagSpec.list} flags in `args` (by flag name),
 * and the other arguments, for parseArgs, with the index in `args` of each
 * (`restAt`). Throws {@link UsageError} for a list flag without a value or
 * given twice.
 */
function takeListFlags(
  args: string[],
  specs: Record<string, FlagSpec>,
  aliasOf: Map<string, string>,
): { rest: string[]; restAt: number[]; lists: Map<string, ListFlag> } {
  const rest: string[] = [];
  const restAt: number[] = [];
  const keep = (i: number) => {
    rest.push(args[i]);
    restAt.push(i);
  };
  const lists = new Map<string, ListFlag>();
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") { // the end of the flags: parseArgs refuses what follows
      for (let j = i; j < args.length; j++) keep(j);
      break;
    }
    const m = /^--([^=]+)(?:=(.*))?$/s.exec(args[i]);
    const name = m ? aliasOf.get(m[1]) ?? m[1] : undefined;
    const s = name === undefined ? undefined : specs[name];
    if (!m || !s?.list) {
      keep(i);
      // Another flag's value stays with it, whatever it looks like.
      if (m && s && s.type !== "boolean" && m[2] === undefined && i + 1 < args.length) keep(++i);
      continue;
    }
    const at = i;
    const values = m[2] === undefined ? [] : [m[2]];
    while (i + 1 < args.length && !isFlagToken(args[i + 1])) values.push(args[++i]);
    const form = `--${name} ${s.valueName ?? "VALUE …"}`;
    if (values.length === 0) throw new UsageError(`--${m[1]} needs a value: ${form}`);
    const before = lists.get(name!);
    if (before) {
      throw new UsageError(
        `--${before.spelled} is given twice (${shownList(before.values)}, then ` +
          `${shownList(values)}): one would replace the other; give all its values after one ` +
          `flag: ${form}`,
      );
    }
    lists.set(name!, { spelled: m[1], values, at });
  }
  return { rest, restAt, lists };
}

/** A list flag's values as a command line shows them. */
function shownList(values: string[]): string {
  return values.map((v) => /^[\w./+-]+$/.test(v) ? v : JSON.stringify(v)).join(" ");
}

/**
 * Parses `args` against `specs`. Throws {@link UsageError} at the first
 * problem, but for unknown flags and refused {@link FlagSpec.unimplemented}
 * ones: two or more of those are refused together, one line each. A line
 * holding `--help` (or `-h`) is `{ help: true }` even where it would be
 * refused, as argparse prints the help whatever follows.
 */
export function parseFlags(args: string[], table: Record<string, FlagSpec>): FlagValues {
  try {
    return parseFlagsOrRefuse(args, table);
  } catch (e) {
    // As argparse's help action: `--help` prints the help whatever else the line holds.
    if (!(e instanceof UsageError) || !asksHelp(args)) throw e;
    const out: FlagValues = { help: true };
    given.set(out, new Set());
    return out;
  }
}

/** Whether `args` hold `--help` or `-h` (before a `--`). */
export function asksHelp(args: readonly string[]): boolean {
  const end = args.indexOf("--");
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === "--help" || a === "-h");
}

function parseFlagsOrRefuse(args: string[], table: Record<string, FlagSpec>): FlagValues {
  const specs = withMegatronSpellings(table);
  const { options, aliasOf } = parseArgsOptions(specs);
  const { rest, restAt, lists } = takeListFlags(args, specs, aliasOf);
  // The command line read leniently (unknown flags and bad values kept): what the strict parse
  // below would refuse one at a time, refused together or where it cannot see it.
  const tokens = parseArgs({
    args: rest,
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  }).tokens;
  refuseSeveral(tokens, restAt, lists, specs, options, aliasOf);
  refuseReplacedValues(tokens, specs, options, aliasOf);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options, strict: true, allowPositionals: false });
  } catch (e) {
    const raw = (e as Error).message;
    const ambiguous = /^Option '(--[\w-]+)' argument is ambiguous/.exec(raw);
    if (ambiguous) {
      const flag = ambiguous[1];
      // The word after it: a flag of this command (the value was left out), or a value that
      // starts with "-" (a negative number, "--- a title"), which must be joined to the flag.
      const at = rest.indexOf(flag);
      const next = at >= 0 ? rest[at + 1] ?? "" : "";
      const name = /^--([^=]+)/.exec(next)?.[1];
      if (name !== undefined && (name in options || aliasOf.has(name))) {
        throw new UsageError(`${flag} needs a value (the next word, ${next}, is a flag)`);
      }
      throw new UsageError(`${flag} takes a value; write one starting with "-" as ${flag}=-…`);
    }
    const missing = /^Option '(--[\w-]+)(?: <value>)?' argument missing/.exec(raw);
    if (missing) throw new UsageError(`${missing[1]} needs a value`);
    const msg = raw.replace(/\. To specify.*$/s, "");
    const unknown = /^Unknown option '--([^'=]+)'/.exec(msg);
    const near = unknown ? nearestFlag(unknown[1], Object.keys(options)) : null;
    const stray = /^Unexpected argument '(.*)'/s.exec(msg);
    throw new UsageError(
      unknown
        ? `${msg} (${near ? `did you mean --${near}? ` : ""}--help lists the flags)`
        : stray
        ? msg + strayHint(stray[1], rest, specs, aliasOf, lists)
        : msg,
    );
  }
  const out: FlagValues = {};
  const names = new Set<string>();
  given.set(out, names);
  for (const [name, s] of Object.entries(specs)) out[name] = s.default;
  if (parsed.values.help) out.help = true;
  for (const [name, { spelled, values }] of lists) {
    names.add(name);
    if (values.includes("") && !specs[name].allowEmpty) {
      throw emptyValueError(spelled, specs[name]);
    }
    out[name] = values.length === 1 ? values[0] : values;
  }
  for (const [rawName, raw] of Object.entries(parsed.values)) {
    if (rawName === "help") continue;
    const name = aliasOf.get(rawName) ?? rawName;
    names.add(name);
    const s = specs[name];
    if (s.type === "boolean") {
      out[name] = raw as boolean;
      continue;
    }
    const str = spelledValue(rawName, raw as string);
    if (s.type === "string" && str === "" && !s.allowEmpty) {
      throw emptyValueError(rawName, s);
    }
    const num = convertedValue(name, rawName, raw as string, s);
    if (typeof num === "string") {
      out[name] = num;
      continue;
    }
    if (s.type === "int" && !Number.isSafeInteger(num)) {
      throw new UsageError(
        `--${name} ${str} is too large: integers go up to ${Number.MAX_SAFE_INTEGER}`,
      );
    }
    if (s.min !== undefined && num < s.min) {
      throw new UsageError(`--${name} must be ≥ ${s.min}, got ${num}`);
    }
    if (s.max !== undefined && num > s.max) {
      throw new UsageError(`--${name} must be ≤ ${s.max}, got ${num}`);
    }
    out[name] = num;
  }
  // A flag left out takes its environment variable's value, checked as a given one is (not for
  // --help, which needs no permission).
  for (const [name, s] of Object.entries(specs)) {
    const raw = s.env && !names.has(name) && !out.help ? Deno.env.get(s.env) : undefined;
    if (!raw) continue;
    try {
      out[name] = convertedValue(name, name, raw, s);
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      throw new UsageError(`${s.env}=${raw}, the default of --${name}: ${e.message}`);
    }
  }
  for (const name of names) {
    const { refused, unimplemented } = specs[name];
    if (refused) throw new UsageError(`--${name}: ${refused}`);
    if (unimplemented) refuseUnimplemented(name, out[name], unimplemented);
  }
  return out;
}

/** The refusal of flag `--name` (spec `s`) given an empty value. */
export function emptyValueError(name: string, s: FlagSpec): UsageError {
  const advice = s.required ? "give it a value" : "give it a value, or leave the flag out";
  return new UsageError(`--${name} is empty: ${advice}`);
}

/** `raw`, given as `--rawName`: a Megatron spelling's value translated ({@link MEGATRON_SPELLINGS}). */
function spelledValue(rawName: string, raw: string): string {
  const spelling = MEGATRON_SPELLINGS[rawName];
  return spelling?.value ? spelling.value(raw) : raw;
}

/**
 * `raw`, given as `--rawName`, converted as flag `name` (spec `s`, not a
 * switch) takes it, as argparse converts a value: a string among its choices,
 * or a finite number (an integer for "int"); a {@link UsageError} otherwise.
 * The final value's own checks (not empty, a safe integer, `min`) are
 * {@link parseFlags}'.
 */
function convertedValue(name: string, rawName: string, raw: string, s: FlagSpec): string | number {
  const str = spelledValue(rawName, raw);
  if (s.type === "string") {
    const spelling = MEGATRON_SPELLINGS[rawName];
    if (s.choices && !s.choices.includes(str) && !spelling?.accepts?.includes(str)) {
      const what = spelling ? `--${rawName} ${raw} (--${name} ${str})` : `--${name}`;
      throw new UsageError(`${what} must be one of ${s.choices.join(", ")}, got "${str}"`);
    }
    return str;
  }
  const num = decimalNumber(str, s.type === "int");
  if (!Number.isFinite(num)) {
    throw new UsageError(
      `--${name} expects ${s.type === "int" ? "an integer" : "a number"}, got "${str}"`,
    );
  }
  // 1e-50 is not 0, though the GPU reads it so (f32: below 2^-126 it is flushed or rounded to 0,
  // and 1e-400 is 0 even as a double): where 0 means "off" (--clip-grad), it would turn a setting
  // off unasked.
  const tiny = num === 0 ? /[1-9]/.test(str.split(/e/i)[0]) : Math.abs(num) < F32_MIN_NORMAL;
  if (s.type === "float" && tiny) {
    throw new UsageError(
      `--${name} ${str} is below float32's smallest normal number (1.2e-38): the GPU would read ` +
        "it as 0",
    );
  }
  return num;
}

/**
 * `text` read as argparse's `int()` (`integer`) or `float()` reads a number:
 * decimal digits (underscores between them allowed) with an optional sign and
 * surrounding spaces, and for a float a point and an exponent, or
 * `inf`/`infinity`/`nan`. NaN for what they refuse and JavaScript's `Number`
 * takes: `""`, `0x10`, `0b1`, and `1e3` or `8.0` as an integer.
 */
export function decimalNumber(text: string, integer: boolean): number {
  const t = text.trim();
  const digits = "\\d+(_\\d+)*"; // Python's: underscores between digits
  const decimal = integer
    ? `[+-]?${digits}`
    : `[+-]?(${digits}(\\.(${digits})?)?|\\.${digits})(e[+-]?${digits})?`;
  if (new RegExp(`^${decimal}$`, "i").test(t)) return Number(t.replaceAll("_", ""));
  if (integer) return NaN;
  const special = /^([+-]?)(inf(inity)?|nan)$/i.exec(t);
  if (!special) return NaN;
  return special[2].toLowerCase() === "nan" ? NaN : special[1] === "-" ? -Infinity : Infinity;
}

/**
 * `--flag`'s comma-separated items (empty ones dropped with `skipEmpty`), each
 * one that `accepts`; a {@link UsageError} saying the flag takes `forms`
 * otherwise (the benches' `--seqs 1024,2048`, `--modes fp32,bf16` …).
 */
export function commaList(
  flag: string,
  text: string,
  accepts: (item: string) => boolean,
  forms: string,
  skipEmpty = false,
): string[] {
  const items = skipEmpty ? text.split(",").filter((t) => t) : text.split(",");
  if (!items.every(accepts)) throw new UsageError(`--${flag} takes ${forms}, got "${text}"`);
  return items;
}

/** `--flag`'s comma-separated integers ≥ 1 ({@link commaList}, read by {@link decimalNumber}). */
export function commaCounts(
  flag: string,
  text: string,
  forms: string,
  skipEmpty = false,
): number[] {
  return commaList(flag, text, (t) => decimalNumber(t, true) >= 1, forms, skipEmpty)
    .map((t) => decimalNumber(t, true));
}

/**
 * Refuses a {@link FlagSpec.unimplemented} flag given as `value`, unless the
 * value is one it accepts: `--NAME VALUE: reason; A or B is accepted`.
 */
function refuseUnimplemented(
  name: string,
  value: FlagValues[string],
  u: NonNullable<FlagSpec["unimplemented"]>,
): void {
  const refusal = unimplementedRefusal(name, value, u);
  if (refusal) throw new UsageError(refusal);
}

/** Why {@link refuseUnimplemented} refuses `--name value`, or null where it is accepted. */
function unimplementedRefusal(
  name: string,
  value: FlagValues[string],
  u: NonNullable<FlagSpec["unimplemented"]>,
): string | null {
  if (u.accepts === true) return null;
  const v = typeof value === "boolean" || value === undefined
    ? null
    : Array.isArray(value)
    ? value.join(" ")
    : String(value);
  if (v !== null && u.accepts?.includes(v)) return null;
  const ok = u.accepts?.length
    ? `; ${u.accepts.join(" or ")} ${u.accepts.length > 1 ? "are" : "is"} accepted`
    : "";
  return `--${name}${v === null ? "" : ` ${v}`}: ${u.reason}${ok}`;
}

/**
 * Refuses at once, one line each in command-line order, the flags among `tokens`
 * (and the list flags taken out of it) that {@link parseFlags} would refuse one
 * per run, when there are two or more: unknown long options, and
 * {@link FlagSpec.unimplemented} flags at values they do not accept (a pasted
 * Megatron script can carry several). With one or none it does nothing, and
 * the parse goes on to refuse that one as it always has; other errors (a bad
 * number, a missing value) are left to it too. `restAt` gives each argument's
 * index in the command line.
 */
function refuseSeveral(
  tokens: Tokens,
  restAt: number[],
  lists: Map<string, ListFlag>,
  specs: Record<string, FlagSpec>,
  options: ReturnType<typeof parseArgsOptions>["options"],
  aliasOf: Map<string, string>,
): void {
  const problems = new Map<string, { at: number; line: string | null }>();
  // A flag given twice counts once: an unknown one where it first stands, an
  // unimplemented one at its last value (the one the parse keeps).
  const unknown = (raw: string, at: number) => {
    if (problems.has(raw)) return;
    const near = nearestFlag(raw.slice(2), Object.keys(options));
    problems.set(raw, {
      at,
      line: `${raw}: unknown option${near ? ` (did you mean --${near}?)` : ""}`,
    });
  };
  const unimplemented = (name: string, value: FlagValues[string], at: number) => {
    problems.delete(`--${name}`);
    const u = specs[name].unimplemented!;
    problems.set(`--${name}`, { at, line: unimplementedRefusal(name, value, u) });
  };
  for (const t of tokens) {
    if (t.kind !== "option" || !t.rawName.startsWith("--")) continue;
    if (!(t.name in options)) {
      unknown(t.rawName, restAt[t.index]);
      continue;
    }
    const name = aliasOf.get(t.name) ?? t.name;
    const s = specs[name];
    if (s?.refused) {
      problems.set(`--${name}`, { at: restAt[t.index], line: `--${name}: ${s.refused}` });
      continue;
    }
    if (!s?.unimplemented) continue;
    if (s.type === "boolean") {
      unimplemented(name, true, restAt[t.index]);
      continue;
    }
    if (t.value === undefined) continue; // a missing value: the parse says so
    let value: string | number;
    try {
      value = convertedValue(name, t.name, t.value, s);
    } catch {
      continue; // a value its flag cannot take: the parse says so
    }
    if (s.type === "int" && !Number.isSafeInteger(value)) continue; // too large: likewise
    unimplemented(name, value, restAt[t.index]);
  }
  for (const [name, { values, at }] of lists) {
    const why = specs[name].refused;
    if (why) problems.set(`--${name}`, { at, line: `--${name}: ${why}` });
    else if (specs[name].unimplemented) {
      unimplemented(name, values.length === 1 ? values[0] : values, at);
    }
  }
  const lines = [...problems.values()].filter((p) => p.line !== null)
    .sort((a, b) => a.at - b.at).map((p) => p.line!);
  if (lines.length >= 2) throw new FlagsRefusedError(lines);
}

/** The command line's tokens, as a lenient `parseArgs` reads them. */
type Tokens = NonNullable<ReturnType<typeof parseArgs>["tokens"]>;

/**
 * Refuses a value that a later one of the same flag would hide: the parse
 * keeps the last value only (as argparse does), but argparse converts every
 * one, so a bad value is refused (`--lr abc --lr 0.1` is an error there and
 * here, not a run at 0.1); and a {@link FlagSpec.once} flag given twice is
 * refused whatever its values.
 */
function refuseReplacedValues(
  tokens: Tokens,
  specs: Record<string, FlagSpec>,
  options: ReturnType<typeof parseArgsOptions>["options"],
  aliasOf: Map<string, string>,
): void {
  const seen: { name: string; raw: string; value: string }[] = [];
  for (const t of tokens) {
    if (t.kind !== "option" || !(t.name in options) || t.value === undefined) continue;
    const name = aliasOf.get(t.name) ?? t.name;
    const before = seen.find((b) => b.name === name);
    const once = specs[name].once;
    if (before && once) {
      throw new UsageError(
        `--${before.raw} is given twice (${shownList([before.value])}, then ` +
          `${shownList([t.value])}): ${once}`,
      );
    }
    seen.push({ name, raw: t.name, value: t.value });
  }
  seen.forEach(({ name, raw, value }, i) => {
    // The last value the parse converts (and checks) itself; a switch takes no value.
    if (
      specs[name].type !== "boolean" && seen.slice(i + 1).some((later) => later.name === name)
    ) {
      convertedValue(name, raw, value, specs[name]);
    }
  });
}

/**
 * The help text for `specs`, grouped by section; the
 * {@link FlagSpec.unimplemented} flags in a paragraph at the end.
 */
export function helpText(usage: string, table: Record<string, FlagSpec>): string {
  const specs = withMegatronSpellings(table);
  const lines = [usage, ""];
  let group = "";
  for (const [name, s] of Object.entries(specs)) {
    if (s.unimplemented || s.refused) continue;
    if (s.group && s.group !== group) {
      group = s.group;
      lines.push(`${group}:`);
    }
    const alias = s.aliases?.length ? `, --${s.aliases.join(", --")}` : "";
    const arg = s.type === "boolean"
      ? ""
      : s.choices
      ? ` ${s.choices.join("|")}`
      : ` ${s.valueName ?? s.type.toUpperCase()}`;
    const def = s.default !== undefined && s.type !== "boolean" ? ` (default ${s.default})` : "";
    lines.push(`  --${name}${alias}${arg}`.padEnd(44) + ` ${s.help}${def}`);
  }
  lines.push("  -h, --help".padEnd(44) + " this text");
  const unimplemented = Object.entries(specs).filter(([, s]) => s.unimplemented && !s.refused);
  if (unimplemented.length) {
    const accepted = unimplemented.flatMap(([n, s]) => {
      const a = s.unimplemented!.accepts;
      // A flag stays on one line with its value (NBSP, a space once wrapped).
      if (a === true) {
        return [
          s.type === "boolean" ? `--${n}` : `--${n}${NBSP}${s.valueName ?? s.type.toUpperCase()}`,
        ];
      }
      return a?.length ? [`--${n}${NBSP}${a.join("|")}`] : [];
    });
    const refused = unimplemented.filter(([, s]) => !s.unimplemented!.accepts).map(([n]) =>
      `--${n}`
    );
    lines.push(
      "",
      ...wrap(
        "Megatron flags of what is not implemented here, accepted where they ask for what " +
          `this project does anyway (they change nothing: ${accepted.join(", ")}) and refused ` +
          `otherwise with the reason; always refused: ${refused.join(", ")}`,
        90,
      ).map((l) => l.replaceAll(NBSP, " ")),
    );
  }
  return lines.join("\n");
}

/** A space {@link wrap} does not break at. */
const NBSP = "\u00a0";

/** `text` broken into lines of at most `width` characters at spaces. */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out;
}

/**
 * The shared front of a command: parses `args`, prints the help for `--help`
 * (exit 0) and runs `validate`. Returns the flags, or the exit code when the
 * command should stop; a {@link UsageError} is thrown on (the entry point prints
 * it as one line and exits 2: see cli/errors.ts).
 */
export function parseCommandLine(
  args: string[],
  specs: Record<string, FlagSpec>,
  usage: string,
  validate: (f: FlagValues) => void = () => {},
): FlagValues | number {
  const f = parseFlags(args, specs);
  if (f.help) {
    console.log(helpText(usage, specs));
    return 0;
  }
  validate(f);
  return f;
}

/**
 * `--backend`, as every command that opens a device takes it, under help
 * section `group`. Not given, it is {@link DEFAULT_BACKEND}, or `workersDefault`
 * where the command runs several ranks as Workers of one process and names one
 * for them (`train`: Deno's WebGPU, see `defaultBackendFor`).
 */
export function backendFlag(group: string, workersDefault?: BackendName): Record<string, FlagSpec> {
  const workers = workersDefault && workersDefault !== DEFAULT_BACKEND
    ? `; ${workersDefault} when several ranks share a process`
    : "";
  return {
    "backend": {
      type: "string",
      choices: BACKENDS,
      env: BACKEND_ENV,
      help: `WebGPU implementation (default $${BACKEND_ENV} where set, else ${DEFAULT_BACKEND}` +
        `${workers})`,
      group,
    },
  };
}

/**
 * The parallel flags of the commands that split a model without data
 * parallelism (eval, generate): train's `--tensor-model-parallel-size` (`--tp`)
 * and `--nproc-per-node`, which there can only mean the TP size.
 * `what` names the command in the help.
 */
export function tensorOnlyParallelFlags(what: string): Record<string, FlagSpec> {
  return {
    "tensor-model-parallel-size": {
      type: "int",
      default: 1,
      min: 1,
      aliases: ["tp"],
      help: "tensor-parallel size: ranks (Workers, one GPU each) the model is split over",
    },
    "nproc-per-node": {
      type: "int",
      min: 1,
      help: `ranks on this node, as train's; ${what} is tensor parallel only, so it is the TP size`,
    },
  };
}

/**
 * Reconciles the flags of {@link tensorOnlyParallelFlags}: `--nproc-per-node`
 * alone sets the TP size; given with a different `--tensor-model-parallel-size`,
 * it is refused naming `what` (the command).
 */
export function resolveTensorOnlyParallel(f: FlagValues, what: string): void {
  const tp = f["tensor-model-parallel-size"] as number;
  const nproc = f["nproc-per-node"] as number | undefined;
  if (nproc === undefined || nproc === tp) return;
  if (!wasGiven(f, "tensor-model-parallel-size")) {
    f["tensor-model-parallel-size"] = nproc;
    return;
  }
  throw new UsageError(
    `${what} splits the model only (tensor parallel), so --nproc-per-node ${nproc} must equal ` +
      `--tensor-model-parallel-size ${tp}`,
  );
}
