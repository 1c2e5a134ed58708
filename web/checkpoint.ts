/**
 * The page's checkpoint: join every rank's parameter shards into full tensors
 * and encode them as Hugging Face GPT-2 files (models/hf/memory.ts).
 * @module
 */

import { type HostTensor, joinShards } from "../models/checkpoint/shard.ts";
import { encodeHfGpt2, type HfFiles } from "../models/hf/memory.ts";
import type { GptConfig } from "../models/gpt.ts";
import type { ShardMessage } from "./protocol.ts";

/** Full tensors by name from `ranks[r]` = rank r's shards (every rank the same names). */
export function joinRanks(ranks: readonly ShardMessage[][]): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const s of ranks[0]) {
    const parts = ranks.map((r) => {
      const mine = r.find((x) => x.name === s.name);
      if (!mine) throw new Error(`a rank returned no shard of ${s.name}`);
      return mine.data;
    });
    out.set(s.name, joinShards(parts, s.shape, { dim: s.partitionDim, blocks: s.blocks }));
  }
  return out;
}

/** HF GPT-2 files of a trained model from its ranks' shards. */
export function checkpointFiles(config: GptConfig, ranks: readonly ShardMessage[][]): HfFiles {
  const full = joinRanks(ranks);
  return encodeHfGpt2(config, (n) => full.get(n));
}
