/**
 * An embedding table's gradient is an addable one (core/tensor.ts `AddableGrad`):
 * where the table has another gradient already (the tied LM head's, a second
 * lookup's, an earlier micro-batch's) the lookup's rows are scatter-added into
 * it in place, else it becomes a zeroed table with the rows added. Each case
 * against a float64 TypeScript reference; tolerance rtol 1e-5, atol 1e-5 (f32
 * sums of a few terms). Also zeroing and filling tensors (`fillInPlace`), which
 * runs a kernel on Dawn's OpenGL backend and a clear elsewhere.
 */

import { backward, record } from "../core/autograd.ts";
import * as ops from "../core/ops/mod.ts";
import { type AddableGrad, Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { matmulRef } from "./reference.ts";
import { assertClose, gpuTest, randomArray, testDevice, withKernelKeys } from "./helpers.ts";

const dev = await testDevice();
const [V, D, M] = [13, 8, 5];
const W = randomArray(V * D, 1);
const H = randomArray(M * D, 2);
const IDS = [3, 7, 3, 0, 12, 3];
const R1 = randomArray(IDS.length * D, 3);
const R2 = randomArray(M * V, 4);

/** The lookup's part of dW: row ids[i] gets r[i] (float64). */
function scatterRef(ids: number[], r: Float32Array): Float64Array {
  const out = new Float64Array(V * D);
  ids.forEach((id, i) => {
    for (let d = 0; d < D; d++) out[id * D + d] += r[i * D + d];
  });
  return out;
}

/** The LM head's part of dW for logits = H·Wᵀ weighted by R2: R2ᵀ·H (float64). */
const headRef = () => matmulRef(R2, H, V, D, M, true);

const sum = (...xs: Float64Array[]) => xs.reduce((a, x) => a.map((v, i) => v + x[i]));

/** Σ lookup(W, ids)·r as a loss term. */
const lookupTerm = (w: Tensor, ids: number[], r: Float32Array) =>
  ops.sum(ops.mul(
    ops.embedding(w, TokenIds.fromHost(dev, ids)),
    Tensor.fromArray(dev, r, [ids.length, D]),
  ));

/** Σ (H·Wᵀ)·R2 as a loss term (the tied LM head). */
const headTerm = (w: Tensor) =>
  ops.sum(ops.mul(
    ops.matmul(Tensor.fromArray(dev, H, [M, D]), w, { transB: true }),
    Tensor.fromArray(dev, R2, [M, V]),
  ));

async function gradOf(losses: (w: Tensor) => Tensor[]): Promise<Float32Array> {
  return await tidy(dev, async () => {
    const w = Tensor.fromArray(dev, W, [V, D]).requireGrad();
    for (const loss of losses(w)) await backward(loss);
    const g = await w.grad!.read();
    w.grad!.dispose();
    return g;
  });
}

Deno.test(
  "embedding grad: a tied table gets the lookup's rows added into the LM head's gradient",
  gpuTest,
  async () => {
    const g = await gradOf((w) => [ops.add(lookupTerm(w, IDS, R1), headTerm(w))]);
    assertClose(g, sum(scatterRef(IDS, R1), headRef()), {
      rtol: 1e-5,
      atol: 1e-5,
      what: "tied dW",
    });
    // The other order of the two terms in the graph.
    const h = await gradOf((w) => [ops.add(headTerm(w), lookupTerm(w, IDS, R1))]);
    assertClose(h, g, { rtol: 0, atol: 0, what: "tied dW, terms swapped" });
  },
);

Deno.test(
  "embedding grad: alone, twice on one table, and over two backward passes",
  gpuTest,
  async () => {
    const alone = await gradOf((w) => [lookupTerm(w, IDS, R1)]);
    assertClose(alone, scatterRef(IDS, R1), { rtol: 1e-5, atol: 1e-5, what: "one lookup" });
    const ids2 = [12, 1, 7];
    const r2 = randomArray(ids2.length * D, 5);
    const twice = await gradOf((w) => [ops.add(lookupTerm(w, IDS, R1), lookupTerm(w, ids2, r2))]);
    const both = sum(scatterRef(IDS, R1), scatterRef(ids2, r2));
    assertClose(twice, both, { rtol: 1e-5, atol: 1e-5, what: "two lookups" });
    // Micro-batches: the second backward adds its rows into the leaf's gradient.
    const accumulated = await gradOf((w) => [lookupTerm(w, IDS, R1), lookupTerm(w, ids2, r2)]);
    assertClose(accumulated, both, { rtol: 1e-5, atol: 1e-5, what: "two backward passes" });
    const tiedTwice = await gradOf((w) => [headTerm(w), lookupTerm(w, IDS, R1)]);
    assertClose(tiedTwice, sum(scatterRef(IDS, R1), headRef()), {
      rtol: 1e-5,
      atol: 1e-5,
      what: "head, then a lookup in a second backward",
    });
  },
);

/**
 * An op `y = x` whose backward returns its gradient as an addable one that logs
 * how the engine used it.
 */
function addableIdentity(x: Tensor, used: string[]): Tensor {
  const out = ops.clone(x);
  return record(out, "addable identity", [x], (g): [AddableGrad] => {
    let held: Tensor | null = g.view();
    return [{
      size: x.size,
      addInto(dst) {
        used.push("addInto");
        ops.axpyInPlace(dst, held!, 1);
        held!.dispose();
        held = null;
      },
      dense() {
        used.push("dense");
        const t = ops.clone(held!);
        held!.dispose();
        held = null;
        return t;
      },
      dispose() {
        used.push("dispose");
        held?.dispose();
        held = null;
      },
    }];
  });
}

Deno.test(
  "backward adds an addable gradient into another in place, and makes it dense only alone",
  gpuTest,
  async () => {
    const x0 = randomArray(6, 9);
    const cases: [string, (x: Tensor, used: string[]) => Tensor[], string[], number[]][] = [
      ["alone", (x, u) => [ops.sum(addableIdentity(x, u))], ["dense"], [1, 1, 1, 1, 1, 1]],
      [
        "beside a plain gradient",
        (x, u) => [ops.add(ops.sum(ops.scale(x, 2)), ops.sum(addableIdentity(x, u)))],
        ["addInto"],
        [3, 3, 3, 3, 3, 3],
      ],
      [
        "twice",
        (x, u) => [ops.add(ops.sum(addableIdentity(x, u)), ops.sum(addableIdentity(x, u)))],
        ["dense", "addInto"],
        [2, 2, 2, 2, 2, 2],
      ],
      [
        "into the leaf's gradient of an earlier backward",
        (x, u) => [ops.sum(ops.scale(x, 2)), ops.sum(addableIdentity(x, u))],
        ["addInto"],
        [3, 3, 3, 3, 3, 3],
      ],
    ];
    for (const [what, losses, expectUsed, expectGrad] of cases) {
      const used: string[] = [];
      const g = await tidy(dev, async () => {
        const x = Tensor.fromArray(dev, x0).requireGrad();
        for (const loss of losses(x, used)) await backward(loss);
        const g = await x.grad!.read();
        x.grad!.dispose();
        return g;
      });
      assertClose(g, expectGrad, { what });
      if (used.join() !== expectUsed.join()) {
        throw new Error(
          `${what}: the engine used ${used.join(", ")}, expected ${expectUsed.join(", ")}`,
        );
      }
    }
  },
);

Deno.test(
  "zeroing runs a fill kernel exactly where clearBuffer is slow (Dawn on OpenGL)",
  gpuTest,
  async () => {
    const t = Tensor.fromArray(dev, randomArray(4096, 11));
    const [, keys] = await withKernelKeys(dev, async () => {
      ops.fillInPlace(t, 0);
      await dev.sync();
    });
    const desc = `${dev.adapter.info.description} ${dev.adapter.info.device}`;
    const glDawn = dev.backend === "dawn" && /OpenGL/i.test(desc);
    if (dev.clearsWithKernel !== glDawn) {
      throw new Error(
        `clearsWithKernel on ${dev.backend} (${desc})`,
      );
    }
    const expected = glDawn ? ["fill:v4"] : [];
    if (keys.join() !== expected.join()) {
      throw new Error(`zeroing on ${dev.backend} dispatched [${keys}], expected [${expected}]`);
    }
    assertClose(await t.read(), new Float32Array(4096), { what: "zeroed" });
    t.dispose();
  },
);

Deno.test("fillInPlace zeroes and fills dirty tensors of any length", gpuTest, async () => {
  for (const n of [1, 7, 64, 1001, 4096]) {
    await tidy(dev, async () => {
      const t = Tensor.fromArray(dev, randomArray(n, n));
      assertClose(await ops.fillInPlace(t, 0).read(), new Float32Array(n), { what: `zeros(${n})` });
      assertClose(await ops.fillInPlace(t, 2.5).read(), new Float32Array(n).fill(2.5), {
        what: `fill(${n})`,
      });
      const i = Tensor.fromArray(dev, Int32Array.from({ length: n }, (_, k) => k), [n]);
      assertClose(await ops.fillInPlace(i, -3).readInt(), new Int32Array(n).fill(-3), {
        what: `i32 fill(${n})`,
      });
    });
  }
});
