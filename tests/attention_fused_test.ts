/**
 * Fused attention (`ops.attention`, kernels/attention.ts) against the unfused
 * path (`ops.attentionUnfused`: strided q/k/v copies, matmul, masked softmax,
 * dropout, matmul, merge), forward and the gradient through `qkv`, and against
 * central finite differences on a tiny case.
 *
 * Tolerances: both sides are float32 with different summation orders; the
 * forward agrees within atol 2e-5 + rtol 1e-4 and the gradients within
 * atol 1e-4 + rtol 1e-3 (inputs in [-1, 1]; with dropout the kept values are
 * scaled by 1/(1 − p), so the same bounds hold). The dropout masks are the
 * same draws (same Philox counters), so dropout on compares just as tightly.
 * Finite differences: |analytic − numeric| ≤ 2e-3 + 2e-2·|numeric| (h = 1e-2).
 * Whole models (GPT causal, BERT padding, dropout 0.1) with `fusedAttention`
 * on and off: hidden states within atol 1e-5 + rtol 1e-4, every parameter
 * gradient within atol 1e-5 + rtol 1e-3.
 */

import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { parseFlags, UsageError } from "../cli/flags.ts";
import { gptConfigOf, trainArgsFromFlags } from "../cli/train_args.ts";
import { validateTrainFlags } from "../cli/train_config.ts";
import { TRAIN_FLAGS } from "../cli/train_flags.ts";
import { backward } from "../core/autograd.ts";
import { Device } from "../core/device.ts";
import * as ops from "../core/ops/mod.ts";
import type { RngDraw } from "../core/rng.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  attentionDispatch,
  attentionForwardKernel,
} from "../kernels/attention.ts";
import { lazyKernel } from "../kernels/kernel.ts";
import { Bert } from "../models/bert.ts";
import { Gpt } from "../models/gpt.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import {
  assertClose,
  gpuTest,
  prng,
  randomArray,
  testBackend,
  testDevice,
  withTimeLimit,
} from "./helpers.ts";

const dev = await testDevice();

interface Case {
  B: number;
  T: number;
  nh: number;
  hd: number;
  mask: "causal" | "padding";
  p: number;
}

function opts(c: Case, keep: Tensor | undefined, draw: RngDraw): ops.AttentionOpts {
  return {
    numHeads: c.nh,
    headDim: c.hd,
    mask: c.mask,
    keep,
    dropout: c.p > 0 ? { p: c.p, draw } : undefined,
  };
}

/** The unfused attention (SelfAttention's path without fusion). */
function unfused(qkv: Tensor, c: Case, keep: Tensor | undefined, draw: RngDraw): Tensor {
  return ops.attentionUnfused(qkv, opts(c, keep, draw));
}

function fused(qkv: Tensor, c: Case, keep: Tensor | undefined, draw: RngDraw): Tensor {
  return ops.attention(qkv, opts(c, keep, draw));
}

/**
 * `[B, T]` keep mask: batch b pads its last `b + 1` positions (at least one
 * token stays), except that a fourth batch entry is all padding.
 */
function keepMask(B: number, T: number): Float32Array {
  const k = new Float32Array(B * T).fill(1);
  for (let b = 0; b < B; b++) {
    const first = b === 3 ? 0 : Math.max(1, T - 1 - b);
    for (let t = first; t < T; t++) k[b * T + t] = 0;
  }
  return k;
}

async function compare(c: Case, seed: number): Promise<void> {
  const { B, T, nh, hd } = c;
  const what = `B${B} T${T} nh${nh} hd${hd} ${c.mask} p${c.p}`;
  await tidy(dev, async () => {
    const data = randomArray(B * T * 3 * nh * hd, seed);
    const R = Tensor.fromArray(dev, randomArray(B * T * nh * hd, seed + 1), [B, T, nh * hd]);
    const keep = c.mask === "padding" ? Tensor.fromArray(dev, keepMask(B, T), [B, T]) : undefined;
    const draw = { seed: 1234 + seed, offset: 7 };
    const run = async (f: typeof fused) => {
      const qkv = Tensor.fromArray(dev, data, [B, T, 3 * nh * hd]).requireGrad();
      const out = f(qkv, c, keep, draw);
      await backward(ops.sum(ops.mul(out, R)));
      return [await out.read(), await qkv.grad!.read()];
    };
    const [fo, fg] = await run(fused);
    const [uo, ug] = await run(unfused);
    assertClose(fo, uo, { atol: 2e-5, rtol: 1e-4, what: `forward ${what}` });
    assertClose(fg, ug, { atol: 1e-4, rtol: 1e-3, what: `dqkv ${what}` });
  });
}

Deno.test(
  "fused attention = unfused, causal, hd 16/32/64, dropout off and on, short T",
  withTimeLimit(300),
  async () => {
    let seed = 1;
    // Each head size with dropout off and on across the two masks (a kernel
    // per specialization; the whole cross product only adds compile time).
    for (const [hd, p] of [[16, 0], [16, 0.3], [32, 0.3], [64, 0]]) {
      await compare({ B: 2, T: 13, nh: 2, hd, mask: "causal", p }, seed++);
    }
    // T not a multiple of the tile (32 rows) nor of the key step, one head, one batch.
    await compare({ B: 1, T: 21, nh: 1, hd: 16, mask: "causal", p: 0.1 }, seed++);
    await compare({ B: 3, T: 1, nh: 3, hd: 4, mask: "causal", p: 0 }, seed++);
  },
);

Deno.test(
  "fused attention = unfused, padding, hd 16/32/64, dropout off and on, an all-padding row",
  withTimeLimit(300),
  async () => {
    let seed = 100;
    for (const [hd, p] of [[16, 0.3], [32, 0], [64, 0.3]]) {
      await compare({ B: 3, T: 11, nh: 2, hd, mask: "padding", p }, seed++);
    }
    // The last sequence all padding: its queries see no key (zeros, as unfused).
    await compare({ B: 4, T: 9, nh: 1, hd: 16, mask: "padding", p: 0.3 }, seed++);
    await compare({ B: 2, T: 35, nh: 1, hd: 8, mask: "padding", p: 0.2 }, seed++);
  },
);

Deno.test(
  "fused attention = unfused at head size 256 (two rows per invocation, several tiles)",
  withTimeLimit(300),
  async () => {
    // At 256 the key-side kernel owns 2 keys per invocation, not 4: 4 rows of
    // dK and dV accumulators would pass WGSL's 8,192 bytes of function variables.
    // (One form: its three kernels take ~30 s to compile cold on llvmpipe.)
    await compare({ B: 2, T: 37, nh: 2, hd: 256, mask: "causal", p: 0.2 }, 300);
  },
);

Deno.test(
  "fused attention: longer sequence (several tiles) agrees",
  withTimeLimit(300),
  async () => {
    await compare({ B: 1, T: 100, nh: 2, hd: 32, mask: "causal", p: 0.1 }, 200);
    await compare({ B: 2, T: 67, nh: 2, hd: 32, mask: "padding", p: 0 }, 201);
  },
);

Deno.test("fused attention: gradient against finite differences", withTimeLimit(300), async () => {
  const h = 1e-2;
  for (
    const c of [
      { B: 1, T: 5, nh: 2, hd: 4, mask: "causal", p: 0.25 },
      { B: 2, T: 3, nh: 1, hd: 8, mask: "padding", p: 0 },
    ] as Case[]
  ) {
    await tidy(dev, async () => {
      const { B, T, nh, hd } = c;
      const data = randomArray(B * T * 3 * nh * hd, 300);
      const R = randomArray(B * T * nh * hd, 301);
      const tR = Tensor.fromArray(dev, R, [B, T, nh * hd]);
      const keep = c.mask === "padding" ? Tensor.fromArray(dev, keepMask(B, T), [B, T]) : undefined;
      const draw = { seed: 5, offset: 2 };
      const qkv = Tensor.fromArray(dev, data, [B, T, 3 * nh * hd]).requireGrad();
      await backward(ops.sum(ops.mul(fused(qkv, c, keep, draw), tR)));
      const g = await qkv.grad!.read();
      const rnd = prng(11);
      for (let s = 0; s < 12; s++) {
        const idx = Math.floor(rnd() * data.length);
        const f = async (delta: number) => {
          const d = data.slice();
          d[idx] += delta;
          const out = await dev.noGrad(() =>
            fused(Tensor.fromArray(dev, d, [B, T, 3 * nh * hd]), c, keep, draw)
          ).read();
          return out.reduce((acc, v, i) => acc + v * R[i], 0);
        };
        const numeric = (await f(h) - await f(-h)) / (2 * h);
        const err = Math.abs(g[idx] - numeric);
        if (!(err <= 2e-3 + 2e-2 * Math.abs(numeric))) {
          throw new Error(
            `${c.mask}: d/dqkv[${idx}] analytic ${g[idx]} vs numeric ${numeric}`,
          );
        }
      }
    });
  }
});

Deno.test("lazyKernel (the fused attention kernels): WGSL generated once, when first read", () => {
  let calls = 0;
  const k = lazyKernel("lazy", () => `// ${++calls}`);
  assertEquals([k.key, calls], ["lazy", 0]);
  assertEquals([k.code, k.code, calls], ["// 1", "// 1", 1]);
  const spec = { mask: "causal", headDim: 32, dropout: false, textures: true } as const;
  assertEquals(attentionForwardKernel(spec).code.includes("@compute"), true);
});

Deno.test("fused attention: clear errors for bad inputs", gpuTest, () => {
  const qkv = Tensor.fromArray(dev, new Float32Array(2 * 3 * 24), [2, 3, 24]);
  const keep = Tensor.fromArray(dev, new Float32Array(6).fill(1), [2, 3]);
  assertThrows(() => ops.attention(qkv, { numHeads: 2, headDim: 8, mask: "causal" }), /qkv/);
  assertThrows(() => ops.attention(qkv, { numHeads: 4, headDim: 2, mask: "causal" }), /head size/);
  assertThrows(() => ops.attention(qkv, { numHeads: 2, headDim: 4, mask: "padding" }), /keep/);
  assertThrows(
    () =>
      ops.attention(qkv, {
        numHeads: 2,
        headDim: 4,
        mask: "padding",
        keep: keep.view([3, 2]),
      }),
    /does not fit/,
  );
  assertThrows(
    () => ops.attention(qkv, { numHeads: 2, headDim: 4, mask: "causal", keep }),
    /only for the padding/,
  );
  assertThrows(
    () =>
      ops.attention(qkv, {
        numHeads: 2,
        headDim: 4,
        mask: "causal",
        dropout: { p: 1, draw: { seed: 1, offset: 0 } },
      }),
    /dropout probability/,
  );
  assertEquals(ops.canFuseAttention(qkv, 4), true);
  assertEquals(ops.canFuseAttention(qkv, 6), false);
  qkv.dispose();
  keep.dispose();
});

Deno.test(
  "fused attention: qkv past one storage binding is refused (callers fall back)",
  gpuTest,
  async () => {
    const capped = await Device.create({ backend: testBackend(), maxBindingBytes: 64 * 1024 });
    try {
      const qkv = Tensor.fromArray(capped, new Float32Array(2 * 64 * 192), [2, 64, 192]);
      assertEquals(ops.canFuseAttention(qkv, 16), false);
      assertThrows(
        () => ops.attention(qkv, { numHeads: 4, headDim: 16, mask: "causal" }),
        /exceeds one storage binding/,
      );
      qkv.dispose();
    } finally {
      await capped.close();
    }
  },
);

/** Hidden states and every parameter gradient of Σ hidden·R. */
async function modelGrads(
  model: Gpt | Bert,
  hidden: () => Promise<Tensor>,
): Promise<{ h: Float32Array; grads: Map<string, Float32Array> }> {
  return await tidy(dev, async () => {
    const h = await hidden();
    const R = Tensor.fromArray(dev, randomArray(h.size, 77), h.shape);
    await backward(ops.sum(ops.mul(h, R)));
    const grads = new Map<string, Float32Array>();
    for (const [n, p] of model.namedParams()) {
      if (p.tensor.grad) grads.set(n, await p.tensor.grad.read());
    }
    return { h: await h.read(), grads };
  });
}

function compareModels(
  a: { h: Float32Array; grads: Map<string, Float32Array> },
  b: { h: Float32Array; grads: Map<string, Float32Array> },
  what: string,
): void {
  assertClose(a.h, b.h, { atol: 1e-5, rtol: 1e-4, what: `${what} hidden` });
  if (a.grads.size !== b.grads.size || a.grads.size < 10) {
    throw new Error(`${what}: ${a.grads.size} vs ${b.grads.size} parameter gradients`);
  }
  for (const [n, g] of b.grads) {
    assertClose(a.grads.get(n)!, g, { atol: 1e-5, rtol: 1e-3, what: `${what} grad of ${n}` });
  }
}

Deno.test(
  "GPT and BERT: fused attention = unfused (dropout 0.1, same draws)",
  withTimeLimit(300),
  async () => {
    const [B, T] = [2, 11];
    const r = prng(3);
    const ids = Int32Array.from({ length: B * T }, () => Math.floor(r() * 40));
    const common = {
      vocabSize: 40,
      numLayers: 2,
      hiddenSize: 32,
      numHeads: 2,
      maxPositions: 16,
      hiddenDropout: 0.1,
      attentionDropout: 0.1,
    };
    const gpt = async (fusedAttention: boolean) => {
      const m = Gpt.serial(dev, { ...common, fusedAttention }, 5);
      const res = await modelGrads(m, () => m.hidden(TokenIds.fromHost(dev, ids, [B, T])));
      m.dispose();
      return res;
    };
    compareModels(await gpt(true), await gpt(false), "GPT");
    const keep = Tensor.fromArray(
      dev,
      Float32Array.from({ length: B * T }, (_, i) => +(i < T || (i % T) < T - 4)),
      [B, T],
    );
    const bert = async (fusedAttention: boolean) => {
      const m = new Bert(TensorParallelLayers.single(dev), { ...common, fusedAttention }, {
        seed: 9,
      });
      const res = await modelGrads(m, () =>
        m.encode(
          TokenIds.fromHost(dev, ids, [B, T]),
          TokenIds.fromHost(dev, new Int32Array(B * T), [B, T]),
          keep,
        ));
      m.dispose();
      return res;
    };
    compareModels(await bert(true), await bert(false), "BERT");
    keep.dispose();
  },
);

Deno.test("CLI: --use-flash-attn is the default, --no-flash-attn turns it off", () => {
  const cfg = (args: string[]) =>
    gptConfigOf(trainArgsFromFlags(parseFlags(args, TRAIN_FLAGS)).model, 256);
  assertEquals(cfg([]).fusedAttention, true);
  assertEquals(cfg(["--use-flash-attn"]).fusedAttention, true);
  assertEquals(cfg(["--no-flash-attn"]).fusedAttention, false);
  assertThrows(
    () => validateTrainFlags(parseFlags(["--use-flash-attn", "--no-flash-attn"], TRAIN_FLAGS), 1),
    (e: unknown) => e instanceof UsageError && /not both/.test((e as Error).message),
  );
});

Deno.test(
  "fused attention: textures or buffers, 8 or 16 lanes per workgroup: the same bits",
  withTimeLimit(300),
  async () => {
    // CPU adapters read through textures (kernels/texture.ts), GPUs from the
    // buffers; both kernel forms run here on one adapter and must agree exactly.
    // The workgroup size (16 on llvmpipe at 512 bits) only moves rows between
    // invocations, so it must not change a bit either.
    const B = 2, T = 37, nh = 2, hd = 16, hl = nh * hd;
    const bufOf = (data: Float32Array) => Tensor.fromArray(dev, data, [data.length]);
    for (const mask of ["causal", "padding"] as const) {
      const qkv = bufOf(randomArray(B * T * 3 * hl, 31));
      const dout = bufOf(randomArray(B * T * hl, 32));
      const keep = bufOf(keepMask(B, T));
      const results: Float32Array[][] = [];
      const forms = [[false, 8], [true, 8], [true, 16], [false, 16]] as const;
      for (const [textures, lanes] of forms) {
        const spec = { mask, headDim: hd, dropout: true, textures, lanes };
        const d = attentionDispatch(spec, B, T, nh, { p: 0.2, seed: 99, offset: 3 });
        const out = Tensor.empty(dev, [B * T * hl]);
        const lse = Tensor.empty(dev, [B * nh * T]);
        const dsum = Tensor.empty(dev, [B * nh * T]);
        const dqkv = Tensor.empty(dev, [B * T * 3 * hl]);
        const m = mask === "padding" ? [keep.binding] : [];
        // One ask for both textures: a later ask could refill qkv's.
        const [qkvIn, doutIn] = textures
          ? dev.streamOperands([
            { binding: qkv.binding, vec4s: qkv.size / 4 },
            { binding: dout.binding, vec4s: dout.size / 4 },
          ]).map((view) => ({ view }))
          : [qkv.binding, dout.binding];
        dev.dispatch(
          attentionForwardKernel(spec),
          [qkvIn, ...m, out.binding, lse.binding],
          d.params,
          d.workgroups,
        );
        dev.dispatch(
          attentionBackwardQueryKernel(spec),
          [qkvIn, ...m, out.binding, dout.binding, lse.binding, dsum.binding, dqkv.binding],
          d.params,
          d.workgroups,
        );
        dev.dispatch(
          attentionBackwardKeyKernel(spec),
          [qkvIn, ...m, doutIn, lse.binding, dsum.binding, dqkv.binding],
          d.params,
          d.workgroups,
        );
        results.push(await Promise.all([out.read(), lse.read(), dqkv.read()]));
        for (const t of [out, lse, dsum, dqkv]) t.dispose();
      }
      ["out", "lse", "dqkv"].forEach((name, i) => {
        results.slice(1).forEach((r, f) => {
          const [a, b] = [results[0][i], r[i]];
          const same = a.every((v, j) => Object.is(v, b[j]));
          const form = `textures ${forms[f + 1][0]}, ${forms[f + 1][1]} lanes`;
          assertEquals(
            same,
            true,
            `${mask}: ${name} differs between buffers (8 lanes) and ${form}`,
          );
        });
      });
      for (const t of [qkv, dout, keep]) t.dispose();
    }
  },
);
