/**
 * The paper's layer-norm finding at small scale: the same BERT trained with the
 * original post-LN ordering and with pre-LN, at two depths, with everything
 * else equal. Prints a table of validation loss along training.
 * `deno task bench:layernorm --help` gives the usage and flags.
 * @module
 */

import { grantedPermissionFlags } from "../collectives/procs.ts";
import { DEBUG_FLAG, handled, RunError } from "../cli/errors.ts";
import { NON_FINITE_LOSS } from "../cli/train_run.ts";
import {
  commaCounts,
  type FlagSpec,
  type FlagValues,
  parseCommandLine,
  UsageError,
} from "../cli/flags.ts";
import { outputOrStop } from "./child.ts";

/** Heads of every model trained (`--num-attention-heads`). */
const HEADS = 4;

/** Every flag of `deno task bench:layernorm`. */
export const LAYERNORM_FLAGS: Record<string, FlagSpec> = {
  "steps": { type: "int", min: 1, default: 300, help: "training iterations of each run" },
  "depths": {
    type: "string",
    default: "2,12",
    valueName: "L,L…",
    help: "layer counts, comma-separated: each trained post-LN and pre-LN",
  },
  "hidden": { type: "int", min: HEADS, default: 64, help: `hidden size (a multiple of ${HEADS})` },
  "lr": { type: "float", min: 0, default: 1e-3, help: "peak learning rate (min-lr a tenth)" },
  "warmup": { type: "int", min: 0, default: 10, help: "learning-rate warm-up iterations" },
  ...DEBUG_FLAG,
};

const USAGE =
  "Usage: deno task bench:layernorm [--steps 300] [--depths 2,12] [--hidden 64] [--lr 1e-3] [--warmup 10]";

/** The layer counts of `--depths`: comma-separated integers ≥ 1. */
function depthsOf(text: string): number[] {
  return commaCounts("depths", text, "comma-separated layer counts ≥ 1 (e.g. 2,12)");
}

/** Checks the flags together; throws UsageError. */
function validateLayernormFlags(f: FlagValues): void {
  depthsOf(f.depths as string);
  if ((f.hidden as number) % HEADS !== 0) {
    throw new UsageError(
      `--hidden ${f.hidden} must be a multiple of ${HEADS} (the attention heads)`,
    );
  }
  if ((f.warmup as number) >= (f.steps as number)) {
    throw new UsageError(
      `--warmup ${f.warmup} must be less than --steps ${f.steps} (the learning rate has to decay)`,
    );
  }
}

/** Training losses averaged for the table's last column. */
const LAST_STEPS = 20;

/** One training run's results. */
interface Row {
  ln: string;
  depth: number;
  /** Validation losses at every evaluation (fewer when the run diverged). */
  val: number[];
  /** The training loss of every step. */
  train: number[];
  /** The loss stopped being finite (train exits naming the iteration). */
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
    new URL("../cli/train.ts", import.meta.url).href,
    "--model",
    "bert",
    "--num-layers",
    String(depth),
    "--hidden-size",
    String(o.hidden),
    "--num-attention-heads",
    String(HEADS),
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
    "1",
    "--log-json",
    log,
    "--seed",
    "7",
  ];
  if (post) args.push("--apply-residual-connection-post-layernorm");
  const out = await outputOrStop(Deno.execPath(), { args }, [log, `${log}.lock`]);
  const text = await Deno.readTextFile(log);
  await Deno.remove(log);
  const recs = text.trim().split("\n").filter((l) => l).map((l) => JSON.parse(l));
  const stderr = new TextDecoder().decode(out.stderr);
  const diverged = out.code !== 0 && NON_FINITE_LOSS.test(stderr);
  if (out.code !== 0 && !diverged) {
    const why = stderr.split("\n").find((l) => l.startsWith("error:")) ?? stderr.trim();
    throw new RunError(
      `${post ? "post" : "pre"}-LN at depth ${depth}: train exited with ${out.code}: ${why}`,
    );
  }
  return {
    ln: post ? "post-LN" : "pre-LN",
    depth,
    val: recs.filter((r) => r.val_loss !== undefined).map((r) => r.val_loss),
    train: recs.filter((r) => r.loss !== undefined).map((r) => r.loss),
    diverged,
  };
}

/** Runs `deno task bench:layernorm` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, LAYERNORM_FLAGS, USAGE, validateLayernormFlags);
  if (typeof f === "number") return f;
  const steps = f.steps as number;
  const o = {
    steps,
    hidden: f.hidden as number,
    lr: f.lr as number,
    warmup: f.warmup as number,
    evalInterval: Math.max(1, Math.round(steps / 6)),
  };
  const rows: Row[] = [];
  for (const depth of depthsOf(f.depths as string)) {
    for (const post of [true, false]) {
      const r = await runOne(post, depth, o);
      rows.push(r);
      console.error(
        `done: ${r.ln} depth ${depth}: val ${r.val.map((v) => v.toFixed(3)).join(" ")}`,
      );
    }
  }
  const evals = Math.max(...rows.map((r) => r.val.length));
  // Train evaluates every evalInterval steps and after the last one (not at the next multiple).
  const at = Array.from({ length: evals }, (_, i) => Math.min((i + 1) * o.evalInterval, steps));
  const head = at.map((it) => `val @${it}`);
  const lastN = Math.min(LAST_STEPS, steps);
  console.log(
    `| layer norm | layers | ${head.join(" | ")} | mean train loss, last ${lastN} steps |`,
  );
  console.log(`|---|---|${head.map(() => "---|").join("")}---|`);
  for (const r of rows) {
    const last = r.train.slice(-lastN);
    const mean = last.reduce((a, b) => a + b, 0) / Math.max(1, last.length);
    const vals = head.map((_, i) => (i < r.val.length ? r.val[i].toFixed(3) : "–"));
    console.log(
      `| ${r.ln} | ${r.depth} | ${vals.join(" | ")} | ${
        r.diverged ? "diverged" : mean.toFixed(3)
      } |`,
    );
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
