/**
 * The project beside PyTorch on the CPU, in one run (`deno task bench:torch`):
 * the issue's two training workloads and a 1024³ matmul.
 *
 * - reference config (vocab 256, hidden 128, 4 heads, 2 layers, seq 64, batch 8),
 *   tokens/s: the project on each backend (bench/train.ts's step: Adam(W), clip
 *   1.0, dropout off, the loss read back each step), PyTorch (bench/torch_peer.py:
 *   the same model, optimizer and clip) at 1 and 2 threads, the better counted;
 * - GPT-2 small shape (12 layers, hidden 768, 12 heads, vocab 50,257 padded to
 *   50,304, seq 256, batch 1), tokens/s: the project at the TP sizes of `--gpt2-tp`
 *   (bench/gpt2_scale.ts, on `--gpt2-backend`, default Dawn), PyTorch as above. With
 *   `--gpt2-placement procs` (the default) each rank is one OS process pinned to
 *   its own core with `taskset`, the ranks talking over TCP (cli/pinned_procs.ts):
 *   TP=1 is then one simulated GPU on one core, and TP=2 two of them on two cores,
 *   as the issue asks. Under that placement `--gpt2-tp1` (default `both`) runs
 *   TP=1 as one pinned process (`core`), as one Worker whose device's threads
 *   use every core (`cpu`: what `deno task train` does on this machine, and what
 *   PyTorch's 2-thread run gets), or both, each its own row. `--gpt2-placement
 *   workers` runs the ranks as Workers of one process over shared memory
 *   (threads that cannot be pinned: TP=1's lavapipe then uses every core);
 * - matmul 1024³ GFLOP/s: the project's kernel on each backend against
 *   torch.mm (OpenBLAS sgemm) at 1 and 2 threads; on a CPU adapter also as a
 *   share of the adapter's arithmetic ceiling (bench/fma_ceiling.ts).
 *
 * PyTorch runs with `--python` (default /usr/bin/python3, Debian's python3-torch),
 * by default with glibc's malloc told to keep the memory PyTorch frees
 * ({@link TORCH_KEEP_MALLOC}; `--torch-malloc default` leaves malloc as it is);
 * when it cannot import torch the table says so and shows the project's rows alone.
 *
 * The reference config runs in `--rounds` interleaved rounds (default 3): in
 * each, the project's steps on each backend and PyTorch's (PyTorch first in
 * every other round, see {@link inRoundOrder}), so that both
 * sample the same moment of a shared, noisy host; the table gives each side's
 * median over the rounds and the median of the rounds' ratios. The GPT-2 rows
 * do the same over `--gpt2-rounds` rounds (default 1: a GPT-2 round takes
 * minutes here), each the project at every TP size and PyTorch, in the same
 * alternating order. `deno task bench:torch --help` gives the usage and flags.
 * @module
 */

import { fileURLToPath as fromFileUrl } from "node:url";
import { type BackendName, BACKENDS, parseBackend } from "../core/gpu.ts";
import { matmulPlan } from "../kernels/matmul.ts";
import { matmulOptions } from "../core/ops/matmul.ts";
import { msForDispatches, randomOperands } from "./products.ts";
import { DEBUG_FLAG, handled, splitMisfit } from "../cli/errors.ts";
import {
  commaCounts,
  commaList,
  type FlagSpec,
  type FlagValues,
  parseCommandLine,
  UsageError,
  wasGiven,
} from "../cli/flags.ts";
import { squareMatmul } from "./kernels.ts";
import { median } from "./stats.ts";
import { deviceFor, REFERENCE, timedStep } from "./train.ts";
import { fmaCeiling } from "./fma_ceiling.ts";
import {
  LLVMPIPE_WIDTH_ENV,
  llvmpipeWidthLabel,
  preferWideVectors,
  widthSetForSmallModel,
} from "../core/simd.ts";
import { type Gpt2Placement, type Gpt2Run, gpt2Runs, type Tp1Placement } from "./gpt2_scale.ts";
import { outputOrStop } from "./child.ts";

/** Every flag of `deno task bench:torch`. */
export const TORCH_COMPARE_FLAGS: Record<string, FlagSpec> = {
  "backends": {
    type: "string",
    default: "deno,dawn",
    valueName: "B,B…",
    help: "the project's WebGPU implementations, comma-separated: deno, dawn",
  },
  "steps": { type: "int", min: 1, default: 10, help: "reference config: steps per round" },
  "rounds": { type: "int", min: 1, default: 3, help: "reference config: interleaved rounds" },
  "gpt2-tp": {
    type: "string",
    default: "1,2",
    valueName: "N,N…|none",
    help: "GPT-2 small: the project's TP sizes, comma-separated (none: no GPT-2 rows)",
  },
  "gpt2-steps": { type: "int", min: 1, default: 3, help: "GPT-2 small: timed steps per run" },
  "gpt2-rounds": { type: "int", min: 1, default: 1, help: "GPT-2 small: interleaved rounds" },
  "gpt2-placement": {
    type: "string",
    choices: ["procs", "workers"],
    default: "procs",
    help: "GPT-2 ranks: processes pinned to a core each, or Workers of one process",
  },
  "gpt2-tp1": {
    type: "string",
    choices: ["core", "cpu", "both"],
    default: "both",
    help: "under procs, TP=1 as one pinned process, one unpinned Worker, or both",
  },
  "gpt2-backend": {
    type: "string",
    choices: BACKENDS,
    default: "dawn",
    help: "GPT-2 small: the project's WebGPU implementation",
  },
  "gpt2-dir": {
    type: "string",
    valueName: "DIR",
    help: "GPT-2 small: where the random model (~475 MB) is written and found again, " +
      "bench:gpt2's --dir (default $TMPDIR/gpt2-random, else /tmp/gpt2-random)",
  },
  "python": {
    type: "string",
    default: "/usr/bin/python3",
    valueName: "PATH",
    help: "the Python that runs PyTorch",
  },
  "torch-malloc": {
    type: "string",
    choices: ["keep", "default"],
    default: "keep",
    help: "glibc malloc for PyTorch: keep freed memory, or its defaults",
  },
  "matmul-row": {
    type: "boolean",
    help: "only the project's matmul 1024³ row, as JSON (what bench:torch runs in a child " +
      "process where the reference config got a narrower llvmpipe width than large products)",
  },
  ...DEBUG_FLAG,
};

const USAGE =
  `Usage: deno task bench:torch [--backends deno,dawn] [--steps 10] [--rounds 3] [--gpt2-tp 1,2|none]
  [--gpt2-steps 3] [--gpt2-rounds 1] [--gpt2-placement procs|workers] [--gpt2-tp1 core|cpu|both]
  [--gpt2-backend dawn|deno] [--gpt2-dir DIR] [--python /usr/bin/python3] [--torch-malloc keep|default]`;

/** What a `bench:torch` command line asks for. */
export interface TorchCompareOptions {
  /** The project's backends on the reference config and the matmul. */
  backends: BackendName[];
  /** Reference config: steps per round. */
  steps: number;
  /** Reference config: interleaved rounds. */
  rounds: number;
  /** GPT-2 small: the project's TP sizes (none: no GPT-2 rows). */
  gpt2Tp: number[];
  /** GPT-2 small: timed steps per run. */
  gpt2Steps: number;
  /** GPT-2 small: interleaved rounds. */
  gpt2Rounds: number;
  /** GPT-2 small: where the ranks run. */
  gpt2Placement: Gpt2Placement;
  /** GPT-2 small: how TP=1 runs under pinned processes. */
  gpt2Tp1: Tp1Placement;
  /** GPT-2 small: the project's backend. */
  gpt2Backend: BackendName;
  /** GPT-2 small: where its random model is written (undefined: bench:gpt2's default). */
  gpt2Dir?: string;
  /** The Python that runs PyTorch. */
  python: string;
  /** glibc malloc for PyTorch. */
  torchMalloc: "keep" | "default";
}

/** The options of flags parsed with {@link TORCH_COMPARE_FLAGS}; throws UsageError. */
export function torchCompareOptions(f: FlagValues): TorchCompareOptions {
  // Empty items are dropped, but one backend at least is needed ("" and "," are refused).
  const backendList = f.backends as string;
  const backendForms = `comma-separated backends among ${BACKENDS.join(", ")}`;
  const names = commaList(
    "backends",
    backendList,
    (b) => (BACKENDS as readonly string[]).includes(b),
    backendForms,
    true,
  );
  if (!names.length) throw new UsageError(`--backends takes ${backendForms}, got "${backendList}"`);
  const tpList = f["gpt2-tp"] as string;
  const gpt2Tp = tpList === "none" ? [] : commaCounts(
    "gpt2-tp",
    tpList,
    "comma-separated TP sizes ≥ 1 (e.g. 1,2), or none",
  );
  for (const tp of gpt2Tp) {
    const shape = {
      vocabSize: GPT2.vocab,
      numLayers: GPT2.layers,
      hiddenSize: GPT2.hidden,
      numHeads: GPT2.heads,
      maxPositions: GPT2.seq,
    };
    const misfit = splitMisfit(shape, tp);
    if (misfit) throw new UsageError(`--gpt2-tp ${tp}: GPT-2 small: ${misfit}`);
  }
  // PyTorch missing is a note in the report (a machine without it still benches the project),
  // but a Python named by its path on the command line must be there.
  const python = f.python as string;
  if (wasGiven(f, "python") && python.includes("/")) {
    try {
      Deno.statSync(python);
    } catch (e) {
      throw new UsageError(`--python ${python}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  return {
    backends: names.map((b) => parseBackend(b)),
    steps: f.steps as number,
    rounds: f.rounds as number,
    gpt2Tp,
    gpt2Steps: f["gpt2-steps"] as number,
    gpt2Rounds: f["gpt2-rounds"] as number,
    gpt2Placement: f["gpt2-placement"] as Gpt2Placement,
    gpt2Tp1: f["gpt2-tp1"] as Tp1Placement,
    gpt2Backend: parseBackend(f["gpt2-backend"] as string),
    gpt2Dir: f["gpt2-dir"] as string | undefined,
    python: f.python as string,
    torchMalloc: f["torch-malloc"] as "keep" | "default",
  };
}

const runKey = (r: Gpt2Run) => `${r.tp}/${r.placement}`;
const GPT2 = { vocab: 50304, layers: 12, hidden: 768, heads: 12, seq: 256, batch: 1 };

interface TorchOut {
  torch: string;
  workloads: Record<string, Record<string, { tokensPerSec: number; params: number }>>;
  sgemm: Record<string, number>;
}

/**
 * glibc malloc settings under which PyTorch keeps the memory it frees (`--torch-malloc keep`, the
 * default): no mmap for large blocks, no trimming of the heap. Without them PyTorch maps fresh pages
 * for its large tensors every step and unmaps them after, and each fresh 4 KiB page costs a fault
 * (~10 µs on this project's build VM): GPT-2 small's step spent seconds in the kernel and ran 2.5–3.4×
 * slower than with them. Deno's own allocations are left alone (its device buffers are pooled).
 */
const TORCH_KEEP_MALLOC = {
  MALLOC_MMAP_MAX_: "0",
  MALLOC_TRIM_THRESHOLD_: String(2 ** 36),
};

/**
 * Runs bench/torch_peer.py with `spec` under `o.python` and `o.torchMalloc`;
 * null (and the reason) when PyTorch is not there.
 */
async function torch(o: TorchCompareOptions, spec: unknown): Promise<TorchOut | string> {
  try {
    const out = await outputOrStop(o.python, {
      env: o.torchMalloc === "keep" ? TORCH_KEEP_MALLOC : {},
      args: [fromFileUrl(new URL("./torch_peer.py", import.meta.url)), JSON.stringify(spec)],
    });
    const err = new TextDecoder().decode(out.stderr);
    if (!out.success) {
      return /No module named 'torch'/.test(err)
        ? `${o.python} has no torch (apt-get install python3-torch libopenblas0-pthread)`
        : `PyTorch peer failed: ${err.trim().split("\n").pop()}`;
    }
    return JSON.parse(new TextDecoder().decode(out.stdout)) as TorchOut;
  } catch (e) {
    return `no ${o.python} (${(e as Error).message.split("\n")[0]})`;
  }
}

/** PyTorch's better thread count in one run, and its value. */
interface Best {
  threads: string;
  v: number;
}

const best = (r: Record<string, number>): Best => {
  const [t, v] = Object.entries(r).sort((a, b) => b[1] - a[1])[0];
  return { threads: t, v };
};

/**
 * PyTorch's median over interleaved rounds, with the thread counts that won
 * them; null unless every round has a PyTorch value.
 */
function torchOverRounds(rounds: (Best | null)[]): Best | null {
  if (!rounds.length || rounds.some((t) => t === null)) return null;
  const threads = [...new Set(rounds.map((t) => t!.threads))].join("/");
  return { threads, v: median(rounds.map((t) => t!.v)) };
}

/**
 * The ratio cell of a workload run in interleaved rounds: the median of the
 * rounds' project/PyTorch ratios, and each round's when there are several;
 * "–" unless every round has a PyTorch value.
 */
function ratioOverRounds(project: number[], torch: (Best | null)[]): string {
  if (!torch.length || torch.some((t) => t === null)) return "–";
  const ratios = project.map((v, i) => v / torch[i]!.v);
  const each = ratios.length > 1 ? ` (rounds ${ratios.map((x) => x.toFixed(2)).join(", ")})` : "";
  return `${median(ratios).toFixed(2)}×${each}`;
}

/** PyTorch's tokens/s on `workload` in one run: the better thread count. */
const bestTokens = (t: TorchOut, workload: string) =>
  best(Object.fromEntries(
    Object.entries(t.workloads[workload]).map(([n, r]) => [n, r.tokensPerSec]),
  ));

/** The matmul row of one backend: GFLOP/s, and the arithmetic ceiling on a CPU adapter. */
interface MatmulRow {
  /** The project's matmul 1024³, GFLOP/s. */
  gflops: number;
  /** `bench:fma-ceiling`'s GFLOP/s on a CPU adapter, else null. */
  ceiling: number | null;
}

/** The matmul rows of `backends`, measured in this process. */
async function matmulRows(backends: BackendName[]): Promise<[BackendName, MatmulRow][]> {
  const rows: [BackendName, MatmulRow][] = [];
  for (const b of backends) {
    const gflops = await projectMatmul(b);
    const device = await deviceFor(b);
    rows.push([b, { gflops, ceiling: device.isSoftware ? await fmaCeiling(device) : null }]);
  }
  return rows;
}

/**
 * The matmul rows measured by this script run again with `--matmul-row`, in a
 * process whose llvmpipe width is the one large products get (this process set
 * a narrower one for the reference model).
 */
async function matmulRowsInChild(backends: BackendName[]): Promise<[BackendName, MatmulRow][]> {
  const out = await outputOrStop(Deno.execPath(), {
    args: [
      "run",
      "-A",
      import.meta.url,
      "--matmul-row",
      "--backends",
      backends.join(","),
    ],
    ...envWithoutOwnWidth(),
    stderr: "inherit",
  });
  const text = new TextDecoder().decode(out.stdout).trim();
  if (out.code !== 0) throw new Error(`the matmul row's process exited ${out.code}`);
  return Object.entries(JSON.parse(text)) as [BackendName, MatmulRow][];
}

/**
 * A child process's environment: this one's, less the llvmpipe width this
 * process chose for its own small model (core/simd.ts), so that the child
 * chooses for its own work; a width the user set passes on.
 */
function envWithoutOwnWidth(): { env?: Record<string, string>; clearEnv?: boolean } {
  if (!widthSetForSmallModel()) return {};
  const env = Deno.env.toObject();
  delete env[LLVMPIPE_WIDTH_ENV];
  return { env, clearEnv: true };
}

/** Project matmul 1024³ GFLOP/s on `backend`: median of 5 timed batches of 4 dispatches. */
async function projectMatmul(backend: BackendName, n = 1024): Promise<number> {
  const device = await deviceFor(backend);
  const shape = squareMatmul(n);
  const plan = matmulPlan(shape, matmulOptions(device));
  const bindings = randomOperands(device, shape);
  await msForDispatches(device, plan, bindings, 1);
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) ms.push(await msForDispatches(device, plan, bindings, 4));
  for (const b of bindings) device.pool.release(b.buffer);
  return (4 * 2 * n ** 3) / (median(ms) / 1000) / 1e9;
}

/**
 * The flags bench/gpt2_scale.ts runs GPT-2 small with at TP=`tp` under
 * `placement`: {@link GPT2}'s sequence and batch, `steps` timed steps, on `backend`,
 * its random model in `dir` (bench/gpt2_scale.ts's default when undefined).
 */
export function gpt2ScaleArgs(
  tp: number,
  placement: Gpt2Placement,
  steps: number,
  backend: BackendName,
  dir?: string,
): string[] {
  return [
    "--sizes",
    "small",
    "--tp",
    String(tp),
    "--seq",
    String(GPT2.seq),
    "--batch",
    String(GPT2.batch),
    "--steps",
    String(steps),
    "--eval-only",
    "none",
    "--placement",
    placement,
    "--backend",
    backend,
    ...(dir === undefined ? [] : ["--dir", dir]),
  ];
}

/**
 * GPT-2 small at TP=`tp` through bench/gpt2_scale.ts: ms per step (median of
 * the steps) and how the ranks ran, or why it failed. Its stderr (the ranks'
 * tuning and errors) comes through as it runs: a step takes tens of seconds
 * here, and tuning the shapes not in the cache minutes.
 */
async function projectGpt2(
  o: TorchCompareOptions,
  tp: number,
  placement: Gpt2Placement,
): Promise<{ ms: number; placed: string } | string> {
  const out = await outputOrStop(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./gpt2_scale.ts", import.meta.url).href,
      ...gpt2ScaleArgs(tp, placement, o.gpt2Steps, o.gpt2Backend, o.gpt2Dir),
    ],
    ...envWithoutOwnWidth(),
    stderr: "inherit",
  });
  return gpt2Outcome(new TextDecoder().decode(out.stdout), out.code, placement);
}

/**
 * What bench/gpt2_scale.ts's table (`stdout`; the process exited with `code`)
 * says of GPT-2 small: ms per step and how the ranks ran, or why it failed. A
 * failed row (its ms cell empty, which `Number` reads as 0: an infinitely fast
 * step) is a failure, whatever the exit code.
 */
export function gpt2Outcome(
  stdout: string,
  code: number,
  placement: string,
): { ms: number; placed: string } | string {
  const row = stdout.split("\n").find((l) => l.startsWith(`| small |`));
  const cells = row?.split("|").map((s) => s.trim());
  const ms = cells?.[8] ? Number(cells[8]) : NaN;
  if (code !== 0 || !(ms > 0) || /failed/i.test(row ?? "")) {
    return `failed: ${
      row?.trim().slice(0, 200) ?? `bench/gpt2_scale.ts exited ${code} (its stderr is above)`
    }`;
  }
  // The "what ran" cell ends with the placement in parentheses.
  const placed = /\(([^()]*)\)\s*$/.exec(cells![4])?.[1] ?? placement;
  return { ms, placed };
}

/**
 * Runs one interleaved round's two sides and returns PyTorch's result: the
 * project first in rounds 1, 3, …, PyTorch first in rounds 2, 4, …, so that an
 * effect of running second (on this host the second of two back-to-back GPT-2
 * runs was 3–15% faster, whichever it was) falls on both sides alike.
 */
async function inRoundOrder(
  round: number,
  runProject: () => Promise<void>,
  runTorch: () => Promise<TorchOut | string>,
): Promise<TorchOut | string> {
  if (round % 2 === 0) {
    await runProject();
    return await runTorch();
  }
  const t = await runTorch();
  await runProject();
  return t;
}

const f0 = (v: number) => v.toLocaleString("en-US", { maximumFractionDigits: 0 });
const f1 = (v: number) => v.toLocaleString("en-US", { maximumFractionDigits: 1 });
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;

/** Runs `deno task bench:torch` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, TORCH_COMPARE_FLAGS, USAGE, (f) => void torchCompareOptions(f));
  if (typeof f === "number") return f;
  const o = torchCompareOptions(f);
  const { backends, gpt2Placement, gpt2Backend, torchMalloc } = o;
  if (f["matmul-row"]) {
    console.log(JSON.stringify(Object.fromEntries(await matmulRows(backends))));
    for (const b of backends) (await deviceFor(b)).destroy();
    return 0;
  }
  // llvmpipe's width for the reference model, as `train` picks it; the matmul and GPT-2 rows
  // run in child processes without it where that is narrower than large products get.
  await preferWideVectors({ hiddenSize: REFERENCE.model.hiddenSize });
  const [STEPS, ROUNDS, GPT2_STEPS, GPT2_ROUNDS] = [o.steps, o.rounds, o.gpt2Steps, o.gpt2Rounds];
  const gpt2RunList = gpt2Runs(o.gpt2Tp, gpt2Placement, o.gpt2Tp1);
  const lines: string[] = [];
  const log = (s: string) => console.error(s);
  // Reference config: in each round the project on each backend and PyTorch.
  const w = REFERENCE.model;
  const refSpec = {
    name: "reference",
    vocab: w.vocabSize,
    layers: w.numLayers,
    hidden: w.hiddenSize,
    heads: w.numHeads,
    seq: REFERENCE.seq,
    batch: REFERENCE.batch,
    warmup: 2,
    steps: STEPS,
  };
  const refRounds: {
    project: Map<BackendName, number>;
    torch: TorchOut | string;
    /** PyTorch's better thread count in the round; null without PyTorch. */
    torchBest: Best | null;
  }[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const project = new Map<BackendName, number>();
    const runProject = async () => {
      for (const b of backends) {
        const row = { impl: "project" as const, backend: b, config: REFERENCE };
        const ms: number[] = [];
        for (let i = 0; i < STEPS; i++) ms.push(await timedStep(row));
        project.set(b, (REFERENCE.batch * REFERENCE.seq * 1000) / median(ms));
      }
    };
    // The sgemm once, in the first round; PyTorch first in every other round.
    const runTorch = () =>
      torch(o, { workloads: [refSpec], threads: [1, 2], sgemm: round ? 0 : 1024 });
    const t = await inRoundOrder(round, runProject, runTorch);
    const tr = typeof t === "string" ? null : bestTokens(t, "reference");
    refRounds.push({ project, torch: t, torchBest: tr });
    log(
      `round ${round + 1}/${ROUNDS}: project ${
        backends.map((b) => `${f0(project.get(b)!)} (${b})`).join(", ")
      } tokens/s; PyTorch ${tr ? `${f0(tr.v)} (${tr.threads} thr)` : "–"}`,
    );
  }
  const t1 = refRounds[0].torch;
  // Matmul 1024³, and on a CPU adapter what its shader compiler reaches with arithmetic alone.
  const rows = widthSetForSmallModel()
    ? await matmulRowsInChild(backends)
    : await matmulRows(backends);
  for (const b of backends) (await deviceFor(b)).destroy();
  const mm = new Map<BackendName, number>();
  const ceiling = new Map<BackendName, number>();
  for (const [b, r] of rows) {
    mm.set(b, r.gflops);
    log(`project matmul 1024³ ${b}: ${f1(r.gflops)} GFLOP/s`);
    if (r.ceiling !== null) {
      ceiling.set(b, r.ceiling);
      log(`fma ceiling (no loads) ${b}: ${f1(r.ceiling)} GFLOP/s`);
    }
  }
  // GPT-2 small: in each round the project at each TP and PyTorch.
  const gpt2Spec = { name: "gpt2", ...GPT2, warmup: 1, steps: GPT2_STEPS };
  const gpt2Rounds: {
    project: Map<string, { ms: number; placed: string } | string>;
    torch: TorchOut | string;
    torchBest: Best | null;
  }[] = [];
  for (let round = 0; gpt2RunList.length && round < GPT2_ROUNDS; round++) {
    const project = new Map<string, { ms: number; placed: string } | string>();
    const runProject = async () => {
      for (const run of gpt2RunList) {
        const { tp } = run;
        const r = await projectGpt2(o, tp, run.placement);
        project.set(runKey(run), r);
        log(
          `GPT-2 round ${round + 1}/${GPT2_ROUNDS}: project TP=${tp}: ${
            typeof r === "string" ? r : `${r.ms} ms/step (${r.placed})`
          }`,
        );
      }
    };
    const runTorch = () => torch(o, { workloads: [gpt2Spec], threads: [1, 2] });
    const t = await inRoundOrder(round, runProject, runTorch);
    const tb = typeof t === "string" ? null : bestTokens(t, "gpt2");
    gpt2Rounds.push({ project, torch: t, torchBest: tb });
    log(
      `GPT-2 round ${round + 1}/${GPT2_ROUNDS}: PyTorch ${
        tb ? `${f1(tb.v)} (${tb.threads} thr)` : "–"
      } tokens/s`,
    );
  }

  const noTorch = typeof t1 === "string" ? t1 : null;
  const torchMm = typeof t1 === "string" ? null : best(t1.sgemm);
  const la = Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  lines.push(
    `- ${new Date().toISOString().slice(0, 16)}Z; ${
      noTorch
        ? `**no PyTorch row**: ${noTorch}`
        : `PyTorch ${(t1 as TorchOut).torch} on the CPU, the better of 1 and 2 threads, ${
          torchMalloc === "keep"
            ? `glibc malloc keeping freed memory (${
              Object.entries(TORCH_KEEP_MALLOC).map(([k, v]) => `${k}=${v}`).join(", ")
            })`
            : "glibc malloc's defaults"
        }`
    }; load average at the end ${la}`,
    `- reference: ${ROUNDS} interleaved round(s) (the project, then PyTorch; PyTorch first in rounds 2, 4, …), each side's median of ${STEPS} steps per round (PyTorch after 2 warm-up steps); the medians over the rounds, and the median of the rounds' ratios; GPT-2 small: ${GPT2_ROUNDS} interleaved round(s) (the project at each TP size, then PyTorch, in the same alternating order), each the median of ${GPT2_STEPS} steps after one untimed step (compiling; the matmul tilings not in the tuning cache are tuned after it), and medians as for the reference; GPT-2 ranks: ${
      gpt2Placement === "procs"
        ? "one process each, pinned to its own core with taskset, TCP between them" +
          (gpt2RunList.some((r) => r.placement === "workers")
            ? "; TP=1 also as one Worker, unpinned, its device on every core"
            : "")
        : "Workers of one process, shared memory"
    }`,
    `- llvmpipe's vector width (${LLVMPIPE_WIDTH_ENV}; core/simd.ts, as \`train\` picks it): ${
      widthSetForSmallModel()
        ? "256 bits for the reference config (an Intel CPU, a small model), the matmul and " +
          "GPT-2 rows in processes of their own at the width their products get"
        : `${llvmpipeWidthLabel()} bits for every row`
    }`,
    "",
    "| workload | PyTorch CPU | this project | ratio |",
    "| --- | ---: | --- | ---: |",
  );
  // Each side's median over the rounds, and the median of the rounds' ratios.
  const torchRounds = refRounds.map((r) => r.torchBest);
  const torchRef = torchOverRounds(torchRounds);
  for (const b of backends) {
    const project = refRounds.map((r) => r.project.get(b)!);
    lines.push(
      `| reference config, tokens/s | ${
        torchRef ? `${f0(torchRef.v)} (${torchRef.threads} thr)` : "–"
      } | ${f0(median(project))} (${b}) | ${ratioOverRounds(project, torchRounds)} |`,
    );
  }
  const gpt2TorchRounds = gpt2Rounds.map((r) => r.torchBest);
  const torchG = torchOverRounds(gpt2TorchRounds);
  for (const run of gpt2RunList) {
    const { tp } = run;
    const runs = gpt2Rounds.map((r) => r.project.get(runKey(run))!);
    const failed = runs.find((r) => typeof r === "string");
    const placed = runs.find((r) => typeof r !== "string")?.placed;
    const tps = runs.map((r) =>
      typeof r === "string" ? NaN : (GPT2.seq * GPT2.batch * 1000) / r.ms
    );
    lines.push(
      `| GPT-2 small shape, tokens/s | ${
        torchG ? `${f1(torchG.v)} (${torchG.threads} thr)` : "–"
      } | ${
        failed ? `TP=${tp} ${failed}` : `${f1(median(tps))} at TP=${tp} (${gpt2Backend}, ${placed})`
      } | ${failed ? "–" : ratioOverRounds(tps, gpt2TorchRounds)} |`,
    );
  }
  for (const b of backends) {
    const v = mm.get(b)!;
    lines.push(
      `| matmul 1024³, GFLOP/s | ${torchMm ? `${f1(torchMm.v)} (${torchMm.threads} thr)` : "–"} | ${
        f1(v)
      } (${b}) | ${torchMm ? ratio(v, torchMm.v) : "–"} |`,
    );
  }
  for (const [b, c] of ceiling) {
    lines.push(
      "",
      `The matmul on ${b} runs at ${Math.round((100 * mm.get(b)!) / c)}% of what this adapter's ` +
        `shader compiler reaches with arithmetic alone (${
          f1(c)
        } GFLOP/s: independent fma chains, ` +
        `no loads; \`deno task bench:fma-ceiling\`).`,
    );
  }
  const gpt2TorchError = gpt2Rounds.find((r) => typeof r.torch === "string")?.torch;
  if (gpt2TorchError) lines.push("", `PyTorch GPT-2 row: ${gpt2TorchError}`);
  console.log(lines.join("\n"));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
