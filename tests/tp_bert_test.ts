/**
 * The TP contract for BERT (pre-LN and post-LN): TP = 2 and 4 equal TP = 1 over
 * 5 steps (losses at every step, gathered weights), and DP = 2 equals DP = 1.
 * Odd sizes: hidden 20, MLP 52, vocabulary 113 padded to 128, batch 6, seq 7
 * with padded rows. Tolerances as for GPT: losses 1e-5 relative, weights 1e-4.
 * Activation recomputation changes nothing, at TP = 1 and 2.
 */

import { assertClose, gpuTest } from "./helpers.ts";
import { joinShards, runSpec, TP_TEST_MODEL } from "./tp_harness.ts";
import type { TpRunSpec } from "./tp_worker.ts";

const base: TpRunSpec = {
  model: "bert",
  tp: 1,
  config: TP_TEST_MODEL,
  batch: 6,
  seq: 7,
  steps: 5,
  seed: 13,
};

for (const post of [false, true]) {
  Deno.test(
    `BERT (${post ? "post" : "pre"}-LN) TP=2, TP=4 equal TP=1; DP=2 equals DP=1`,
    gpuTest,
    async () => {
      const spec = { ...base, postLayerNorm: post };
      const serial = await runSpec(spec, 1);
      const serialW = joinShards(serial);
      for (const tp of [2, 4]) {
        const res = await runSpec({ ...spec, tp }, tp);
        for (const r of res) {
          assertClose(r.losses, serial[0].losses, { rtol: 1e-5, what: `tp ${tp} rank ${r.rank}` });
        }
        const w = joinShards(res);
        for (const [name, ref] of serialW) {
          assertClose(w.get(name)!, ref, { rtol: 0, atol: 1e-4, what: name });
        }
      }
      const noDrop = { ...spec, config: { ...spec.config, hiddenDropout: 0 } };
      const ref = await runSpec(noDrop, 1);
      const dp = await runSpec(noDrop, 2);
      for (const r of dp) {
        assertClose(r.losses, ref[0].losses, { rtol: 1e-5, what: `dp rank ${r.rank}` });
      }
    },
  );
}

Deno.test(
  "BERT with activation recomputation equals BERT without (dropout on; pre- and post-LN, TP=1 and TP=2)",
  gpuTest,
  async () => {
    for (const post of [false, true]) {
      for (const tp of [1, 2]) {
        // Attention dropout draws per-rank masks, so each TP size is its own reference.
        const spec = {
          ...base,
          tp,
          steps: 3,
          postLayerNorm: post,
          config: { ...base.config, attentionDropout: 0.1 },
        };
        const plain = await runSpec(spec, tp);
        const res = await runSpec({
          ...spec,
          config: { ...spec.config, recomputeActivations: true },
        }, tp);
        const what = `${post ? "post" : "pre"}-LN TP=${tp}`;
        for (const [i, r] of res.entries()) {
          assertClose(r.losses, plain[i].losses, { rtol: 1e-5, what: `${what} rank ${r.rank}` });
        }
        const w = joinShards(res);
        for (const [name, ref] of joinShards(plain)) {
          assertClose(w.get(name)!, ref, { rtol: 0, atol: 1e-5, what: `${what} ${name}` });
        }
      }
    }
  },
);
