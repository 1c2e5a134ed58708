/**
 * Checkpoints: safetensors I/O, crash-safe sharded save, load with resharding to
 * any tensor-parallel size, and host-side resharding helpers.
 * @module
 */

export {
  CheckpointError,
  encodeSafetensors,
  type FileDigest,
  firstNonFinite,
  MAX_HEADER_BYTES,
  type SafeDType,
  type SafeTensorInfo,
  type SafeTensorLater,
  type SafeTensorOut,
  SafetensorsFile,
  type SafetensorsReadOptions,
  sha256Hex,
  writeSafetensors,
  writeSafetensorsStreamed,
} from "./safetensors.ts";
export {
  type HostTensor,
  joinShards,
  lazySource,
  type Partition,
  readTensors,
  resizeRows,
  splitShard,
  type TensorSource,
  tensorSourceOf,
} from "./shard.ts";
export {
  CHECKPOINT_FORMAT,
  type CheckpointMeta,
  iterDirName,
  LATEST_FILE,
  META_FILE,
  modelFileName,
  optimizerFileName,
  readLatest,
  resolveIterDir,
  type TensorLayout,
  TRACKER_FILE,
} from "./layout.ts";
export {
  assignFull,
  fullShapeOf,
  planShards,
  shardFromFull,
  type TpPlace,
  writeShards,
} from "./assign.ts";
export { saveCheckpoint, type SaveOptions, type SaveStage } from "./save.ts";
export {
  type FullCheckpoint,
  openCheckpoint,
  type OpenedCheckpoint,
  readCheckpointFull,
  type ReadOptions,
  warnOnStderr,
} from "./read.ts";
export { MAX_SMALL_FILE_BYTES, readJsonObject, readSmallFile, resolveInDir } from "./files.ts";
export { paramsToHost } from "./host.ts";
export { loadCheckpoint, type LoadOptions, type LoadResult, RUNTIME_CONFIG_KEYS } from "./load.ts";
export {
  gptCheckpointInfo,
  type HasRngStreams,
  restoreRngOffsets,
  type RngOffsets,
  rngOffsets,
} from "./gpt.ts";
