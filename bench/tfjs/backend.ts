/**
 * TensorFlow.js's WebGPU backend as a bench-only baseline, on the same `GPU`
 * object (Deno's or Dawn's) and the same kind of adapter as the project's device.
 * @module
 */

import * as tf from "npm:@tensorflow/tfjs-core@4.22.0";
import { WebGPUBackend } from "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
import type { GPUProvider } from "../../core/gpu.ts";

/** A TensorFlow.js WebGPU backend bound to its own device on `provider`'s adapter. */
export interface Tfjs {
  /** The tfjs namespace (`tf.matMul`, `tf.softmax` …). */
  tf: typeof tf;
  /** Submits what tfjs has recorded and waits for the GPU (no read-back). */
  sync(): Promise<void>;
}

/**
 * Registers tfjs's WebGPU backend on a fresh device from `provider` (so it runs on
 * the same backend as the project, Dawn included) and makes it the active backend.
 */
export async function createTfjs(provider: GPUProvider): Promise<Tfjs> {
  const adapter = await provider.gpu.requestAdapter(provider.adapterOptions);
  if (!adapter) throw new Error(`tfjs: no adapter from the ${provider.backend} backend`);
  const l = adapter.limits;
  const requiredFeatures: GPUFeatureName[] = adapter.features.has("timestamp-query")
    ? ["timestamp-query"]
    : [];
  const device = await adapter.requestDevice({
    requiredFeatures,
    // the limits tfjs's own factory asks for
    requiredLimits: {
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    },
  });
  // tfjs's kernels are registered under the name "webgpu": replace its factory
  // (which would reach for navigator.gpu) with one that uses this device.
  tf.removeBackend("webgpu");
  tf.registerBackend("webgpu", () => new WebGPUBackend(device, adapter.info), 3);
  if (!(await tf.setBackend("webgpu"))) throw new Error("tfjs: the webgpu backend did not start");
  await tf.ready();
  // tfjs's own flush sequence (what its read-back does before mapping)
  const backend = tf.backend() as unknown as {
    ensureCommandEncoderReady(): void;
    endComputePassEncoder(): void;
    submitQueue(): void;
  };
  return {
    tf,
    async sync() {
      backend.ensureCommandEncoderReady();
      backend.endComputePassEncoder();
      backend.submitQueue();
      await device.queue.onSubmittedWorkDone();
    },
  };
}
