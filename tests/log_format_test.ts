/**
 * Megatron's log formats (cli/log.ts): the training and validation lines
 * against literal Megatron-style lines, a regex of the kind Megatron log
 * parsers use, and the `--log-json` header record.
 */
import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { formatLogLine, formatValidationLines, JsonLog, keepThrough, pyExp } from "../cli/log.ts";
import { classify } from "../cli/errors.ts";
import { tempDir } from "./temp_dir.ts";

Deno.test("pyExp is Python's {:.6E}", () => {
  equal(pyExp(2.4442), "2.444200E+00");
  equal(pyExp(11.5217), "1.152170E+01");
  equal(pyExp(3e-4), "3.000000E-04");
  equal(pyExp(0), "0.000000E+00");
  equal(pyExp(1.5e100), "1.500000E+100");
  equal(pyExp(-2.5e-7), "-2.500000E-07");
});

Deno.test("training line: Megatron's fields and formats", () => {
  const line = formatLogLine({
    iteration: 5,
    total: 100,
    consumedTokens: 5 * 8 * 64,
    globalBatchSize: 8,
    msPerIter: 123.44,
    tokensPerS: 4148,
    gflops: 2400,
    worldSize: 2,
    lr: 3e-4,
    loss: 2.4442,
    gradNorm: 0.51234,
    time: new Date(2024, 4, 1, 12, 3, 9),
  });
  equal(
    line,
    " [2024-05-01 12:03:09] iteration        5/     100 | consumed samples:           40 |" +
      " elapsed time per iteration (ms): 123.4 | throughput per GPU (TFLOP/s/GPU): 1.2 |" +
      " learning rate: 3.000000E-04 | global batch size:     8 | lm loss: 2.444200E+00 |" +
      " loss scale: 1.0 | grad norm: 0.512 | number of skipped iterations:   0 |" +
      " number of nan iterations:   0 | tokens/s: 4148 |",
  );
});

Deno.test("training line: a loss's parts in its place, as Megatron's pretrain_bert prints them", () => {
  const line = formatLogLine({
    iteration: 5,
    total: 100,
    consumedTokens: 5 * 8 * 64,
    globalBatchSize: 8,
    msPerIter: 123.44,
    tokensPerS: 4148,
    gflops: 2400,
    lr: 3e-4,
    loss: 7.5,
    losses: { "lm loss": 6.8, "sop loss": 0.7 },
    lossName: "mlm+sop loss",
    gradNorm: 0.5,
    time: new Date(2024, 4, 1, 12, 3, 9),
  });
  match(
    line,
    /\| global batch size: {5}8 \| lm loss: 6\.800000E\+00 \| sop loss: 7\.000000E-01 \| loss scale/,
  );
  equal(line.includes("mlm+sop"), false);
});

Deno.test("training line: a CPU adapter's throughput keeps two significant digits", () => {
  const line = (gflops: number) =>
    formatLogLine({
      iteration: 2,
      total: 12,
      consumedTokens: 512,
      globalBatchSize: 1,
      msPerIter: 4047.7,
      tokensPerS: 63,
      gflops,
      lr: 1e-3,
      loss: 8.0,
      gradNorm: 2.8,
      time: new Date(2024, 4, 1, 12, 3, 9),
    });
  ok(line(47.3).includes("| throughput per GPU (TFLOP/s/GPU): 0.047 |"), line(47.3));
  ok(line(4.2).includes("| throughput per GPU (TFLOP/s/GPU): 0.0042 |"), line(4.2));
  ok(line(0).includes("| throughput per GPU (TFLOP/s/GPU): 0.0 |"), line(0));
  ok(line(250).includes("| throughput per GPU (TFLOP/s/GPU): 0.3 |"), line(250));
});

Deno.test("a window of skipped iterations only: no grad norm field, as Megatron", () => {
  const line = formatLogLine({
    iteration: 10,
    total: 100,
    consumedTokens: 5120,
    msPerIter: 100,
    tokensPerS: 1000,
    gflops: 1,
    lr: 0,
    loss: 2.5,
    lossScale: 8388608,
    gradNorm: null,
    skipped: 10,
    time: new Date(2024, 4, 1, 12, 3, 9),
  });
  ok(!/grad norm/.test(line), line);
  ok(line.includes("| loss scale: 8388608.0 | number of skipped iterations:  10 |"), line);
});

Deno.test("validation lines: Megatron's, between dashed lines", () => {
  const [a, line, b] = formatValidationLines(200, 2.4442);
  equal(
    line,
    " validation loss at iteration 200 | lm loss value: 2.444200E+00 | lm loss PPL: 1.152133E+01 | ",
  );
  equal(a, "-".repeat(line.length + 1));
  equal(b, a);
  // Perplexity is capped at exp(20), as Megatron's.
  match(formatValidationLines(1, 50)[1], /lm loss PPL: 4\.851652E\+08 \| $/);
  // BERT's training loss, MLM plus sentence order, is a sum: no perplexity.
  equal(
    formatValidationLines(3, { "mlm+sop loss": 7.5 })[1],
    " validation loss at iteration 3 | mlm+sop loss value: 7.500000E+00 | ",
  );
});

Deno.test("a Megatron log parser reads training and validation losses apart", () => {
  const log = [
    formatLogLine({
      iteration: 10,
      total: 20,
      consumedTokens: 0,
      globalBatchSize: 4,
      msPerIter: 10,
      tokensPerS: 1,
      gflops: 1,
      lr: 1e-3,
      loss: 3.25,
      gradNorm: 1,
    }),
    ...formatValidationLines(10, 3.5),
  ].join("\n");
  // The patterns of common Megatron log scrapers.
  const train = [...log.matchAll(/iteration\s+(\d+)\/\s*(\d+) \|.*?\| lm loss: ([\d.E+-]+) \|/g)];
  deepStrictEqual(train.map((m) => [Number(m[1]), Number(m[2]), Number(m[3])]), [[10, 20, 3.25]]);
  const val = [
    ...log.matchAll(/validation loss at iteration (\d+) \| lm loss value: ([\d.E+-]+) \|/g),
  ];
  deepStrictEqual(val.map((m) => [Number(m[1]), Number(m[2])]), [[10, 3.5]]);
  const fields = /learning rate: ([\d.E+-]+) \|.*loss scale: ([\d.]+) \|.*grad norm: ([\d.]+) \|/
    .exec(log)!;
  deepStrictEqual(fields.slice(1).map(Number), [1e-3, 1, 1]);
  match(log, /^ \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] iteration/);
  match(log, /number of skipped iterations: +0 \| number of nan iterations: +0 \|/);
});

Deno.test("--log-json: a header record begins each run, also on resume", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const path = `${dir}/log.jsonl`;
  const header = {
    config: { "num-layers": 1, "lr": 0.001 },
    world: { size: 2, tp: 2, dp: 1, nodes: 1 },
  };
  let log = await JsonLog.open(path, undefined, header);
  for (let i = 1; i <= 3; i++) log.write({ iteration: i, loss: 5 - i });
  await log.close();
  log = await JsonLog.open(path, 2, { ...header, first_iteration: 3 });
  log.write({ iteration: 3, loss: 1.5 });
  await log.close();
  const recs = (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
  deepStrictEqual(recs.map((r) => r.type ?? r.iteration), ["header", 1, 2, "header", 3]);
  const h = recs[0];
  deepStrictEqual(h.world, header.world);
  deepStrictEqual(h.config, header.config);
  match(h.version, /^\d+\.\d+\.\d+/);
  equal(h.log_format, 1);
  ok(!Number.isNaN(Date.parse(h.start_time)), h.start_time);
  equal(recs[3].first_iteration, 3);
  // Headers have no iteration, so a resume keeps them.
  equal(keepThrough(JSON.stringify(h) + "\n", 0), JSON.stringify(h) + "\n");
});

Deno.test("a --log-json write that fails (a full disk) names the file, as one error line", async () => {
  // /dev/full answers every write with ENOSPC; the error had said only "No space left on
  // device (os error 28)", naming neither the file nor the flag.
  const log = await JsonLog.open("/dev/full");
  let caught: unknown;
  try {
    log.write({ iteration: 1, loss: 1 });
  } catch (e) {
    caught = e;
  }
  await log.close();
  deepStrictEqual(classify(caught), {
    code: 1,
    message: "--log-json /dev/full: No space left on device (os error 28)",
  });
});
