/**
 * The steps every model family shares when a command (eval, generate, fill-mask)
 * loads a model: from a Hugging Face directory (`--init-from-hf`), or from a
 * checkpoint (`--load`, `--iteration`) whose metadata is read first so that the
 * family can check it before the model is built. A {@link ModelFamily} gives
 * what differs: its reader, its constructor, its tensor assignment.
 * @module
 */

import type { Module } from "../core/nn.ts";
import { preferWideVectors } from "../core/simd.ts";
import type { TpPlace } from "../models/checkpoint/assign.ts";
import { loadCheckpoint } from "../models/checkpoint/load.ts";
import { type CheckpointMeta, readMeta, resolveIterDir } from "../models/checkpoint/layout.ts";
import { CheckpointError } from "../models/checkpoint/safetensors.ts";
import { HF_SHAPE_FIELDS } from "../models/hf/config_fields.ts";
import { readHfConfig } from "../models/hf/io.ts";
import type { ParallelLayers } from "../models/parallel/layers.ts";
import type { DropoutConfig, ShapeConfig } from "../models/shape.ts";
import { checkedConfig } from "./errors.ts";
import type { FlagValues } from "./flags.ts";

/** Where a model comes from: a Hugging Face directory, or a checkpoint (and its iteration). */
export interface ModelSource {
  /** A Hugging Face model directory (`--init-from-hf`). */
  hfDir?: string;
  /** A checkpoint directory written by `deno task train --save` (`--load`). */
  load?: string;
  /** The checkpoint's iteration (default: latest). */
  iteration?: number;
}

/** The {@link ModelSource} of a command's `--init-from-hf`, `--load` and `--iteration`. */
export function modelSourceFromFlags(f: FlagValues): ModelSource {
  return {
    hfDir: f["init-from-hf"] as string | undefined,
    load: f.load as string | undefined,
    iteration: f.iteration as number | undefined,
  };
}

/**
 * The hidden size of the model `from` names, read from its Hugging Face
 * `config.json` (GPT-2's or BERT's field) or its checkpoint's metadata without
 * loading anything else; undefined where it cannot be read (the load then
 * says why).
 */
export async function sourceHiddenSize(from: ModelSource): Promise<number | undefined> {
  let h: unknown;
  try {
    if (from.hfDir) {
      const cfg = await readHfConfig(from.hfDir);
      h = cfg[HF_SHAPE_FIELDS.gpt.hiddenSize] ?? cfg[HF_SHAPE_FIELDS.bert.hiddenSize];
    } else if (from.load) {
      const { path } = await resolveIterDir(from.load, from.iteration);
      h = (await readMeta(path)).model?.config?.hiddenSize;
    }
  } catch {
    return undefined;
  }
  return typeof h === "number" && Number.isInteger(h) && h > 0 ? h : undefined;
}

/**
 * Sets llvmpipe's vector width for the model `from` names as `train` picks it
 * for a model of its size (core/simd.ts's `preferWideVectors`); the widest
 * where its size cannot be read. Call before the command's first device.
 */
export async function preferWidthForModel(from: ModelSource): Promise<void> {
  const hiddenSize = await sourceHiddenSize(from);
  await preferWideVectors(hiddenSize === undefined ? undefined : { hiddenSize });
}

/** What differs between the model families that this module loads. */
export interface ModelFamily<
  C extends ShapeConfig & DropoutConfig,
  M extends Module,
  H extends { config: C },
> {
  /** The `model.arch` a checkpoint of this family holds. */
  arch: string;
  /** The family in messages ("GPT"). */
  name: string;
  /** The family of its Hugging Face directories, in messages ("GPT-2"). */
  hfName: string;
  /** Its `config.json` name of each shape setting ({@link HF_SHAPE_FIELDS}), for messages. */
  hfFields: Readonly<Record<string, string>>;
  /** Reads a Hugging Face directory of this family into host memory (its config and tensors). */
  readHf(dir: string, progress?: (done: number, total: number) => void): Promise<H>;
  /** The model over `layers`, its weights about to be overwritten. */
  create(layers: ParallelLayers, config: C): M;
  /** Writes what {@link ModelFamily.readHf} read into `model`'s parameters at `place`. */
  assignHf(model: M, hf: H, place: TpPlace): void;
  /** Row counts of the padded-vocabulary tensors a checkpoint of `config` holds. */
  paddedRows?(config: C): Record<string, number>;
}

/**
 * A model built from Hugging Face directory `dir` on `layers` (this rank's
 * shards), with what was read and its source for messages.
 */
export async function loadHfModel<
  C extends ShapeConfig & DropoutConfig,
  M extends Module,
  H extends { config: C },
>(
  family: ModelFamily<C, M, H>,
  dir: string,
  layers: ParallelLayers,
  progress?: (done: number, total: number) => void,
): Promise<{ model: M; hf: H; source: string }> {
  const hf = await family.readHf(dir, progress);
  const config = checkedConfig(hf.config, layers.tpSize, dir, family.hfFields);
  const model = family.create(layers, config);
  family.assignHf(model, hf, { tp: layers.tpSize, tpRank: layers.tpRank });
  return { model, hf, source: `${dir} (Hugging Face ${family.hfName})` };
}

/** A checkpoint of one model family, opened: its iteration folder and metadata read. */
export interface SavedModel<C> {
  /** The checkpoint directory. */
  dir: string;
  /** Its iteration folder. */
  path: string;
  /** The iteration. */
  iteration: number;
  /** Its metadata. */
  meta: CheckpointMeta;
  /** The model's config, as saved. */
  config: C;
  /** Where the model comes from, for messages. */
  source: string;
}

/**
 * Opens the checkpoint of `from` (its iteration, default the latest) and
 * refuses one that holds a model of another family than `family`.
 */
export async function openSavedModel<
  C extends ShapeConfig & DropoutConfig,
  M extends Module,
  H extends { config: C },
>(
  family: ModelFamily<C, M, H>,
  from: ModelSource,
): Promise<SavedModel<C>> {
  if (!from.load) {
    throw new CheckpointError(
      `no ${family.name} to load: give a checkpoint or an HF directory`,
    );
  }
  const dir = from.load;
  const { path, iteration } = await resolveIterDir(dir, from.iteration);
  const meta = await readMeta(path);
  if (meta.model?.arch !== family.arch) {
    throw new CheckpointError(
      `${path}: holds a ${meta.model?.arch ?? "model of unknown type"}, not a ${family.name}`,
    );
  }
  return {
    dir,
    path,
    iteration,
    meta,
    config: meta.model.config as unknown as C,
    source: `${path} (iteration ${iteration}, saved at tp ${meta.parallel.tp})`,
  };
}

/** Builds the model of an opened checkpoint on `layers` and loads this rank's shards. */
export async function loadSavedModel<
  C extends ShapeConfig & DropoutConfig,
  M extends Module,
  H extends { config: C },
>(
  family: ModelFamily<C, M, H>,
  saved: SavedModel<C>,
  layers: ParallelLayers,
  progress?: (done: number, total: number) => void,
): Promise<M> {
  const model = family.create(layers, checkedConfig(saved.config, layers.tpSize, saved.path));
  await loadCheckpoint(saved.dir, {
    params: model.namedParams(),
    iteration: saved.iteration,
    paddedRows: family.paddedRows?.(saved.config),
    tp: layers.tpSize,
    tpRank: layers.tpRank,
    progress,
  });
  return model;
}
