/**
 * Every silent limit of the kernels, tested just below and just above it
 * against plain TypeScript references:
 * - Mesa's software adapters stop a shader invocation after 65,535 loop
 *   iterations in all (`SOFTWARE_LOOP_LIMIT`): row kernels switch form at
 *   `PER_ROW_MAX_COLS` columns, column walks go in blocks of
 *   `COLUMN_BLOCK_ROWS` rows, the embedding backward in blocks of tokens;
 * - token ids above 2^15 and 2^16 (ids are i32 end to end, never 16-bit or f32);
 * - more than 65,535 workgroups in one dimension (grids fold into two).
 * Tolerances: f32 sums of n terms against float64, rtol 1e-5 plus atol
 * scaled by n·2^-24 where the sum is long.
 */

import { mul } from "../core/ops/basic.ts";
import { columnSum, mapRaw } from "../core/ops/raw.ts";
import { crossEntropy, embedding, layerNorm, softmax } from "../core/ops/nn.ts";
import { PER_ROW_MAX_COLS } from "../core/ops/rows.ts";
import { backward } from "../core/autograd.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { COLUMN_BLOCK_ROWS } from "../kernels/reduce.ts";
import { SOFTWARE_LOOP_LIMIT } from "../kernels/rowreduce.ts";
import { assertClose, gpuTest, prng, randomArray, testDevice } from "./helpers.ts";
import {
  hostMemoryMisfit,
  paramsPerRankAtLeast,
  rankCountMisfit,
  slurmTasksOnNode,
} from "../cli/limits.ts";

const dev = await testDevice();

function xentRef(x: Float32Array, rows: number, cols: number, tg: Int32Array): number[] {
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, x[r * cols + j]);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(x[r * cols + j] - m);
    out.push(m + Math.log(s) - x[r * cols + tg[r]]);
  }
  return out;
}

for (
  const cols of [
    PER_ROW_MAX_COLS,
    PER_ROW_MAX_COLS + 1,
    32767,
    32768,
    SOFTWARE_LOOP_LIMIT,
    SOFTWARE_LOOP_LIMIT + 1,
    70001,
  ]
) {
  Deno.test(`cross-entropy loss and gradient over ${cols} classes`, gpuTest, async () => {
    const rows = 3;
    const x = randomArray(rows * cols, cols, -4, 4);
    const tg = Int32Array.from([0, cols - 1, Math.floor(cols / 2)]);
    await tidy(dev, async () => {
      const logits = Tensor.fromArray(dev, x, [rows, cols]);
      logits.requiresGrad = true;
      const loss = crossEntropy(logits, TokenIds.fromHost(dev, tg, [rows]));
      const ref = xentRef(x, rows, cols, tg);
      assertClose([await loss.item()], [ref.reduce((a, b) => a + b) / rows], {
        rtol: 1e-5,
        what: `loss over ${cols} classes`,
      });
      await backward(loss);
      const g = await logits.grad!.read();
      // d/dx = (softmax − onehot)/rows; check the last columns and the targets.
      for (let r = 0; r < rows; r++) {
        let m = -Infinity;
        for (let j = 0; j < cols; j++) m = Math.max(m, x[r * cols + j]);
        let s = 0;
        for (let j = 0; j < cols; j++) s += Math.exp(x[r * cols + j] - m);
        for (const j of [0, cols - 1, tg[r], Math.floor(cols / 3)]) {
          const want = (Math.exp(x[r * cols + j] - m) / s - (j === tg[r] ? 1 : 0)) / rows;
          assertClose([g[r * cols + j]], [want], {
            rtol: 1e-4,
            atol: 1e-9,
            what: `gradient [${r}, ${j}] over ${cols} classes`,
          });
        }
      }
    });
  });
}

for (const cols of [PER_ROW_MAX_COLS, PER_ROW_MAX_COLS + 1, 40000]) {
  Deno.test(`softmax and layer norm over rows of ${cols}`, gpuTest, async () => {
    const rows = 2;
    const x = randomArray(rows * cols, 7 + cols, -3, 3);
    await tidy(dev, async () => {
      const t = Tensor.fromArray(dev, x, [rows, cols]);
      const y = await softmax(t).read();
      const gamma = Tensor.fromArray(dev, new Float32Array(cols).fill(1));
      const beta = Tensor.fromArray(dev, new Float32Array(cols));
      const ln = await layerNorm(t, gamma, beta).read();
      for (let r = 0; r < rows; r++) {
        const row = x.subarray(r * cols, (r + 1) * cols);
        const m = Math.max(...row);
        let s = 0;
        for (const v of row) s += Math.exp(v - m);
        let mean = 0;
        for (const v of row) mean += v;
        mean /= cols;
        let vr = 0;
        for (const v of row) vr += (v - mean) ** 2;
        const rstd = 1 / Math.sqrt(vr / cols + 1e-5);
        for (const j of [0, cols - 1, cols >> 1]) {
          assertClose([y[r * cols + j]], [Math.exp(row[j] - m) / s], {
            rtol: 1e-4,
            atol: 1e-12,
            what: `softmax [${r}, ${j}]`,
          });
          assertClose([ln[r * cols + j]], [(row[j] - mean) * rstd], {
            rtol: 1e-4,
            atol: 1e-4,
            what: `layer norm [${r}, ${j}]`,
          });
        }
      }
    });
  });
}

for (const rows of [COLUMN_BLOCK_ROWS, COLUMN_BLOCK_ROWS + 1, 2 * COLUMN_BLOCK_ROWS + 5]) {
  Deno.test(
    `column sums and layer-norm parameter gradients over ${rows} rows`,
    gpuTest,
    async () => {
      const cols = 3;
      const x = randomArray(rows * cols, rows, -1, 1);
      const dy = randomArray(rows * cols, rows + 1, -1, 1);
      await tidy(dev, async () => {
        const sums = await columnSum(Tensor.fromArray(dev, x, [rows, cols]), rows, cols, [cols])
          .read();
        const want = [0, 0, 0];
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) want[c] += x[r * cols + c];
        assertClose(sums, want, { rtol: 1e-5, atol: rows * 2 ** -20, what: "column sums" });

        const t = Tensor.fromArray(dev, x, [rows, cols]);
        const gamma = Tensor.fromArray(dev, new Float32Array([1, 2, 3]));
        gamma.requiresGrad = true;
        const beta = Tensor.fromArray(dev, new Float32Array(cols));
        beta.requiresGrad = true;
        const y = layerNorm(t, gamma, beta, 1e-5);
        const loss = mul(y, Tensor.fromArray(dev, dy, [rows, cols]));
        await backward(
          loss,
          Tensor.fromArray(dev, new Float32Array(rows * cols).fill(1), [
            rows,
            cols,
          ]),
        );
        const dg = await gamma.grad!.read();
        const db = await beta.grad!.read();
        const wantG = [0, 0, 0], wantB = [0, 0, 0];
        for (let r = 0; r < rows; r++) {
          const row = x.subarray(r * cols, (r + 1) * cols);
          const mean = (row[0] + row[1] + row[2]) / 3;
          const vr = ((row[0] - mean) ** 2 + (row[1] - mean) ** 2 + (row[2] - mean) ** 2) / 3;
          const rstd = 1 / Math.sqrt(vr + 1e-5);
          for (let c = 0; c < cols; c++) {
            wantG[c] += dy[r * cols + c] * (row[c] - mean) * rstd;
            wantB[c] += dy[r * cols + c];
          }
        }
        assertClose(dg, wantG, { rtol: 1e-4, atol: rows * 2 ** -18, what: "dgamma" });
        assertClose(db, wantB, { rtol: 1e-4, atol: rows * 2 ** -18, what: "dbeta" });
      });
    },
  );
}

Deno.test(
  "embedding of ids above 2^15 and 2^16, and a backward over 70,000 copies of one id",
  gpuTest,
  async () => {
    const vocab = 70000, dim = 2;
    const table = randomArray(vocab * dim, 11);
    const ids = Int32Array.from([0, 32767, 32768, 65535, 65536, 69999]);
    await tidy(dev, async () => {
      const w = Tensor.fromArray(dev, table, [vocab, dim]);
      const out = await embedding(w, TokenIds.fromHost(dev, ids)).read();
      const want = [...ids].flatMap((id) => [table[id * dim], table[id * dim + 1]]);
      assertClose(out, want, { rtol: 0, atol: 0, what: "lookup" });

      const n = 70000;
      const same = new Int32Array(n).fill(65536);
      same[n - 1] = 3;
      w.requiresGrad = true;
      const e = embedding(w, TokenIds.fromHost(dev, same));
      await backward(e, Tensor.fromArray(dev, new Float32Array(n * dim).fill(0.5), [n, dim]));
      const g = await w.grad!.read();
      assertClose([g[65536 * dim], g[65536 * dim + 1], g[3 * dim], g[0]], [
        (n - 1) * 0.5,
        (n - 1) * 0.5,
        0.5,
        0,
      ], { rtol: 0, atol: 0, what: "embedding gradient" });
    });
  },
);

Deno.test(
  "an elementwise op over more than 65,535 × 256 elements (folded grid)",
  gpuTest,
  async () => {
    const n = 65535 * 256 + 777;
    const r = prng(3);
    const x = Float32Array.from({ length: n }, () => r());
    await tidy(dev, async () => {
      const y = await mapRaw("scale", Tensor.fromArray(dev, x), undefined, 2, 1).read();
      for (const i of [0, 65535 * 256 - 1, 65535 * 256, n - 1]) {
        assertClose([y[i]], [2 * x[i] + 1], { rtol: 1e-7, what: `element ${i}` });
      }
    });
  },
);

Deno.test("a model past host memory on a software adapter: a lower bound, refused by the flags", () => {
  // GPT-2 small: 124,439,808 parameters (Hugging Face's count); the bound leaves out biases
  // and norms, so it is below that, and near it.
  const small = { vocab: 50257, hidden: 768, layers: 12, ffn: 3072, positions: 1024 };
  const bound = paramsPerRankAtLeast(small, 1);
  assertClose([bound], [124_439_808], { rtol: 2e-3, atol: 0 });
  if (!(bound <= 124_439_808)) throw new Error(`not a lower bound: ${bound}`);
  const GiB = 2 ** 30;
  // It trains in 24 GiB, at TP=2 over two ranks too; 2,000 layers of hidden 2048 do not.
  if (hostMemoryMisfit(small, 1, 1, 24 * GiB) !== null) throw new Error("small refused");
  if (hostMemoryMisfit(small, 2, 2, 24 * GiB) !== null) throw new Error("small TP=2 refused");
  const huge = { vocab: 256, hidden: 2048, layers: 2000, ffn: 8192, positions: 64 };
  const m = hostMemoryMisfit(huge, 1, 1, 24 * GiB) ?? "";
  if (!/^this run needs at least 1500\.1 GiB .*more than the 24\.0 GiB available on this/.test(m)) {
    throw new Error(m);
  }
  // A thousand ranks: their devices alone.
  const many = rankCountMisfit(1000, 24 * GiB) ?? "";
  if (!/^1000 ranks need at least 125\.0 GiB .*: use fewer \(--nproc-per-node\)$/.test(many)) {
    throw new Error(many);
  }
  if (rankCountMisfit(2, 24 * GiB) !== null) throw new Error("2 ranks refused");
});

Deno.test("the ranks sharing a host under Slurm: its tasks on this node, read from the step's list", () => {
  // Under a real srun -n 2 the memory check counted 1 rank a process (it read only torchrun's and
  // Open MPI's variables), so a job needing twice the memory passed.
  const cases: [Record<string, string>, number | undefined][] = [
    [{ SLURM_STEP_TASKS_PER_NODE: "2", SLURM_NODEID: "0" }, 2],
    [{ SLURM_STEP_TASKS_PER_NODE: "2(x3),1", SLURM_NODEID: "2" }, 2],
    [{ SLURM_STEP_TASKS_PER_NODE: "2(x3),1", SLURM_NODEID: "3" }, 1],
    [{ SLURM_STEP_TASKS_PER_NODE: "3,2", SLURM_NODEID: "1" }, 2],
    [{ SLURM_TASKS_PER_NODE: "4" }, 4],
    [{ SLURM_STEP_TASKS_PER_NODE: "2", SLURM_NODEID: "5" }, undefined],
    [{ SLURM_STEP_TASKS_PER_NODE: "two" }, undefined],
    [{}, undefined],
  ];
  for (const [env, want] of cases) {
    const got = slurmTasksOnNode(env);
    if (got !== want) throw new Error(`${JSON.stringify(env)}: ${got}, want ${want}`);
  }
});
