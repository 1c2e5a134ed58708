/**
 * Reading and writing Hugging Face model directories: `config.json` plus
 * `model.safetensors` (or shards listed in `model.safetensors.index.json`).
 * @module
 */

import { join } from "node:path";
import { exists, writeFileDurable } from "../checkpoint/fs.ts";
import { CheckpointError, SafetensorsFile, writeSafetensors } from "../checkpoint/safetensors.ts";
import type { HostTensor } from "../checkpoint/shard.ts";

/** An HF directory held in memory. */
export interface HfDir {
  /** The directory. */
  dir: string;
  /** Parsed `config.json`. */
  config: Record<string, unknown>;
  /** Every tensor name, as stored. */
  names: string[];
  /** A tensor by stored name (converted to f32), or undefined. */
  get(name: string): HostTensor | undefined;
  /** The file holding `name`, for messages. */
  fileOf(name: string): string;
}

/** Reads `dir/config.json` and its safetensors weights. */
export async function readHfDir(dir: string): Promise<HfDir> {
  const cfgPath = join(dir, "config.json");
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(await Deno.readTextFile(cfgPath));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CheckpointError(`${cfgPath}: no such file (not a Hugging Face model directory?)`);
    }
    throw new CheckpointError(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  const files: SafetensorsFile[] = [];
  const single = join(dir, "model.safetensors");
  const index = join(dir, "model.safetensors.index.json");
  if (await exists(single)) {
    files.push(await SafetensorsFile.read(single));
  } else if (await exists(index)) {
    const idx = JSON.parse(await Deno.readTextFile(index)) as {
      weight_map?: Record<string, string>;
    };
    for (const f of new Set(Object.values(idx.weight_map ?? {}))) {
      files.push(await SafetensorsFile.read(join(dir, f)));
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
  for (const f of files) for (const n of f.tensors.keys()) where.set(n, f);
  return {
    dir,
    config,
    names: [...where.keys()],
    get(name) {
      const f = where.get(name);
      return f ? { shape: [...f.info(name).shape], data: f.floats(name) } : undefined;
    },
    fileOf: (name) => where.get(name)?.path ?? single,
  };
}

/** Writes `config.json` and `model.safetensors` (with the `format: pt` metadata HF expects). */
export async function writeHfDir(
  dir: string,
  config: Record<string, unknown>,
  tensors: readonly [string, HostTensor][],
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await writeFileDurable(
    join(dir, "config.json"),
    new TextEncoder().encode(JSON.stringify(config, null, 2) + "\n"),
  );
  await writeSafetensors(
    join(dir, "model.safetensors"),
    tensors.map(([name, t]) => ({ name, shape: t.shape, data: t.data })),
    { format: "pt" },
  );
}
