/**
 * `deno task plot FILE.jsonl [--output FILE.svg]`: draws the training and
 * validation loss curves of a `--log-json` file as an SVG a person can open.
 * @module
 */

import { DataError } from "../data/errors.ts";
import { DEBUG_FLAG, handled, oneLine } from "./errors.ts";
import { type FlagSpec, helpText, parseFlags, UsageError } from "./flags.ts";
import { checkWritableFile } from "./paths.ts";

/** Flags of `deno task plot`. */
export const PLOT_FLAGS: Record<string, FlagSpec> = {
  "output": { type: "string", help: "SVG file to write (default: the input with .svg)" },
  "title": { type: "string", help: "chart title (default: the file name)" },
  ...DEBUG_FLAG,
};

/** One point of a curve. */
export interface Point {
  /** Iteration. */
  x: number;
  /** Loss. */
  y: number;
}

/** Reads the training and validation curves from JSON-lines records. */
export function curves(jsonl: string): { train: Point[]; val: Point[] } {
  const train: Point[] = [];
  const val: Point[] = [];
  jsonl.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let r: Record<string, number>;
    try {
      r = JSON.parse(line);
    } catch {
      throw new DataError(`line ${i + 1} is not JSON: ${line.slice(0, 60)}`);
    }
    if (typeof r.iteration !== "number") return;
    if (Number.isFinite(r.loss)) train.push({ x: r.iteration, y: r.loss });
    if (Number.isFinite(r.val_loss)) val.push({ x: r.iteration, y: r.val_loss });
  });
  return { train, val };
}

function esc(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

function ticks(lo: number, hi: number, n: number): number[] {
  const step = 10 ** Math.floor(Math.log10((hi - lo) / n || 1));
  const unit = [1, 2, 5, 10].map((m) => m * step).find((u) => (hi - lo) / u <= n) ?? step * 10;
  const out: number[] = [];
  for (let v = Math.ceil(lo / unit) * unit; v <= hi + 1e-9; v += unit) out.push(+v.toFixed(10));
  return out;
}

/** The SVG of the two curves (training thin and light, validation bold with markers). */
export function lossSvg(train: Point[], val: Point[], title: string): string {
  const W = 800, H = 480, L = 70, R = 20, T = 40, B = 50;
  const all = [...train, ...val];
  if (all.length === 0) throw new DataError("no iterations with a loss in the log");
  const x0 = Math.min(...all.map((p) => p.x)), x1 = Math.max(...all.map((p) => p.x));
  const y0 = Math.min(...all.map((p) => p.y)), y1 = Math.max(...all.map((p) => p.y));
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
  for (const x of ticks(x0, x1, 8)) {
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
    `<text transform="translate(16 ${
      (T + H - B) / 2
    }) rotate(-90)" text-anchor="middle">loss (nats/token)</text>`,
  );
  if (train.length) {
    out.push(`<path d="${path(train)}" fill="none" stroke="#7aa6d6" stroke-width="1.2"/>`);
  }
  if (val.length) {
    out.push(`<path d="${path(val)}" fill="none" stroke="#d9534f" stroke-width="2.2"/>`);
    for (const p of val) out.push(`<circle cx="${sx(p.x)}" cy="${sy(p.y)}" r="3" fill="#d9534f"/>`);
  }
  out.push(
    `<line x1="${W - 190}" x2="${W - 165}" y1="${T + 18}" y2="${
      T + 18
    }" stroke="#7aa6d6" stroke-width="2"/>`,
  );
  out.push(`<text x="${W - 160}" y="${T + 22}">training loss</text>`);
  out.push(
    `<line x1="${W - 190}" x2="${W - 165}" y1="${T + 38}" y2="${
      T + 38
    }" stroke="#d9534f" stroke-width="2.2"/>`,
  );
  out.push(`<text x="${W - 160}" y="${T + 42}">validation loss</text>`);
  out.push("</svg>");
  return out.join("\n");
}

/** Entry point; returns the exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    const positional = args.filter((a, i) =>
      !a.startsWith("-") && !(i > 0 && ["--output", "--title"].includes(args[i - 1]))
    );
    const f = parseFlags(args.filter((a) => !positional.includes(a)), PLOT_FLAGS);
    const usage = "Usage: deno task plot LOG.jsonl [--output OUT.svg] [--title TEXT]";
    if (f.help) {
      console.log(helpText(usage, PLOT_FLAGS));
      return 0;
    }
    if (positional.length !== 1) {
      throw new UsageError(
        `give one LOG.jsonl to plot, got ${positional.length} (${usage.slice(7)})`,
      );
    }
    const file = positional[0];
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      throw new DataError(`cannot read ${file}: ${oneLine((e as Error).message)}`);
    }
    const out = (f.output as string | undefined) ?? file.replace(/\.jsonl?$/, "") + ".svg";
    await checkWritableFile("--output", out);
    let train: Point[], val: Point[], svg: string;
    try {
      ({ train, val } = curves(text));
      svg = lossSvg(train, val, (f.title as string | undefined) ?? file);
    } catch (e) {
      throw e instanceof DataError ? new DataError(`${file}: ${e.message}`) : e;
    }
    await Deno.writeTextFile(out, svg);
    console.log(`wrote ${out} (${train.length} training points, ${val.length} validation points)`);
    return 0;
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
