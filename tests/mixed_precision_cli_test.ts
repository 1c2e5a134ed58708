/**
 * `deno task train --fp16/--bf16` end to end: an fp16 run from Megatron's 2^32
 * scale logs its skipped iterations and loss scale (text and JSON) while the
 * scale finds its level, then trains; a run resumed from a checkpoint saved
 * mid-search gives the same losses, scales and skips (the scaler state is
 * saved); a resume in the other precision goes on and says what it drops;
 * bf16 needs no scaler; both flags together are refused;
 * `--f16-arithmetic` (Deno's WebGPU, which has shader-f16 on lavapipe) trains
 * within f16's rounding of the f32-arithmetic run, and is refused with bf16 and
 * on an adapter without shader-f16.
 */

import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";
import { Device } from "../core/device.ts";
import { tempDir } from "./temp_dir.ts";

const tiny = [
  ...TINY_RUN_FLAGS,
  "--eval-interval",
  "100",
  "--lr-warmup-iters",
  "1",
];

/** `iters` dropout-free steps of the tiny run on Deno's WebGPU, with `flags`. */
function denoSteps(iters: number, ...flags: string[]): string[] {
  return [
    ...tiny,
    "--train-iters",
    String(iters),
    "--backend",
    "deno",
    "--hidden-dropout",
    "0",
    "--attention-dropout",
    "0",
    ...flags,
  ];
}

interface Rec {
  iteration: number;
  loss: number;
  loss_scale: number;
  skipped: boolean;
}

function records(jsonl: string): Rec[] {
  return jsonl.trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.type !== "header");
}

Deno.test("train --fp16 from 2^32 logs skipped iterations, then trains; resume is exact", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const args = [...tiny, "--train-iters", "26", "--fp16", "--initial-loss-scale", "4294967296"];
  const full = await runCli("cli/train.ts", [
    ...args,
    "--save",
    `${dir}/a`,
    "--save-interval",
    "10",
    "--log-json",
    `${dir}/a.jsonl`,
  ]);
  strictEqual(full.code, 0, full.stderr);
  const a = records(await Deno.readTextFile(`${dir}/a.jsonl`));
  strictEqual(a.length, 26);
  strictEqual(a[0].skipped, true);
  strictEqual(a[0].loss_scale, 2 ** 32, "hysteresis 2 absorbs the first overflow");
  strictEqual(a[1].loss_scale, 2 ** 31);
  const firstClean = a.findIndex((r) => !r.skipped);
  ok(firstClean >= 2 && firstClean < 22, `first clean step ${firstClean + 1}`);
  ok(a.slice(firstClean).every((r) => !r.skipped && r.loss_scale === a[firstClean].loss_scale));
  const mean = (rs: Rec[]) => rs.reduce((s, r) => s + r.loss, 0) / rs.length;
  ok(mean(a.slice(-3)) < mean(a.slice(firstClean, firstClean + 3)), "trains after the search");
  match(full.stdout, /loss scale: 4294967296\.0 \|.*number of skipped iterations: +1 \|/);
  match(full.stdout, /iteration +26\/ +26 .*number of skipped iterations: +0 \|/);
  // Resume from iteration 10 (mid-search): the same losses, scales and skips.
  await Deno.remove(`${dir}/a/iter_0000020`, { recursive: true });
  await Deno.remove(`${dir}/a/iter_0000026`, { recursive: true });
  await Deno.writeTextFile(`${dir}/a/latest`, "10\n");
  const resumed = await runCli("cli/train.ts", [
    ...args,
    "--load",
    `${dir}/a`,
    "--log-json",
    `${dir}/b.jsonl`,
  ]);
  strictEqual(resumed.code, 0, resumed.stderr);
  // The flag given again does not restart the search, and the run says so.
  match(
    resumed.stdout,
    /--initial-loss-scale 4294967296 starts a fresh run's scale: this one continues the checkpoint's, \d+ /,
  );
  deepStrictEqual(
    records(await Deno.readTextFile(`${dir}/b.jsonl`)).map((
      r,
    ) => [r.loss, r.loss_scale, r.skipped]),
    a.slice(10).map((r) => [r.loss, r.loss_scale, r.skipped]),
  );
  // Resumed in bf16, and that bf16 checkpoint in fp16: each goes on and says what it drops.
  const bf16 = await runCli("cli/train.ts", [
    ...tiny,
    ...["--train-iters", "11", "--bf16", "--load", `${dir}/a`, "--save", `${dir}/c`],
  ]);
  strictEqual(bf16.code, 0, bf16.stderr);
  match(bf16.stdout, /precision: the checkpoint trained in fp16, this run in bf16 \(/);
  match(bf16.stdout, /loss scale: the checkpoint's dynamic scale, \d+, is not used: this bf16 run/);
  const fp16 = await runCli("cli/train.ts", [
    ...tiny,
    ...["--train-iters", "12", "--fp16", "--load", `${dir}/c`],
  ]);
  strictEqual(fp16.code, 0, fp16.stderr);
  match(fp16.stdout, /precision: the checkpoint trained in bf16, this run in fp16 \(/);
  match(
    fp16.stdout,
    /loss scale: the checkpoint has none \(it was a bf16 run\); this run's dynamic scale starts at --initial-loss-scale 4294967296/,
  );
});

Deno.test("train --fp16: the log line's loss, grad norm and nan count are Megatron's training_log's", async () => {
  // Megatron averages the loss over the window's applied iterations, prints the last
  // iteration's grad norm (none where it was skipped) and counts skipped iterations whose
  // loss was not finite. The loss here averaged the skipped ones in, and the norm was the
  // window's mean; the nan count was always 0.
  await using temp = await tempDir();
  const dir = temp.path;
  const run = await runCli("cli/train.ts", [
    ...denoSteps(12, "--fp16", "--initial-loss-scale", "1048576", "--hysteresis", "1"),
    ...["--log-interval", "4", "--log-json", `${dir}/log.jsonl`],
  ]);
  strictEqual(run.code, 0, run.stderr);
  const recs = records(await Deno.readTextFile(`${dir}/log.jsonl`)) as (Rec & {
    grad_norm: number;
  })[];
  ok(recs.some((r) => r.skipped) && recs.some((r) => !r.skipped), "skipped and clean steps");
  const lines = run.stdout.split("\n").filter((l) => / iteration +\d+\/ +12 \|/.test(l));
  strictEqual(lines.length, 3);
  for (const [k, line] of lines.entries()) {
    const window = recs.slice(4 * k, 4 * k + 4);
    const clean = window.filter((r) => !r.skipped);
    const loss = /lm loss: (\S+) \|/.exec(line)?.[1];
    if (clean.length === 0) strictEqual(loss, undefined, line);
    else {
      const mean = clean.reduce((s, r) => s + r.loss, 0) / clean.length;
      ok(Math.abs(Number(loss) - mean) <= 1e-6 * mean, `${line}: loss ${loss}, want ${mean}`);
    }
    const last = window[3];
    const norm = /grad norm: (\S+) \|/.exec(line)?.[1];
    if (last.skipped) strictEqual(norm, undefined, line);
    else strictEqual(norm, last.grad_norm.toFixed(3), line);
    const nan = window.filter((r) => r.skipped && !Number.isFinite(r.loss)).length;
    match(line, new RegExp(`number of nan iterations: +${nan} \\|`));
  }
});

Deno.test("train --bf16 needs no loss scale; --fp16 with --bf16 is refused", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const r = await runCli("cli/train.ts", [
    ...tiny,
    "--train-iters",
    "4",
    "--bf16",
    "--log-json",
    `${dir}/c.jsonl`,
  ]);
  strictEqual(r.code, 0, r.stderr);
  const c = records(await Deno.readTextFile(`${dir}/c.jsonl`));
  deepStrictEqual(c.map((x) => [x.loss_scale, x.skipped]), Array(4).fill([1, false]));
  match(r.stdout, /loss scale: 1\.0 \|/);
  const both = await runCli("cli/train.ts", [...tiny, "--fp16", "--bf16"]);
  strictEqual(both.code, 2);
  match(both.stderr, /either --fp16 or --bf16/);
});

Deno.test("train --bf16 at TP=2 (bf16 on the wire) follows TP=1 --bf16 within bf16's precision", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const args = denoSteps(4, "--bf16");
  const one = await runCli("cli/train.ts", [...args, "--log-json", `${dir}/1.jsonl`]);
  strictEqual(one.code, 0, one.stderr);
  const two = await runCli(
    "cli/train.ts",
    [...args, "--tp", "2", "--nproc-per-node", "2", "--log-json", `${dir}/2.jsonl`],
  );
  strictEqual(two.code, 0, two.stderr);
  const l1 = records(await Deno.readTextFile(`${dir}/1.jsonl`)).map((r) => r.loss);
  const l2 = records(await Deno.readTextFile(`${dir}/2.jsonl`)).map((r) => r.loss);
  strictEqual(l2.length, 4);
  // TP=2 rounds each rank's partial sums to bf16 (relative error ≤ 2^-8, bf16's unit
  // roundoff) before adding them in fp32; TP=1 does not: the losses agree to 0.2 %.
  for (let i = 0; i < 4; i++) {
    ok(Math.abs(l2[i] - l1[i]) <= 2e-3 * l1[i], `step ${i + 1}: ${l2[i]} vs ${l1[i]}`);
  }
});

Deno.test("train --bf16 at DP=2: 16-bit and fp32 (--accumulate-allreduce-grads-in-fp32) gradient all-reduce", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const args = [
    ...tiny,
    "--train-iters",
    "4",
    "--bf16",
    "--backend",
    "deno",
    "--nproc-per-node",
    "2",
  ];
  const runs: number[][] = [];
  for (const extra of [[], ["--accumulate-allreduce-grads-in-fp32"]]) {
    const r = await runCli(
      "cli/train.ts",
      [...args, ...extra, "--log-json", `${dir}/${runs.length}.jsonl`],
    );
    strictEqual(r.code, 0, r.stderr);
    runs.push(records(await Deno.readTextFile(`${dir}/${runs.length}.jsonl`)).map((x) => x.loss));
  }
  // The flag keeps the gradients f32 (Megatron's bf16 default) as well as the wire: until
  // the forty-fifth session it changed only the wire, and the runs were bit-identical.
  strictEqual(runs[0][0], runs[1][0]);
  ok(runs[0].slice(1).some((l, i) => l !== runs[1][i + 1]), "the gradients are not rounded");
  for (let i = 1; i < 4; i++) ok(Math.abs(runs[0][i] - runs[1][i]) < 1e-2 * runs[1][i]);
});

Deno.test("train --fp16 at TP=2 and at DP=2 skips the same iterations as TP=1 (ranks agree)", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const args = denoSteps(20, "--fp16");
  const pattern = async (extra: string[], name: string) => {
    const r = await runCli(
      "cli/train.ts",
      [...args, ...extra, "--log-json", `${dir}/${name}.jsonl`],
    );
    strictEqual(r.code, 0, r.stderr);
    return records(await Deno.readTextFile(`${dir}/${name}.jsonl`))
      .map((x) => `${x.skipped ? "S" : "."}${x.loss_scale}`).join(" ");
  };
  const one = await pattern([], "1");
  match(one, /^S4294967296 S2147483648 /);
  strictEqual(await pattern(["--tp", "2", "--nproc-per-node", "2"], "tp2"), one);
  strictEqual(await pattern(["--nproc-per-node", "2"], "dp2"), one);
});

/** Whether Deno's WebGPU adapter here offers shader-f16 (lavapipe does). */
async function denoHasShaderF16(): Promise<boolean> {
  const d = await Device.create({ backend: "deno" });
  const has = d.nativeF16;
  await d.close();
  return has;
}

Deno.test({
  name: "train --fp16 --f16-arithmetic follows --fp16 within f16's rounding; refused without it",
  ignore: !(await denoHasShaderF16()),
  async fn() {
    await using temp = await tempDir();
    const dir = temp.path;
    const args = denoSteps(4, "--fp16", "--loss-scale", "4096");
    const f32 = await runCli("cli/train.ts", [...args, "--log-json", `${dir}/a.jsonl`]);
    strictEqual(f32.code, 0, f32.stderr);
    const f16 = await runCli(
      "cli/train.ts",
      [...args, "--f16-arithmetic", "--log-json", `${dir}/h.jsonl`],
    );
    strictEqual(f16.code, 0, f16.stderr);
    const la = records(await Deno.readTextFile(`${dir}/a.jsonl`));
    const lh = records(await Deno.readTextFile(`${dir}/h.jsonl`));
    strictEqual(lh.length, 4);
    // Each fp16-weight product carries ≤ 5u (u = 2^-11) of Σ|x·w| more error;
    // the loss after a few steps moves far less than 1 %.
    for (let i = 0; i < 4; i++) {
      ok(!lh[i].skipped, `step ${i + 1} skipped`);
      ok(
        Math.abs(lh[i].loss - la[i].loss) <= 1e-2 * la[i].loss,
        `step ${i + 1}: ${lh[i].loss} vs ${la[i].loss}`,
      );
    }
    ok(lh.some((r, i) => r.loss !== la[i].loss), "f16 arithmetic changes the numbers");
    const bf16 = await runCli("cli/train.ts", [...tiny, "--bf16", "--f16-arithmetic"]);
    strictEqual(bf16.code, 2);
    match(bf16.stderr, /--f16-arithmetic needs --fp16/);
    const dawn = await runCli(
      "cli/train.ts",
      [...tiny, "--fp16", "--f16-arithmetic", "--backend", "dawn"],
    );
    strictEqual(dawn.code, 1, dawn.stderr);
    match(dawn.stderr, /shader-f16 feature, which this adapter does not offer/);
  },
});
