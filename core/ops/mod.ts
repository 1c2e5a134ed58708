/**
 * All tensor ops.
 * @module
 */

export * from "./raw.ts";
export * from "./basic.ts";
export * from "./matmul.ts";
export * from "./mlp.ts";
export * from "./nn.ts";
export * from "./residual.ts";
export * from "./random.ts";
export * from "./reduce.ts";
export * from "./shape.ts";
export * from "./parallel_xent.ts";
export * from "./lm_head.ts";
export * from "./half.ts";
export * from "./f16_arithmetic.ts";
export * from "./attention.ts";
