/**
 * One rank's training run (GPT or BERT), shared by the single-process path and
 * the Workers of a distributed launch. Rank 0 prints; every rank computes.
 * @module
 */

import type { WorkerContext } from "../collectives/launch.ts";
import { parallelGroups } from "../collectives/layout.ts";
import { Device } from "../core/device.ts";
import { dawnGPU, parseBackend } from "../core/gpu.ts";
import { Tensor } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { DataError } from "../data/errors.ts";
import { loadText, loadTokens, splitTrainVal } from "../data/corpus.ts";
import {
  evalBatches,
  GptBatchSampler,
  type GptSamplerState,
  type LmBatch,
} from "../data/gpt_batches.ts";
import {
  type BertBatch,
  BertBatchSampler,
  type BertSamplerState,
  prepareBertCorpus,
} from "../data/bert_batches.ts";
import { DataRng } from "../data/rng.ts";
import { uniformEntropy, unigramEntropy } from "../data/stats.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import {
  createBertTokenizer,
  readWordPieceTokenizer,
  type WordPieceTokenizer,
  writeWordPieceTokenizer,
} from "../data/wordpiece_tokenizer.ts";
import { Bert, type BertConfig, type BertInputs } from "../models/bert.ts";
import { trainingFlops } from "../models/flops.ts";
import { generate } from "../models/generate.ts";
import { Gpt } from "../models/gpt.ts";
import { type CommTimer, countsInNorm, hybridHooks, timedGroup } from "../models/parallel/hooks.ts";
import { RngTracker } from "../models/parallel/random.ts";
import { TensorParallelLayers } from "../models/parallel/tp_layers.ts";
import { Trainer } from "../models/trainer.ts";
import {
  gptCheckpointInfo,
  type GptRngOffsets,
  gptRngOffsets,
  loadCheckpoint,
  restoreGptRngOffsets,
  saveCheckpoint,
} from "../models/checkpoint/mod.ts";
import { assignGpt2, readHfGpt2 } from "../models/hf/gpt2.ts";
import { assignBert, bertPaddedRows } from "../models/hf/bert.ts";
import { RunError } from "./errors.ts";
import type { FlagValues } from "./flags.ts";
import { checkAttentionFits, limitError } from "./limits.ts";
import { formatLogLine, formatValidationLines, JsonLog, Progress } from "./log.ts";
import { SIGNAL_NUMBERS, signalOfNumber, type StopRequest } from "./signals.ts";
import { TextStream } from "./text_stream.ts";
import { bertConfigFromFlags, gptConfigFromFlags } from "./train_config.ts";
import { checkedConfig, readHfBert } from "./bert_model.ts";

/** What a run reports back (rank 0's view). */
export interface TrainSummary {
  /** Last validation loss. */
  valLoss: number;
  /** Mean training loss of the last logging window. */
  trainLoss: number;
  /** Mean ms per step over the run (excluding the first, which compiles pipelines). */
  msPerStep: number;
  /** Mean share of step time spent in collectives. */
  commShare: number;
  /** Parameters of the full model. */
  params: number;
}

function gptTensors(device: Device, b: LmBatch, lo: number, rows: number) {
  const T = b.seqLength;
  return {
    ids: TokenIds.fromHost(device, b.inputs.subarray(lo * T, (lo + rows) * T), [rows, T]),
    targets: TokenIds.fromHost(device, b.targets.subarray(lo * T, (lo + rows) * T), [rows, T]),
  };
}

function bertTensors(
  device: Device,
  b: BertBatch,
  lo: number,
  rows: number,
  dp: number,
): BertInputs {
  const S = b.seqLength;
  const sl = <A extends Int32Array>(a: A) => a.subarray(lo * S, (lo + rows) * S);
  let masked = 0;
  for (const t of b.mlmTargets) if (t >= 0) masked++;
  return {
    ids: TokenIds.fromHost(device, sl(b.inputIds), [rows, S]),
    tokenTypes: TokenIds.fromHost(device, sl(b.tokenTypes), [rows, S]),
    keep: Tensor.fromArray(device, Float32Array.from(sl(b.paddingMask)), [rows, S]),
    mlmTargets: TokenIds.fromHost(device, sl(b.mlmTargets), [rows, S]),
    sopLabels: TokenIds.fromHost(device, b.sopLabels.subarray(lo, lo + rows), [rows]),
    mlmNormalizer: masked / dp,
  };
}

/**
 * Trains on this rank. `dist` is null for a single-process, single-device run.
 * `stop` says when a signal asks the run to stop (cli/signals.ts): with
 * `--save`, every rank stops after the same step, saves there and returns.
 */
export async function trainRank(
  f: FlagValues,
  dist: WorkerContext | null,
  stop: StopRequest | null = null,
): Promise<TrainSummary> {
  const tpSize = f["tensor-model-parallel-size"] as number;
  const world = dist?.world ?? 1;
  const groups = dist ? parallelGroups(dist.group, tpSize) : null;
  const tpRank = groups?.position.tpRank ?? 0;
  const dpRank = groups?.position.dpRank ?? 0;
  const dp = world / tpSize;
  const isLogger = (dist?.rank ?? 0) === 0;
  const say = (s: string) => isLogger && console.log(s);
  const model_ = f.model as "gpt" | "bert";
  const T = f["seq-length"] as number;
  const mb = f["micro-batch-size"] as number;
  const gb = (f["global-batch-size"] as number | undefined) ?? mb * dp;
  const accum = gb / (mb * dp);
  const iters = f["train-iters"] as number;
  const seed = f.seed as number;

  // Data first: errors here should not cost a device.
  const hfDir = f["init-from-hf"] as string | undefined;
  const hfBert = model_ === "bert" && hfDir ? await readHfBert(hfDir) : null;
  const text = model_ === "bert" ? await loadText(f["data-path"] as string | undefined) : "";
  // A BERT resumed with --load keeps the vocabulary its checkpoint was saved with.
  const tokenizer = model_ === "bert"
    ? hfBert?.tokenizer ??
      (f.load ? await readWordPieceTokenizer(f.load as string) : null) ??
      await createBertTokenizer()
    : await createTokenizer(f.tokenizer as string);
  let gptData: { train: Uint32Array; val: Uint32Array; source: string } | null = null;
  let bertSplit: {
    train: ReturnType<typeof prepareBertCorpus>;
    val: ReturnType<typeof prepareBertCorpus>;
  } | null = null;
  if (model_ === "gpt") {
    const corpus = await loadTokens(tokenizer, f["data-path"] as string | undefined);
    const { train, val } = splitTrainVal(corpus.ids, f["val-fraction"] as number);
    for (const [name, part] of [["training", train], ["validation", val]] as const) {
      if (part.length < T + 1) {
        throw new DataError(
          `the ${name} split has ${part.length} tokens, fewer than --seq-length + 1 = ${T + 1}; ` +
            `use more data, another --val-fraction or a shorter --seq-length`,
        );
      }
    }
    gptData = { train, val, source: corpus.source };
  } else {
    const cut = Math.round(text.length * (1 - (f["val-fraction"] as number)));
    const wp = tokenizer as Awaited<ReturnType<typeof createBertTokenizer>>;
    bertSplit = {
      train: prepareBertCorpus(text.slice(0, cut), wp),
      val: prepareBertCorpus(text.slice(cut), wp),
    };
  }

  let bertConfig: BertConfig = bertConfigFromFlags(f, tokenizer.vocabSize);
  if (hfBert) {
    if (T > hfBert.config.maxPositions) {
      throw new DataError(
        `--seq-length ${T} exceeds the checkpoint's position table (${hfBert.config.maxPositions})`,
      );
    }
    bertConfig = checkedConfig(
      {
        ...hfBert.config,
        hiddenDropout: bertConfig.hiddenDropout,
        attentionDropout: bertConfig.attentionDropout,
      },
      tpSize,
      hfDir!,
    );
  }
  const backend = parseBackend(f.backend as string);
  const provider = backend === "dawn" && dist?.device.dawnOptions
    ? await dawnGPU(dist.device.dawnOptions)
    : undefined;
  const device = await Device.create({ backend, provider });
  dist?.deviceAcquired();
  try {
    checkAttentionFits(device, {
      microBatch: mb,
      headsPerRank: (hfBert?.config.numHeads ?? (f["num-attention-heads"] as number)) / tpSize,
      seqLength: T,
    });
    const timer: CommTimer = { ms: 0 };
    const measureComm = !!f["measure-comm"];
    const tpGroup = groups
      ? (measureComm ? timedGroup(groups.tp, timer, device) : groups.tp)
      : null;
    const layers = tpGroup
      ? new TensorParallelLayers(device, tpGroup)
      : TensorParallelLayers.single(device);
    const rng = new RngTracker(seed, tpRank, dpRank);
    const hf = model_ === "gpt" && hfDir ? await readHfGpt2(hfDir) : null;
    let gptConfig = gptConfigFromFlags(f, tokenizer.vocabSize);
    if (hf) {
      if (hf.config.vocabSize !== tokenizer.vocabSize) {
        throw new DataError(
          `${
            f["init-from-hf"]
          } has a vocabulary of ${hf.config.vocabSize}, the ${tokenizer.name} tokenizer ` +
            `${tokenizer.vocabSize}; use --tokenizer gpt2 for GPT-2 checkpoints`,
        );
      }
      if (T > hf.config.maxPositions) {
        throw new DataError(
          `--seq-length ${T} exceeds the checkpoint's position table (${hf.config.maxPositions})`,
        );
      }
      gptConfig = {
        ...hf.config,
        hiddenDropout: gptConfig.hiddenDropout,
        attentionDropout: gptConfig.attentionDropout,
        recomputeActivations: gptConfig.recomputeActivations,
      };
    }
    const model = model_ === "gpt"
      ? new Gpt(layers, gptConfig, { seed, rng })
      : new Bert(layers, bertConfig, { seed, rng });
    if (hf) {
      assignGpt2(model.namedParams(), hf.tensors, hf.config, { tp: tpSize, tpRank }, hf.source);
    }
    if (hfBert) {
      assignBert(
        model.namedParams(),
        hfBert.tensors,
        hfBert.config.vocabSize,
        { tp: tpSize, tpRank },
        hfBert.source,
      );
    }
    const ckptInfo = model instanceof Gpt ? gptCheckpointInfo(model.config) : {
      model: { arch: "bert", config: model.config },
      paddedRows: bertPaddedRows(model.config.vocabSize),
    };
    const trainer = new Trainer(device, model, {
      schedule: {
        lr: f.lr as number,
        minLr: f["min-lr"] as number,
        warmupIters: f["lr-warmup-iters"] as number,
        decayIters: (f["lr-decay-iters"] as number | undefined) ?? iters,
        style: f["lr-decay-style"] as "cosine",
      },
      clipGrad: f["clip-grad"] as number,
      adam: {
        beta1: f["adam-beta1"] as number,
        beta2: f["adam-beta2"] as number,
        weightDecay: f["weight-decay"] as number,
      },
      hooks: groups
        ? hybridHooks(device, { tp: tpGroup!, dp: groups.dp }, measureComm ? timer : undefined)
        : undefined,
      countsInNorm: countsInNorm(tpRank),
    });
    const fullParams = model.namedParams().reduce(
      (s, [, p]) => s + p.tensor.size * (p.partitionDim === null ? 1 : tpSize),
      0,
    );
    const cfg = model.config;
    const shape = {
      numLayers: cfg.numLayers,
      hiddenSize: cfg.hiddenSize,
      ffnHiddenSize: cfg.ffnHiddenSize ?? 4 * cfg.hiddenSize,
      vocab: model.paddedVocab,
      seqLength: T,
    };
    const flopsPerIter = trainingFlops(
      shape,
      gb * T,
      !!f["recompute-activations"],
      model_ === "bert" ? 0.15 : 1,
    );

    // Batches: every rank draws the same global micro-batch and takes its rows.
    const gptSampler = gptData
      ? new GptBatchSampler(gptData.train, { batchSize: mb * dp, seqLength: T, seed })
      : null;
    const bertSampler = bertSplit
      ? new BertBatchSampler(bertSplit.train, tokenizer as never, {
        batchSize: mb * dp,
        seqLength: T,
        seed,
      })
      : null;
    const evalIters = f["eval-iters"] as number;
    const valGpt = gptData ? [...evalBatches(gptData.val, mb, T, { maxBatches: evalIters })] : [];
    const valBert = bertSplit
      ? (() => {
        const s = new BertBatchSampler(bertSplit.val, tokenizer as never, {
          batchSize: mb,
          seqLength: T,
          seed: seed + 1,
        });
        return Array.from({ length: evalIters }, () => s.next());
      })()
      : [];
    const lossOfGpt = (b: LmBatch, lo: number, rows: number) => {
      const { ids, targets } = gptTensors(device, b, lo, rows);
      return (model as Gpt).loss(ids, targets);
    };
    const lossOfBert = (b: BertBatch, lo: number, rows: number, d: number) =>
      (model as Bert).loss(bertTensors(device, b, lo, rows, d));

    const s = device.summary();
    say(
      `device: ${s.backend} | ${s.name}${s.isFallback ? " (software)" : ""}${
        world > 1 ? ` | ${world} ranks` : ""
      }`,
    );
    if (gptData) {
      say(
        `data: ${gptData.source} | tokenizer ${tokenizer.name} (vocab ${tokenizer.vocabSize}, padded ${model.paddedVocab}) | ` +
          `${gptData.train.length} train / ${gptData.val.length} validation tokens`,
      );
    } else {
      say(
        `data: ${
          (f["data-path"] as string | undefined) ?? "Moby Dick"
        } | WordPiece (vocab ${tokenizer.vocabSize}, padded ${model.paddedVocab}) | ` +
          `${bertSplit!.train.documents.length} train / ${
            bertSplit!.val.documents.length
          } validation documents`,
      );
    }
    const ln = model_ === "bert"
      ? (cfg as { postLayerNorm?: boolean }).postLayerNorm ? "post-LN" : "pre-LN"
      : "pre-LN";
    say(
      `model: ${model_.toUpperCase()} (${ln}) ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ${cfg.numHeads} heads, seq ${T} | ` +
        `${fullParams.toLocaleString("en-US")} parameters` +
        (f["recompute-activations"] ? " | activation recomputation" : ""),
    );
    if (hfDir) {
      say(
        `initialized from ${hfDir} (Hugging Face ${model_ === "gpt" ? "GPT-2" : "BERT"}` +
          (hfBert ? `, ${hfBert.tokenizerSource}` : "") + ")",
      );
    }
    say(
      `parallel: tensor ${tpSize} × data ${dp} | training: ${iters} steps × ${gb} sequences ` +
        `(${accum} micro-batch${accum > 1 ? "es" : ""} of ${mb} per rank)`,
    );

    const progress = new Progress(iters, isLogger ? undefined : false);
    const evaluate = () =>
      trainer.evaluate(
        gptData ? valGpt.length : valBert.length,
        (i) =>
          gptData ? lossOfGpt(valGpt[i], 0, valGpt[i].batchSize) : lossOfBert(valBert[i], 0, mb, 1),
      );
    let windowStart = performance.now();
    let windowLoss = 0, windowNorm = 0, windowSteps = 0, windowComm = 0;
    let lastVal = NaN, lastTrain = NaN;
    let steadyMs = 0, steadyComm = 0;
    let startIter = 1;
    let stopAt = 0;
    const runStart = performance.now();
    if (f.load) {
      const r = await loadCheckpoint(f.load as string, {
        params: model.namedParams(),
        optimizer: trainer.optimizer,
        tp: tpSize,
        tpRank,
        ...ckptInfo,
      });
      const st = r.state as { sampler?: unknown; rng?: GptRngOffsets };
      if (st.sampler) {
        if (gptSampler) gptSampler.restore(st.sampler as GptSamplerState);
        else bertSampler!.restore(st.sampler as BertSamplerState);
      }
      if (st.rng) restoreGptRngOffsets(model, st.rng);
      startIter = r.iteration + 1;
      say(
        `loaded ${r.path} (iteration ${r.iteration})${
          r.notes.length ? `: ${r.notes.join("; ")}` : ""
        }`,
      );
    }
    // A resumed run appends to its log, dropping what the interrupted run wrote
    // past its checkpoint (those iterations run again).
    const json = isLogger && f["log-json"]
      ? await JsonLog.open(f["log-json"] as string, f.load ? startIter - 1 : undefined, {
        config: { ...f },
        world: { size: world, tp: tpSize, dp, nodes: (f.nnodes as number | undefined) ?? 1 },
        first_iteration: startIter,
      })
      : null;
    const saveDir = f.save as string | undefined;
    const saveInterval = (f["save-interval"] as number | undefined) ?? Infinity;
    let vocabSaved = false;
    const save = async (it: number) => {
      if (model_ === "bert" && isLogger && !vocabSaved) {
        // eval and fill-mask read the tokenizer from the checkpoint directory.
        await writeWordPieceTokenizer(saveDir!, tokenizer as WordPieceTokenizer);
        vocabSaved = true;
      }
      await saveCheckpoint(saveDir!, {
        iteration: it,
        params: model.namedParams(),
        optimizer: trainer.optimizer,
        tp: tpSize,
        tpRank,
        dp,
        dpRank,
        barrier: dist ? () => dist.group.barrier() : undefined,
        ...ckptInfo,
        state: {
          consumedTokens: it * gb * T,
          sampler: gptSampler ? gptSampler.state() : bertSampler!.state(),
          rng: gptRngOffsets(model),
          seed,
        },
      });
      if (isLogger) progress.line(`saved checkpoint at iteration ${it} to ${saveDir}`);
    };
    // With --save, the ranks agree after every step whether a signal asks them to stop.
    const stopFlag = saveDir && dist && stop ? dist.group.alloc(1) : null;
    let stoppedBy: Deno.Signal | null = null;
    let prev: { lr: number; gradNorm: number } | null = null;
    const clip = f["clip-grad"] as number;
    const from = f.load
      ? `loaded from ${f.load}`
      : hfDir
      ? `loaded from ${hfDir}`
      : `initialized from --seed ${seed}`;
    for (let it = startIter; it <= iters; it++) {
      const t0 = performance.now();
      const c0 = timer.ms;
      let r;
      try {
        r = await trainer.step(accum, (i) => {
          void i;
          if (gptSampler) return lossOfGpt(gptSampler.next(), dpRank * mb, mb);
          return lossOfBert(bertSampler!.next(), dpRank * mb, mb, dp);
        });
      } catch (e) {
        throw limitError(e, { microBatch: mb, seqLength: T }) ?? e;
      }
      const ms = performance.now() - t0;
      if (it > startIter) {
        steadyMs += ms;
        steadyComm += timer.ms - c0;
      }
      if (!Number.isFinite(r.loss)) {
        throw new RunError(nonFiniteLossMessage(r.loss, it, it === startIter, from, prev, clip));
      }
      prev = { lr: r.lr, gradNorm: r.gradNorm };
      // Let the event loop run the signal listeners (GPU waits may not reach it).
      if (stop) await new Promise((res) => setTimeout(res, 0));
      if (stop && saveDir) {
        let n = stop.signal ? SIGNAL_NUMBERS[stop.signal] : 0;
        if (stopFlag) {
          stopFlag[0] = n;
          await dist!.group.allReduce(stopFlag, "max");
          n = stopFlag[0];
        }
        stoppedBy = signalOfNumber(n);
      }
      windowLoss += r.loss;
      windowNorm += r.gradNorm;
      windowComm += timer.ms - c0;
      windowSteps++;
      let valLoss: number | undefined;
      if (!stoppedBy && (it % (f["eval-interval"] as number) === 0 || it === iters)) {
        valLoss = await evaluate();
        lastVal = valLoss;
      }
      json?.write({
        iteration: it,
        loss: r.loss,
        lr: r.lr,
        grad_norm: r.gradNorm,
        tokens_per_s: (gb * T) / (ms / 1000),
        ms_per_iter: ms,
        consumed_tokens: it * gb * T,
        ...(valLoss !== undefined ? { val_loss: valLoss, val_ppl: Math.exp(valLoss) } : {}),
      });
      if (it % (f["log-interval"] as number) === 0 || it === iters || stoppedBy) {
        const msPerIter = (performance.now() - windowStart) / windowSteps;
        lastTrain = windowLoss / windowSteps;
        if (isLogger) {
          progress.line(
            formatLogLine({
              iteration: it,
              total: iters,
              consumedTokens: it * gb * T,
              consumedSamples: it * gb,
              globalBatchSize: gb,
              worldSize: world,
              msPerIter,
              tokensPerS: (gb * T) / (msPerIter / 1000),
              gflops: flopsPerIter / (msPerIter / 1000) / 1e9,
              lr: r.lr,
              loss: lastTrain,
              gradNorm: windowNorm / windowSteps,
            }) + (measureComm
              ? ` comm: ${((100 * windowComm) / (msPerIter * windowSteps)).toFixed(1)}% |`
              : ""),
          );
        }
        windowStart = performance.now();
        windowLoss =
          windowNorm =
          windowSteps =
          windowComm =
            0;
      }
      if (valLoss !== undefined && isLogger) {
        for (const l of formatValidationLines(it, valLoss)) progress.line(l);
      }
      if (saveDir && (it % saveInterval === 0 || it === iters || stoppedBy)) await save(it);
      if (isLogger) progress.update(it);
      if (stoppedBy) {
        stopAt = it;
        break;
      }
    }
    stop?.finished();
    progress.done();
    await json?.close();
    if (stoppedBy) {
      say(
        `\nstopped by ${stoppedBy} after iteration ${stopAt}; resume with --load ${saveDir}`,
      );
      return {
        valLoss: lastVal,
        trainLoss: lastTrain,
        msPerStep: steadyMs / Math.max(1, stopAt - startIter),
        commShare: steadyMs > 0 ? steadyComm / steadyMs : 0,
        params: fullParams,
      };
    }
    say(
      `\ntrained ${iters - startIter + 1} steps in ${
        ((performance.now() - runStart) / 1000).toFixed(1)
      } s`,
    );
    if (gptData) {
      say(
        `\nfinal validation loss ${lastVal.toFixed(4)} nats/token (perplexity ${
          Math.exp(lastVal).toFixed(2)
        })`,
      );
      say(
        `  baseline, uniform over the vocabulary (ln V):  ${
          uniformEntropy(tokenizer.vocabSize).toFixed(4)
        }`,
      );
      say(
        `  baseline, unigram entropy of the corpus:       ${
          unigramEntropy(gptData.train).toFixed(4)
        }`,
      );
      const n = f["sample-tokens"] as number;
      if (n > 0) await sample(model as Gpt, tokenizer, f, seed, isLogger);
    } else {
      say(`\nfinal validation loss (MLM + SOP) ${lastVal.toFixed(4)}`);
    }
    const steady = Math.max(1, iters - startIter);
    return {
      valLoss: lastVal,
      trainLoss: lastTrain,
      msPerStep: steadyMs / steady,
      commShare: steadyMs > 0 ? steadyComm / steadyMs : 0,
      params: fullParams,
    };
  } finally {
    await device.close();
  }
}

async function sample(
  model: Gpt,
  tokenizer: { encode(t: string): ArrayLike<number>; decode(ids: number[]): string },
  f: FlagValues,
  seed: number,
  print: boolean,
): Promise<void> {
  const prompt = Array.from(tokenizer.encode(f.prompt as string));
  const rng = new DataRng(seed);
  const enc = new TextEncoder();
  const stream = new TextStream(tokenizer);
  if (print) {
    console.log(`\nsample (temperature ${f.temperature}, top-p ${f["top-p"]}):`);
    await Deno.stdout.write(enc.encode(f.prompt as string));
  }
  for await (
    const t of generate(model, prompt, {
      maxNewTokens: f["sample-tokens"] as number,
      temperature: f.temperature as number,
      topK: f["top-k"] as number,
      topP: f["top-p"] as number,
      uniform: () => rng.nextFloat(),
    })
  ) {
    if (print) await Deno.stdout.write(enc.encode(stream.push(t)));
  }
  if (print) console.log(stream.flush() + "\n");
}

/**
 * Why the loss is not finite, with what points at the cause: the iteration; at
 * the first step (before any update) the starting weights; after that the
 * previous step's learning rate and gradient norm (and whether it was clipped).
 */
export function nonFiniteLossMessage(
  loss: number,
  it: number,
  first: boolean,
  from: string,
  prev: { lr: number; gradNorm: number } | null,
  clip: number,
): string {
  const e = (x: number) => x.toExponential(2).toUpperCase();
  if (first || !prev) {
    return `the loss is ${loss} at iteration ${it}, the first step, before any update: the ` +
      `starting weights (${from}) overflow in the forward pass; check them, or the data`;
  }
  const norm = Number.isFinite(prev.gradNorm) ? e(prev.gradNorm) : String(prev.gradNorm);
  const exploded = !Number.isFinite(prev.gradNorm) || prev.gradNorm > 1e3;
  const clipped = clip > 0 ? `clipped to ${clip}` : "not clipped";
  return `the loss became ${loss} at iteration ${it}, after the update of iteration ${it - 1} ` +
    `(learning rate ${e(prev.lr)}, gradient norm ${norm}, ${clipped}): ` +
    (exploded
      ? `the gradients exploded; lower --lr${clip > 0 ? "" : " or clip them (--clip-grad 1)"}`
      : `the learning rate is too high for these weights; lower --lr or warm up longer ` +
        `(--lr-warmup-iters)`);
}
