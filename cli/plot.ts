/**
 * `deno task plot FILE.jsonl [--output FILE.svg]`: draws the training and
 * validation loss curves of a `--log-json` file as an SVG a person can open.
 * @module
 */

import { counted } from "./log.ts";
import { parseArgs } from "node:util";
import { DataError } from "../data/errors.ts";
import { oneLine } from "../core/files.ts";
import { DEBUG_FLAG, handled } from "./errors.ts";
import {
  type FlagSpec,
  helpText,
  parseArgsOptions,
  parseFlags,
  UsageError,
  withMegatronSpellings,
} from "./flags.ts";
import { checkWritableFile, sameFile, writeTarget } from "./paths.ts";

/** Flags of `deno task plot`. */
export const PLOT_FLAGS: Record<string, FlagSpec> = {
  "output": {
    type: "string",
    help: "SVG file to write (default: the first input with .svg)",
  },
  "title": { type: "string", help: "chart title (default: the file names)" },
  "labels": {
    type: "string",
    help: "legend names of the runs, comma-separated (default: the file names)",
  },
  "smooth": {
    type: "float",
    default: 0,
    min: 0,
    help: "EMA weight of the training curves, TensorBoard's slider: 0 = raw, 0.9 = smooth (< 1)",
  },
  ...DEBUG_FLAG,
};

/** One point of a curve. */
export interface Point {
  /** Iteration. */
  x: number;
  /** Loss. */
  y: number;
}

/** The curves of one run. */
export interface Run {
  /** Legend name. */
  name: string;
  /** Training loss per iteration. */
  train: Point[];
  /** Validation loss where it was measured. */
  val: Point[];
  /** The model family its log's header names (`--model`), where it names one. */
  model?: string;
}

/**
 * Reads the training and validation curves from JSON-lines records; records
 * without an iteration (the runs' header records) are skipped, but for the
 * model family a header names (`--model`). A last line cut short (no line end,
 * not JSON: a run killed mid-write, or still writing) is left out and said in
 * `tornLast`; any other line that is not JSON is refused.
 */
export function curves(
  jsonl: string,
): { train: Point[]; val: Point[]; model?: string; tornLast?: number } {
  const train: Point[] = [];
  const val: Point[] = [];
  let model: string | undefined;
  let tornLast: number | undefined;
  let start = 0, i = 0;
  while (start < jsonl.length) {
    let end = jsonl.indexOf("\n", start);
    if (end < 0) end = jsonl.length;
    const line = jsonl.slice(start, end);
    start = end + 1;
    i++;
    if (!line.trim()) continue;
    let r: Record<string, number>;
    try {
      r = JSON.parse(line);
    } catch {
      if (end === jsonl.length) {
        tornLast = i;
        break;
      }
      throw new DataError(`line ${i} is not JSON: ${line.slice(0, 60)}`);
    }
    if (r === null || typeof r !== "object") continue;
    const header = r as unknown as { type?: string; config?: { model?: unknown } };
    if (header.type === "header" && typeof header.config?.model === "string") {
      model = header.config.model;
    }
    if (typeof r.iteration !== "number") continue;
    if (Number.isFinite(r.loss)) train.push({ x: r.iteration, y: r.loss });
    if (Number.isFinite(r.val_loss)) val.push({ x: r.iteration, y: r.val_loss });
  }
  return {
    train,
    val,
    ...(model === undefined ? {} : { model }),
    ...(tornLast === undefined ? {} : { tornLast }),
  };
}

/** The y axis's label: what the runs' loss is (BERT's is the masked-LM and sentence-order sum). */
function lossLabel(runs: readonly Run[]): string {
  const bert = runs.filter((r) => r.model === "bert").length;
  if (bert === 0) return "loss (nats/token)";
  return bert === runs.length ? "loss (masked-LM + sentence-order, nats)" : "loss (nats)";
}

/**
 * TensorBoard's smoothing: an exponential moving average with weight `w` in
 * [0, 1), debiased so that the first points are not pulled toward zero.
 */
export function smooth(ps: Point[], w: number): Point[] {
  if (!(w > 0)) return ps;
  if (w >= 1) throw new RangeError(`--smooth must be below 1, got ${w}`);
  let ema = 0, n = 0;
  return ps.map((p) => {
    ema = w * ema + (1 - w) * p.y;
    n++;
    return { x: p.x, y: ema / (1 - w ** n) };
  });
}

/**
 * At most `max` points: consecutive points averaged in equal buckets, so that a
 * 100k-iteration curve stays a small SVG with the same shape.
 */
export function thin(ps: Point[], max = 2000): Point[] {
  if (ps.length <= max) return ps;
  const out: Point[] = [];
  const per = ps.length / max;
  for (let b = 0; b < max; b++) {
    const lo = Math.floor(b * per), hi = Math.floor((b + 1) * per);
    let sx = 0, sy = 0;
    for (let i = lo; i < hi; i++) {
      sx += ps[i].x;
      sy += ps[i].y;
    }
    out.push({ x: sx / (hi - lo), y: sy / (hi - lo) });
  }
  return out;
}

/** Smallest and largest of `f` over the points of all lists (no spread: any length). */
function range(lists: Point[][], f: (p: Point) => number): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const ps of lists) {
    for (const p of ps) {
      const v = f(p);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  return [lo, hi];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];

function esc(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

function ticks(lo: number, hi: number, n: number, least = 0): number[] {
  const step = Math.max(least, 10 ** Math.floor(Math.log10((hi - lo) / n || 1)));
  const unit = [1, 2, 5, 10].map((m) => m * step).find((u) => (hi - lo) / u <= n) ?? step * 10;
  const out: number[] = [];
  for (let v = Math.ceil(lo / unit) * unit; v <= hi + 1e-9; v += unit) out.push(+v.toFixed(10));
  return out;
}

/**
 * The SVG of several runs' curves, one color each: training thin, validation
 * bold with markers (thinned to 2000 points a curve), and a legend.
 */
export function runsSvg(runs: Run[], title: string): string {
  const W = 800, H = 480, L = 70, R = 20, T = 40, B = 50;
  runs = runs.map((r) => ({ ...r, train: thin(r.train), val: thin(r.val) }));
  const lists = runs.flatMap((r) => [r.train, r.val]);
  if (lists.every((l) => l.length === 0)) {
    throw new DataError("no iterations with a loss in the log");
  }
  const [x0, x1] = range(lists, (p) => p.x);
  const [y0, y1] = range(lists, (p) => p.y);
  const sx = (x: number) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const path = (ps: Point[]) =>
    ps.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join("");
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ];
  for (const y of ticks(y0, y1, 6)) {
    out.push(`<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#eee"/>`);
    out.push(`<text x="${L - 6}" y="${sy(y) + 4}" text-anchor="end">${y}</text>`);
  }
  for (const x of ticks(x0, x1, 8, 1)) { // iterations: whole numbers
    out.push(`<line x1="${sx(x)}" x2="${sx(x)}" y1="${T}" y2="${H - B}" stroke="#eee"/>`);
    out.push(`<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle">${x}</text>`);
  }
  out.push(
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${
      H - T - B
    }" fill="none" stroke="#888"/>`,
  );
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">iteration</text>`);
  out.push(
    `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${
      lossLabel(runs)
    }</text>`,
  );
  const one = runs.length === 1;
  const legend: { label: string; color: string; width: number }[] = [];
  runs.forEach((r, k) => {
    const trainColor = one ? "#7aa6d6" : COLORS[k % COLORS.length];
    const valColor = one ? "#d9534f" : COLORS[k % COLORS.length];
    const name = one ? "" : `${r.name}: `;
    if (r.train.length) {
      out.push(
        `<path d="${path(r.train)}" fill="none" stroke="${trainColor}" stroke-width="1.2"` +
          `${one ? "" : ' stroke-opacity="0.6"'}/>`,
      );
      legend.push({ label: `${name}training loss`, color: trainColor, width: 1.2 });
    }
    if (r.val.length) {
      out.push(`<path d="${path(r.val)}" fill="none" stroke="${valColor}" stroke-width="2.2"/>`);
      for (const p of r.val) {
        out.push(`<circle cx="${sx(p.x)}" cy="${sy(p.y)}" r="3" fill="${valColor}"/>`);
      }
      legend.push({ label: `${name}validation loss`, color: valColor, width: 2.2 });
    }
  });
  const lw = Math.max(190, 30 + 7 * Math.max(...legend.map((l) => l.label.length)));
  legend.forEach((l, i) => {
    const y = T + 18 + 20 * i;
    out.push(
      `<line x1="${W - R - lw}" x2="${
        W - R - lw + 25
      }" y1="${y}" y2="${y}" stroke="${l.color}" stroke-width="${Math.max(2, l.width)}"/>`,
    );
    out.push(`<text x="${W - R - lw + 30}" y="${y + 4}">${esc(l.label)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n");
}

/**
 * Splits plot's command line into the logs (positional arguments) and the
 * flags, tokenized as {@link parseFlags} does, so that a flag's value (`--output
 * a.jsonl`, `--title a.jsonl`) is never taken for a log, whatever it is. An
 * unknown flag stays among the flags, for parseFlags to refuse; `--` ends the
 * flags (what follows is logs).
 */
export function splitPlotArgs(args: string[]): { logs: string[]; flags: string[] } {
  const { options } = parseArgsOptions(withMegatronSpellings(PLOT_FLAGS));
  const { tokens } = parseArgs({
    args,
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const logs: string[] = [];
  const taken = new Set<number>();
  for (const t of tokens) {
    if (t.kind === "positional") logs.push(t.value);
    if (t.kind !== "option") taken.add(t.index);
  }
  return { logs, flags: args.filter((_, i) => !taken.has(i)) };
}

/**
 * Whether writing `out` would overwrite the existing file `log`: the same real
 * path (a missing `out` resolved through its folder), or the same inode.
 */
async function overwrites(out: string, log: string): Promise<boolean> {
  const target = await writeTarget(out);
  return target !== null && await sameFile(target, log);
}

/** Entry point; returns the exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    const { logs: positional, flags } = splitPlotArgs(args);
    const f = parseFlags(flags, PLOT_FLAGS);
    const usage =
      "Usage: deno task plot LOG.jsonl [LOG2.jsonl ...] [--output OUT.svg] [--smooth 0.9] [--labels A,B] [--title TEXT]";
    if (f.help) {
      console.log(helpText(usage, PLOT_FLAGS));
      return 0;
    }
    if (positional.length === 0) {
      throw new UsageError(`give one LOG.jsonl or more to plot (${usage.slice(7)})`);
    }
    if (positional.includes("")) throw new UsageError("a LOG.jsonl path is empty");
    const w = f.smooth as number;
    if (w >= 1) throw new UsageError(`--smooth must be below 1 (0.9 is smooth), got ${w}`);
    const labels = f.labels === undefined ? positional : (f.labels as string).split(",");
    if (labels.some((l) => l.trim() === "")) {
      throw new UsageError(`--labels ${f.labels} has an empty label: name every run`);
    }
    if (labels.length !== positional.length) {
      throw new UsageError(
        `--labels names ${counted(labels.length, "run")}, but ${
          positional.length === 1 ? "1 log is" : `${positional.length} logs are`
        } given`,
      );
    }
    const given = f.output as string | undefined;
    if (given !== undefined && !/\.svg$/i.test(given)) {
      // The file is SVG whatever its name: a .png or .pdf name would mislead every viewer.
      throw new UsageError(`--output ${given}: the plot is an SVG; name it FILE.svg`);
    }
    const out = given ?? positional[0].replace(/\.jsonl?$/, "") + ".svg";
    for (const log of positional) {
      if (!await overwrites(out, log)) continue;
      throw new UsageError(
        given === undefined
          ? `the default output ${out} (the first log's name with .svg) is the log ${log}: ` +
            "pass --output OUT.svg"
          : `--output ${out} is the log ${log}, which the SVG would replace: name another file, ` +
            `such as ${log.replace(/\.(jsonl?|svg)$/i, "")}.loss.svg`,
      );
    }
    await checkWritableFile("--output", out);
    const runs: Run[] = [];
    for (const [k, file] of positional.entries()) {
      let text: string;
      try {
        text = await Deno.readTextFile(file);
      } catch (e) {
        throw new DataError(`cannot read ${file}: ${oneLine((e as Error).message)}`);
      }
      try {
        const { train, val, model, tornLast } = curves(text);
        if (tornLast !== undefined) {
          console.error(
            `warning: ${file}: line ${tornLast}, the last, is cut short (a run killed while ` +
              "writing it, or still writing): left out",
          );
        }
        if (train.length + val.length === 0) {
          throw new DataError("no iterations with a loss in the log");
        }
        runs.push({ name: labels[k], train: smooth(train, w), val, model });
      } catch (e) {
        throw e instanceof DataError ? new DataError(`${file}: ${e.message}`) : e;
      }
    }
    const svg = runsSvg(runs, (f.title as string | undefined) ?? positional.join(" vs "));
    await Deno.writeTextFile(out, svg);
    const counts = runs.map((r) =>
      `${
        runs.length > 1 ? `${r.name}: ` : ""
      }${r.train.length} training points, ${r.val.length} validation points`
    );
    console.log(`wrote ${out} (${counts.join("; ")})`);
    return 0;
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
