/**
 * Loading a sharded checkpoint into a model at any TP size: every shard file is
 * checked, then each full tensor (and optimizer moment) is read and joined from the
 * ranks' files in turn and resharded for this rank, and only when all of it is
 * valid are the GPU tensors written. A rank holds its own shards and one full
 * tensor at a time. At the TP size it was saved at, a rank reads only its own
 * files (where every tensor has the shape its parameter has).
 * @module
 */

import { join } from "node:path";
import type { ParamInfo } from "../../core/nn.ts";
import type { AdamW } from "../../core/optim.ts";
import { planShards, type TpPlace, writeShards } from "./assign.ts";
import { type CheckpointMeta, META_FILE, optimizerFileName } from "./layout.ts";
import { openCheckpoint, type OpenedCheckpoint, type ReadOptions, warnOnStderr } from "./read.ts";
import { CheckpointError } from "./safetensors.ts";
import { sameShape } from "./shard.ts";

/** Config fields that may change between save and load without changing any shape. */
export const RUNTIME_CONFIG_KEYS: readonly string[] = [
  "hiddenDropout",
  "attentionDropout",
  "recomputeActivations",
  "fusedAttention",
];

/** What {@link loadCheckpoint} needs. */
export interface LoadOptions extends TpPlace {
  /** This rank's parameters (`Module.namedParams()`). */
  params: readonly [string, ParamInfo][];
  /** Receives the moments and step (omit to load the model only). */
  optimizer?: AdamW;
  /** Which iteration (default: the one `latest` names). */
  iteration?: number;
  /** The model being loaded into; its arch and config are compared with the saved ones. */
  model?: { arch: string; config: object };
  /** Config keys allowed to differ (default {@link RUNTIME_CONFIG_KEYS}). */
  ignoreConfigKeys?: readonly string[];
  /** Padded-row counts to add to the saved ones (see `SaveOptions.paddedRows`). */
  paddedRows?: Record<string, number>;
  /** Accept checkpoint tensors the model does not have (default false: error). */
  allowExtra?: boolean;
  /** Receives warnings (default: `warning: …` on stderr, from TP rank 0 only). */
  warn?: (msg: string) => void;
  /** Called as the load goes: `(done, total)` stages (for a progress bar). */
  progress?: (done: number, total: number) => void;
}

/** What a load returns. */
export interface LoadResult {
  /** The iteration loaded. */
  iteration: number;
  /** The iteration directory. */
  path: string;
  /** The saved trainer state (as passed to `saveCheckpoint`). */
  state: Record<string, unknown>;
  /** The whole `checkpoint.json`. */
  meta: CheckpointMeta;
  /** Whether optimizer moments and step were restored. */
  optimizerLoaded: boolean;
  /** Human-readable notes (resharding done, optimizer not carried …). */
  notes: string[];
}

function compareConfigs(
  file: string,
  saved: CheckpointMeta["model"],
  model: { arch: string; config: object },
  ignore: readonly string[],
): void {
  if (!saved) return;
  if (saved.arch !== model.arch) {
    throw new CheckpointError(`${file}: checkpoint is a ${saved.arch} model, not ${model.arch}`);
  }
  const cur = model.config as Record<string, unknown>;
  const keys = new Set([...Object.keys(saved.config), ...Object.keys(cur)]);
  const diffs: string[] = [];
  for (const k of keys) {
    if (ignore.includes(k)) continue;
    const a = saved.config[k], b = cur[k];
    if (a === undefined || b === undefined) continue; // defaults: shapes are checked per tensor
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      diffs.push(`${k}: saved ${JSON.stringify(a)}, model ${JSON.stringify(b)}`);
    }
  }
  if (diffs.length > 0) {
    throw new CheckpointError(
      `${file}: model config does not match the checkpoint (${diffs.join("; ")})`,
    );
  }
}

/**
 * Whether a checkpoint opened for one rank ({@link OpenedCheckpoint.rank}) holds a
 * tensor of its parameter's shape for every parameter and every saved moment.
 */
function holdsShardsOf(ck: OpenedCheckpoint, params: readonly [string, ParamInfo][]): boolean {
  const fits = (shape: readonly number[] | undefined, info: ParamInfo) =>
    shape !== undefined && sameShape(shape, info.tensor.shape);
  return params.every(([n, info]) =>
    fits(ck.tensors.shapeOf(n), info) &&
    (!ck.moments?.m.has(n) || fits(ck.moments.m.shapeOf(n), info))
  );
}

/**
 * Loads a checkpoint into `opts.params` (and `opts.optimizer`), resharding from the
 * saved TP size to `opts.tp`. Nothing is written unless every tensor is valid.
 */
export async function loadCheckpoint(dir: string, opts: LoadOptions): Promise<LoadResult> {
  const foreign = opts.optimizer && opts.params.find(([, p]) => !opts.optimizer!.owns(p.tensor));
  if (foreign) {
    throw new TypeError(
      `loadCheckpoint: the optimizer does not own parameter "${foreign[0]}" of params ` +
        "(pass the optimizer made for these parameters, e.g. the Trainer's of the same model)",
    );
  }
  const place = { tp: opts.tp ?? 1, tpRank: opts.tpRank ?? 0 };
  opts.progress?.(0, 3);
  const read: ReadOptions = {
    iteration: opts.iteration,
    optimizer: !!opts.optimizer,
    warn: opts.warn ?? (place.tpRank === 0 ? warnOnStderr : () => {}),
  };
  let ck = await openCheckpoint(dir, { ...read, ownShards: { tp: place.tp, rank: place.tpRank } });
  if (ck.rank !== null && !holdsShardsOf(ck, opts.params)) {
    // Not this model's shards as they are: the full tensors give the reasons (or pad rows).
    ck = await openCheckpoint(dir, { ...read, iteration: ck.iteration, warn: () => {} });
  }
  const metaFile = join(ck.path, META_FILE);
  if (opts.model) {
    compareConfigs(
      metaFile,
      ck.meta.model,
      opts.model,
      opts.ignoreConfigKeys ?? RUNTIME_CONFIG_KEYS,
    );
  }
  if (!opts.allowExtra) {
    const have = new Set(opts.params.map(([n]) => n));
    const extra = [...ck.tensors.keys()].filter((n) => !have.has(n));
    if (extra.length > 0) {
      throw new CheckpointError(
        `${metaFile}: the checkpoint has tensors the model lacks: ${extra.slice(0, 5).join(", ")}` +
          (extra.length > 5 ? ` … (${extra.length} in all)` : ""),
      );
    }
  }
  opts.progress?.(1, 3);
  const padded = { ...ck.meta.paddedRows, ...opts.paddedRows };
  // This rank's own saved tensors are its shards: cut them as from full ones at TP 1.
  const cut = ck.rank === null ? place : { tp: 1, tpRank: 0 };
  const shards = planShards(opts.params, (n) => ck.tensors.get(n), cut, ck.fileOf, padded);
  const notes: string[] = [];
  if (ck.meta.parallel.tp !== place.tp) {
    notes.push(`resharded from tp ${ck.meta.parallel.tp} to tp ${place.tp}`);
  }
  let moments: { info: ParamInfo; m: Float32Array; v: Float32Array }[] = [];
  let optimizerLoaded = false;
  if (opts.optimizer) {
    const saved = ck.moments;
    if (!saved || !ck.meta.optimizer) {
      notes.push(
        "the checkpoint has no optimizer state: only the model was loaded (AdamW starts fresh at step 0)",
      );
    } else {
      const withM = opts.params.filter(([n]) => saved.m.has(n));
      const file = optimizerFileName(ck.rank ?? 0);
      const optSource = (n: string) => `${join(ck.path, file)} ("${n}")`;
      const ms = planShards(withM, (n) => saved.m.get(n), cut, optSource, padded);
      const vs = planShards(withM, (n) => saved.v.get(n), cut, optSource, padded);
      moments = withM.map(([, info], i) => ({ info, m: ms[i], v: vs[i] }));
      optimizerLoaded = true;
    }
  }
  // Everything is validated: write.
  opts.progress?.(2, 3);
  writeShards(opts.params, shards);
  if (opts.optimizer) {
    const opt = opts.optimizer;
    opt.resetState(optimizerLoaded ? ck.meta.optimizer!.step : 0);
    for (const { info, m, v } of moments) opt.setMoments(info.tensor, m, v);
  }
  opts.progress?.(3, 3);
  return {
    iteration: ck.iteration,
    path: ck.path,
    state: ck.meta.state,
    meta: ck.meta,
    optimizerLoaded,
    notes,
  };
}
