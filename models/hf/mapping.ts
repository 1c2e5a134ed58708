/**
 * Table-driven name and layout mapping between Hugging Face checkpoints and this
 * project's parameters. An entry maps one of our tensors to one or more HF
 * tensors: several are concatenated along dim 0 (fused q|k|v), `transpose` swaps
 * a 2-D weight (HF GPT-2's Conv1D stores [in, out]), and `{N}` repeats per layer.
 * Padded-vocabulary rows are not handled here: our full tensors keep HF's row
 * count on import (the loader pads through `paddedRows`) and drop padding on export.
 * @module
 */

import type { ParamInfo } from "../../core/nn.ts";
import { fullShapeOf, planShards, type TpPlace, writeShards } from "../checkpoint/assign.ts";
import { CheckpointError } from "../checkpoint/safetensors.ts";
import {
  type HostTensor,
  lazySource,
  readTensors,
  resizeRows,
  sameShape,
  type TensorSource,
  tensorSourceOf,
} from "../checkpoint/shard.ts";

/** One row of a mapping table. */
export interface MapEntry {
  /** Our parameter name; `{N}` is the layer index. */
  ours: string;
  /** HF tensor name(s); several are concatenated along dim 0 in this order. */
  hf: readonly string[];
  /** Transpose the 2-D weight between the layouts. */
  transpose?: boolean;
}

/** A concrete (per-layer expanded) entry. */
export interface ConcreteEntry extends MapEntry {
  /** True when the template had `{N}`. */
  perLayer: boolean;
}

/** Expands `{N}` in a table for `numLayers` layers. */
export function expandTable(table: readonly MapEntry[], numLayers: number): ConcreteEntry[] {
  const out: ConcreteEntry[] = [];
  for (const e of table) {
    if (!e.ours.includes("{N}")) {
      out.push({ ...e, perLayer: false });
      continue;
    }
    for (let i = 0; i < numLayers; i++) {
      const s = (x: string) => x.replaceAll("{N}", String(i));
      out.push({ ours: s(e.ours), hf: e.hf.map(s), transpose: e.transpose, perLayer: true });
    }
  }
  return out;
}

/** The entry of `table` that maps our tensor `ours` (its `{N}` filled in), or undefined. */
function entryOf(table: readonly MapEntry[], ours: string): MapEntry | undefined {
  for (const e of table) {
    if (!e.ours.includes("{N}")) {
      if (e.ours === ours) return e;
      continue;
    }
    const [head, tail] = e.ours.split("{N}");
    const n = ours.startsWith(head) && ours.endsWith(tail)
      ? ours.slice(head.length, ours.length - tail.length)
      : "";
    if (/^\d+$/.test(n)) {
      const s = (x: string) => x.replaceAll("{N}", n);
      return { ours, hf: e.hf.map(s), transpose: e.transpose };
    }
  }
  return undefined;
}

/**
 * Refuses, in the Hugging Face file's own names and layout, the first tensor
 * whose shape is not the model's (built from the directory's `config.json`;
 * `sizes` names the keys that size it, for the message): a file and a config
 * that disagree, rather than the loader's message in this project's names. Rows of `paddedRows` tensors are left to
 * the loader (a vocabulary is padded to the TP size).
 */
function checkHfShapes(
  table: readonly MapEntry[],
  params: readonly [string, ParamInfo][],
  tensors: TensorSource,
  tp: number,
  source: string,
  sizes: string,
  paddedRows: Record<string, number> = {},
): void {
  const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;
  for (const [name, info] of params) {
    const shape = tensors.shapeOf(name);
    const e = entryOf(table, name);
    if (!shape || !e) continue;
    const want = fullShapeOf(info, tp);
    const rowsOnly = shape.length === want.length && sameShape(shape.slice(1), want.slice(1));
    if (sameShape(shape, want) || (name in paddedRows && rowsOnly)) continue;
    // A padded vocabulary is shown with the rows the file should have.
    if (name in paddedRows) want[0] = paddedRows[name];
    const layout = (s: readonly number[]) => e.transpose ? [...s].reverse() : [...s];
    const parts = e.hf.length;
    const per = (s: number[]) => fmt(parts > 1 ? [s[0] / parts, ...s.slice(1)] : s);
    const are = parts > 1 ? "are each" : "is";
    throw new CheckpointError(
      `${source}: ${e.hf.join(", ")} ${are} ${per(layout(shape))} in the file, but the model ` +
        `has ${per(layout(want))} (sized by config.json's ${sizes}): the weights and the ` +
        `config disagree`,
    );
  }
}

/**
 * Writes our full tensors read from a Hugging Face file into a model's
 * parameters (this rank's shards at `place`), validating everything before
 * writing anything, in this order: a tensor the model has no parameter for;
 * a parameter the file has no tensor for (`missingHint` may add a clause to
 * that message); every shape against the model in the file's own names and
 * layout (`table`; `sizes` names the config.json keys that size the model),
 * then as the loader plans the shards (`planShards`, with `paddedRows`).
 * The values are read one tensor at a time as its shard is cut (from a
 * {@link TensorSource}, e.g. {@link importTensors} over an opened directory),
 * so the host holds this rank's shards and one full tensor at most.
 */
export function assignHfTensors(
  table: readonly MapEntry[],
  params: readonly [string, ParamInfo][],
  tensors: TensorSource | ReadonlyMap<string, HostTensor>,
  place: TpPlace,
  source: string,
  sizes: string,
  paddedRows: Record<string, number>,
  missingHint: (missing: string[]) => string = () => "",
): void {
  const src = "shapeOf" in tensors ? tensors : tensorSourceOf(tensors);
  const have = new Set(params.map(([n]) => n));
  const extra = [...src.keys()].filter((n) => !have.has(n));
  if (extra.length > 0) {
    throw new CheckpointError(`${source}: the model has no parameter ${extra.join(", ")}`);
  }
  const missing = params.map(([n]) => n).filter((n) => !src.has(n));
  if (missing.length > 0) {
    throw new CheckpointError(
      `${source}: no HF tensor for ${missing.join(", ")}${missingHint(missing)}`,
    );
  }
  checkHfShapes(table, params, src, place.tp ?? 1, source, sizes, paddedRows);
  const shards = planShards(
    params,
    (n) => src.get(n),
    place,
    (n) => `${source} ("${n}")`,
    paddedRows,
  );
  writeShards(params, shards);
}

/** The shape of a 2-D tensor of `shape` transposed; throws for another rank. */
function transposedShape(shape: readonly number[]): number[] {
  if (shape.length !== 2) {
    throw new CheckpointError(`cannot transpose a tensor of shape [${shape.join(", ")}]`);
  }
  return [shape[1], shape[0]];
}

/** The shape of tensors of `shapes` concatenated along dim 0; throws when the rest differ. */
function concatShape(shapes: readonly (readonly number[])[]): number[] {
  const rest = shapes[0].slice(1);
  if (shapes.some((s) => s.slice(1).join() !== rest.join())) {
    throw new CheckpointError(
      `cannot concatenate shapes ${shapes.map((s) => `[${s.join(", ")}]`).join(", ")}`,
    );
  }
  return [shapes.reduce((n, s) => n + s[0], 0), ...rest];
}

/** Transposes a 2-D host tensor. */
export function transpose2d(t: HostTensor): HostTensor {
  const [c, r] = transposedShape(t.shape);
  const out = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = t.data[i * c + j];
  return { shape: [c, r], data: out };
}

function concat0(parts: HostTensor[]): HostTensor {
  const shape = concatShape(parts.map((p) => p.shape));
  const data = new Float32Array(parts.reduce((s, p) => s + p.data.length, 0));
  let o = 0;
  for (const p of parts) {
    data.set(p.data, o);
    o += p.data.length;
  }
  return { shape, data };
}

/** The shape of each of `n` equal parts of a tensor of `shape` along dim 0; throws if it does not split. */
function split0Shape(shape: readonly number[], n: number, name: string): number[] {
  if (shape[0] % n !== 0) {
    throw new CheckpointError(
      `tensor "${name}" of shape [${shape.join(", ")}] does not split into ${n} along dim 0`,
    );
  }
  return [shape[0] / n, ...shape.slice(1)];
}

function split0(t: HostTensor, n: number, name: string): HostTensor[] {
  const shape = split0Shape(t.shape, n, name);
  const per = t.data.length / n;
  return Array.from({ length: n }, (_, i) => ({
    shape: [...shape],
    data: t.data.slice(i * per, (i + 1) * per),
  }));
}

/**
 * Our full tensors from HF tensors (`hf`, by normalised name), checked by name and
 * shape now and read when asked for: every entry must be present, and every HF
 * name must be used or matched by `ignore`; `source` names the file. A tensor's
 * values are read from `hf` (its parts concatenated, transposed) at each `get`.
 */
export function importTensors(
  entries: readonly ConcreteEntry[],
  hf: TensorSource,
  ignore: (hfName: string) => boolean,
  source: string,
): TensorSource {
  const used = new Set<string>();
  const missing: string[] = [];
  const shapes = new Map<string, number[]>();
  const byOurs = new Map<string, ConcreteEntry>();
  for (const e of entries) {
    const parts: (readonly number[])[] = [];
    for (const n of e.hf) {
      const shape = hf.shapeOf(n);
      if (!shape) missing.push(n);
      else parts.push(shape);
      used.add(n);
    }
    if (parts.length !== e.hf.length) continue;
    let shape = parts.length === 1 ? [...parts[0]] : concatShape(parts);
    if (e.transpose) shape = transposedShape(shape);
    shapes.set(e.ours, shape);
    byOurs.set(e.ours, e);
  }
  if (missing.length > 0) {
    throw new CheckpointError(
      `${source}: missing tensor${missing.length > 1 ? "s" : ""} ${
        missing.slice(0, 6).join(", ")
      }` +
        (missing.length > 6 ? ` … (${missing.length} in all)` : ""),
    );
  }
  const unknown = [...hf.keys()].filter((n) => !used.has(n) && !ignore(n));
  if (unknown.length > 0) {
    throw new CheckpointError(
      `${source}: unexpected tensor${unknown.length > 1 ? "s" : ""} ${
        unknown.slice(0, 6).join(", ")
      }` +
        (unknown.length > 6 ? ` … (${unknown.length} in all)` : "") +
        " (a different architecture?)",
    );
  }
  return lazySource(shapes, (name) => {
    const e = byOurs.get(name)!;
    const parts = e.hf.map((n) => hf.get(n)!);
    const t = parts.length === 1 ? parts[0] : concat0(parts);
    return e.transpose ? transpose2d(t) : t;
  });
}

/** `hf` under other names: `stored` maps each name to the one `hf` holds it by. */
export function renamedSource(hf: TensorSource, stored: ReadonlyMap<string, string>): TensorSource {
  const at = (name: string) => stored.get(name);
  return {
    keys: () => stored.keys(),
    has: (name) => stored.has(name),
    shapeOf: (name) => stored.has(name) ? hf.shapeOf(at(name)!) : undefined,
    get: (name) => stored.has(name) ? hf.get(at(name)!) : undefined,
  };
}

/**
 * Refuses an HF checkpoint whose `copy` tensor (an output layer HF writes beside
 * the tensor it is tied to) holds other values than `tiedTo`: this project ties
 * the two, so loading only one would compute other outputs. `copy` undefined
 * (the usual, deduplicated save) or equal to `tiedTo` passes.
 */
export function checkTiedCopy(
  copy: HostTensor | undefined,
  copyName: string,
  tiedTo: HostTensor,
  tiedName: string,
  source: string,
): void {
  if (!copy) return;
  const same = copy.shape.length === tiedTo.shape.length &&
    copy.shape.every((d, i) => d === tiedTo.shape[i]) &&
    copy.data.every((v, i) =>
      v === tiedTo.data[i] || (Number.isNaN(v) && Number.isNaN(tiedTo.data[i]))
    );
  if (!same) {
    throw new CheckpointError(
      `${source}: ${copyName} is not a copy of ${tiedName} (an untied output layer); this ` +
        `model ties its output layer to ${tiedName}, so it would compute other outputs`,
    );
  }
}

/**
 * Our full tensors to export: by name, as a getter (read now) or as the shapes and
 * values of a {@link TensorSource} (read when asked for).
 */
export type FullTensors =
  | ((ours: string) => HostTensor | undefined)
  | Pick<TensorSource, "shapeOf" | "get">;

/**
 * HF tensors from our full tensors, in table order, each computed when asked for
 * (its shape now). Tensors named in `validRows` (padded vocabulary) are cut to that
 * many rows first; a tensor split in several HF ones (q|k|v) is read for each.
 */
export function exportTensorSource(
  entries: readonly ConcreteEntry[],
  full: FullTensors,
  validRows: Record<string, number> = {},
): TensorSource {
  const src = typeof full === "function"
    ? { shapeOf: (n: string) => full(n)?.shape, get: full }
    : full;
  const shapes = new Map<string, number[]>();
  const parts = new Map<string, { e: ConcreteEntry; i: number }>();
  for (const e of entries) {
    const ours = src.shapeOf(e.ours);
    if (!ours) throw new CheckpointError(`the model has no tensor "${e.ours}" to export`);
    let shape = [...ours];
    if (validRows[e.ours] !== undefined) shape[0] = validRows[e.ours];
    if (e.transpose) shape = transposedShape(shape);
    const n = e.hf.length;
    if (n > 1) shape = split0Shape(shape, n, e.ours);
    e.hf.forEach((hfName, i) => {
      shapes.set(hfName, shape);
      parts.set(hfName, { e, i });
    });
  }
  return lazySource(shapes, (name) => {
    const { e, i } = parts.get(name)!;
    let t = src.get(e.ours)!;
    if (validRows[e.ours] !== undefined) t = resizeRows(t, validRows[e.ours]);
    if (e.transpose) t = transpose2d(t);
    return e.hf.length === 1 ? t : split0(t, e.hf.length, e.ours)[i];
  });
}

/**
 * HF tensors from our full tensors, in table order, all read now (see
 * {@link exportTensorSource}).
 */
export function exportTensors(
  entries: readonly ConcreteEntry[],
  full: FullTensors,
  validRows: Record<string, number> = {},
): [string, HostTensor][] {
  return [...readTensors(exportTensorSource(entries, full, validRows))];
}
