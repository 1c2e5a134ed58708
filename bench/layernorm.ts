/**
 * The paper's layer-norm finding at small scale: the same BERT trained with the
 * original post-LN ordering and with pre-LN, at two depths, with everything
 * else equal. Prints a table of validation loss along training.
 *
 * `deno task bench:layernorm [--steps 300] [--depths 2,12] [--hidden 64] [--lr 1e-3]`
 * @module
 */

import { parseArgs } from "node:util";
import { grantedPermissionFlags } from "../collectives/procs.ts";

interface Row {
  ln: string;
  depth: number;
  val: number[];
  train: number[];
  diverged: boolean;
}

async function runOne(
  post: boolean,
  depth: number,
  o: { steps: number; hidden: number; lr: number; warmup: number; evalInterval: number },
): Promise<Row> {
  const log = await Deno.makeTempFile({ suffix: ".jsonl" });
  const args = [
    "run",
    ...grantedPermissionFlags(),
    new URL("../cli/train.ts", import.meta.url).pathname,
    "--model",
    "bert",
    "--num-layers",
    String(depth),
    "--hidden-size",
    String(o.hidden),
    "--num-attention-heads",
    "4",
    "--seq-length",
    "64",
    "--micro-batch-size",
    "8",
    "--train-iters",
    String(o.steps),
    "--lr",
    String(o.lr),
    "--min-lr",
    String(o.lr / 10),
    "--lr-warmup-iters",
    String(o.warmup),
    "--eval-interval",
    String(o.evalInterval),
    "--eval-iters",
    "4",
    "--log-interval",
    String(o.evalInterval),
    "--log-json",
    log,
    "--seed",
    "7",
  ];
  if (post) args.push("--apply-residual-connection-post-layernorm");
  const out = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
    .output();
  const text = await Deno.readTextFile(log);
  await Deno.remove(log);
  const recs = text.trim().split("\n").filter((l) => l).map((l) => JSON.parse(l));
  const diverged = out.code !== 0;
  return {
    ln: post ? "post-LN" : "pre-LN",
    depth,
    val: recs.filter((r) => r.val_loss !== undefined).map((r) => r.val_loss),
    train: recs.map((r) => r.loss),
    diverged,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      steps: { type: "string", default: "300" },
      depths: { type: "string", default: "2,12" },
      hidden: { type: "string", default: "64" },
      lr: { type: "string", default: "1e-3" },
      warmup: { type: "string", default: "10" },
    },
  });
  const steps = Number(values.steps);
  const o = {
    steps,
    hidden: Number(values.hidden),
    lr: Number(values.lr),
    warmup: Number(values.warmup),
    evalInterval: Math.max(1, Math.round(steps / 6)),
  };
  const rows: Row[] = [];
  for (const depth of values.depths!.split(",").map(Number)) {
    for (const post of [true, false]) {
      const r = await runOne(post, depth, o);
      rows.push(r);
      console.error(
        `done: ${r.ln} depth ${depth}: val ${r.val.map((v) => v.toFixed(3)).join(" ")}`,
      );
    }
  }
  const head = rows[0].val.map((_, i) => `val @${Math.round((i + 1) * o.evalInterval)}`);
  console.log(`| layer norm | layers | ${head.join(" | ")} | mean train loss, last 20 steps |`);
  console.log(`|---|---|${head.map(() => "---").join("|")}|---|`);
  for (const r of rows) {
    const last = r.train.slice(-20);
    const mean = last.reduce((a, b) => a + b, 0) / Math.max(1, last.length);
    console.log(
      `| ${r.ln} | ${r.depth} | ${r.val.map((v) => v.toFixed(3)).join(" | ")} | ${
        r.diverged ? "diverged" : mean.toFixed(3)
      } |`,
    );
  }
}
