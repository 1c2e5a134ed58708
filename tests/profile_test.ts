/**
 * `deno task profile`: on a tiny GPT, the counts are consistent (values, not
 * timings): every dispatch is attributed to a kernel, the family shares sum to
 * 100%, a training step has exactly one submit and one host readback (loss and
 * the clipping coefficient with the gradient norm: 16 bytes), every parameter
 * tensor updated once by AdamW and one squared-norm dispatch per tensor, and the same kernels are
 * dispatched the same number of times under both timing methods and both
 * backends; at TP=2 (one Worker per rank, or one process each) both ranks run the same kernels
 * (the gradient norm included) and each sends
 * the tensor-parallel bytes the model implies, its time in collectives split
 * into waiting for the other rank and exchanging.
 * @module
 */

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { familyOf, formatProfile } from "../cli/profile.ts";
import type { Profile } from "../cli/profile.ts";
import { runCli, TINY_MODEL_FLAGS } from "./cli_helpers.ts";
import { replayRepeats } from "../core/profiler.ts";
import { splitCommWaits } from "../models/parallel/hooks.ts";
import { tempDir } from "./temp_dir.ts";
import { fileURLToPath as fromFileUrl, pathToFileURL as toFileUrl } from "node:url";

/** 1 layer: 2 embeddings + 12 tensors per layer + the final layer norm's 2. */
const PARAM_TENSORS = 16;

async function profile(backend: string, timing: string): Promise<Profile> {
  const r = await runCli(
    "cli/profile.ts",
    [
      ...TINY_MODEL_FLAGS,
      "--backend",
      backend,
      "--timing",
      timing,
      "--steps",
      "2",
      "--warmup",
      "1",
      "--hidden-dropout",
      "0",
      "--attention-dropout",
      "0",
      "--json",
    ],
  );
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Profile;
}

/** The gradient norm's first pass per tensor: the buffer form, or (CPU adapters, whole vec4s) the stream-texture form. */
const SUMSQ = "reduce:sumsq:sq";
const SUMSQ_TEX = "reduce:sumsq:sq:tex";

function checkCounts(p: Profile): void {
  const s = p.perStep;
  assert(s.dispatches > 0);
  assertEquals(s.submits, 1, "one submit per step (at the readback)");
  assertEquals(s.hostSyncs, 1, "one host readback per step");
  assertEquals(s.bytesRead, 16, "loss (4 bytes) + clip coefficient, norm, skip flag (12)");
  // After a warm-up step, dispatches reuse bind groups made in an earlier step
  // (more of them as the pool's assignment of buffers settles over steps).
  assert(s.bindGroups < s.dispatches, `${s.bindGroups} new bind groups in ${s.dispatches}`);
  // The transfers' rows count copies and clears, not dispatches.
  const kernels = p.kernels.filter((k) => k.family !== "transfers");
  assertEquals(kernels.reduce((a, k) => a + k.dispatches, 0), s.dispatches);
  assertEquals(
    p.families.filter((f) => f.family !== "transfers").reduce((a, f) => a + f.dispatches, 0),
    s.dispatches,
  );
  const copies = p.kernels.find((k) => k.key === "transfer:texture")?.dispatches ?? 0;
  assertEquals(copies, s.textureCopies, "every copy into a stream texture has its row");
  assertAlmostEquals(p.families.reduce((a, f) => a + f.share, 0), 100, 1e-6);
  assertAlmostEquals(p.kernels.reduce((a, k) => a + k.share, 0), 100, 1e-6);
  assert(s.kernelMs > 0 && s.wallMs > 0 && p.noopDispatchMs >= 0);
  const per = (key: string) => p.kernels.find((k) => k.key === key)?.dispatches;
  // AdamW updates the small tensors in flat buckets (core/param_buckets.ts), one
  // dispatch each, and the others one by one; the gradient norm's first pass
  // runs once per bucket and per other tensor too.
  const updated = p.kernels.filter((k) => k.key.startsWith("adamw"))
    .reduce((a, k) => a + k.dispatches, 0);
  assert(updated >= 1 && updated < PARAM_TENSORS, `${updated} AdamW dispatches`);
  assertEquals((per(SUMSQ) ?? 0) + (per(SUMSQ_TEX) ?? 0), updated);
  assertEquals(per("clipcoef"), 1);
  for (const f of ["matmul", "attention", "layernorm", "softmax/xent", "optimizer"]) {
    assert(p.families.some((x) => x.family === f && x.dispatches > 0), f);
  }
  assert(!p.families.some((x) => x.family === "other"), "every kernel has a family");
  // At the update the weights, gradients and both AdamW moments are all live: 16 bytes a
  // parameter at least. The kept stream textures hold the weights and then the gradients
  // in one set: the model's size once at most, each texture whole rows of 16 KiB (a tied
  // table too large for one texture, which this model has not, adds its LM head's chunks).
  const { peakBufferBytes, keptTextureBytes } = p.memory;
  assert(peakBufferBytes >= 16 * p.model.params, `${peakBufferBytes} bytes of buffers at most`);
  assert(
    keptTextureBytes >= 0 && keptTextureBytes <= 4 * p.model.params + PARAM_TENSORS * 16384,
    `${keptTextureBytes} bytes of kept textures for ${p.model.params} parameters`,
  );
}

function assertAlmostEquals(a: number, b: number, tol: number): void {
  assert(Math.abs(a - b) <= tol, `${a} is not within ${tol} of ${b}`);
}

/**
 * Dispatches per kernel, AdamW left out (how many tensors one dispatch updates
 * is per adapter), and the zeroing: the transfers (clears; and copies into
 * stream textures, made on CPU adapters only) and the fill kernels that zero
 * on Dawn's OpenGL backend instead of a clear (`Device.clearsWithKernel`).
 */
const dispatchesByKernel = (p: Profile) =>
  Object.fromEntries(
    p.kernels.filter((k) =>
      !k.key.startsWith("adamw") && !k.key.startsWith("fill") && k.family !== "transfers"
    ).map((k) => [k.key, k.dispatches]).sort(),
  );

/** Dispatch counts with matmuls keyed without their bias (`bias0` and `bias1` summed). */
const anyBias = (counts: Record<string, number>) => {
  const out: Record<string, number> = {};
  for (const [k, n] of Object.entries(counts)) {
    const key = k.replace(/\/bias[01]\//, "/bias?/");
    out[key] = (out[key] ?? 0) + n;
  }
  return out;
};

Deno.test("sync timing repeats each dispatch where the wait is coarse", () => {
  assertEquals(replayRepeats(0), 1);
  assertEquals(replayRepeats(0.07), 1); // Dawn's empty submit and wait
  assertEquals(replayRepeats(11.5), 23); // Deno's WebGPU polls every ~10 ms
  assertEquals(replayRepeats(100), 32);
});

Deno.test("familyOf: attention is the batched matmuls and the masked softmax", () => {
  assertEquals(familyOf("matmul/cpu16x4x2/TN/a1l4/b1l4/c1k1/bias0/acc0"), "attention");
  assertEquals(familyOf("matmul/cpu32x4x8/NT/a0k4/b0k4/c1k1/bias1/acc0"), "matmul");
  assertEquals(familyOf("softmax:fwd:causal"), "attention");
  assertEquals(familyOf("xent:fwd"), "softmax/xent");
  assertEquals(familyOf("layernorm:bwd:perrow"), "layernorm");
  assertEquals(familyOf("adamw"), "optimizer");
  assertEquals(familyOf("copy:strided"), "elementwise");
  assertEquals(familyOf("transfer:texture"), "transfers");
  // every pass of the gradient norm's sum of squares, not only the first
  assertEquals(familyOf("reduce:sumsq:sq:tex"), "optimizer");
  assertEquals(familyOf("reduce:sumsq:id"), "optimizer");
  assertEquals(familyOf("reduce:sum:id"), "elementwise");
});

Deno.test("profile refuses what train refuses of the step's flags, and says its own timeout", async () => {
  for (
    const [flags, why] of [
      [["--use-flash-attn", "--no-flash-attn"], /give either --use-flash-attn or --no-flash-attn/],
      [["--overlap-tp-comm"], /--overlap-tp-comm overlaps the tensor-parallel all-reduce/],
    ] as const
  ) {
    const r = await runCli("cli/profile.ts", [...TINY_MODEL_FLAGS, ...flags]);
    assertEquals(r.code, 2, r.stderr);
    assert(why.test(r.stderr), r.stderr);
  }
  const help = await runCli("cli/profile.ts", ["--help"]);
  assert(/--dist-timeout[^\n]*\n?[^\n]*default 30m here/.test(help.stdout), help.stdout);
});

Deno.test("profile: counts agree across timing methods and backends", async () => {
  const deno = await profile("deno", "timestamp");
  assertEquals(deno.timing, "timestamp");
  checkCounts(deno);
  const denoSync = await profile("deno", "sync");
  checkCounts(denoSync);
  assertEquals(dispatchesByKernel(denoSync), dispatchesByKernel(deno));
  // The loss is the first measured step's, before sync mode's replays rerun AdamW.
  assertEquals(denoSync.loss, deno.loss);
  // timestamp-query times no copies: they are said to be untimed, not 0 ms
  const table = formatProfile(deno);
  assert(/\| transfers \| \d+ \| untimed \| – \|/.test(table), table);
  assert(/kernels' GPU time .* the copies and clears are counted, not timed/.test(table), table);
  assert(!/inside submit calls \(/.test(table), "no Dawn GL sentence on Deno's WebGPU");
  assert(/each replayed alone/.test(formatProfile(denoSync)));
  // sync mode takes an even share of the parts' excess over the whole step off each item
  assert(denoSync.syncExcessUs !== undefined && denoSync.syncExcessUs >= 0);
  assertEquals(deno.syncExcessUs, undefined);
  const dawn = await profile("dawn", "auto");
  checkCounts(dawn);
  assertEquals(dispatchesByKernel(dawn), dispatchesByKernel(deno));
});

Deno.test("profile --launcher procs: from a folder whose name has a space, run from another folder (the rank processes take URLs and the caller's folder)", async () => {
  // The module's folder has a space (a URL spells it %20), and the caller's folder is not the
  // repository's: the ranks were started by the module's URL path, in the repository's folder.
  await using temp = await tempDir({ prefix: "profile space-" });
  const repo = `${temp.path}/the repo`;
  await Deno.symlink(fromFileUrl(new URL("../", import.meta.url)), repo);
  const xdg = `${temp.path}/xdg`;
  await Deno.mkdir(xdg, { mode: 0o700 });
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-webgpu",
      toFileUrl(`${repo}/cli/profile.ts`).href,
      ...TINY_MODEL_FLAGS,
      ...["--tensor-model-parallel-size", "2", "--launcher", "procs", "--backend", "dawn"],
      ...["--steps", "1", "--warmup", "1", "--no-matmul-autotune", "--json"],
    ],
    cwd: temp.path,
    env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(240_000),
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, stderr);
  const ps = JSON.parse(new TextDecoder().decode(out.stdout)) as Profile[];
  assertEquals(ps.map((p) => [p.tp, p.rank]), [[2, 0], [2, 1]]);
});

for (const launcher of ["workers", "procs"]) {
  Deno.test(`profile: at TP=2 (${launcher}) both ranks dispatch the same kernels and send the f/g bytes`, async () => {
    const r = await runCli(
      "cli/profile.ts",
      [
        ...TINY_MODEL_FLAGS,
        "--tensor-model-parallel-size",
        "2",
        "--launcher",
        launcher,
        "--backend",
        "dawn",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--no-matmul-autotune",
        "--json",
      ],
    );
    assertEquals(r.code, 0, r.stderr);
    const ps = JSON.parse(r.stdout) as Profile[];
    assertEquals(ps.map((p) => [p.tp, p.rank]), [[2, 0], [2, 1]]);
    // The squared norms: rank 0 counts every tensor, rank 1 only the sharded ones
    // (the replicated ones are the same on both and counted once), packed from each
    // bucket: both ranks run the same passes.
    // Rank 0's row-parallel products add the bias in their epilogue (`bias1`), the
    // other ranks' leave it out (`bias0`): the same products either way.
    const [k0, k1] = ps.map((p) => anyBias(dispatchesByKernel(p)));
    const norms = (k: Record<string, number>) => (k[SUMSQ] ?? 0) + (k[SUMSQ_TEX] ?? 0);
    assert(norms(k0) >= 1 && norms(k0) < PARAM_TENSORS, `${norms(k0)} on rank 0`);
    assertEquals(norms(k1), norms(k0));
    // (A padded bucket's flat gradients are gathered into a buffer whose gaps were
    // zeroed once, on rank 0 only, as rank 1 packs the sharded members without gaps;
    // fills are left out above.)
    assertEquals(k1, k0);
    assertEquals(ps[1].loss, ps[0].loss);
    // per step: f/g all-reduces of a [batch, seq, hidden] f32 activation or gradient, 4 per
    // layer + the embedding's and the LM head's; the vocab-parallel cross-entropy's three
    // values per token and rank (one all-reduce of a slot per rank); the 4-byte squared
    // gradient norm. At TP=2 a ring sends B bytes of B.
    const [B, T, H, L, TP] = [2, 16, 32, 1, 2];
    const bytes = (4 * L + 2) * B * T * H * 4 + 3 * B * T * TP * 4 + 4;
    for (const p of ps) {
      assertEquals(p.comm?.bytes, bytes);
      assert(p.comm!.calls >= 4 * L + 4 && p.comm!.ms >= 0);
      assertEquals(p.perStep.submits, p.perStep.hostSyncs, "one submit per collective's readback");
      // The time in collectives splits into waiting for the other rank and the exchanges
      // themselves (per call, the least time either rank took).
      const c = p.comm!;
      assertEquals(c.callMs!.length, c.calls * p.steps);
      assert(c.waitMs! >= 0 && c.exchangeMs! > 0, JSON.stringify(c));
      assert(Math.abs(c.waitMs! + c.exchangeMs! - c.ms) <= 1e-9 * Math.max(1, c.ms));
    }
    assertEquals(ps[1].comm!.exchangeMs, ps[0].comm!.exchangeMs);
  });
}

Deno.test("splitCommWaits: the last rank to arrive waits for nobody", () => {
  // rank 0 arrived 3 ms early at the first call, rank 1 2 ms early at the second
  const split = splitCommWaits([[4, 1], [1, 3]]);
  assertEquals(split, [{ waitMs: 3, exchangeMs: 2 }, { waitMs: 2, exchangeMs: 2 }]);
  // no split where index i would not name the same call on each rank
  assertEquals(splitCommWaits([[1, 5], [2]]), null);
  assertEquals(splitCommWaits([[], []]), null);
  assertEquals(splitCommWaits([[4, 1]]), null);
});
