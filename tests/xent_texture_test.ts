/**
 * The texture forms of the vocabulary-parallel cross-entropy kernels (CPU
 * adapters: the logits read through a stream texture, one invocation per row;
 * kernels/crossentropy.ts): `shardMaxTextureKernel`, `shardSumExpTextureKernel`
 * and `crossEntropyBackwardTextureKernel`.
 *
 * - Against their buffer forms dispatched on the same device: the same bits
 *   for the row max, the target logit and the gradient (the same arithmetic
 *   per element), Σexp within float rounding (summed in four lanes).
 * - The LM head's loss (`lmHeadCrossEntropy`, as the models call it) over two
 *   vocabulary-parallel ranks simulated on one device (an all-reduce that
 *   waits for both) against a float64 reference: loss to 1e-5 relative; the
 *   gradients of the hidden states (summed over ranks), the table shards and
 *   the bias shards to 1e-5 of the set's largest plus 1e-4 relative; the bias
 *   gradient exactly zero on padding columns (whose large bias must not win);
 *   a shard whose valid columns end inside a vec4.
 *
 * On a software adapter both checks assert that the texture forms ran; a GPU
 * keeps the buffer forms, and the reference check still holds.
 * @module
 */

import { backward } from "../core/autograd.ts";
import { lmHeadCrossEntropy } from "../core/ops/lm_head.ts";
import type { VocabGroup } from "../core/ops/parallel_xent.ts";
import { dispatchRows, dispatchRowsFrom } from "../core/ops/rows.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import {
  crossEntropyBackwardKernel,
  crossEntropyBackwardTextureKernel,
  crossEntropyDispatch,
  shardMaxKernel,
  shardMaxTextureKernel,
  shardSumExpKernel,
  shardSumExpTextureKernel,
} from "../kernels/crossentropy.ts";
import { assertClose, gpuTest, prng, randomArray, testDevice, withKernelKeys } from "./helpers.ts";

const dev = await testDevice();

function assertTextureForms(keys: string[], want: string[]): void {
  if (!dev.isSoftware) return;
  for (const k of want) {
    if (!keys.includes(k)) throw new Error(`${k} did not run (dispatched: ${keys.join(", ")})`);
  }
}

function assertSame(got: Float32Array, want: Float32Array, what: string): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} vs ${want.length}`);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) {
      throw new Error(`${what} differs at [${i}]: ${got[i]} vs ${want[i]}`);
    }
  }
}

Deno.test("xent texture forms against the buffer forms", gpuTest, async () => {
  // 70 rows: a partial workgroup of rows; valid 90 of 96 columns ends inside a
  // vec4 (padding holds large logits); the shard starts at global column 37.
  const rows = 70, cols = 96, valid = 90, start = 37;
  const x = randomArray(rows * cols, 1, -4, 4);
  for (let i = 0; i < rows; i++) for (let c = valid; c < cols; c++) x[i * cols + c] = 40 + c;
  const r = prng(2);
  const t = Int32Array.from(
    { length: rows },
    (_, i) => i % 9 === 4 ? -1 : i % 5 === 0 ? start + valid - 1 : Math.floor(r() * 200),
  );
  const gmax = randomArray(rows, 3, 3.5, 4.5); // at or above the row max
  const lse = randomArray(rows, 4, 5, 6);
  const g = randomArray(rows, 5, 0.5, 1.5);
  const params = crossEntropyDispatch(rows, cols, valid, start).params;
  const [got, keys] = await withKernelKeys(dev, () =>
    tidy(dev, async () => {
      const logits = Tensor.fromArray(dev, x, [rows, cols]);
      const targets = Tensor.fromArray(dev, t, [rows]);
      const gm = Tensor.fromArray(dev, gmax, [rows]);
      const l = Tensor.fromArray(dev, lse, [rows]);
      const gr = Tensor.fromArray(dev, g, [rows]);
      const out = {
        max: [] as Float32Array[],
        stats: [] as Float32Array[],
        dx: [] as Float32Array[],
      };
      for (const texture of [false, true]) {
        const run = (
          plain: ReturnType<typeof shardMaxKernel>,
          tex: ReturnType<typeof shardMaxKernel>,
          rest: Tensor[],
        ) =>
          texture
            ? dispatchRowsFrom(
              dev,
              { plain, texture: tex },
              [logits],
              rest.map((o) => o.binding),
              params,
              rows,
              cols,
            )
            : dispatchRows(
              dev,
              plain,
              [logits, ...rest].map((o) => o.binding),
              params,
              rows,
              cols,
            );
        const max = Tensor.empty(dev, [rows]);
        run(shardMaxKernel(), shardMaxTextureKernel(), [max]);
        const stats = Tensor.empty(dev, [2 * rows]);
        run(shardSumExpKernel(), shardSumExpTextureKernel(), [targets, gm, stats]);
        const dx = Tensor.empty(dev, [rows, cols]);
        run(crossEntropyBackwardKernel(), crossEntropyBackwardTextureKernel(), [
          targets,
          l,
          gr,
          dx,
        ]);
        out.max.push(await max.read());
        out.stats.push(await stats.read());
        out.dx.push(await dx.read());
      }
      return out;
    }));
  assertTextureForms(keys, ["xent:shardmax:tex", "xent:shardsum:tex", "xent:bwd:tex"]);
  assertSame(got.max[1], got.max[0], "row max");
  assertClose(got.stats[1].subarray(0, rows), got.stats[0].subarray(0, rows), {
    rtol: 1e-6,
    atol: 0,
    what: "Σexp",
  });
  assertSame(got.stats[1].subarray(rows), got.stats[0].subarray(rows), "target logit");
  assertSame(got.dx[1], got.dx[0], "gradient");
});

/**
 * The groups of `ranks` callers on one device, one per rank: an in-place sum
 * where each reads its tensor and the last to arrive adds them (in rank order)
 * and writes the result into all.
 */
function simulatedGroups(ranks: number): VocabGroup[] {
  let waiting: { rank: number; t: Tensor; data: Float32Array; done: () => void }[] = [];
  const allReduce = (rank: number) => async (t: Tensor) => {
    const data = await t.read();
    await new Promise<void>((done) => {
      waiting.push({ rank, t, data, done });
      if (waiting.length < ranks) return;
      const all = waiting.sort((a, b) => a.rank - b.rank);
      waiting = [];
      const out = Float32Array.from(all[0].data);
      for (const w of all.slice(1)) for (let i = 0; i < out.length; i++) out[i] += w.data[i];
      for (const w of all) {
        w.t.write(out);
        w.done();
      }
    });
  };
  return Array.from({ length: ranks }, (_, rank) => ({
    rank,
    size: ranks,
    allReduce: allReduce(rank),
  }));
}

Deno.test("vocab-parallel LM head loss on stream textures against float64", gpuTest, async () => {
  // Two shards of 132 vocabulary rows; 250 valid: the second shard's 118 end
  // inside a vec4. Padding columns get a large bias, so they would win if counted.
  const rows = 48, h = 16, shard = 132, ranks = 2, vocab = shard * ranks, valid = 250;
  const hidden = randomArray(rows * h, 11);
  const table = randomArray(vocab * h, 12);
  const bias = randomArray(vocab, 13);
  for (let v = valid; v < vocab; v++) bias[v] = 40 + v;
  const r = prng(14);
  const special = [0, shard - 1, shard, valid - 1];
  const t = Int32Array.from(
    { length: rows },
    (_, i) => i % 7 === 3 ? -1 : i < special.length ? special[i] : Math.floor(r() * valid),
  );
  const count = t.filter((v) => v >= 0).length;
  const [got, keys] = await withKernelKeys(dev, () =>
    tidy(dev, async () => {
      const groups = simulatedGroups(ranks);
      const hs = Array.from(
        { length: ranks },
        () => Tensor.fromArray(dev, hidden, [2, rows / 2, h]).requireGrad(),
      );
      const ws = Array.from(
        { length: ranks },
        (_, k) =>
          Tensor.fromArray(dev, table.slice(k * shard * h, (k + 1) * shard * h), [shard, h])
            .requireGrad(),
      );
      const bs = Array.from(
        { length: ranks },
        (_, k) => Tensor.fromArray(dev, bias.slice(k * shard, (k + 1) * shard)).requireGrad(),
      );
      const losses = await Promise.all(hs.map((x, k) =>
        lmHeadCrossEntropy(x, ws[k], TokenIds.fromHost(dev, t, [2, rows / 2]), {
          start: k * shard,
          validVocab: valid,
          bias: bs[k],
          group: groups[k],
        })
      ));
      const values = await Promise.all(losses.map(async (l) =>
        (await l.read())[0]
      ));
      for (const l of losses) await backward(l);
      const read = (ts: Tensor[]) => Promise.all(ts.map((x) => x.grad!.read()));
      return { values, dh: await read(hs), dw: await read(ws), db: await read(bs) };
    }));
  assertTextureForms(keys, ["xent:shardmax:tex", "xent:shardsum:tex", "xent:bwd:tex"]);
  if (!keys.includes("xent:shardfinish:gathered2")) {
    throw new Error("the gathered finish did not run");
  }

  // float64 reference: dl = (softmax − onehot)/count over the valid columns
  let loss = 0;
  const dh = new Float64Array(rows * h), dw = new Float64Array(vocab * h);
  const db = new Float64Array(vocab);
  for (let i = 0; i < rows; i++) {
    if (t[i] < 0) continue;
    const z = Array.from({ length: valid }, (_, v) => {
      let s = bias[v];
      for (let k = 0; k < h; k++) s += hidden[i * h + k] * table[v * h + k];
      return s;
    });
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    loss += lse - z[t[i]];
    for (let v = 0; v < valid; v++) {
      const d = (Math.exp(z[v] - lse) - (v === t[i] ? 1 : 0)) / count;
      db[v] += d;
      for (let k = 0; k < h; k++) {
        dh[i * h + k] += d * table[v * h + k];
        dw[v * h + k] += d * hidden[i * h + k];
      }
    }
  }
  loss /= count;
  const largest = (a: ArrayLike<number>) =>
    Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const close = (a: Float32Array, b: Float64Array, what: string) =>
    assertClose(a, Float32Array.from(b), { rtol: 1e-4, atol: 1e-5 * largest(b), what });
  // each rank's hidden gradient is its shard's part (TP all-reduces them)
  const dhSum = got.dh[0].map((v, i) => v + got.dh[1][i]);
  close(dhSum, dh, "hidden grad");
  for (let k = 0; k < ranks; k++) {
    assertClose([got.values[k]], [loss], { rtol: 1e-5, atol: 0, what: `rank ${k} loss` });
    close(got.dw[k], dw.subarray(k * shard * h, (k + 1) * shard * h), `rank ${k} table grad`);
    close(got.db[k], db.subarray(k * shard, (k + 1) * shard), `rank ${k} bias grad`);
    for (let c = Math.max(0, valid - k * shard); c < shard; c++) {
      if (got.db[k][c] !== 0) throw new Error(`rank ${k}: bias gradient on padding column ${c}`);
    }
  }
});
