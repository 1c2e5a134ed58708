/**
 * Core: devices, tensors, autograd, ops, modules, optimizers and random streams.
 * @module
 */

export {
  type AdapterSummary,
  Device,
  type DeviceOptions,
  REQUESTED_LIMITS,
  type StreamOperand,
  type TextureBinding,
} from "./device.ts";
export {
  BACKEND_ENV,
  type BackendName,
  BACKENDS,
  browserGPU,
  dawnGPU,
  DEFAULT_BACKEND,
  DENO_ALLOW_GL_ENV,
  denoGPU,
  type GPUProvider,
  gpuProvider,
  NoAdapterError,
  parseBackend,
  UnknownBackendError,
  UnsupportedAdapterError,
} from "./gpu.ts";
export { BufferPool, sizeClass } from "./pool.ts";
export { DeviceProfiler, type KernelStat, type ProfileMode } from "./profiler.ts";
export {
  type BufferBinding,
  rowBlocks,
  subBinding,
  type Window,
  windowElements,
  windows,
} from "./windows.ts";
export {
  type AddableGrad,
  assertF32,
  assertSameDevice,
  assertSameShape,
  denseGrad,
  disposeOnThrow,
  dropUnpacked,
  type DType,
  fmtShape,
  type GradNode,
  type GradResult,
  type HalfCopy,
  numel,
  packSaved,
  type PendingGrad,
  Tensor,
  tidy,
} from "./tensor.ts";
export { TokenIds } from "./token_ids.ts";
export { backward, type BackwardOptions, record, recordMulti, zeroGrad } from "./autograd.ts";
export * as ops from "./ops/mod.ts";
export type { GeluKind } from "./ops/basic.ts";
export type { DropoutSpec, ResidualNorm, TokenPart } from "./ops/residual.ts";
export type { PreAndActivation } from "./ops/mlp.ts";
export {
  adapterKey,
  codeDigest,
  DEFAULT_TUNING_BUDGET_MS,
  MatmulTuner,
  type MatmulTunerOptions,
  MIN_TUNED_FLOPS,
  parseTuningEntry,
  type TunedShape,
  tuningEntry,
  type TuningStore,
  type TuningTable,
  tuningTableKey,
} from "./matmul_tuner.ts";
export type {
  DispatchPlan,
  MatmulOptions,
  MatmulShape,
  MatmulTiling,
  TilingSource,
} from "../kernels/matmul.ts";
export type { MaskKind } from "../kernels/softmax.ts";
export {
  DEFAULT_INIT_STD,
  Dropout,
  Embedding,
  type InitSpec,
  LayerNorm,
  Linear,
  Module,
  type ParamInfo,
} from "./nn.ts";
export {
  AdamW,
  ADAMW_DEFAULTS,
  type AdamWConfig,
  clipCoefficient,
  type ClipScaling,
  gradSumSquares,
  learningRate,
  LR_DECAY_STYLES,
  type LrDecayStyle,
  type LrSchedule,
  WSD_DECAY_STYLES,
  type WsdDecayStyle,
} from "./optim.ts";
export { checkDraw, deriveSeed, type RngDraw, RngStream } from "./rng.ts";
export {
  bf16BitsToF32,
  decodeHalfInto,
  encodeHalfInto,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  fromHalfBits,
  roundToHalf,
  toHalfBits,
} from "./half.ts";
export type { HalfFormat } from "../kernels/half.ts";
export { recompute } from "./recompute.ts";
export { type KernelSource, SOFTWARE_LANES } from "../kernels/kernel.ts";
export { BUCKET_ELEMENTS } from "./param_buckets.ts";
