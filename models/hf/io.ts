/**
 * Reading and writing Hugging Face model directories: `config.json` plus
 * `model.safetensors` (or shards listed in `model.safetensors.index.json`).
 * @module
 */

import { join } from "node:path";
import { exists, writeFileDurable } from "../checkpoint/fs.ts";
import { readJsonObject, resolveInDir } from "../checkpoint/files.ts";
import {
  CheckpointError,
  SafetensorsFile,
  writeSafetensorsStreamed,
} from "../checkpoint/safetensors.ts";
import { type HostTensor, type TensorSource, tensorSourceOf } from "../checkpoint/shard.ts";

/**
 * An HF directory opened: its config parsed and its safetensors headers read
 * and checked. A tensor's values are read from its file when {@link HfDir.get}
 * asks for them (one tensor in memory at a time, never a whole file).
 */
export interface HfDir extends TensorSource {
  /** The directory. */
  dir: string;
  /** Parsed `config.json`. */
  config: Record<string, unknown>;
  /** Every tensor name, as stored. */
  names: string[];
  /** A tensor by stored name, read from its file now (converted to f32), or undefined. */
  get(name: string): HostTensor | undefined;
  /** The file holding `name`, for messages. */
  fileOf(name: string): string;
}

/**
 * Reads `dir/config.json` (a JSON object; a regular file inside `dir`, at most 100 MB).
 * Throws a {@link CheckpointError} naming the file for anything else.
 */
export async function readHfConfig(dir: string): Promise<Record<string, unknown>> {
  const cfgPath = join(dir, "config.json");
  if (!await exists(cfgPath)) {
    throw new CheckpointError(`${cfgPath}: no such file (not a Hugging Face model directory?)`);
  }
  const f = await resolveInDir(dir, "config.json");
  return await readJsonObject(f.real, f.shown);
}

/**
 * A Hugging Face config's `initializer_range` (the std its model's weights are
 * initialized with), where it is a positive number; undefined otherwise.
 */
export function hfInitializerRange(config: Record<string, unknown>): number | undefined {
  const r = config.initializer_range;
  return typeof r === "number" && r > 0 && Number.isFinite(r) ? r : undefined;
}

/**
 * Reads `dir/config.json` and opens its safetensors weights (`model.safetensors`, or the
 * shards that `model.safetensors.index.json` lists), reading their headers only: a
 * tensor's values are read when {@link HfDir.get} asks (a file changed since is refused
 * then). Every file must resolve inside `dir` (no absolute or `..` names, no symlink
 * leading out, except into the hub cache's `blobs` folder) and be a regular file; each
 * safetensors header is checked against its file's size; non-finite weights are refused
 * when read. Errors are {@link CheckpointError}s naming the file (and tensor).
 * `progress` is called with the safetensors files opened so far and their count.
 */
export async function readHfDir(
  dir: string,
  progress?: (done: number, total: number) => void,
): Promise<HfDir> {
  const config = await readHfConfig(dir);
  const files: SafetensorsFile[] = [];
  const single = join(dir, "model.safetensors");
  const index = join(dir, "model.safetensors.index.json");
  const readSt = async (name: string, referrer?: string) => {
    const f = await resolveInDir(dir, name, referrer);
    return await SafetensorsFile.open(f.real, { name: f.shown });
  };
  if (await exists(single)) {
    progress?.(0, 1);
    files.push(await readSt("model.safetensors"));
    progress?.(1, 1);
  } else if (await exists(index)) {
    const idxFile = await resolveInDir(dir, "model.safetensors.index.json");
    const idx = await readJsonObject(idxFile.real, idxFile.shown);
    const map = idx.weight_map;
    if (map === null || typeof map !== "object" || Array.isArray(map)) {
      throw new CheckpointError(`${index}: "weight_map" is missing or not an object`);
    }
    const shards = new Map<string, string>(); // file → where the index names it first
    for (const [tensor, file] of Object.entries(map)) {
      if (typeof file !== "string") {
        throw new CheckpointError(
          `${index}: weight_map["${tensor}"] is ${JSON.stringify(file)}, not a file name`,
        );
      }
      if (!shards.has(file)) shards.set(file, `${index} (weight_map["${tensor}"])`);
    }
    if (shards.size === 0) throw new CheckpointError(`${index}: "weight_map" lists no files`);
    // Check every name before reading any file.
    for (const [f, where] of shards) await resolveInDir(dir, f, where);
    for (const [f, where] of shards) {
      progress?.(files.length, shards.size);
      files.push(await readSt(f, where));
    }
    progress?.(shards.size, shards.size);
    for (const [tensor, file] of Object.entries(map as Record<string, string>)) {
      const f = files.find((x) => x.path === join(dir, file));
      if (f && !f.has(tensor)) {
        throw new CheckpointError(`${f.path}: no tensor "${tensor}" (${index} says it is there)`);
      }
    }
  } else {
    const bin = await exists(join(dir, "pytorch_model.bin"));
    throw new CheckpointError(
      `${dir}: no model.safetensors` +
        (bin
          ? " (only pytorch_model.bin, which is not supported: re-save it with safe_serialization=True)"
          : ""),
    );
  }
  const where = new Map<string, SafetensorsFile>();
  for (const f of files) {
    for (const n of f.tensors.keys()) {
      const prev = where.get(n);
      if (prev) throw new CheckpointError(`${f.path}: tensor "${n}" is also in ${prev.path}`);
      where.set(n, f);
    }
  }
  return {
    dir,
    config,
    names: [...where.keys()],
    keys: () => where.keys(),
    has: (name) => where.has(name),
    shapeOf: (name) => where.get(name)?.info(name).shape,
    get(name) {
      const f = where.get(name);
      return f ? { shape: [...f.info(name).shape], data: f.floats(name) } : undefined;
    },
    fileOf: (name) => where.get(name)?.path ?? single,
  };
}

/** The safetensors dtype an HF export writes its floats as. */
export type HfDType = "F32" | "F16" | "BF16";

/** The HF `torch_dtype` of each safetensors float type. */
export const TORCH_DTYPE: Readonly<Record<HfDType, string>> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

/**
 * Writes `config.json` and `model.safetensors` (with the `format: pt` metadata HF expects),
 * its floats as `dtype` (default F32; F16/BF16 rounded to nearest even, `torch_dtype` set
 * to match); `progress` is called with the files written so far (of 2). The tensors are
 * written one at a time: from a {@link TensorSource}, each is read (computed) only when
 * its turn comes, so the weights are never held whole.
 */
export async function writeHfDir(
  dir: string,
  config: Record<string, unknown>,
  tensors: readonly [string, HostTensor][] | TensorSource,
  progress?: (done: number, total: number) => void,
  dtype: HfDType = "F32",
): Promise<void> {
  if (dtype !== "F32") config = { ...config, torch_dtype: TORCH_DTYPE[dtype] };
  progress?.(0, 2);
  await Deno.mkdir(dir, { recursive: true });
  await writeFileDurable(
    join(dir, "config.json"),
    new TextEncoder().encode(JSON.stringify(config, null, 2) + "\n"),
  );
  progress?.(1, 2);
  const source = "shapeOf" in tensors ? tensors : tensorSourceOf(new Map(tensors));
  await writeSafetensorsStreamed(
    join(dir, "model.safetensors"),
    [...source.keys()].map((name) => ({
      name,
      shape: source.shapeOf(name)!,
      dtype,
      values: () => source.get(name)!.data,
    })),
    { format: "pt" },
  );
  progress?.(2, 2);
}
