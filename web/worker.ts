/**
 * One tensor-parallel rank of the browser trainer, in its own Web Worker with
 * its own `GPUDevice`: the same Device, kernels, GPT, trainer and collectives as
 * `deno task train`, with the ranks of the page joined over the shared-memory
 * transport (a `WebAssembly.Memory` the page creates and posts to every rank).
 * Rank 0 reports steps, validation and samples to the page; every rank returns
 * its parameter shards at the end, from which the page builds the checkpoint.
 * The page keeps a rank's Worker for its next run, and the Worker keeps its
 * device: the pipelines compiled for one run serve the next.
 * @module
 */

import { Arena } from "../collectives/arena.ts";
import { Communicator } from "../collectives/group.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { TokenIds } from "../core/token_ids.ts";
import { ByteTokenizer } from "../data/byte_tokenizer.ts";
import { SAMPLE_DEFAULTS } from "../models/sampling.ts";
import { evalBatches, GptBatchSampler, type LmBatch } from "../data/gpt_batches.ts";
import { DataRng } from "../data/rng.ts";
import { paramsToHost } from "../models/checkpoint/host.ts";
import { firstNonFinite } from "../models/checkpoint/safetensors.ts";
import { generate } from "../models/generate.ts";
import { Gpt } from "../models/gpt.ts";
import { countsInNorm, hybridHooks } from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer } from "../models/trainer.ts";
import { TextStream } from "../cli/text_stream.ts";
import { gptConfigOf, type InitMessage, type ShardMessage, type WorkerEvent } from "./protocol.ts";

const scope = self as unknown as {
  postMessage(m: unknown, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<InitMessage>) => void) | null;
};

function post(e: WorkerEvent, transfer?: Transferable[]): void {
  scope.postMessage(e, transfer);
}

/**
 * This rank's device, created by its first run and kept for the next: a
 * software adapter compiles the pipelines afresh for every device (SwiftShader
 * took ~30 s for the tiny model's), and the device caches them.
 */
let keptDevice: Promise<Device> | null = null;

function rankDevice(): Promise<Device> {
  keptDevice ??= Device.create().catch((e) => {
    keptDevice = null; // a later run tries again
    throw e;
  });
  return keptDevice;
}

async function run(init: InitMessage): Promise<void> {
  const t0 = performance.now();
  const c = init.config;
  const rank = init.rank;
  const say = rank === 0;
  const res = await fetch(init.corpusUrl).catch((e) => {
    // The browser says only "Failed to fetch".
    throw new Error(
      `could not fetch the corpus ${init.corpusUrl}: ${(e as Error).message} (is deno task ` +
        "serve still running?)",
    );
  });
  // A failed request's body is the server's error text: it trained as if it were the book.
  if (!res.ok) {
    throw new Error(`could not fetch the corpus ${init.corpusUrl}: HTTP ${res.status}`);
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  const tokenizer = new ByteTokenizer();
  const ids = tokenizer.encodeBytes(bytes);
  const cut = Math.floor(ids.length * 0.9);
  const train = ids.subarray(0, cut), val = ids.subarray(cut);

  const comm = await Communicator.create({
    rank,
    world: c.tp,
    localRanks: Array.from({ length: c.tp }, (_, i) => i),
    arena: new Arena(init.memory),
    timeoutMs: 120_000,
  });
  const { tpGroup, dpGroup } = parallelGroups(comm.worldGroup(), c.tp);
  // What this run makes on the kept device, freed at its end (the trainer first).
  const made: { dispose(): void }[] = [];
  try {
    const device = await rankDevice();
    const parallel = new TensorParallelLayers(device, tpGroup);
    const rng = new RngTracker(c.seed, rank, 0);
    const model = new Gpt(parallel, gptConfigOf(c), { seed: c.seed, rng });
    made.unshift(model);
    const trainer = new Trainer(device, model, {
      schedule: {
        lr: c.lr,
        minLr: c.lr / 10,
        warmupIters: Math.max(1, Math.round(c.steps / 20)),
        decayIters: c.steps,
        style: "cosine",
      },
      clipGrad: 1,
      hooks: hybridHooks(device, { tpGroup, dpGroup }),
      countsInNorm: countsInNorm(rank),
    });
    made.unshift(trainer);
    const sampler = new GptBatchSampler(train, {
      batchSize: c.batch,
      seqLength: c.seqLength,
      seed: c.seed,
    });
    const validation = [...evalBatches(val, c.batch, c.seqLength, { maxBatches: c.evalIters })];
    if (validation.length === 0) {
      // No window to evaluate: a mean over none read as a validation loss of 0.
      throw new Error(
        `the corpus's validation tenth (${val.length} bytes) is shorter than one window ` +
          `(${c.seqLength + 1} bytes)`,
      );
    }
    const lossOf = (b: LmBatch) => {
      const shape = [b.batchSize, b.seqLength];
      return model.loss(
        TokenIds.fromHost(device, b.inputs, shape),
        TokenIds.fromHost(device, b.targets, shape),
      );
    };
    const params = model.namedParams().reduce(
      (s, [, p]) => s + p.tensor.size * (p.partitionDim === null ? 1 : c.tp),
      0,
    );
    const s = device.summary();
    post({
      type: "ready",
      rank,
      adapter: `${s.name}${s.isFallback ? " (software)" : ""}`,
      params,
      msSetup: performance.now() - t0,
    });

    const stopFlag = tpGroup.alloc(1);
    // Whether Stop was pressed: every rank answers alike (the maximum of the flags they saw), so
    // they leave a loop at the same step or token.
    const stopAsked = async () => {
      stopFlag[0] = Atomics.load(init.stop, 0);
      if (c.tp > 1) await tpGroup.allReduce(stopFlag, "max");
      return stopFlag[0] > 0;
    };
    /** Streams a sample; false when Stop cut it short. */
    const sample = async (step: number): Promise<boolean> => {
      const prompt = c.prompt || "\n";
      if (say) post({ type: "sample-start", step, prompt });
      const stream = new TextStream(tokenizer);
      const r = new DataRng(c.seed + step);
      for await (
        const t of generate(model, Array.from(tokenizer.encode(prompt)), {
          maxNewTokens: c.sampleTokens,
          temperature: SAMPLE_DEFAULTS.temperature,
          topP: SAMPLE_DEFAULTS.topP,
          uniform: () => r.nextFloat(),
        })
      ) {
        const text = stream.push(t);
        if (say && text) post({ type: "sample-token", text });
        if (await stopAsked()) break;
      }
      const rest = stream.flush();
      if (say && rest) post({ type: "sample-token", text: rest });
      if (say) post({ type: "sample-end" });
      return stopFlag[0] === 0;
    };

    let stopped = false;
    for (let it = 1; it <= c.steps; it++) {
      const t1 = performance.now();
      const r = await trainer.step(1, () => lossOf(sampler.next()));
      const ms = performance.now() - t1;
      if (say) {
        post({
          type: "step",
          step: it,
          loss: r.loss,
          lr: r.lr,
          gradNorm: r.gradNorm,
          ms,
          tokens: c.batch * c.seqLength,
        });
      }
      if (!Number.isFinite(r.loss)) {
        throw new Error(`the loss is ${r.loss} at step ${it}: lower the learning rate (${c.lr})`);
      }
      const validate = async () => {
        const v = await trainer.evaluate(
          validation.length,
          (i) => lossOf(validation[i]),
          1 / validation.length,
        );
        // Finite training losses of 1e16 still leave weights that are not: say so, and offer
        // no checkpoint of them.
        if (!Number.isFinite(v)) {
          throw new Error(
            `the validation loss is ${v} at step ${it}: the weights are no longer finite; ` +
              `lower the learning rate (${c.lr})`,
          );
        }
        if (say) post({ type: "val", step: it, loss: v });
      };
      // Every rank stops after the same step.
      stopped = (await stopAsked()) && it < c.steps;
      const validated = it % c.evalInterval === 0 || it === c.steps || stopped;
      if (validated) await validate();
      // Every sampleInterval steps, and after the last (RunConfig.sampleInterval: 0 samples there
      // only); not after a Stop, which ends the run promptly: a Stop during a sample cuts it short
      // and ends the run after this step too.
      const due = c.sampleInterval > 0 && it % c.sampleInterval === 0;
      if (!stopped && c.sampleTokens > 0 && (due || it === c.steps) && !await sample(it)) {
        stopped = it < c.steps;
        if (stopped && !validated) await validate();
      }
      if (stopped) break;
    }
    const host = await paramsToHost(model.namedParams());
    for (const [name, t] of host) {
      if (firstNonFinite(t.data) >= 0) {
        throw new Error(
          `${name} holds values that are not finite after training: lower the learning rate ` +
            `(${c.lr}); no checkpoint is offered`,
        );
      }
    }
    const info = new Map(model.namedParams());
    const shards: ShardMessage[] = [...host].map(([name, t]) => ({
      name,
      partitionDim: info.get(name)!.partitionDim,
      blocks: info.get(name)!.partitionBlocks,
      shape: t.shape,
      data: t.data,
    }));
    post({ type: "done", rank, stopped, shards }, shards.map((x) => x.data.buffer as ArrayBuffer));
  } finally {
    // The device stays for the next run; what this run made on it goes.
    for (const m of made) m.dispose();
    comm.close();
  }
}

let running = false;
scope.onmessage = (e: MessageEvent<InitMessage>) => {
  const rank = e.data.rank;
  if (running) {
    post({ type: "error", rank, message: "a run was started on a rank still running one" });
    return;
  }
  running = true;
  run(e.data).catch((err) => {
    // The page shows the message; the stack goes to this Worker's console.
    console.error(err);
    const message = err instanceof Error ? err.message : String(err);
    post({ type: "error", rank, message });
  }).finally(() => running = false);
};
