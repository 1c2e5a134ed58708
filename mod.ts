/**
 * webgpu-megatron: Megatron-style tensor-parallel transformer training on
 * WebGPU, for Deno. Every numeric op is a WGSL compute kernel; layers split
 * across devices with the f/g conjugate operators; data parallelism over
 * shared memory and TCP.
 *
 * ```ts
 * import { Device, Gpt, Tensor, Trainer } from "./mod.ts";
 * const device = await Device.create();
 * const gpt = Gpt.serial(device, { vocabSize: 256, numLayers: 2, hiddenSize: 64, numHeads: 4, maxPositions: 32 }, 1);
 * ```
 * @module
 */

export * from "./core/mod.ts";
export * from "./models/mod.ts";
export * from "./collectives/mod.ts";
export * as data from "./data/mod.ts";
