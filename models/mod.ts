/**
 * Models: GPT and BERT built from tensor-parallel layers, the trainer, and
 * generation.
 * @module
 */

export {
  type CachedForwardOptions,
  Gpt,
  GPT_LAYER_NORM_EPS,
  type GptConfig,
  GptLayer,
  paddedVocabSize,
} from "./gpt.ts";
export {
  DEFAULT_DROPOUT,
  DEFAULT_VOCAB_MULTIPLE,
  defaultFfnHiddenSize,
  type DropoutConfig,
  resolveShape,
  type ShapeConfig,
  ShapeError,
  type TransformerConfig,
  type TransformerShape,
  validateTransformerConfig,
} from "./shape.ts";
export { KvCache, type KvCacheShape, type LayerCache } from "./kv_cache.ts";
export {
  Bert,
  BERT_LAYER_NORM_EPS,
  BERT_TYPE_VOCAB_SIZE,
  type BertConfig,
  type BertInputs,
  type BertLosses,
} from "./bert.ts";
export {
  type BlockShape,
  FUSED_ATTENTION_DEFAULT,
  modelInit,
  type ModelOptions,
  outputInit,
  ParallelMlp,
  type ProjectionNames,
  SelfAttention,
} from "./blocks.ts";
export type { LinearLike, ParallelLayers, VocabEmbedding } from "./parallel/layers.ts";
export {
  ColumnParallelLinear,
  RowParallelLinear,
  TensorParallelLayers,
  VocabParallelEmbedding,
} from "./parallel/tp_layers.ts";
export {
  allReduced,
  copyToRegion,
  gatherLastDim,
  halfWireGroup,
  reduceFromRegion,
  ReduceInto,
  scatterLastDim,
  type TpGroup,
  type WireCounter,
} from "./parallel/mappings.ts";
export { RngTracker } from "./parallel/random.ts";
export {
  type CommSplit,
  type CommTimer,
  countsInNorm,
  DEFAULT_DDP_BUCKET_SIZE,
  type GradReduceOptions,
  type HybridGroups,
  hybridHooks,
  splitCommWaits,
  timedGroup,
} from "./parallel/hooks.ts";
export {
  type AverageFn,
  bucketLayout,
  CommQueue,
  commQueue,
  type DpGroup,
  GradBuckets,
  type GradReduction,
  overlappedColumnLinear,
  overlappedColumnParallel,
  startAllReduce,
} from "./parallel/overlap.ts";
export {
  DEFAULT_CLIP_GRAD,
  type LossParts,
  type ParallelHooks,
  type StepLoss,
  type StepResult,
  type Trainable,
  Trainer,
  type TrainerOptions,
} from "./trainer.ts";
export {
  LOSS_SCALER_DEFAULTS,
  LossScaler,
  type LossScalerOptions,
  type LossScalerState,
} from "./loss_scale.ts";
export { generate, type GenerateOptions, slideKeep } from "./generate.ts";
export {
  checkSamplingOptions,
  SAMPLE_DEFAULTS,
  sampleToken,
  type SamplingOptions,
} from "./sampling.ts";
export { type FlopsShape, forwardFlops, trainingFlops } from "./flops.ts";
export { BertLayer } from "./bert.ts";
export * from "./checkpoint/mod.ts";
export * as hf from "./hf/mod.ts";
