/**
 * The training loop against an independent implementation: a few steps of the real
 * `deno task train` against the same steps in PyTorch (`tests/torch_gpt_train.py`: the
 * safetensors reader of torch_gpt2_eval.py, a batched GPT-2 forward of its own in float64,
 * torch.optim.AdamW with Megatron's weight-decay groups, torch.nn.utils.clip_grad_norm_,
 * gradient accumulation as Megatron averages it, and Megatron's learning-rate schedule written
 * from its OptimizerParamScheduler; nothing shared with this project).
 *
 * Both sides start from the same weights: a small GPT-2 written here in Hugging Face's layout
 * (random weights, byte-level vocabulary of 256) that `train --init-from-hf` loads and the
 * script reads. Both train on the same windows: the CLI draws them with its `GptBatchSampler`
 * (data/gpt_batches.ts) over the training tokens, seeded by `--seed`, one draw of
 * micro-batch × DP rows per micro-batch, validation never drawing from it (cli/tasks/gpt.ts,
 * cli/train_run.ts). **That is knowledge of the CLI's internals**: this test draws the same
 * windows with the library's sampler and tokenizer, and hands the script the token ids and the
 * window starts; a change of how train draws them shows as a first-step loss that disagrees.
 *
 * Each run (TP=1 with cosine decay, TP=2 as Workers with linear decay, DP=2 as Workers with
 * cosine decay) exercises warm-up, decay,
 * the clamp to `--min-lr` past `--lr-decay-iters`, weight decay, non-default Adam betas,
 * clipping that triggers on some steps and not others, and two micro-batches per step. The TP=2
 * run also takes Megatron's other optimizer and schedule flags at values other than their
 * defaults ({@link MEGATRON_HP}): `--adam-eps` (torch.optim.AdamW's `eps` there),
 * `--lr-warmup-fraction` (a warm-up of 2.4 iterations: it ends between steps) and
 * `--lr-warmup-init`; the other two runs use `--lr-warmup-iters` and the default eps, 1e-8
 * (AdamW's default here, Megatron's and PyTorch's). The checks, per run:
 * - per iteration: the loss, the gradient norm before clipping (`--log-json`), with PyTorch
 *   given the learning rates the CLI logged (so that the optimizer, clipping and accumulation
 *   are checked whatever the schedule);
 * - the final weights (`export-hf` of the run's checkpoint) against PyTorch's after the same
 *   steps (the attention's key bias apart: its gradient is zero in exact arithmetic, see
 *   below);
 * - separately (the third test), each logged learning rate against Megatron's schedule formula.
 *   When written (2026-12-05) this one failed: core/optim.ts `learningRate` warmed up one
 *   iteration ahead of Megatron (lr·k/W at iteration k against Megatron's lr·(k − 1)/W, which is
 *   0 at the first); it now follows Megatron. The first two tests do not depend on it.
 *
 * `TORCH_TRAIN_VERBOSE=1` prints both sides' numbers per iteration and tensor.
 *
 * Needs Debian's PyTorch (`apt-get install -y python3-torch libopenblas0-pthread`); skipped,
 * saying so, without it.
 */

import assert from "node:assert/strict";
import { loadTokens } from "../data/corpus.ts";
import { GptBatchSampler } from "../data/gpt_batches.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import type { HostTensor } from "../models/checkpoint/mod.ts";
import { writeHfDir } from "../models/hf/mod.ts";
import { makeRunDir, PYTHON, runCli, torchMissing } from "./cli_helpers.ts";
import { gpuTest, prng, withTimeLimit } from "./helpers.ts";

const missing = torchMissing();
if (missing) {
  console.warn(
    `torch_train_test: SKIPPED: no PyTorch for ${PYTHON} (${missing}); ` +
      `install it with: apt-get install -y python3-torch libopenblas0-pthread`,
  );
}
const VERBOSE = !!Deno.env.get("TORCH_TRAIN_VERBOSE");

// The model: GPT-2's layout at a tiny size, byte-level vocabulary (256 rows: a multiple of
// 128·TP at TP ≤ 2, so no padding rows), a position table longer than the sequence (its
// unused rows get weight decay only).
const V = 256, H = 32, HEADS = 4, LAYERS = 2, POSITIONS = 24, FFN = 4 * H;
const SEQ = 16, MICRO = 2, GLOBAL = 4, ITERS = 8, SEED = 7;

/** The schedule and optimizer flags of the runs (the decay style is each run's). */
interface Hp {
  lr: number;
  min_lr: number;
  /** `--lr-warmup-iters`, or with {@link Hp.warmup_fraction} none. */
  warmup_iters?: number;
  /** `--lr-warmup-fraction`. */
  warmup_fraction?: number;
  /** `--lr-warmup-init` (not given: Megatron's default, 0). */
  warmup_init?: number;
  decay_iters: number;
  weight_decay: number;
  beta1: number;
  beta2: number;
  /** `--adam-eps` where given; else the default, 1e-8. */
  eps: number;
  clip_grad: number;
}

const HP: Hp = {
  lr: 0.02,
  min_lr: 0.002,
  warmup_iters: 3,
  decay_iters: 6,
  weight_decay: 0.1,
  beta1: 0.8,
  beta2: 0.95,
  eps: 1e-8, // not given: core/optim.ts's default, Megatron's --adam-eps default
  clip_grad: 1.3, // the gradient norms here run from ~3.6 down to ~1: clipped at first, not later
};

/**
 * The TP=2 run's: Megatron's warm-up as a fraction of the decay (0.4 × 6 = 2.4 iterations, so
 * iterations 1–3 warm up from `--lr-warmup-init`, and the decay starts between steps) and an
 * AdamW eps far from the default: when written (2026-12-05), the CLI left at the default eps
 * gave losses 2e-3 to 9e-3 apart from PyTorch's with this one from the second iteration on,
 * past the 1e-5 tolerance.
 */
const MEGATRON_HP: Hp = {
  ...HP,
  warmup_iters: undefined,
  warmup_fraction: 0.4,
  warmup_init: 0.004,
  eps: 1e-4,
};

/** The CLI's schedule and optimizer flags for `hp`. */
function hpFlags(hp: Hp): string[] {
  return [
    ...["--lr", String(hp.lr), "--min-lr", String(hp.min_lr)],
    ...(hp.warmup_fraction !== undefined
      ? ["--lr-warmup-fraction", String(hp.warmup_fraction)]
      : ["--lr-warmup-iters", String(hp.warmup_iters)]),
    ...(hp.warmup_init !== undefined ? ["--lr-warmup-init", String(hp.warmup_init)] : []),
    ...["--lr-decay-iters", String(hp.decay_iters), "--weight-decay", String(hp.weight_decay)],
    ...["--adam-beta1", String(hp.beta1), "--adam-beta2", String(hp.beta2)],
    ...(hp.eps !== HP.eps ? ["--adam-eps", String(hp.eps)] : []),
    ...["--clip-grad", String(hp.clip_grad)],
  ];
}

const TEXT = "Call me Ishmael. Some years ago, never mind how long precisely, having little or " +
  "no money in my purse, and nothing particular to interest me on shore, I thought I would " +
  "sail about a little and see the watery part of the world. It is a way I have of driving " +
  "off the spleen and regulating the circulation. Whenever I find myself growing grim about " +
  "the mouth; whenever it is a damp, drizzly November in my soul; whenever I find myself " +
  "involuntarily pausing before coffin warehouses, then, I account it high time to get to " +
  "sea as soon as I can. (1851) #42 [quiet] {sail}\n";

/** HF GPT-2 tensors (Conv1D layout [in, out], `transformer.` prefix), random, O(0.1–0.3). */
function initialWeights(seed: number): [string, HostTensor][] {
  const r = prng(seed);
  const out: [string, HostTensor][] = [];
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + scale * (2 * r() - 1);
    out.push([`transformer.${name}`, { shape, data }]);
  };
  add("wte.weight", [V, H], 0.3);
  add("wpe.weight", [POSITIONS, H], 0.1);
  for (let i = 0; i < LAYERS; i++) {
    const p = `h.${i}.`;
    add(p + "ln_1.weight", [H], 0.2, 1);
    add(p + "ln_1.bias", [H], 0.1);
    add(p + "attn.c_attn.weight", [H, 3 * H], 0.3);
    add(p + "attn.c_attn.bias", [3 * H], 0.1);
    add(p + "attn.c_proj.weight", [H, H], 0.2);
    add(p + "attn.c_proj.bias", [H], 0.1);
    add(p + "ln_2.weight", [H], 0.2, 1);
    add(p + "ln_2.bias", [H], 0.1);
    add(p + "mlp.c_fc.weight", [H, FFN], 0.3);
    add(p + "mlp.c_fc.bias", [FFN], 0.1);
    add(p + "mlp.c_proj.weight", [FFN, H], 0.15);
    add(p + "mlp.c_proj.bias", [H], 0.1);
  }
  add("ln_f.weight", [H], 0.2, 1);
  add("ln_f.bias", [H], 0.1);
  return out;
}

const HF_CONFIG = {
  architectures: ["GPT2LMHeadModel"],
  model_type: "gpt2",
  activation_function: "gelu_new",
  vocab_size: V,
  n_positions: POSITIONS,
  n_ctx: POSITIONS,
  n_embd: H,
  n_layer: LAYERS,
  n_head: HEADS,
  n_inner: null,
  layer_norm_epsilon: 1e-5,
  resid_pdrop: 0.1, // train's --hidden-dropout 0 / --attention-dropout 0 override these
  embd_pdrop: 0.1,
  attn_pdrop: 0.1,
  scale_attn_weights: true,
  tie_word_embeddings: true,
};

interface Logged {
  loss: number;
  lr: number;
  grad_norm: number;
  skipped: boolean;
}

interface Reference {
  loss: number[];
  grad_norm: number[];
  clip_coef: number[];
  lr_megatron: number[];
  lr_applied: number[];
  loss_megatron_schedule: number[];
  tensors: Record<string, { err: number; ref: number; moved: number }>;
}

async function ok(script: string, args: string[]): Promise<string> {
  const r = await runCli(script, args, undefined, { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `${script} ${args.join(" ")}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** The window starts train draws: [iteration][micro-batch][row] (see the module doc). */
async function trainWindows(
  dataPath: string,
  dp: number,
): Promise<{ ids: number[]; starts: number[][][] }> {
  const tokenizer = await createTokenizer("byte");
  // --split 100,0,0 with --eval-iters 0: every token trains.
  const ids = (await loadTokens(tokenizer, dataPath)).ids;
  const sampler = new GptBatchSampler(ids, { batchSize: MICRO * dp, seqLength: SEQ, seed: SEED });
  const accum = GLOBAL / (MICRO * dp);
  const starts = Array.from(
    { length: ITERS },
    () => Array.from({ length: accum }, () => sampler.next().starts),
  );
  return { ids: Array.from(ids.read(0, ids.length)), starts };
}

async function runPython(args: string[]): Promise<Reference> {
  const r = await new Deno.Command(PYTHON, {
    args: [new URL("./torch_gpt_train.py", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const dec = new TextDecoder();
  assert.ok(r.success, `torch_gpt_train.py failed (exit ${r.code}):\n${dec.decode(r.stderr)}`);
  return JSON.parse(dec.decode(r.stdout).trim().split("\n").pop()!);
}

/**
 * Losses, relative: float32 here against float64 there, 8 steps of a 2-layer model (observed
 * ≤ 1.3e-7 at both TP sizes).
 */
const LOSS_RTOL = 1e-5;
/** The gradient norm before clipping, relative (observed ≤ 1.8e-7). */
const NORM_RTOL = 1e-5;
/**
 * Final weights: per tensor, max |ours − PyTorch's| ≤ this × the tensor's max |PyTorch's final −
 * initial| (how far training moved it, ~0.08 here); observed ≤ 5.1e-5 (the tied embedding at
 * TP=2). Wrong weight decay on one group (0.1 × Σ lr × |w|, Σ lr ≈ 0.086) would be ~1e-3 and
 * more, a missed or extra clip ~1e-2.
 */
const WEIGHT_TOL_OF_MOVED = 2.5e-4;
/** Learning rates: both sides compute them in float64 (the log keeps the double). */
const LR_RTOL = 1e-9;

/**
 * The most one AdamW step can move an element, in units of its learning rate, at step `t`
 * (1-based) of betas (β1, β2), weight decay aside: |m̂|/√v̂ ≤
 * (1−β1)/(1−β1^t) · √(Σ_{j<t} (β1²/β2)^j) · √((1−β2^t)/(1−β2)) (Cauchy–Schwarz on the two
 * moments' sums), whatever the gradients.
 */
function adamStepBound(t: number, b1: number, b2: number): number {
  let s = 0;
  for (let j = 0; j < t; j++) s += (b1 * b1 / b2) ** j;
  return (1 - b1) / (1 - b1 ** t) * Math.sqrt(s) * Math.sqrt((1 - b2 ** t) / (1 - b2));
}

interface RunResult {
  tp: number;
  style: string;
  hp: Hp;
  logged: Logged[];
  ref: Reference;
}

/** What the training tests found, for the learning-rate test. */
const runs: RunResult[] = [];

/** Trains with the CLI at `tp`, exports, and runs the PyTorch loop on the same windows. */
async function trainBoth(
  tp: number,
  style: "cosine" | "linear",
  dp = 1,
  hp: Hp = HP,
): Promise<void> {
  const dir = await makeRunDir();
  try {
    await Deno.writeTextFile(`${dir}/data.txt`, TEXT);
    await writeHfDir(`${dir}/init`, HF_CONFIG, initialWeights(11));
    const t0 = performance.now();
    await ok("cli/train.ts", [
      ...["--init-from-hf", `${dir}/init`, "--data-path", `${dir}/data.txt`],
      ...["--tokenizer", "byte", "--split", "100,0,0", "--eval-iters", "0"],
      ...["--seq-length", String(SEQ), "--micro-batch-size", String(MICRO)],
      ...["--global-batch-size", String(GLOBAL), "--train-iters", String(ITERS)],
      ...hpFlags(hp),
      ...["--lr-decay-style", style, "--hidden-dropout", "0", "--attention-dropout", "0"],
      ...["--seed", String(SEED), "--sample-tokens", "0", "--log-interval", "1"],
      "--no-matmul-autotune",
      ...["--log-json", `${dir}/log.jsonl`, "--save", `${dir}/ck`],
      // TP=2 or DP=2: two ranks as Workers of this process (train's default launcher).
      ...(tp > 1 ? ["--tp", String(tp)] : []),
      ...(tp * dp > 1 ? ["--nproc-per-node", String(tp * dp)] : []),
    ]);
    const t1 = performance.now();
    await ok("cli/export_hf.ts", ["--load", `${dir}/ck`, "--output", `${dir}/final`]);
    const lines = (await Deno.readTextFile(`${dir}/log.jsonl`)).trim().split("\n")
      .map((l) => JSON.parse(l));
    // The header gives the model as built from config.json, not the shape flags' defaults.
    const c = lines[0].config;
    assert.deepEqual(
      [c["num-layers"], c["hidden-size"], c["num-attention-heads"], c["ffn-hidden-size"]],
      [LAYERS, H, HEADS, FFN],
    );
    assert.equal(c["max-position-embeddings"], POSITIONS);
    const logged = lines.filter((r) => r.type !== "header") as Logged[];
    assert.equal(logged.length, ITERS, "one --log-json record per iteration");
    assert.ok(logged.every((r) => !r.skipped), "fp32 skips no step");
    const { ids, starts } = await trainWindows(`${dir}/data.txt`, dp);
    await Deno.writeTextFile(
      `${dir}/job.json`,
      JSON.stringify({
        ids,
        starts,
        seq_length: SEQ,
        hp: { ...hp, decay_style: style },
        lr_applied: logged.map((r) => r.lr),
      }),
    );
    const t2 = performance.now();
    const ref = await runPython([`${dir}/init`, `${dir}/final`, `${dir}/job.json`]);
    const t3 = performance.now();
    const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
    if (VERBOSE) {
      console.log(
        `TP=${tp} DP=${dp} ${style}: train ${((t1 - t0) / 1000).toFixed(1)} s, export ${
          ((t2 - t1) / 1000).toFixed(1)
        } s, torch ${((t3 - t2) / 1000).toFixed(1)} s`,
      );
      console.table(logged.map((r, i) => ({
        loss: r.loss,
        loss_rel: rel(r.loss, ref.loss[i]),
        norm: r.grad_norm,
        norm_rel: rel(r.grad_norm, ref.grad_norm[i]),
        clip_coef: ref.clip_coef[i],
        lr: r.lr,
        lr_megatron: ref.lr_megatron[i],
        loss_megatron_lr: ref.loss_megatron_schedule[i],
      })));
      console.table(
        Object.fromEntries(
          Object.entries(ref.tensors).map(([n, t]) => [n, { ...t, ratio: t.err / t.moved }]),
        ),
      );
    }
    // Kept for the learning-rate test whatever the checks below find.
    runs.push({ tp, style, hp, logged, ref });

    // The run covers what it should: clipping on some steps and not on others.
    const clipped = ref.grad_norm.filter((n) => n > hp.clip_grad).length;
    assert.ok(
      clipped > 0 && clipped < ITERS,
      `--clip-grad ${hp.clip_grad} should clip some steps, not all: norms ${ref.grad_norm}`,
    );
    // Per iteration, with PyTorch given the CLI's learning rates.
    const bad: string[] = [];
    logged.forEach((r, i) => {
      if (!(rel(r.loss, ref.loss[i]) <= LOSS_RTOL)) {
        bad.push(`iteration ${i + 1}: loss ${r.loss}, PyTorch's ${ref.loss[i]}`);
      }
      if (!(rel(r.grad_norm, ref.grad_norm[i]) <= NORM_RTOL)) {
        bad.push(`iteration ${i + 1}: grad norm ${r.grad_norm}, PyTorch's ${ref.grad_norm[i]}`);
      }
    });
    assert.deepEqual(
      bad,
      [],
      `TP=${tp} DP=${dp}: past relative ${LOSS_RTOL} (loss) or ${NORM_RTOL} (grad norm)`,
    );
    // The final weights.
    const reach = ref.lr_applied.reduce(
      (s, lr, i) => s + lr * adamStepBound(i + 1, hp.beta1, hp.beta2),
      0,
    );
    const worse = Object.entries(ref.tensors).filter(([name, t]) =>
      /\.attn\.c_attn\.bias\[k\]$/.test(name)
        // The key bias's gradient is 0 in exact arithmetic (it adds the same q·b to every score
        // of a query's row, which the softmax ignores): PyTorch's float64 leaves it where it
        // started (moved ~1e-11), while float32's rounding noise, of the order of AdamW's eps
        // (PyTorch in float32 gives |g| up to 3.2e-9 at this test's first step), is normalized
        // by AdamW into steps of up to ~lr (observed moves of 3e-3–1.3e-2). It cannot change a
        // loss; it is checked only against what AdamW's steps can reach.
        ? !(t.err <= reach)
        : !(t.err <= WEIGHT_TOL_OF_MOVED * t.moved)
    );
    assert.deepEqual(
      worse,
      [],
      `TP=${tp} DP=${dp}: final weights past |ours − PyTorch's| ≤ ${WEIGHT_TOL_OF_MOVED} × moved ` +
        `(key biases: ≤ ${reach.toFixed(4)}, AdamW's reach)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test(
  `train against PyTorch: TP=1, cosine decay: losses, gradient norms, final weights${
    missing ? " [SKIPPED: no PyTorch]" : ""
  }`,
  withTimeLimit(150, { ...gpuTest, ignore: missing !== null }),
  async () => {
    await trainBoth(1, "cosine");
  },
);

Deno.test(
  `train against PyTorch: TP=2 (Workers), linear decay, --adam-eps, --lr-warmup-fraction, ` +
    `--lr-warmup-init: losses, gradient norms, final weights${
      missing ? " [SKIPPED: no PyTorch]" : ""
    }`,
  withTimeLimit(150, { ...gpuTest, ignore: missing !== null }),
  async () => {
    await trainBoth(2, "linear", 1, MEGATRON_HP);
  },
);

Deno.test(
  `train against PyTorch: DP=2 (Workers), cosine decay: losses, gradient norms, final weights${
    missing ? " [SKIPPED: no PyTorch]" : ""
  }`,
  withTimeLimit(150, { ...gpuTest, ignore: missing !== null }),
  async () => {
    // Each rank one micro-batch of 2 rows: the all-reduced mean gradient is the 4 rows' mean.
    await trainBoth(1, "cosine", 2);
  },
);

Deno.test(
  `train's learning rate per iteration against Megatron's OptimizerParamScheduler${
    missing ? " [SKIPPED: no PyTorch]" : ""
  }`,
  { ignore: missing !== null },
  () => {
    assert.ok(runs.length > 0, "needs the training runs of the tests above (none ran)");
    const bad: string[] = [];
    for (const { tp, style, hp, logged, ref } of runs) {
      logged.forEach((r, i) => {
        const m = ref.lr_megatron[i];
        if (!(Math.abs(r.lr - m) <= LR_RTOL * Math.abs(m))) {
          bad.push(
            `TP=${tp} ${style} (${hpFlags(hp).slice(0, 8).join(" ")}), iteration ${i + 1}: ` +
              `lr ${r.lr}, Megatron's ${m} ` +
              `(loss ${r.loss.toFixed(6)}; PyTorch under Megatron's lrs: ${
                ref.loss_megatron_schedule[i].toFixed(6)
              })`,
          );
        }
      });
    }
    assert.deepEqual(
      bad,
      [],
      `global batch ${GLOBAL}: the learning rate applied at iteration k differs from ` +
        `Megatron's get_lr at num_steps = (k − 1)·global batch`,
    );
  },
);
