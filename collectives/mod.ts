/**
 * Collectives: process groups, ring all-reduce/all-gather/reduce-scatter/
 * broadcast over shared memory (Workers of one process) and TCP (processes and
 * hosts), rendezvous, device mapping and the launcher.
 * @module
 */

export { Arena } from "./arena.ts";
export { type CallDesc, CollectiveError, type Frame, type OpName, OPS } from "./frame.ts";
export type { Link, LinkContext } from "./link.ts";
export {
  type AnyTypedArray,
  Communicator,
  type CommunicatorOptions,
  type HostCopyable,
  ProcessGroup,
  type ShmAlgorithm,
} from "./group.ts";
export { DirectGroup } from "./direct.ts";
export { type HalfCodec, type HalfMemory, HalfSummer } from "./half_sum.ts";
export {
  parallelGroups,
  type ParallelLayout,
  parallelLayout,
  type RankPosition,
  rankPosition,
} from "./layout.ts";
export { chunkRange } from "./ring.ts";
export { type HalfSimd, reduceJs, type ReduceOp, type Reducer } from "./wasm_reduce.ts";
export {
  checkRunId,
  DEFAULT_DIST_TIMEOUT_MS,
  DIST_FLAGS,
  type DistConfig,
  DistConfigError,
  type Launcher,
  localDistConfig,
  parseDuration,
  randomRunId,
  resolveDistConfig,
  splitDistArgs,
} from "./env.ts";
export {
  assignDevices,
  describeDevices,
  type DeviceAssignment,
  driPrimeFor,
  type HostGpu,
  listHostGpus,
} from "./devices.ts";
export {
  launch,
  type RankOutcome,
  type RunOptions,
  type RunResult,
  runWorkers,
  type WorkerContext,
} from "./launch.ts";
export { StoreClient, StoreServer, WIRE_PROTOCOL } from "./store.ts";
export { describeRun } from "./tcp.ts";
export {
  FORWARDED_SIGNALS,
  LAUNCHER_PID_ENV,
  type ProcsOptions,
  runRankProcesses,
  watchLauncher,
} from "./procs.ts";
