/**
 * The tied LM head fused with its cross-entropy, for vocabulary tables of any
 * size. `logits = hidden·tableᵀ (+ bias)` is computed in vocabulary chunks, each
 * small enough that its rows of the table and its logits fit one storage
 * binding (GPT-2's f32 table alone is 154 MB, over the common 128 MiB binding)
 * and, on software adapters, within the texture their matmuls read the table
 * through (16,384 rows on lavapipe: GPT-2's 50,304 rows go in four chunks),
 * and the loss combines the chunks the way the vocabulary-parallel loss
 * combines ranks: the per-row max, then Σexp and the target logit. Under tensor
 * parallelism the same statistics are then all-reduced across ranks.
 * @module
 */

import {
  crossEntropyBackwardKernel,
  crossEntropyBackwardTextureKernel,
  crossEntropyDispatch,
} from "../../kernels/crossentropy.ts";
import { type MatmulShape, textureBSize } from "../../kernels/matmul.ts";
import { STREAM_ROW_TEXELS } from "../../kernels/texture.ts";
import { record } from "../autograd.ts";
import type { Device } from "../device.ts";
import { assertF32, disposeOnThrow, fmtShape, Tensor } from "../tensor.ts";
import { TokenIds } from "../token_ids.ts";
import { subBinding, type Window, windows } from "../windows.ts";
import { columnSum, mapRaw, zeros } from "./raw.ts";
import { dispatchMatmul, linear, matmulOptions } from "./matmul.ts";
import { countTargets, lossDivisor } from "./nn.ts";
import { shardedRowStatistics, type VocabGroup } from "./parallel_xent.ts";
import { reduceInto } from "./reduce.ts";
import { dispatchRowsFrom } from "./rows.ts";
import { concat } from "./shape.ts";

/** Where the table sits in the vocabulary, and how the loss is normalised. */
export interface LmHeadLoss {
  /** First global vocabulary row of `table` (non-zero for a tensor-parallel shard). */
  start?: number;
  /** Global vocabulary entries that count (the rest is padding). */
  validVocab: number;
  /** Divides the summed loss instead of the count of targets (data parallelism). */
  normalizer?: number;
  /** Output bias over the vocabulary (BERT's decoder bias), `[rows]`. */
  bias?: Tensor;
  /** The vocabulary-parallel group; absent for a whole table. */
  group?: VocabGroup;
}

/**
 * The vocabulary chunks `[firstRow, rows]` of a `[vocab, hidden]` table for `m`
 * rows of hidden states: each chunk's table rows and `[m, rows]` logits fit
 * one binding, and every chunk starts at a multiple of 64 rows (aligned).
 * With `texture` set, on an adapter whose matmul reads B through a texture
 * (software adapters, kernels/matmul.ts's `textureBSize`), each chunk's table
 * rows also fit one stream texture (kernels/texture.ts), so that both products
 * whose B is the table's chunk (the logits `x·W_kᵀ` and the input gradient
 * `dl·W_k`) may read it through the texture instead of the storage buffer.
 */
export function vocabChunks(
  device: Device,
  vocab: number,
  hidden: number,
  m: number,
  texture = false,
): Window[] {
  const maxFloats = device.maxBindingBytes / 4;
  const fit = Math.floor(Math.min(maxFloats / hidden, maxFloats / Math.max(m, 1)) / 64) * 64;
  if (fit < 64) {
    throw new Error(
      `LM head: ${m} rows of hidden size ${hidden} leave no vocabulary chunk within one ` +
        `storage binding (${device.maxBindingBytes} bytes); ` +
        "lower --micro-batch-size or --seq-length",
    );
  }
  return windows(vocab, texture ? Math.min(fit, textureRows(device, hidden, m)) : fit);
}

/**
 * The most table rows (a multiple of 64) that let the LM head's products with
 * the table as B read it through a texture, or Infinity when they cannot on
 * this adapter (a GPU, a hidden size not a multiple of 4, or not even 64 rows
 * of `hidden` in a stream texture): the texture then does not limit the chunks.
 */
function textureRows(device: Device, hidden: number, m: number): number {
  const opts = matmulOptions(device);
  const floats = 4 * STREAM_ROW_TEXELS * (opts.maxTextureDimension ?? 0); // one stream texture
  const rows = Math.floor(floats / hidden / 64) * 64;
  if (rows < 64) return Infinity;
  // B = W_k, `[rows, hidden]`: n rows of hidden/4 texels (transposed, the logits)
  // or k rows of hidden/4 texels (the input gradient).
  const logits = mm(m, rows, hidden, false, true, false);
  const dx = mm(m, hidden, rows, false, false, true);
  return textureBSize(logits, opts) || textureBSize(dx, opts) ? rows : Infinity;
}

function chunkProduct(
  device: Device,
  x: Tensor,
  table: Tensor,
  bias: Tensor | undefined,
  [r0, n]: Window,
): Tensor {
  const [m, h] = x.shape;
  const out = Tensor.empty(device, [m, n]);
  const shape: MatmulShape = {
    batch: 1,
    M: m,
    N: n,
    K: h,
    transA: false,
    transB: true,
    batchA: false,
    batchB: false,
    bias: !!bias,
  };
  return dispatchMatmul(
    device,
    shape,
    x.binding,
    subBinding(table.binding, r0 * h, n * h),
    bias && subBinding(bias.binding, r0, n),
    out.binding,
    out,
  );
}

function checkOperands(hidden: Tensor, table: Tensor, bias?: Tensor): number {
  assertF32("LM head", hidden, table, bias);
  const h = hidden.shape[hidden.rank - 1];
  if (table.rank !== 2 || table.shape[1] !== h) {
    throw new Error(
      `LM head: hidden states ${fmtShape(hidden.shape)} do not match the table ${
        fmtShape(table.shape)
      }`,
    );
  }
  if (bias && bias.size !== table.shape[0]) {
    throw new Error(`LM head: bias ${fmtShape(bias.shape)} vs table ${fmtShape(table.shape)}`);
  }
  return h;
}

/**
 * Mean cross-entropy of `hidden·tableᵀ (+ bias)` against global `targets`
 * (`TokenIds`, one per row of `hidden`, negative = ignored), with autograd into
 * `hidden`, `table` and `bias`. The full logits are never formed in one
 * tensor; under tensor parallelism (`group` given) only three floats per row
 * and rank cross ranks, in one all-reduce, as in {@link vocabParallelCrossEntropy}.
 */
export async function lmHeadCrossEntropy(
  hidden: Tensor,
  table: Tensor,
  targetIds: TokenIds,
  opts: LmHeadLoss,
): Promise<Tensor> {
  const targets = TokenIds.check("LM head", targetIds, "targets", hidden.device).tensor;
  const device = hidden.device;
  const h = checkOperands(hidden, table, opts.bias);
  const m = hidden.size / h;
  if (targets.dtype !== "i32" || targets.size !== m) {
    throw new Error(
      `LM head: ${m} rows of hidden states ${fmtShape(hidden.shape)} vs targets ${
        fmtShape(targets.shape)
      } (${targets.dtype})`,
    );
  }
  const start = opts.start ?? 0;
  const count = countTargets(targetIds, opts.validVocab, "LM head");
  const x = hidden.view([m, h]);
  const chunks = vocabChunks(device, table.shape[0], h, m, true);
  const logits = chunks.map((c) => chunkProduct(device, x, table, opts.bias, c));
  const params = chunks.map(([r0, n]) => {
    const valid = Math.max(0, Math.min(n, opts.validVocab - start - r0));
    return crossEntropyDispatch(m, n, valid, start + r0).params;
  });
  // The row max over every chunk, Σexp and the target logit, combined over the ranks.
  const { rowLoss, lse } = await shardedRowStatistics(
    logits.map((l, k) => ({ logits: l, params: params[k] })),
    targets,
    opts.group,
  );
  const total = Tensor.empty(device, [1]);
  reduceInto(rowLoss, "sum", total);
  rowLoss.dispose();
  const inv = 1 / lossDivisor("LM head", opts.normalizer, count);
  const loss = mapRaw("scale", total, undefined, inv, 0);
  total.dispose();
  const bias = opts.bias;
  const inputs = bias ? [hidden, table, bias] : [hidden, table];
  hidden.keepF32(); // the backward recomputes the logits beside f32 statistics
  const res = record(loss, "lmHeadCrossEntropy", inputs, (g) => {
    const gRows = mapRaw("axpby", zeros(device, [m]), g, 0, inv);
    const dx = hidden.requiresGrad ? Tensor.empty(device, [m, h]) : null;
    const dw = table.requiresGrad ? Tensor.empty(device, table.shape) : null;
    const db = bias?.requiresGrad ? Tensor.empty(device, bias.shape) : null;
    chunks.forEach(([r0, n], k) => {
      const dl = Tensor.empty(device, [m, n]);
      dispatchRowsFrom(
        device,
        { plain: crossEntropyBackwardKernel(), texture: crossEntropyBackwardTextureKernel() },
        [logits[k]],
        [targets.binding, lse.binding, gRows.binding, dl.binding],
        params[k],
        m,
        n,
      );
      const rows = subBinding(table.binding, r0 * h, n * h);
      if (dx) {
        // dx (+)= dl · W_k, summed chunk by chunk: the chunks group the sum over
        // the vocabulary (as the softmax's Σexp), which changes only f32 rounding
        const shape = mm(m, h, n, false, false, k > 0);
        dispatchMatmul(device, shape, dl.binding, rows, undefined, dx.binding, null);
      }
      if (dw) {
        // dW_k = dlᵀ · x, written straight into its rows of dW
        const shape = mm(n, h, m, true, false, false);
        const dst = subBinding(dw.binding, r0 * h, n * h);
        dispatchMatmul(device, shape, dl.binding, x.binding, undefined, dst, null);
      }
      if (db) {
        const part = columnSum(dl, m, n, [n]);
        device.copy(part.buffer, 0, db.buffer, r0 * 4, n * 4);
        part.dispose();
      }
      dl.dispose();
    });
    gRows.dispose();
    return [dx?.view(hidden.shape) ?? null, dw, ...(bias ? [db] : [])];
  });
  if (!res.node) {
    for (const l of logits) l.dispose();
    lse.dispose();
    x.dispose();
  }
  return res;
}

function mm(
  M: number,
  N: number,
  K: number,
  transA: boolean,
  transB: boolean,
  accumulate: boolean,
): MatmulShape {
  return {
    batch: 1,
    M,
    N,
    K,
    transA,
    transB,
    batchA: false,
    batchB: false,
    bias: false,
    accumulate,
  };
}

/**
 * The full logits `hidden·tableᵀ (+ bias)` of this table, `[..., rows]`, for
 * generation and evaluation. A table within one binding goes through
 * `linear` (with autograd); a larger one is multiplied chunk by chunk and the
 * chunks concatenated, without autograd. The chunks are binding-sized only,
 * not texture-sized: generation multiplies a few rows, for which copying the
 * table into a texture first would cost more than reading it from the buffer.
 */
export function lmHeadLogits(hidden: Tensor, table: Tensor, bias?: Tensor): Tensor {
  return disposeOnThrow(hidden.device, () => {
    const device = hidden.device;
    const h = checkOperands(hidden, table, bias);
    const m = hidden.size / h;
    const chunks = vocabChunks(device, table.shape[0], h, m);
    if (chunks.length === 1) return linear(hidden, table, bias);
    const x = hidden.view([m, h]);
    const parts = chunks.map((c) => chunkProduct(device, x, table, bias, c));
    const vocab = table.shape[0];
    let all: Tensor;
    if (m * vocab * 4 <= device.maxBindingBytes) {
      all = device.noGrad(() => concat(parts, 1));
    } else {
      // Logits larger than one binding: place each chunk's rows by buffer copies.
      all = Tensor.empty(device, [m, vocab]);
      chunks.forEach(([r0, n], k) => {
        for (let r = 0; r < m; r++) {
          device.copy(parts[k].buffer, r * n * 4, all.buffer, (r * vocab + r0) * 4, n * 4);
        }
      });
    }
    for (const p of parts) p.dispose();
    x.dispose();
    return all.view([...hidden.shape.slice(0, -1), vocab]);
  });
}
