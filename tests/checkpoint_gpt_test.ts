/**
 * Sharded checkpoints of a GPT on the GPU: bit-exact save → load (weights and AdamW
 * state), resume equals the uninterrupted run (dropout RNG and data order
 * included), a TP=2 checkpoint (two ranks saving concurrently behind a barrier)
 * loads at TP=1 with the same eval loss and at TP=4 as the right shards, and
 * mismatched or corrupt checkpoints are refused without touching any tensor.
 */

import { deepStrictEqual, match, ok, rejects } from "node:assert/strict";
import { join } from "node:path";
import type { ParamInfo } from "../core/nn.ts";
import type { AdamW } from "../core/optim.ts";
import { Tensor, tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { GptBatchSampler, type GptSamplerState } from "../data/gpt_batches.ts";
import {
  gptCheckpointInfo,
  loadCheckpoint,
  readLatest,
  restoreRngOffsets,
  type RngOffsets,
  rngOffsets,
  saveCheckpoint,
  splitShard,
} from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig, paddedVocabSize } from "../models/gpt.ts";
import { Trainer } from "../models/trainer.ts";
import { gpuTest, prng, testDevice } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();

const tiny: GptConfig = {
  vocabSize: 37,
  numLayers: 2,
  hiddenSize: 16,
  numHeads: 4,
  maxPositions: 8,
  hiddenDropout: 0.1,
  attentionDropout: 0.1,
};

const stream = (() => {
  const r = prng(99);
  return Uint32Array.from({ length: 400 }, () => Math.floor(r() * tiny.vocabSize));
})();

async function values(params: readonly [string, ParamInfo][]): Promise<Map<string, Uint32Array>> {
  const bufs = await dev.readMany(params.map(([, p]) => p.tensor.binding));
  return new Map(params.map(([n], i) => [n, new Uint32Array(bufs[i])]));
}

async function momentValues(
  opt: AdamW,
  params: readonly [string, ParamInfo][],
): Promise<Map<string, Uint32Array>> {
  const out = new Map<string, Uint32Array>();
  const moments = await opt.readMoments(params.map(([, p]) => p.tensor));
  params.forEach(([n], i) => {
    out.set(n + ".m", new Uint32Array(moments[i].m.buffer).slice());
    out.set(n + ".v", new Uint32Array(moments[i].v.buffer).slice());
  });
  return out;
}

function makeTrainer(m: Gpt): Trainer {
  return new Trainer(dev, m, {
    schedule: { lr: 3e-3, warmupIters: 2, decayIters: 8 },
    clipGrad: 1,
  });
}

async function trainSteps(m: Gpt, t: Trainer, s: GptBatchSampler, n: number): Promise<number[]> {
  const losses: number[] = [];
  for (let i = 0; i < n; i++) {
    const b = s.next();
    const r = await t.step(
      1,
      () =>
        m.loss(
          TokenIds.fromHost(dev, b.inputs, [b.batchSize, b.seqLength]),
          TokenIds.fromHost(dev, b.targets, [b.batchSize, b.seqLength]),
        ),
    );
    losses.push(r.loss);
  }
  return losses;
}

Deno.test("save → load round trip is bit-exact for weights and AdamW state", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const a = Gpt.serial(dev, tiny, 1);
  const ta = makeTrainer(a);
  await trainSteps(a, ta, new GptBatchSampler(stream, { batchSize: 2, seqLength: 8, seed: 3 }), 2);
  const info = gptCheckpointInfo(tiny);
  await saveCheckpoint(dir, {
    iteration: 2,
    params: a.namedParams(),
    optimizer: ta.optimizer,
    ...info,
    state: { x: 1 },
  });
  deepStrictEqual(await readLatest(dir), 2);

  const b = Gpt.serial(dev, tiny, 2);
  const tb = makeTrainer(b);
  const r = await loadCheckpoint(dir, {
    params: b.namedParams(),
    optimizer: tb.optimizer,
    model: info.model,
  });
  deepStrictEqual(r.iteration, 2);
  deepStrictEqual(r.state, { x: 1 });
  ok(r.optimizerLoaded);
  deepStrictEqual(tb.optimizer.step, 2);
  deepStrictEqual(await values(b.namedParams()), await values(a.namedParams()));
  deepStrictEqual(
    await momentValues(tb.optimizer, b.namedParams()),
    await momentValues(ta.optimizer, a.namedParams()),
  );
  // An iteration that is not there: the message names the ones that are.
  await rejects(
    loadCheckpoint(dir, { params: b.namedParams(), iteration: 5 }),
    /iteration 5 is missing or incomplete \(no checkpoint\.json\); .* holds iteration 2$/,
  );
  a.dispose();
  b.dispose();
});

Deno.test(
  "save: values read back in batches write the same files as read at once",
  gpuTest,
  async () => {
    // A save reads its tensors back in batches (SAVE_READ_BATCH_BYTES), each written as it comes:
    // reading every tensor and encoding the whole file at once held the model twice on the host.
    await using temp = await tempDir();
    const a = Gpt.serial(dev, tiny, 1);
    const ta = makeTrainer(a);
    await trainSteps(
      a,
      ta,
      new GptBatchSampler(stream, { batchSize: 2, seqLength: 8, seed: 3 }),
      2,
    );
    const files: Uint8Array[][] = [];
    const reads: number[] = [];
    for (const readBatchBytes of [1, 2 ** 30]) {
      const dir = join(temp.path, String(readBatchBytes));
      const before = dev.hostSyncs;
      const at = await saveCheckpoint(dir, {
        iteration: 2,
        params: a.namedParams(),
        optimizer: ta.optimizer,
        ...gptCheckpointInfo(tiny),
        readBatchBytes,
      });
      reads.push(dev.hostSyncs - before);
      files.push([
        await Deno.readFile(join(at, "model_tp00.safetensors")),
        await Deno.readFile(join(at, "optimizer_tp00.safetensors")),
      ]);
    }
    deepStrictEqual(files[0], files[1]);
    // A read a tensor (and one a tensor's moments), against one read a file.
    const params = a.namedParams();
    const withMoments = params.filter(([, p]) => ta.optimizer.hasMoments(p.tensor)).length;
    deepStrictEqual(reads, [params.length + withMoments, 2]);
    a.dispose();
  },
);

Deno.test(
  "a save removes a killed save's staging folder, and no folder it did not name",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    for (const name of ["iter_0000009.tmp", "iter_5.tmp", "notes.tmp"]) {
      await Deno.mkdir(join(dir, name));
      await Deno.writeTextFile(join(dir, name, "x"), "x");
    }
    const a = Gpt.serial(dev, tiny, 1);
    await saveCheckpoint(dir, { iteration: 1, params: a.namedParams() });
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "iter_0000001",
      "iter_5.tmp",
      "latest",
      "latest_checkpointed_iteration.txt",
      "notes.tmp",
    ]);
    a.dispose();
  },
);

Deno.test(
  "a vocabulary padded otherwise, saved without the checkpoint info: the error says what to pass",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const a = Gpt.serial(dev, tiny, 1); // 37 ids padded to 128 rows
    await saveCheckpoint(dir, { iteration: 1, params: a.namedParams() });
    const b = Gpt.serial(dev, { ...tiny, vocabMultiple: 64 }, 2); // padded to 64
    await rejects(
      loadCheckpoint(dir, { params: b.namedParams() }),
      /has full shape \[128, 16\] but the model expects \[64, 16\]; if the rows are a vocabulary padded for another TP size, save and load with the model's checkpoint info \(gptCheckpointInfo\(config\), or paddedRows\)/,
    );
    // With the padded rows named, it loads.
    const r = await loadCheckpoint(dir, {
      params: b.namedParams(),
      paddedRows: gptCheckpointInfo(tiny).paddedRows,
    });
    deepStrictEqual(r.iteration, 1);
    a.dispose();
    b.dispose();
  },
);

Deno.test(
  "a save that fails (a full disk) leaves no partial directory and names the checkpoint that stands",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const a = Gpt.serial(dev, tiny, 1);
    const info = gptCheckpointInfo(tiny);
    await saveCheckpoint(dir, { iteration: 1, params: a.namedParams(), ...info });
    await rejects(
      saveCheckpoint(dir, {
        iteration: 2,
        params: a.namedParams(),
        ...info,
        faultHook: (stage) => {
          if (stage === "model-written") throw new Error("No space left on device (os error 28)");
        },
      }),
      /saving the checkpoint of iteration 2 in .* failed: No space left on device \(os error 28\); the last complete one, iteration 1, still stands/,
    );
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "iter_0000001",
      "latest",
      "latest_checkpointed_iteration.txt",
    ]);
    deepStrictEqual(await readLatest(dir), 1);
    a.dispose();
  },
);

Deno.test("resume from a checkpoint equals the uninterrupted run bitwise", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const k = 3, n = 6;
  const opts = { batchSize: 2, seqLength: 8, seed: 11 };
  // uninterrupted, saving at k
  const a = Gpt.serial(dev, tiny, 4);
  const ta = makeTrainer(a);
  const sa = new GptBatchSampler(stream, opts);
  const first = await trainSteps(a, ta, sa, k);
  const info = gptCheckpointInfo(tiny);
  await saveCheckpoint(dir, {
    iteration: k,
    params: a.namedParams(),
    optimizer: ta.optimizer,
    ...info,
    state: { consumedTokens: k * 16, sampler: sa.state(), rng: rngOffsets(a) },
  });
  const rest = await trainSteps(a, ta, sa, n - k);
  // fresh process state: other init seed, new trainer and sampler, then load
  const b = Gpt.serial(dev, tiny, 4);
  const tb = makeTrainer(b);
  const sb = new GptBatchSampler(stream, opts);
  const r = await loadCheckpoint(dir, {
    params: b.namedParams(),
    optimizer: tb.optimizer,
    model: info.model,
  });
  sb.restore(r.state.sampler as GptSamplerState);
  restoreRngOffsets(b, r.state.rng as RngOffsets);
  deepStrictEqual(tb.iteration, k);
  const resumed = await trainSteps(b, tb, sb, n - k);
  console.log(`losses uninterrupted ${[...first, ...rest].map((x) => x.toFixed(6)).join(" ")}`);
  console.log(`resumed at ${k}: ${resumed.map((x) => x.toFixed(6)).join(" ")}`);
  deepStrictEqual(resumed, rest);
  deepStrictEqual(await values(b.namedParams()), await values(a.namedParams()));
  a.dispose();
  b.dispose();
});

/** How the tensor-parallel GPT shards each parameter (as its ParamInfo declares). */
function gptPartition(name: string): { dim: number | null; blocks: number } {
  if (name === "wte.weight" || /mlp\.c_fc\./.test(name)) return { dim: 0, blocks: 1 };
  if (/attn\.c_attn\./.test(name)) return { dim: 0, blocks: 3 };
  if (/c_proj\.weight$/.test(name)) return { dim: 1, blocks: 1 };
  return { dim: null, blocks: 1 };
}

/** Fake TP shards of a full model: ParamInfo with shard tensors, as a TP rank would hold. */
function fakeRank(
  full: Map<string, Float32Array>,
  shapes: Map<string, number[]>,
  tp: number,
  rank: number,
): [string, ParamInfo][] {
  return [...full].map(([name, data]) => {
    let shape = shapes.get(name)!;
    let d = data;
    if (name === "wte.weight") { // vocabulary padded to a multiple of 128·tp
      const rows = paddedVocabSize(tiny.vocabSize, tp);
      const padded = new Float32Array(rows * shape[1]);
      padded.set(data.subarray(0, Math.min(rows, shape[0]) * shape[1]));
      shape = [rows, shape[1]];
      d = padded;
    }
    const part = gptPartition(name);
    const s = splitShard({ shape, data: d }, part, tp, rank);
    const tensor = Tensor.fromArray(dev, s.data, s.shape).keep();
    return [name, { tensor, decay: true, partitionDim: part.dim, partitionBlocks: part.blocks }];
  });
}

function memoryBarrier(n: number): () => Promise<void> {
  let waiting: (() => void)[] = [];
  return () =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      if (waiting.length === n) {
        const w = waiting;
        waiting = [];
        w.forEach((f) => f());
      }
    });
}

async function evalLoss(m: Gpt): Promise<number> {
  m.train(false);
  const ids = Int32Array.from(stream.subarray(0, 16));
  const tg = Int32Array.from(stream.subarray(1, 17));
  return await tidy(
    dev,
    async () =>
      (await m.loss(TokenIds.fromHost(dev, ids, [2, 8]), TokenIds.fromHost(dev, tg, [2, 8])))
        .item(),
  );
}

Deno.test(
  "a TP=2 checkpoint loads at TP=1 (same eval loss), at TP=4 (right shards) and at TP=2 from each rank's own file",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const src = Gpt.serial(dev, tiny, 21);
    const named = src.namedParams();
    const vals = await values(named);
    const full = new Map([...vals].map(([n, v]) => [n, new Float32Array(v.buffer)]));
    const shapes = new Map(named.map(([n, p]) => [n, [...p.tensor.shape]]));
    const info = gptCheckpointInfo(tiny);
    // two TP ranks save concurrently, coordinated by a barrier
    const barrier = memoryBarrier(2);
    await Promise.all([0, 1].map((r) =>
      saveCheckpoint(dir, {
        iteration: 5,
        params: fakeRank(full, shapes, 2, r),
        tp: 2,
        tpRank: r,
        barrier,
        ...info,
      })
    ));
    const names = [...Deno.readDirSync(join(dir, "iter_0000005"))].map((e) => e.name).sort();
    deepStrictEqual(names, ["checkpoint.json", "model_tp00.safetensors", "model_tp01.safetensors"]);
    // TP=1
    const one = Gpt.serial(dev, tiny, 22);
    const r = await loadCheckpoint(dir, { params: one.namedParams(), model: info.model });
    deepStrictEqual(r.notes[0], "resharded from tp 2 to tp 1");
    deepStrictEqual(await values(one.namedParams()), vals);
    const l0 = await evalLoss(src), l1 = await evalLoss(one);
    console.log(`eval loss original ${l0}, TP=2 checkpoint loaded at TP=1 ${l1}`);
    deepStrictEqual(l1, l0);
    // TP=4: every rank gets exactly its shard of the (re-padded) full tensors
    for (let rank = 0; rank < 4; rank++) {
      const target = fakeRank(
        new Map([...full].map(([n, v]) => [n, new Float32Array(v.length)])),
        shapes,
        4,
        rank,
      );
      await loadCheckpoint(dir, { params: target, tp: 4, tpRank: rank });
      const want = fakeRank(full, shapes, 4, rank);
      deepStrictEqual(await values(target), await values(want));
      for (const [, p] of [...target, ...want]) p.tensor.dispose();
    }
    // TP=2, as saved: each rank reads its own file only. With rank 1's file corrupt,
    // rank 0 still loads its shards; rank 1, and a load at TP=1, name the file.
    const blank = () => new Map([...full].map(([n, v]) => [n, new Float32Array(v.length)]));
    const file1 = join(dir, "iter_0000005", "model_tp01.safetensors");
    const good1 = await Deno.readFile(file1);
    const bad1 = good1.slice();
    bad1[bad1.length - 1] ^= 0x80;
    await Deno.writeFile(file1, bad1);
    const target0 = fakeRank(blank(), shapes, 2, 0);
    const r0 = await loadCheckpoint(dir, { params: target0, tp: 2, tpRank: 0 });
    deepStrictEqual(r0.notes, []);
    const want0 = fakeRank(full, shapes, 2, 0);
    deepStrictEqual(await values(target0), await values(want0));
    const target1 = fakeRank(blank(), shapes, 2, 1);
    const corrupt = /model_tp01\.safetensors: SHA-256 [0-9a-f]+ does not match/;
    await rejects(loadCheckpoint(dir, { params: target1, tp: 2, tpRank: 1 }), corrupt);
    await rejects(loadCheckpoint(dir, { params: one.namedParams() }), corrupt);
    await Deno.writeFile(file1, good1);
    await loadCheckpoint(dir, { params: target1, tp: 2, tpRank: 1 });
    const want1 = fakeRank(full, shapes, 2, 1);
    deepStrictEqual(await values(target1), await values(want1));
    for (const [, p] of [...target0, ...want0, ...target1, ...want1]) p.tensor.dispose();
    src.dispose();
    one.dispose();
  },
);

Deno.test(
  "mismatched or corrupt checkpoints are refused and nothing is written; run settings may differ",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const a = Gpt.serial(dev, tiny, 31);
    // Saved as `train` saves: every run setting spelled out.
    const info = gptCheckpointInfo({ ...tiny, fusedAttention: true, recomputeActivations: false });
    await saveCheckpoint(dir, { iteration: 1, params: a.namedParams(), ...info });
    // How it runs may change (the attention kernels, dropout, recomputation); not its shape.
    const unfused = {
      ...tiny,
      fusedAttention: false,
      hiddenDropout: 0,
      recomputeActivations: true,
    };
    const u = Gpt.serial(dev, unfused, 30);
    await loadCheckpoint(dir, { params: u.namedParams(), model: gptCheckpointInfo(unfused).model });
    deepStrictEqual(await values(u.namedParams()), await values(a.namedParams()));
    u.dispose();
    const bigger = { ...tiny, hiddenSize: 20 };
    const b = Gpt.serial(dev, bigger, 32);
    const before = await values(b.namedParams());
    await rejects(
      loadCheckpoint(dir, { params: b.namedParams(), model: gptCheckpointInfo(bigger).model }),
      /checkpoint\.json: model config does not match the checkpoint \(hiddenSize: saved 16, model 20\)/,
    );
    // without the config check, the first bad shape is named with its file
    await rejects(loadCheckpoint(dir, { params: b.namedParams() }), (e: Error) => {
      match(
        e.message,
        /model_tp00\.safetensors \("wte\.weight"\): tensor "wte\.weight" has full shape \[128, 16\] but the model expects \[128, 20\]/,
      );
      return true;
    });
    deepStrictEqual(await values(b.namedParams()), before);
    // a later tensor that is wrong still leaves earlier ones untouched
    const c = Gpt.serial(dev, { ...tiny, numLayers: 3 }, 33);
    const cBefore = await values(c.namedParams());
    await rejects(
      loadCheckpoint(dir, { params: c.namedParams() }),
      /tensor "h\.2\.ln_1\.weight" is missing/,
    );
    deepStrictEqual(await values(c.namedParams()), cBefore);
    // truncated shard
    const file = join(dir, "iter_0000001", "model_tp00.safetensors");
    const bytes = await Deno.readFile(file);
    await Deno.writeFile(file, bytes.subarray(0, bytes.length - 100));
    const d = Gpt.serial(dev, tiny, 34);
    await rejects(
      loadCheckpoint(dir, { params: d.namedParams() }),
      /model_tp00\.safetensors: is \d+ bytes but checkpoint\.json says \d+ \(truncated/,
    );
    await rejects(
      loadCheckpoint(join(dir, "nothing"), { params: d.namedParams() }),
      /no checkpoint \(no "latest" or "latest_checkpointed_iteration.txt" file\)/,
    );
    for (const m of [a, b, c, d]) m.dispose();
  },
);
