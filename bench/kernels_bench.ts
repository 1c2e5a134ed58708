/**
 * Kernel benchmarks: matmul, softmax and layer norm rows of `bench/kernels.ts`, the project's
 * kernels only (`deno task bench:tfjs` runs them beside TensorFlow.js's WebGPU backend).
 *
 *     WEBGPU_BACKEND=deno|dawn deno bench -A bench/kernels_bench.ts
 * @module
 */

import { registerBenches } from "./kernels.ts";

registerBenches(["project"]);
