/**
 * The correctness contract of tensor parallelism for GPT: the same config and
 * seed trained 5 steps with TP = 1, 2 and 4 (and TP × DP) gives the same losses
 * at every step and the same (gathered) weights. Odd sizes where the layers
 * allow: hidden 20 (head dim 5), MLP 52 = 13·4, vocabulary 113 padded to 128,
 * batch 6, sequence 7. Hidden dropout is on (identical masks across a TP group);
 * attention dropout is off because its masks are per TP rank by design.
 * Tolerances: losses 1e-5 relative; weights 1e-4 absolute after 5 Adam steps.
 */

import { assertClose, gpuTest } from "./helpers.ts";
import { joinShards, runSpec, TP_TEST_MODEL } from "./tp_harness.ts";
import type { TpRunSpec } from "./tp_worker.ts";

const base: TpRunSpec = {
  tp: 1,
  config: TP_TEST_MODEL,
  batch: 6,
  seq: 7,
  steps: 5,
  seed: 11,
};

const serial = await runSpec(base, 1);
const serialW = joinShards(serial);

for (const tp of [2, 4]) {
  Deno.test(
    `GPT TP=${tp} equals TP=1: losses every step and gathered weights`,
    gpuTest,
    async () => {
      const res = await runSpec({ ...base, tp }, tp);
      for (const r of res) {
        assertClose(r.losses, serial[0].losses, { rtol: 1e-5, what: `rank ${r.rank} losses` });
      }
      for (const r of res) {
        assertClose(r.norms, serial[0].norms, { rtol: 1e-4, what: `rank ${r.rank} grad norms` });
      }
      const w = joinShards(res);
      for (const [name, ref] of serialW) {
        assertClose(w.get(name)!, ref, { rtol: 0, atol: 1e-4, what: name });
      }
    },
  );
}

Deno.test(
  "GPT DP=2 with global batch B equals DP=1 with batch B; TP=2 × DP=2 too",
  gpuTest,
  async () => {
    const noDrop = { ...base, config: { ...base.config, hiddenDropout: 0 } };
    const ref = await runSpec(noDrop, 1);
    const refW = joinShards(ref);
    for (const [tp, world] of [[1, 2], [2, 4]]) {
      const res = await runSpec({ ...noDrop, tp }, world);
      for (const r of res) {
        assertClose(r.losses, ref[0].losses, {
          rtol: 1e-5,
          what: `tp ${tp} rank ${r.rank} losses`,
        });
      }
      const w = joinShards(res);
      for (const [name, x] of refW) {
        assertClose(w.get(name)!, x, {
          rtol: 0,
          atol: 1e-4,
          what: `tp ${tp} ${name}`,
        });
      }
    }
  },
);
