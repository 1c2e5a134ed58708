/**
 * Every kernel the project generates stays within WGSL's portable limits on
 * variables: at most {@link FUNCTION_VARIABLE_BYTES} (8,192) bytes of
 * `function` variables and 8,192 of `private` ones per entry point (WGSL spec,
 * "Limits"; a conforming implementation may refuse a module past them, where
 * naga and Tint here accept it). The large register blocks are swept over their
 * whole range: fused attention at every head size and form, every software
 * matmul block the tuner offers and the largest `checkTiling` accepts, every
 * epilogue, layout and 16-bit form; the other kernels over their parameters.
 * Sizes are upper bounds (tests/wgsl_sizes.ts); no GPU is needed.
 */

import { deepStrictEqual, ok, throws } from "node:assert/strict";
import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  attentionForwardKernel,
  type AttentionSpec,
} from "../kernels/attention.ts";
import * as adamw from "../kernels/adamw.ts";
import { stridedCopyKernel } from "../kernels/copy.ts";
import * as xent from "../kernels/crossentropy.ts";
import * as elementwise from "../kernels/elementwise.ts";
import * as embedding from "../kernels/embedding.ts";
import { fmaCeilingKernel } from "../kernels/fma_ceiling.ts";
import * as half from "../kernels/half.ts";
import { FUNCTION_VARIABLE_BYTES, type KernelSource } from "../kernels/kernel.ts";
import * as layernorm from "../kernels/layernorm.ts";
import {
  type MatmulOptions,
  matmulPlanWith,
  type MatmulShape,
  type MatmulTiling,
  tilingCandidates,
} from "../kernels/matmul.ts";
import * as reduce from "../kernels/reduce.ts";
import * as residual from "../kernels/residual_norm.ts";
import * as rng from "../kernels/rng.ts";
import { perRowVariant } from "../kernels/rowreduce.ts";
import * as softmax from "../kernels/softmax.ts";
import { variableBytes } from "./wgsl_sizes.ts";

/** WGSL's portable limit on one entry point's `private` variables. */
const PRIVATE_VARIABLE_BYTES = 8192;

/** Asserts every kernel of `kernels` within both limits; returns the largest function total. */
function assertWithinLimits(kernels: Iterable<KernelSource>): number {
  let most = 0;
  for (const k of kernels) {
    const bytes = variableBytes(k.code);
    ok(
      bytes.function <= FUNCTION_VARIABLE_BYTES,
      `${k.key}: ${bytes.function} bytes of function variables (WGSL allows ${FUNCTION_VARIABLE_BYTES})`,
    );
    ok(
      bytes.private <= PRIVATE_VARIABLE_BYTES,
      `${k.key}: ${bytes.private} bytes of private variables (WGSL allows ${PRIVATE_VARIABLE_BYTES})`,
    );
    most = Math.max(most, bytes.function);
  }
  return most;
}

Deno.test("the variable sizer counts WGSL's SizeOf, follows names and bounds the rest", () => {
  const code = `
struct P { n: u32, scale: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> p: P;
var<workgroup> tile: array<f32, 1024>;
var<private> counter: u32;
var<private> seeds: array<vec3<f32>, 4>;
fn helper(key: vec2<u32>, x: f32) -> f32 {
  var k = key;          // 8: a parameter's type
  var y = x * p.scale;  // 4: arithmetic of scalars
  return y;
}
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  var a: array<array<f16, 4>, 4>; // 32
  var b = vec4<f32>(0.0);          // 16
  var c = mat4x3<f32>();           // 64: columns padded to 16
  for (var i = 0u; i < p.n; i++) { // 4
    var m = -1e30;                 // 4
  }
  let v = out[g.x];
  var w = v;                       // 16: an element of a storage array
  var n = p.n + g.x;               // 4: a struct field and a component
  var q = someFunction(n);         // 16: an unknown call, counted as a vec4
  var s = select(0.0, 1.0, n > 2u); // 4
}`;
  deepStrictEqual(variableBytes(code), {
    function: 8 + 4 + 32 + 16 + 64 + 4 + 4 + 16 + 4 + 16 + 4,
    private: 4 + 4 * 16,
  });
  throws(() => variableBytes("fn main() { var x: texture_2d<f32>; }"), /cannot size the type/);
});

Deno.test("fused attention: every head size, mask, dropout, texture and lane form", () => {
  const kernels: KernelSource[] = [];
  for (let headDim = 4; headDim <= 256; headDim += 4) {
    for (const mask of ["causal", "padding"] as const) {
      for (const dropout of [false, true]) {
        for (const textures of [false, true]) {
          for (const lanes of [8, 16]) {
            const s: AttentionSpec = { mask, headDim, dropout, textures, lanes };
            kernels.push(
              attentionForwardKernel(s),
              attentionBackwardQueryKernel(s),
              attentionBackwardKeyKernel(s),
            );
          }
        }
      }
    }
  }
  const most = assertWithinLimits(kernels);
  // the key-side kernel at head size 252 holds 8,064 bytes of dK/dV accumulators
  ok(most > 8000, `the sweep reached the limit's neighbourhood (largest ${most} bytes)`);
});

/** Every product form: layouts, batching, epilogues, accumulation, 16-bit B. */
function matmulShapes(): { shape: MatmulShape; opts: Partial<MatmulOptions> }[] {
  const out: { shape: MatmulShape; opts: Partial<MatmulOptions> }[] = [];
  for (const [M, N, K] of [[512, 1024, 768], [256, 2304, 768], [12, 20, 7], [64, 64, 64]]) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const base: MatmulShape = {
          batch: 1,
          M,
          N,
          K,
          transA,
          transB,
          batchA: true,
          batchB: false,
          bias: false,
        }; // prettier-ignore
        out.push({ shape: base, opts: {} });
        out.push({ shape: { ...base, batch: 3, batchB: true, alpha: 0.5 }, opts: {} });
        out.push({ shape: { ...base, bias: true, geluOut: "tanh" }, opts: {} });
        out.push({ shape: { ...base, geluGrad: "erf" }, opts: {} });
        out.push({ shape: { ...base, accumulate: true }, opts: {} });
        out.push({ shape: { ...base, packedB: "bf16" }, opts: {} });
        out.push({ shape: { ...base, packedB: "fp16" }, opts: { shaderF16: true } });
        out.push({
          shape: { ...base, packedB: "fp16", bias: true, geluOut: "erf" },
          opts: { shaderF16: true, f16Arithmetic: true },
        });
      }
    }
  }
  return out;
}

Deno.test("matmul: every tiling offered, the largest software block, GPU tiles", () => {
  let most = 0;
  for (const { shape, opts: extra } of matmulShapes()) {
    for (const lanes of [8, 16]) {
      const opts: MatmulOptions = {
        software: true,
        maxInvocations: 256,
        maxWorkgroupStorage: 16384,
        maxTextureDimension: 8192,
        lanes,
        ...extra,
      };
      const tilings: MatmulTiling[] = [
        ...tilingCandidates(shape, opts),
        { software: true, tm: 64, tv: 8, lx: 1, lanes },
        { software: true, tm: 64, tv: 8, lx: 2, lanes, texA: true, texB: true },
      ];
      const kernels: KernelSource[] = [];
      for (const t of tilings) {
        try {
          kernels.push(matmulPlanWith(shape, opts, t).kernel);
        } catch (e) {
          // a texture the shape cannot use is refused by the plan, not generated
          if (!/cannot be read through a texture/.test(String(e))) throw e;
        }
      }
      most = Math.max(most, assertWithinLimits(kernels));
    }
    const gpu: MatmulOptions = {
      software: false,
      maxInvocations: 256,
      maxWorkgroupStorage: 16384,
      ...extra,
    };
    assertWithinLimits(
      tilingCandidates(shape, gpu).map((t) => matmulPlanWith(shape, gpu, t).kernel),
    );
  }
  // the 64×32 block's accumulators: 512 vec4s, exactly the limit
  deepStrictEqual(most, FUNCTION_VARIABLE_BYTES);
});

Deno.test("the other kernels, over their parameters", () => {
  const kernels: KernelSource[] = [
    adamw.adamwKernel(1),
    adamw.adamwKernel(4),
    adamw.adamwTextureKernel(),
    adamw.adamwMultiKernel(1),
    adamw.adamwMultiKernel(16),
    adamw.clipCoefKernel(),
    stridedCopyKernel(),
    xent.crossEntropyForwardKernel(),
    xent.crossEntropyBackwardKernel(),
    xent.shardMaxKernel(),
    xent.shardSumExpKernel(),
    xent.shardFinishKernel(),
    xent.shardGatheredFinishKernel(2),
    xent.shardGatheredFinishKernel(8),
    xent.shardMaxTextureKernel(),
    xent.shardSumExpTextureKernel(),
    xent.crossEntropyBackwardTextureKernel(),
    elementwise.axpyKernel(),
    elementwise.axpyTextureKernel(),
    elementwise.fillKernel(1),
    elementwise.fillKernel(4),
    embedding.embeddingForwardKernel(),
    embedding.embeddingBackwardKernel(),
    ...([1, 2, 4] as const).map((w) => embedding.embeddingBackwardTextureKernel(w)),
    fmaCeilingKernel({ lanes: 16, chains: 256 }),
    layernorm.layerNormForwardKernel(),
    layernorm.layerNormBackwardKernel(),
    layernorm.layerNormParamGradKernel(),
    layernorm.layerNormForwardTextureKernel(),
    layernorm.layerNormBackwardTextureKernel(),
    layernorm.layerNormParamGradTextureKernel(),
    reduce.columnSumKernel(),
    reduce.columnSumTextureKernel(),
    rng.randomKernel("uniform"),
    rng.randomKernel("normal"),
    rng.dropoutKernel(),
    rng.dropoutTextureKernel(),
    softmax.softmaxBackwardKernel(),
    residual.residualDropoutTextureKernel(),
  ];
  for (const op of Object.keys(elementwise.MAP_EXPRESSIONS) as elementwise.MapOp[]) {
    for (const broadcast of [false, true]) {
      kernels.push(
        elementwise.mapKernel(op, broadcast, 1),
        elementwise.mapKernel(op, broadcast, 4),
      );
      kernels.push(elementwise.mapKernel(op, broadcast, 4, true));
    }
  }
  for (const format of ["fp16", "bf16"] as const) {
    kernels.push(
      half.packHalfKernel(format),
      half.unpackHalfKernel(format),
      half.roundHalfKernel(format),
      half.packHalfTextureKernel(format),
      half.unpackHalfTextureKernel(format),
      half.roundHalfTextureKernel(format),
      half.sumPackedKernel(format),
      half.sumPackedTextureKernel(format),
    );
  }
  for (const op of ["sum", "sumsq", "max"] as const) {
    for (const square of [false, true]) {
      kernels.push(reduce.reduceKernel(op, square), reduce.reduceTextureKernel(op, square));
    }
  }
  for (const mask of ["none", "causal", "padding"] as const) {
    kernels.push(softmax.softmaxForwardKernel(mask));
  }
  for (const drop of [false, true]) {
    kernels.push(
      residual.residualNormForwardKernel(drop),
      residual.residualNormForwardTextureKernel(drop),
      residual.residualDropoutKernel(drop),
    );
    for (const r of [false, true]) {
      kernels.push(
        residual.residualNormBackwardKernel(r, drop),
        residual.residualNormBackwardTextureKernel(r, drop),
      );
    }
    for (const lookup of [false, true]) {
      kernels.push(residual.embedPositionsKernel(lookup, drop));
      for (const table of [false, true]) {
        kernels.push(residual.embedPositionsTextureKernel(lookup, drop, table));
      }
    }
  }
  const rowKernels = kernels.filter((k) =>
    /let row = \(wid\.x \+ wid\.y \* nwg\.x\);/.test(k.code)
  );
  assertWithinLimits([...kernels, ...rowKernels.map(perRowVariant)]);
});
