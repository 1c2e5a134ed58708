/**
 * Hugging Face GPT-2 files as bytes in memory, for a program without a file
 * system (a web page): the same `config.json` and `model.safetensors` that
 * `writeHfGpt2` writes to a directory, which `--init-from-hf DIR` loads.
 * @module
 */

import { encodeSafetensors } from "../checkpoint/safetensors.ts";
import type { HostTensor } from "../checkpoint/shard.ts";
import type { GptConfig } from "../gpt.ts";
import { gpt2ConfigToHf, gpt2TensorsToHf } from "./gpt2.ts";

/** The two files of an HF model directory, by name. */
export interface HfFiles {
  /** The model's configuration (JSON). */
  "config.json": Uint8Array;
  /** The weights (F32), with the `format: pt` metadata HF expects. */
  "model.safetensors": Uint8Array;
}

/**
 * Encodes a GPT as HF GPT-2 files in memory, from our full (TP-joined) tensors
 * by name (`full` as `writeHfGpt2` takes it).
 */
export function encodeHfGpt2(
  config: GptConfig,
  full: (name: string) => HostTensor | undefined,
): HfFiles {
  const tensors = gpt2TensorsToHf(full, config);
  return {
    "config.json": new TextEncoder().encode(JSON.stringify(gpt2ConfigToHf(config), null, 2) + "\n"),
    "model.safetensors": encodeSafetensors(
      tensors.map(([name, t]) => ({ name, shape: t.shape, data: t.data })),
      { format: "pt" },
    ),
  };
}
