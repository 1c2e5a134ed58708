/** `deno task plot` (cli/plot.ts): several runs, smoothing, and 100k-line logs. */
import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { curves, main, smooth, thin } from "../cli/plot.ts";
import { tempDir } from "./temp_dir.ts";

function log(n: number, scale: number, header = true): string {
  const lines: string[] = [];
  if (header) lines.push(JSON.stringify({ type: "header", config: {}, world: { size: 1 } }));
  for (let i = 1; i <= n; i++) {
    const r: Record<string, number> = {
      iteration: i,
      loss: scale * (2 + 1 / i) + 0.1 * Math.sin(i),
    };
    if (i % 1000 === 0) r.val_loss = scale * (2.1 + 1 / i);
    lines.push(JSON.stringify(r));
  }
  return lines.join("\n") + "\n";
}

Deno.test("smoothing is TensorBoard's debiased EMA; thinning keeps the shape", () => {
  const ps = [1, 3, 3, 3].map((y, x) => ({ x, y }));
  deepStrictEqual(smooth(ps, 0), ps);
  const s = smooth(ps, 0.5);
  equal(s[0].y, 1); // debiased: the first point is itself
  ok(s[1].y > 1 && s[1].y < 3);
  const many = Array.from({ length: 100000 }, (_, x) => ({ x, y: x % 2 }));
  const t = thin(many, 1000);
  equal(t.length, 1000);
  ok(t.every((p) => Math.abs(p.y - 0.5) < 1e-9));
  equal(thin(ps).length, 4);
});

Deno.test("plot: several 100k-line runs, one series each with a legend, smoothed", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const a = `${dir}/a.jsonl`, b = `${dir}/b.jsonl`;
  await Deno.writeTextFile(a, log(100000, 1));
  await Deno.writeTextFile(b, log(100000, 1.1));
  equal(curves(await Deno.readTextFile(a)).train.length, 100000);
  const out = `${dir}/cmp.svg`;
  const code = await main([a, b, "--smooth", "0.9", "--labels", "base,wide", "--output", out]);
  equal(code, 0);
  const svg = await Deno.readTextFile(out);
  match(svg, /^<svg /);
  match(svg, />base: training loss</);
  match(svg, />wide: validation loss</);
  equal((svg.match(/<path /g) ?? []).length, 4);
  ok(svg.length < 1_000_000, `SVG of ${svg.length} bytes`);
  // One run keeps the plain legend; the default output is the first log's name.
  equal(await main([a]), 0);
  match(await Deno.readTextFile(`${dir}/a.svg`), />training loss</);
  // Bad uses are usage errors.
  equal(await main([a, b, "--labels", "one"]), 2);
  equal(await main([a, "--smooth", "1"]), 2);
  equal(await main([]), 2);
});

Deno.test("plot: flag values are never logs, and --output may not be a log", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const a = `${dir}/r2.jsonl`, svg = `${dir}/r2.svg`;
  const text = log(3, 1, false);
  await Deno.writeTextFile(a, text);
  // --output, --title and --labels equal to a log's name are refused or taken as values,
  // in both spellings, never read as a second log.
  equal(await main([a, "--output=" + a]), 2);
  equal(await main([a, "--output", a]), 2);
  await Deno.symlink(a, `${dir}/link`);
  equal(await main([a, "--output", `${dir}/link`]), 2);
  // The default output (the first log's name with .svg) may not be a log either.
  await Deno.writeTextFile(`${dir}/x`, text);
  await Deno.writeTextFile(`${dir}/x.svg`, text);
  equal(await main([`${dir}/x`, `${dir}/x.svg`]), 2);
  equal(await Deno.readTextFile(`${dir}/x.svg`), text);
  equal(await Deno.readTextFile(a), text);
  equal(await main([a, "--title", a, "--labels", a, "--output", svg]), 0);
  match(await Deno.readTextFile(svg), new RegExp(`font-size="15">${a}<`));
  equal(await main([a, `--title=${a}`, "--output", `${dir}/b.svg`]), 0);
  // A log whose name ends in .svg is not replaced by --output naming it either.
  equal(await main([`${dir}/x.svg`, "--output", `${dir}/x.svg`]), 2);
  equal(await Deno.readTextFile(`${dir}/x.svg`), text);
  // The plot is SVG: another extension is refused rather than written with SVG inside.
  equal(await main([a, "--output", `${dir}/plot.png`]), 2);
  equal(await Deno.stat(`${dir}/plot.png`).catch(() => null), null);
  // An unknown flag is still refused, and its would-be value is not a log.
  equal(await main([a, "--bogus", a]), 2);
});

Deno.test("plot: the loss axis says what the loss is; iterations are whole numbers", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const header = (model: string) =>
    JSON.stringify({ type: "header", config: { model }, world: { size: 1 } });
  const body = log(3, 1, false);
  await Deno.writeTextFile(`${dir}/bert.jsonl`, header("bert") + "\n" + body);
  await Deno.writeTextFile(`${dir}/gpt.jsonl`, header("gpt") + "\n" + body);
  equal(curves(await Deno.readTextFile(`${dir}/bert.jsonl`)).model, "bert");
  equal(await main([`${dir}/bert.jsonl`]), 0);
  const bert = await Deno.readTextFile(`${dir}/bert.svg`);
  match(bert, />loss \(masked-LM \+ sentence-order, nats\)</);
  // Three iterations: ticks at 1, 2, 3, not at 1.5 or 2.5.
  const xs = [...bert.matchAll(/text-anchor="middle">([\d.]+)<\/text>/g)].map((m) => m[1]);
  deepStrictEqual(xs, ["1", "2", "3"]);
  equal(await main([`${dir}/gpt.jsonl`]), 0);
  match(await Deno.readTextFile(`${dir}/gpt.svg`), />loss \(nats\/token\)</);
  equal(await main([`${dir}/gpt.jsonl`, `${dir}/bert.jsonl`, "--output", `${dir}/both.svg`]), 0);
  match(await Deno.readTextFile(`${dir}/both.svg`), />loss \(nats\)</);
});

Deno.test("plot: a last line cut short (a killed or running run) is left out; one within is refused", async () => {
  const whole = log(10, 1);
  const torn = whole.slice(0, -25); // the last record cut mid-write, no line end
  const c = curves(torn);
  equal(c.train.length, 9);
  equal(c.tornLast, 12 - 1);
  equal(curves(whole).tornLast, undefined);
  await using temp = await tempDir();
  const dir = temp.path;
  await Deno.writeTextFile(`${dir}/torn.jsonl`, torn);
  equal(await main([`${dir}/torn.jsonl`]), 0); // it refused the whole log
  const lines = whole.split("\n");
  lines[5] = lines[5].slice(0, 20);
  let refused = "";
  try {
    curves(lines.join("\n"));
  } catch (e) {
    refused = (e as Error).message;
  }
  match(refused, /^line 6 is not JSON/);
});
