/**
 * What a float costs on each of a WebGPU adapter's memory paths, the facts the
 * CPU-adapter kernel forms rest on (kernels/texture.ts): one kernel per path
 * over 4 Mi floats by default (vec4 per invocation, 64 per workgroup), timed
 * over repeated dispatches after a warm-up, in ns per float moved:
 *
 * - `buffer store`: `out[i] = vec4(f32(i))`;
 * - `buffer load + store`: `out[i] = x[i]`, and `x[i]·2 + y[i]` (two loads);
 * - `texture load + store`: the same with x and y read by `textureLoad` from
 *   stream textures (read-only storage textures, as the kernels bind them), and
 *   from sampled textures (`texture_2d`, as they bound them before);
 * - `texture → storage texture`: `textureStore` instead of the buffer store;
 * - `AdamW-like`: 3 loads, 1 load-and-store, buffers against both textures;
 * - `buffer → stream texture copy`: `copyBufferToTexture`, what a kernel that
 *   reads a buffer through a stream texture pays first;
 * - `clearBuffer`: zeroing the buffer with the command, against `buffer store`
 *   (what a fill kernel costs; `Device.clearsWithKernel`).
 *
 * `deno task bench:memory-paths --help` gives the usage and flags.
 *
 * On Mesa's llvmpipe (lavapipe or GL) a buffer load costs about ten times a
 * texel load: it is done one lane at a time in a branching loop.
 * @module
 */

import { BACKENDS, gpuProvider, NoAdapterError, parseBackend } from "../core/gpu.ts";
import { STREAM_ROW_TEXELS, STREAM_TEXTURE, streamTexel } from "../kernels/texture.ts";
import { DEBUG_FLAG, handled } from "../cli/errors.ts";
import { type FlagSpec, parseCommandLine, UsageError } from "../cli/flags.ts";

/** The fewest floats a run moves: one row of a stream texture (a vec4 per texel). */
const MIN_LOG2_FLOATS = Math.log2(4 * STREAM_ROW_TEXELS);

/** The most floats a run moves: four buffers of 1 GiB (and a host copy of one). */
const MAX_LOG2_FLOATS = 28;

/** Every flag of `deno task bench:memory-paths`. */
export const MEMORY_PATHS_FLAGS: Record<string, FlagSpec> = {
  "backend": { type: "string", choices: BACKENDS, default: "dawn", help: "WebGPU implementation" },
  "log2-floats": {
    type: "int",
    min: MIN_LOG2_FLOATS,
    max: MAX_LOG2_FLOATS,
    default: 22,
    help: "floats each kernel moves, as a power of two",
  },
  ...DEBUG_FLAG,
};

const USAGE = "Usage: deno task bench:memory-paths [--backend dawn|deno] [--log2-floats 22]";

/** Workgroups along x of a dispatch (the rest along y). */
const GX = 32768;

const buf = (n: number, rw = false) =>
  `@group(0) @binding(${n}) var<storage, ${rw ? "read_write" : "read"}> b${n}: array<vec4<f32>>;\n`;
const tex = (n: number) => `@group(0) @binding(${n}) var t${n}: ${STREAM_TEXTURE};\n`;
const t = (n: number) => streamTexel(`t${n}`, "i");
const sampled = (n: number) => `@group(0) @binding(${n}) var t${n}: texture_2d<f32>;\n`;
/** A sampled texture's texel: the stream texel with an explicit mip level. */
const ts = (n: number) => t(n).replace(/\)$/, ", 0)");
const kernel = (decls: string, body: string) =>
  `${decls}@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) { let i = g.x + g.y * ${GX * 64}u; ${body} }`;

const ADAM = (g: string, m: string, v: string) =>
  `let gg = ${g}; let m = ${m} * 0.9 + gg * 0.1; let v = ${v} * 0.999 + gg * gg * 0.001; ` +
  "b3[i] = b3[i] - 0.001 * (m / (sqrt(v) + 1e-8));";
const CASES: [string, string][] = [
  ["buffer store", kernel(buf(3, true), "b3[i] = vec4<f32>(f32(i));")],
  ["buffer load + store", kernel(buf(0) + buf(3, true), "b3[i] = b0[i];")],
  ["texture load + store", kernel(tex(0) + buf(3, true), `b3[i] = ${t(0)};`)],
  ["sampled texture load + store", kernel(sampled(0) + buf(3, true), `b3[i] = ${ts(0)};`)],
  [
    "2 buffer loads + store",
    kernel(buf(0) + buf(1) + buf(3, true), "b3[i] = b0[i] * 2.0 + b1[i];"),
  ],
  [
    "2 texture loads + store",
    kernel(tex(0) + tex(1) + buf(3, true), `b3[i] = ${t(0)} * 2.0 + ${t(1)};`),
  ],
  [
    "texture → storage texture",
    kernel(
      tex(0) + "@group(0) @binding(3) var s3: texture_storage_2d<rgba32float, write>;\n",
      `textureStore(s3, vec2<u32>(i & ${STREAM_ROW_TEXELS - 1}u, i >> ${
        Math.log2(STREAM_ROW_TEXELS)
      }u), ${t(0)} * 2.0);`,
    ),
  ],
  [
    "AdamW-like, buffers",
    kernel(buf(0) + buf(1) + buf(2) + buf(3, true), ADAM("b0[i]", "b1[i]", "b2[i]")),
  ],
  ["AdamW-like, textures", kernel(tex(0) + tex(1) + tex(2) + buf(3, true), ADAM(t(0), t(1), t(2)))],
  [
    "AdamW-like, sampled textures",
    kernel(sampled(0) + sampled(1) + sampled(2) + buf(3, true), ADAM(ts(0), ts(1), ts(2))),
  ],
];

/** Runs `deno task bench:memory-paths` with `args`; returns the process exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  const f = parseCommandLine(args, MEMORY_PATHS_FLAGS, USAGE);
  if (typeof f === "number") return f;
  const provider = await gpuProvider(parseBackend(f.backend as string));
  const adapter = await provider.gpu.requestAdapter(provider.adapterOptions);
  if (!adapter) throw new NoAdapterError(provider.backend, "requestAdapter gave none");
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
      maxTextureDimension2D: adapter.limits.maxTextureDimension2D,
    },
  });
  const N = 2 ** (f["log2-floats"] as number);
  const binding = adapter.limits.maxStorageBufferBindingSize;
  if (4 * N > binding) {
    throw new UsageError(
      `--log2-floats ${f["log2-floats"]}: ${4 * N} bytes a buffer pass this adapter's binding ` +
        `limit (${binding}); at most ${Math.floor(Math.log2(binding / 4))}`,
    );
  }
  const V = N / 4, ROWS = V / STREAM_ROW_TEXELS;
  const init = Float32Array.from({ length: N }, (_, i) => i % 7);
  const buffers = [0, 1, 2, 3].map(() => {
    const b = device.createBuffer({
      size: 4 * N,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    device.queue.writeBuffer(b, 0, init);
    return b;
  });
  const textures = [0, 1, 2, 3].map(() => {
    const t = device.createTexture({
      size: [STREAM_ROW_TEXELS, ROWS],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST |
        GPUTextureUsage.STORAGE_BINDING,
    });
    device.queue.writeTexture({ texture: t }, init, { bytesPerRow: 16 * STREAM_ROW_TEXELS }, [
      STREAM_ROW_TEXELS,
      ROWS,
    ]);
    return t;
  });

  /** Milliseconds per command encoder holding `record`'s commands, each submitted alone. */
  async function timeCommands(record: (enc: GPUCommandEncoder) => void): Promise<number> {
    const timed = async (reps: number) => {
      const t0 = performance.now();
      for (let r = 0; r < reps; r++) {
        const enc = device.createCommandEncoder();
        record(enc);
        device.queue.submit([enc.finish()]);
      }
      await device.queue.onSubmittedWorkDone();
      return (performance.now() - t0) / reps;
    };
    await timed(1);
    return await timed(Math.max(3, 2 ** 23 / N));
  }
  const info = adapter.info;
  console.log(
    `${provider.backend}: ${info.vendor} ${info.architecture} ${info.device} ${info.description}`,
  );
  console.log(`${N} floats; load average ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}\n`);
  console.log("| path | ms per dispatch | ns per float |");
  console.log("| --- | ---: | ---: |");
  for (const [name, code] of CASES) {
    device.pushErrorScope("validation");
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
    });
    const entries: GPUBindGroupEntry[] = [];
    for (const m of code.matchAll(/@binding\((\d)\) var(<storage[^>]*>)? (\w)(\d): (\w+)/g)) {
      const n = Number(m[1]);
      const resource = m[2] ? { buffer: buffers[n] } : textures[n].createView();
      entries.push({ binding: n, resource });
    }
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const groups = V / 64;
    const ms = await timeCommands((enc) => {
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(Math.min(groups, GX), Math.ceil(groups / GX));
      pass.end();
    });
    const error = await device.popErrorScope();
    if (error) throw new Error(`${name}: ${error.message}`);
    console.log(`| ${name} | ${ms.toFixed(2)} | ${(ms * 1e6 / N).toFixed(2)} |`);
  }
  // What the stream-texture kernels pay before they run: the copy of a buffer
  // into its stream texture (the copies `deno task profile` counts); and zeroing
  // a buffer with the command made for it, against `buffer store` (a fill kernel)
  // above: on Dawn's GL backend the command is the slow one.
  for (
    const [name, record] of [
      ["buffer → stream texture copy", (enc: GPUCommandEncoder) =>
        enc.copyBufferToTexture(
          { buffer: buffers[0], bytesPerRow: 16 * STREAM_ROW_TEXELS },
          { texture: textures[1] },
          [STREAM_ROW_TEXELS, ROWS],
        )],
      ["clearBuffer", (enc: GPUCommandEncoder) => enc.clearBuffer(buffers[3])],
    ] as const
  ) {
    const ms = await timeCommands(record);
    console.log(`| ${name} | ${ms.toFixed(2)} | ${(ms * 1e6 / N).toFixed(2)} |`);
  }
  device.destroy();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
