/**
 * A `Device` owns one `GPUDevice` and everything that must be per-device: the
 * pipeline cache, the buffer pool, the batch of recorded commands, and the
 * tensor scopes. Nothing here is global; pass the device to whoever needs it.
 * @module
 */

import { type KernelSource, SOFTWARE_LANES } from "../kernels/kernel.ts";
import { STREAM_ROW_BYTES, STREAM_ROW_TEXELS, streamTextureRows } from "../kernels/texture.ts";
import {
  type BackendName,
  DEFAULT_BACKEND,
  type GPUProvider,
  gpuProvider,
  NoAdapterError,
  wgslLanguageFeatures,
} from "./gpu.ts";
import { KeptTextures } from "./kept_textures.ts";
import { BufferPool, sizeClass } from "./pool.ts";
import type { DeviceProfiler } from "./profiler.ts";
import type { TilingSource } from "../kernels/matmul.ts";
import { softwareLanesOf } from "./simd.ts";
import { readEnv } from "./env.ts";

/** A storage binding: a buffer range (offset and size in bytes). */
export interface BufferBinding {
  /** The buffer. */
  buffer: GPUBuffer;
  /** Bytes bound. */
  size: number;
  /** Byte offset of the range (default 0); a multiple of the adapter's storage offset alignment. */
  offset?: number;
  /**
   * The device whose buffer this is, when known (a tensor's binding says):
   * {@link Device.dispatch} refuses a binding of another device by name, where
   * WebGPU would only report a validation error and skip the dispatch.
   */
  device?: Device;
}

/** A texture binding: a view of a scratch stream texture (see {@link Device.streamAsTexture}). */
export interface TextureBinding {
  /** The view bound, read by the kernel with `textureLoad`. */
  view: GPUTextureView;
}

/** The limits this project asks the adapter for (its own maxima, not the defaults). */
export const REQUESTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxUniformBufferBindingSize",
  "maxTextureDimension2D",
  "maxStorageTexturesPerShaderStage",
] as const;

/** Whether the provider's WGSL reads storage textures (stream textures are bound as such). */
function readsStorageTextures(provider: GPUProvider): boolean {
  const features = wgslLanguageFeatures(provider.gpu);
  return features?.has("readonly_and_readwrite_storage_textures") ?? false;
}

/** Bind groups a {@link Device} keeps for reuse (least recently used dropped first). */
export const BIND_GROUP_CACHE = 4096;

/** Options for {@link Device.create}. */
export interface DeviceOptions {
  /** Which WebGPU implementation to use (default: {@link DEFAULT_BACKEND}). */
  backend?: BackendName;
  /** A provider made by the caller (e.g. Dawn with its own toggles); wins over `backend`. */
  provider?: GPUProvider;
  /** Dispatches recorded before an automatic submit (default 256). */
  maxBatchedDispatches?: number;
  /**
   * Bind at most this many bytes per storage binding, below the adapter's own
   * `maxStorageBufferBindingSize` (which WebGPU will not lower under its default
   * of 128 MiB): lets tests put small tensors past "one binding".
   */
  maxBindingBytes?: number;
  /**
   * Treat 2-D textures as at most this many texels on a side, below the
   * adapter's `maxTextureDimension2D`: lets tests put small tables past the
   * texture a software matmul reads B through (see core/ops/lm_head.ts).
   */
  maxTextureDimension?: number;
}

/** A short, printable description of an adapter. */
export interface AdapterSummary {
  /** Backend that produced it. */
  backend: BackendName;
  /** Adapter description, vendor and architecture as reported. */
  name: string;
  /** True for software adapters (lavapipe, SwiftShader). */
  isFallback: boolean;
  /** Enabled features. */
  features: string[];
  /** The limits that matter for compute, as granted. */
  limits: Record<string, number>;
  /**
   * On a software adapter, the f32 lanes of its SIMD step that the software
   * kernels' workgroups fill ({@link Device.softwareLanes}: 16 on llvmpipe at
   * 512 bits, else 8); absent on GPUs.
   */
  softwareLanes?: number;
}

/**
 * A scratch stream texture, and what it holds: a range of a buffer as of a
 * point of the device's write clock (null until first filled).
 */
interface ScratchTexture {
  texture: GPUTexture;
  view: GPUTextureView;
  holds: { buffer: GPUBuffer; offset: number; vec4s: number; at: number } | null;
}

/** One operand read through a stream texture ({@link Device.streamOperands}). */
export interface StreamOperand {
  /** The buffer range. */
  binding: BufferBinding;
  /** Vec4s read from it. */
  vec4s: number;
}

interface Uniform {
  buffer: GPUBuffer;
}

/**
 * Environment variable that picks the kernel variant family on any adapter: `software` (the
 * CPU-friendly variants) or `gpu` (the shared-memory tiled ones for discrete GPUs). Unset: chosen
 * by {@link Device.isSoftware}'s detection.
 */
export const KERNEL_VARIANTS_ENV = "WEBGPU_KERNEL_VARIANTS";

/**
 * The largest staging buffer a read maps at once: larger reads go in rounds
 * (see `Device.readMany`), so a read's host peak is its result plus this.
 */
export const READ_STAGING_MAX_BYTES = 64 * 2 ** 20;

/** `bytes` rounded up to a multiple of 4 (buffer copies move whole words). */
function padded4(bytes: number): number {
  return Math.ceil(bytes / 4) * 4;
}

/** One GPU, ready for kernels: pipeline cache, buffer pool, batched command recording. */
export class Device {
  /** Number of submits so far (each is a potential host wait on some backends). */
  submits = 0;
  /** Number of dispatches recorded so far. */
  dispatches = 0;
  /** Host syncs so far: reads back ({@link Device.read}, {@link Device.readMany}) and {@link Device.sync}. */
  hostSyncs = 0;
  /** Bytes read back to the host so far. */
  bytesRead = 0;
  /** Bind groups made so far (a dispatch that binds what an earlier one bound reuses its group). */
  bindGroupsMade = 0;
  /** Buffer-to-texture copy commands recorded so far (filling stream textures). */
  textureCopies = 0;
  /** Bytes those copies moved. */
  textureCopyBytes = 0;
  /**
   * Operands answered from a scratch stream texture without a copy so far
   * ({@link Device.streamOperands}: the texture still held the range, and
   * nothing recorded since wrote its buffer).
   */
  scratchTextureHits = 0;
  /**
   * Whether {@link Device.streamOperands} answers an operand from a scratch
   * texture that still holds its range (the default); false copies every read
   * afresh, to measure or compare.
   */
  reuseStreamTextures = true;
  /**
   * Per-kernel counting and GPU timing (core/profiler.ts), or null (the default:
   * nothing is recorded beyond the counters above).
   */
  profiler: DeviceProfiler | null = null;
  /**
   * Tuned matmul tilings (core/matmul_tuner.ts's `MatmulTuner`), or null (the
   * default: the kernel's heuristic tiling for every shape).
   */
  matmulTuner: TilingSource | null = null;
  /** Whether autograd records operations (see {@link Device.noGrad}). */
  gradEnabled = true;
  /** Stack of open tensor scopes; each holds disposables created inside it. */
  readonly scopes: Set<{ dispose(): void }>[] = [];
  /** Buffer pool: freed tensor buffers are reused by size. */
  readonly pool: BufferPool;
  /**
   * Whether kernels may read fp16 data as native `f16` (mixed precision's packed
   * fp16 weights): true when the device has `shader-f16`; set false to measure
   * or use the integer-unpacking path everywhere.
   */
  nativeF16: boolean;
  /**
   * With {@link Device.nativeF16}: the matmuls that read packed fp16 weights also
   * compute in native `f16` (products and 4-term partial sums in f16, accumulated
   * in f32; kernels/matmul.ts's `MatmulOptions.f16Arithmetic`). False (the
   * default): f32 arithmetic everywhere.
   */
  f16Arithmetic = false;
  /**
   * Mixed precision: the format activations saved for backward are kept in
   * (null: f32). Used by activation recomputation (core/recompute.ts), whose saved
   * block inputs are then packed 16-bit; the trainer sets it during a step.
   */
  saveActivationsAs: "fp16" | "bf16" | null = null;

  #encoder: GPUCommandEncoder | null = null;
  /** Host bytes that uploads from shared memory pass through (see {@link Device.upload}). */
  #uploadScratch = new Uint8Array(0);
  #pass: GPUComputePassEncoder | null = null;
  #batched = 0;
  #afterSubmit: (() => void)[] = [];
  #pipelines = new Map<string, GPUComputePipeline>();
  /** Per pipeline key: the binding numbers its WGSL declares as textures. */
  #textureSlots = new Map<string, Set<number>>();
  /**
   * Per pipeline key: the bindings its WGSL declares `var<storage, read>`; a
   * dispatch counts every other buffer it binds as written.
   */
  #readOnlySlots = new Map<string, Set<number>>();
  /** Scratch stream textures by height in rows. */
  #scratchPools = new Map<number, ScratchTexture[]>();
  /** The 16-bit conversions' stream textures, one per height ({@link Device.conversionTexture}). */
  #conversionTextures = new Map<number, { texture: GPUTexture; view: GPUTextureView }>();
  /** Per buffer: the {@link Device.#writeClock} of the last write recorded to it. */
  #lastWrite = new WeakMap<GPUBuffer, number>();
  #writeClock = 0;
  #kept = new KeptTextures();
  #readStaging = new Map<number, GPUBuffer[]>();
  #uniforms = new Map<string, Uniform>();
  #bindGroups = new Map<string, GPUBindGroup>();
  #objectIds = new WeakMap<object, number>();
  #lastId = 0;
  #lost = false;
  readonly #maxBatched: number;
  /** Bytes one storage binding may hold: the adapter's limit, or a lower cap asked for. */
  readonly maxBindingBytes: number;
  /**
   * Texels on a side of a stream texture (kernels/texture.ts): the adapter's
   * maxTextureDimension2D, or a lower cap; 0 where WGSL cannot read a storage
   * texture (no `readonly_and_readwrite_storage_textures`), so that every
   * kernel reads its operands from buffers.
   */
  readonly maxTextureDimension: number;

  #adapter: GPUAdapter | null;
  #gpu: GPUDevice | null;

  /** The adapter; throws after {@link Device.close}. */
  get adapter(): GPUAdapter {
    if (!this.#adapter) throw new Error("the GPU device was closed");
    return this.#adapter;
  }

  /** The raw WebGPU device; throws after {@link Device.close}. */
  get gpu(): GPUDevice {
    if (!this.#gpu) throw new Error("the GPU device was closed");
    return this.#gpu;
  }

  private constructor(
    /** The provider this device came from (kept alive with it). */
    readonly provider: GPUProvider,
    adapter: GPUAdapter,
    gpu: GPUDevice,
    maxBatched: number,
    maxBindingBytes: number | undefined,
    maxTextureDimension: number | undefined,
  ) {
    this.#adapter = adapter;
    this.#gpu = gpu;
    this.#maxBatched = maxBatched;
    const own = gpu.limits.maxStorageBufferBindingSize;
    this.maxBindingBytes = Math.min(own, maxBindingBytes ?? own);
    const tex = readsStorageTextures(provider) ? gpu.limits.maxTextureDimension2D : 0;
    this.maxTextureDimension = Math.min(tex, maxTextureDimension ?? tex);
    this.pool = new BufferPool(gpu);
    this.nativeF16 = gpu.features.has("shader-f16");
    gpu.lost.then((info) => {
      this.#lost = true;
      if (info.reason !== "destroyed") {
        console.error(`GPU device lost: ${info.message}`);
      }
    });
  }

  /** Acquires an adapter and a device with the adapter's own limits. */
  static async create(opts: DeviceOptions = {}): Promise<Device> {
    for (const k of ["maxBindingBytes", "maxTextureDimension", "maxBatchedDispatches"] as const) {
      const v = opts[k];
      if (v !== undefined && !(Number.isSafeInteger(v) && v > 0)) {
        throw new RangeError(`Device.create: ${k} must be a positive integer, got ${v}`);
      }
    }
    const provider = opts.provider ?? await gpuProvider(opts.backend ?? DEFAULT_BACKEND);
    let adapter: GPUAdapter | null;
    try {
      adapter = await provider.gpu.requestAdapter(provider.adapterOptions);
    } catch (e) {
      // Ours (e.g. wgpu's OpenGL fallback refused) say what to do already.
      if (e instanceof NoAdapterError) throw e;
      // Dawn throws when its adapter=NAME option (--devices name:…) matches nothing,
      // listing the adapters it has: one line.
      const detail = String((e as Error)?.message ?? e).replace(/\s*\n\s*\*?\s*/g, " ").trim();
      throw new NoAdapterError(provider.backend, detail, false);
    }
    if (!adapter) throw new NoAdapterError(provider.backend, "requestAdapter() returned null");
    const requiredLimits: Record<string, number> = {};
    for (const k of REQUESTED_LIMITS) {
      const v = (adapter.limits as unknown as Record<string, number>)[k];
      if (typeof v === "number") requiredLimits[k] = v;
    }
    const requiredFeatures: GPUFeatureName[] = [];
    for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) {
      if (adapter.features.has(f)) requiredFeatures.push(f);
    }
    const gpu = await adapter.requestDevice({ requiredLimits, requiredFeatures });
    provider.threadHooks?.opened();
    return new Device(
      provider,
      adapter,
      gpu,
      opts.maxBatchedDispatches ?? 256,
      opts.maxBindingBytes,
      opts.maxTextureDimension,
    );
  }

  /** The backend name. */
  get backend(): BackendName {
    return this.provider.backend;
  }

  /** The granted limits. */
  get limits(): GPUSupportedLimits {
    return this.gpu.limits;
  }

  /**
   * Whether zeroing a tensor should run a fill kernel rather than
   * {@link Device.clear}: true on Dawn's OpenGL backend, whose `clearBuffer`
   * uploads zeros from fresh host memory (154 MB on llvmpipe: 430–480 ms, against
   * 12 ms for the vec4 fill kernel); false elsewhere (Deno's WebGPU on lavapipe:
   * 16 ms against 24 ms).
   */
  get clearsWithKernel(): boolean {
    return this.#clearsWithKernel ??= this.backend === "dawn" &&
      /\bOpenGL\b/i.test(`${this.adapter.info.description} ${this.adapter.info.device}`);
  }

  #clearsWithKernel?: boolean;

  /**
   * Whether kernels read their `params` block as a read-only storage buffer
   * instead of a uniform buffer: on lavapipe (Deno's WebGPU, Vulkan here).
   * Mesa 22.3's lavapipe inlines uniform values that steer a shader's control
   * flow into a new compile of it, and for some kernels (a 128×64 weight
   * gradient's tiling, for one) it did so at every dispatch and kept each
   * compile: 2.7 MB and ~13 ms a dispatch, ~5 MB a training step at TP = 2
   * (measured; `tests/params_storage_test.ts`). A storage buffer is never
   * inlined. Other adapters keep the uniform block.
   */
  get paramsInStorage(): boolean {
    return this.#paramsInStorage ??= this.backend === "deno" && this.isSoftware;
  }

  #paramsInStorage?: boolean;

  /** True for CPU adapters (lavapipe, llvmpipe, SwiftShader): kernels pick CPU-friendly variants. */
  get isSoftware(): boolean {
    return this.#software ??= this.#detectSoftware();
  }

  #software?: boolean;

  /**
   * Invocations the software kernels put in one workgroup: the f32 lanes of a
   * CPU adapter's SIMD step (16 on llvmpipe with 512-bit vectors, core/simd.ts),
   * 8 on every other adapter.
   */
  get softwareLanes(): number {
    return this.#lanes ??= this.#detectLanes();
  }

  #lanes?: number;

  #detectLanes(): number {
    const info = this.adapter.info;
    return this.isSoftware ? softwareLanesOf(`${info.description} ${info.device}`) : SOFTWARE_LANES;
  }

  #detectSoftware(): boolean {
    // Env KERNEL_VARIANTS_ENV=software|gpu overrides the detection (both variant families can then
    // be tested on one adapter: scripts/gpu_check.sh).
    const forced = readEnv(KERNEL_VARIANTS_ENV);
    if (forced === "software" || forced === "gpu") return forced === "software";
    const info = this.adapter.info;
    const name = `${info.description} ${info.vendor} ${info.architecture} ${info.device}`;
    return (this.adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ===
        true ||
      (info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
      /llvmpipe|lavapipe|swiftshader|softpipe/i.test(name);
  }

  /** A printable summary of the adapter and granted limits. */
  summary(): AdapterSummary {
    const info = this.adapter.info;
    const limits: Record<string, number> = {};
    for (const k of REQUESTED_LIMITS) {
      limits[k] = (this.gpu.limits as unknown as Record<string, number>)[k];
    }
    const name = [info.description, info.vendor && `vendor ${info.vendor}`, info.architecture]
      .filter((s) => s).join(", ") || "(unnamed adapter)";
    return {
      backend: this.backend,
      name,
      isFallback: this.isSoftware,
      features: [...this.gpu.features].sort(),
      limits,
      ...(this.isSoftware ? { softwareLanes: this.softwareLanes } : {}),
    };
  }

  /** Throws if the device was lost or destroyed. */
  assertAlive(): void {
    if (this.#lost) throw new Error("the GPU device was lost or destroyed");
  }

  /** Returns the compiled pipeline for `kernel`, compiling it once per key. */
  pipeline(kernel: KernelSource): GPUComputePipeline {
    let p = this.#pipelines.get(kernel.key);
    if (!p) {
      const module = this.gpu.createShaderModule({
        code: this.#deviceCode(kernel),
        label: kernel.key,
      });
      p = this.gpu.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
        label: kernel.key,
      });
      this.#pipelines.set(kernel.key, p);
      const slots = new Set<number>();
      for (const m of kernel.code.matchAll(/@binding\((\d+)\)\s*var\s+\w+\s*:\s*texture_/g)) {
        slots.add(Number(m[1]));
      }
      this.#textureSlots.set(kernel.key, slots);
      const readOnly = new Set<number>();
      for (const m of kernel.code.matchAll(/@binding\((\d+)\)\s*var<storage\s*,\s*read\s*>/g)) {
        readOnly.add(Number(m[1]));
      }
      this.#readOnlySlots.set(kernel.key, readOnly);
    }
    return p;
  }

  /**
   * `kernel`'s WGSL as this device compiles it: with {@link Device.paramsInStorage},
   * its `params` block (`var<uniform> p`) becomes a read-only storage buffer where
   * one more storage binding fits the adapter's limit.
   */
  #deviceCode(kernel: KernelSource): string {
    const code = kernel.code;
    if (!this.paramsInStorage || !/var<uniform>\s*p\s*:/.test(code)) return code;
    const storage = code.match(/var<storage\b/g)?.length ?? 0;
    if (storage + 1 > this.gpu.limits.maxStorageBuffersPerShaderStage) return code;
    return code.replace(/var<uniform>(\s*p\s*:)/, "var<storage, read>$1");
  }

  /** Number of distinct compiled pipelines. */
  get pipelineCount(): number {
    return this.#pipelines.size;
  }

  /**
   * A uniform buffer holding `data`. Uniforms are immutable and cached by content,
   * so the same parameters in every training step reuse one buffer and nothing is
   * written between a recording and its submit.
   */
  uniform(data: ArrayBuffer): GPUBuffer {
    const bytes = new Uint8Array(data);
    let key = "";
    const u32 = new Uint32Array(data, 0, bytes.byteLength >> 2);
    for (let i = 0; i < u32.length; i++) key += u32[i].toString(36) + ",";
    const hit = this.#uniforms.get(key);
    if (hit) {
      // refresh LRU position
      this.#uniforms.delete(key);
      this.#uniforms.set(key, hit);
      return hit.buffer;
    }
    const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);
    const buffer = this.gpu.createBuffer({
      size,
      // Bound as a read-only storage buffer where the kernels read their params so.
      usage: GPUBufferUsage.UNIFORM | (this.paramsInStorage ? GPUBufferUsage.STORAGE : 0),
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(bytes);
    buffer.unmap();
    this.#uniforms.set(key, { buffer });
    if (this.#uniforms.size > 4096) {
      const [oldKey, old] = this.#uniforms.entries().next().value!;
      this.#uniforms.delete(oldKey);
      this.#afterSubmit.push(() => old.buffer.destroy());
    }
    return buffer;
  }

  /**
   * Records one dispatch of `kernel` with storage `buffers` (in binding order,
   * each a byte range of a buffer) and an optional uniform `params` block bound
   * last. A range larger than one binding is refused with the kernel named: ops
   * on such tensors bind them in windows (`core/windows.ts`).
   */
  dispatch(
    kernel: KernelSource,
    buffers: (BufferBinding | TextureBinding)[],
    params: ArrayBuffer | null,
    workgroups: [number, number?, number?],
  ): void {
    this.assertAlive();
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const maxWg = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new Error(
        `kernel ${kernel.key}: dispatch of ${x}×${y}×${z} workgroups exceeds the adapter's ` +
          `maxComputeWorkgroupsPerDimension (${maxWg}); the tensor is too large for one dispatch`,
      );
    }
    const maxBind = this.maxBindingBytes;
    const align = this.gpu.limits.minStorageBufferOffsetAlignment;
    const entries: GPUBindGroupEntry[] = [];
    buffers.forEach((b, i) => {
      if ("view" in b) {
        entries.push({ binding: i, resource: b.view });
        return;
      }
      this.#assertOwn(b, `kernel ${kernel.key}: binding ${i}`);
      if (b.size > maxBind) {
        const own = this.gpu.limits.maxStorageBufferBindingSize;
        throw new Error(
          `kernel ${kernel.key}: a tensor of ${b.size} bytes exceeds ` +
            (maxBind < own
              ? `this device's binding cap (maxBindingBytes, ${maxBind} bytes)`
              : `the adapter's maxStorageBufferBindingSize (${maxBind} bytes)`) +
            `, and this kernel binds it whole; in a model, a smaller micro-batch or sequence ` +
            `keeps its activations within one binding (with gradient accumulation for the batch)`,
        );
      }
      const offset = b.offset ?? 0;
      if (offset % align !== 0) {
        throw new Error(
          `kernel ${kernel.key}: binding ${i} starts at byte ${offset}, not a multiple of the ` +
            `adapter's minStorageBufferOffsetAlignment (${align})`,
        );
      }
      entries.push({ binding: i, resource: { buffer: b.buffer, offset, size: b.size } });
    });
    if (params) {
      entries.push({ binding: buffers.length, resource: { buffer: this.uniform(params) } });
    }
    const pipeline = this.pipeline(kernel);
    // WebGPU reports a buffer bound where the shader reads a texture (or the
    // reverse) only as an uncaptured validation error, and the dispatch then
    // does nothing: refuse it here, by name.
    const textures = this.#textureSlots.get(kernel.key)!;
    buffers.forEach((b, i) => {
      if (textures.has(i) !== "view" in b) {
        throw new Error(
          `kernel ${kernel.key}: binding ${i} must be a ${
            textures.has(i) ? "texture view" : "buffer"
          }, got a ${"view" in b ? "texture view" : "buffer"} (a matmul plan that reads an ` +
            `operand through a texture is recorded with recordPlan)`,
        );
      }
    });
    const readOnly = this.#readOnlySlots.get(kernel.key)!;
    buffers.forEach((b, i) => {
      if (!("view" in b) && !readOnly.has(i)) this.#wrote(b.buffer);
    });
    const bindGroup = this.#bindGroup(kernel.key, pipeline, entries);
    const prof = this.profiler;
    if (prof) return this.#profiledDispatch(prof, kernel.key, pipeline, bindGroup, [x, y, z]);
    const pass = this.#computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.dispatches++;
    if (++this.#batched >= this.#maxBatched) this.flush();
  }

  /** Refuses a binding that says it belongs to another device; `what` names it. */
  #assertOwn(b: BufferBinding, what: string): void {
    if (b.device && b.device !== this) {
      throw new Error(
        `${what} is a tensor on another device than the one running the kernel (build ` +
          "every operand on one device, or move a tensor with read() and Tensor.fromArray)",
      );
    }
  }

  /**
   * The bind group of `entries` for the pipeline of `key`: made once and reused
   * while it stays among the {@link BIND_GROUP_CACHE} most recently used (a
   * training step binds the same pooled buffers, uniforms and scratch textures
   * in every step, and making a bind group is a large share of the host's
   * recording time). Keyed by the identity of each buffer or view, so a buffer
   * destroyed and replaced is never matched.
   */
  #bindGroup(
    key: string,
    pipeline: GPUComputePipeline,
    entries: GPUBindGroupEntry[],
  ): GPUBindGroup {
    let k = key;
    for (const e of entries) {
      const r = e.resource as GPUBufferBinding | GPUTextureView;
      k += "buffer" in r
        ? `|${this.#objectId(r.buffer)}:${r.offset ?? 0}:${r.size ?? ""}`
        : `|t${this.#objectId(r)}`;
    }
    const hit = this.#bindGroups.get(k);
    if (hit) {
      this.#bindGroups.delete(k);
      this.#bindGroups.set(k, hit);
      return hit;
    }
    const group = this.gpu.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    this.bindGroupsMade++;
    this.#bindGroups.set(k, group);
    if (this.#bindGroups.size > BIND_GROUP_CACHE) {
      this.#bindGroups.delete(this.#bindGroups.keys().next().value!);
    }
    return group;
  }

  #objectId(o: object): number {
    let id = this.#objectIds.get(o);
    if (id === undefined) this.#objectIds.set(o, id = ++this.#lastId);
    return id;
  }

  #profiledDispatch(
    prof: DeviceProfiler,
    key: string,
    pipeline: GPUComputePipeline,
    bindGroup: GPUBindGroup,
    wg: [number, number, number],
  ): void {
    prof.count(key, wg[0] * wg[1] * wg[2]);
    let pass: GPUComputePassEncoder;
    if (prof.mode === "timestamp") {
      // One pass per dispatch: timestamps are written at pass boundaries.
      this.#endPass();
      pass = this.#getEncoder().beginComputePass({
        timestampWrites: prof.timestampWrites(this.gpu, key, this.#maxBatched),
      });
    } else {
      prof.capture(key, pipeline, bindGroup, wg);
      pass = this.#computePass();
    }
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(...wg);
    if (prof.mode === "timestamp") pass.end();
    this.dispatches++;
    if (++this.#batched >= this.#maxBatched) this.flush();
  }

  /** Notes that work recorded from now on writes `buffer` (see {@link Device.streamOperands}). */
  #wrote(buffer: GPUBuffer): void {
    this.#lastWrite.set(buffer, ++this.#writeClock);
  }

  /** Whether `t` holds `vec4s` vec4s of `buffer` from `offset`, unwritten since it was filled. */
  #holdsCurrent(t: ScratchTexture, buffer: GPUBuffer, offset: number, vec4s: number): boolean {
    const h = t.holds;
    return h !== null && h.buffer === buffer && h.offset === offset && h.vec4s === vec4s &&
      (this.#lastWrite.get(buffer) ?? 0) <= h.at;
  }

  /** Texture rows for `vec4s`, or an error naming the adapter's limit. */
  #streamRows(vec4s: number): number {
    const rows = streamTextureRows(vec4s, this.maxTextureDimension);
    if (rows === null) {
      throw new Error(
        `stream texture: ${vec4s} vec4s need more than ${this.maxTextureDimension} rows of ` +
          `${STREAM_ROW_TEXELS} texels`,
      );
    }
    return rows;
  }

  /** The kept texture of a range of a held buffer, filled on first use (see {@link Device.keepStreamTextures}). */
  #keptView(src: BufferBinding, vec4s: number, rows: number): GPUTextureView {
    const offset = src.offset ?? 0;
    const key = `${this.#objectId(src.buffer)}/${offset}/${vec4s}`;
    const e = this.#kept.entry(key, rows, () => this.#streamTexture(rows));
    if (!e.filled) {
      this.#fillStream(e.texture, src.buffer, offset, vec4s);
      e.filled = true;
    }
    return e.view;
  }

  /**
   * The scratch texture of `rows` rows to fill for the operand at `index` of an
   * ask whose operands of that height are at `indices`: the height's texture at
   * `index` (made on first use), else, when another operand of the ask reads
   * that one, the first of theirs none reads. So each call site fills the same
   * textures in every step (and its dispatches reuse the bind groups made in
   * the first), and a height has as many textures as one ask has operands of it.
   */
  #scratchToFill(
    rows: number,
    index: number,
    indices: readonly number[],
    claimed: Set<ScratchTexture>,
  ): ScratchTexture {
    let pool = this.#scratchPools.get(rows);
    if (!pool) this.#scratchPools.set(rows, pool = []);
    for (const i of [index, ...indices]) {
      let t = pool[i];
      if (!t) {
        const texture = this.#streamTexture(rows);
        t = pool[i] = { texture, view: texture.createView(), holds: null };
      }
      if (!claimed.has(t)) return t;
    }
    // Each operand takes at most one texture, so one of theirs is left.
    throw new Error("unreachable: every scratch texture of the operands' places is taken");
  }

  /**
   * The vec4s of `src` in a stream texture: {@link Device.streamOperands} for
   * one operand. The view is valid until the next ask for a stream texture.
   */
  streamAsTexture(src: BufferBinding, vec4s: number): GPUTextureView {
    return this.streamOperands([{ binding: src, vec4s }])[0];
  }

  /**
   * Each operand's vec4s in a stream texture (kernels/texture.ts: 1024 texels
   * to a row, vec4 `i` at `(i & 1023, i >> 10)`), for the dispatches recorded
   * next: the views are valid until the next ask for a stream texture, which
   * may refill them. An operand is answered without a copy from a scratch
   * texture of its height that still holds its range, nothing recorded since
   * having written its buffer (a kernel binding it anywhere its WGSL does not
   * declare `var<storage, read>`, a clear, a copy or an upload); else one of
   * the height's scratch textures (the one of the operand's place in the ask)
   * is filled in order with the dispatches around it by two copies (the whole
   * rows, the last partial row). A range of a buffer held by
   * {@link Device.keepStreamTextures} has a texture of its own instead, filled
   * once per hold. Throws when an operand needs more rows than a texture has
   * (check with `streamFits` first).
   */
  streamOperands(operands: readonly StreamOperand[]): GPUTextureView[] {
    this.assertAlive();
    const rows = operands.map((o) => {
      this.#assertOwn(o.binding, "stream texture");
      return this.#streamRows(o.vec4s);
    });
    const views: GPUTextureView[] = new Array(operands.length);
    const claimed = new Set<ScratchTexture>();
    const unmatched: number[] = [];
    operands.forEach((o, i) => {
      const { buffer } = o.binding, offset = o.binding.offset ?? 0;
      if (this.#kept.holds(buffer)) {
        views[i] = this.#keptView(o.binding, o.vec4s, rows[i]);
        return;
      }
      const pool = this.reuseStreamTextures ? this.#scratchPools.get(rows[i]) ?? [] : [];
      const hit = pool.find((t) => t && this.#holdsCurrent(t, buffer, offset, o.vec4s));
      if (!hit) return void unmatched.push(i);
      this.scratchTextureHits++;
      claimed.add(hit);
      views[i] = hit.view;
    });
    for (const i of unmatched) {
      const { binding: { buffer, offset = 0 }, vec4s } = operands[i];
      const sameHeight = operands.flatMap((_, j) => rows[j] === rows[i] ? [j] : []);
      const t = this.#scratchToFill(rows[i], i, sameHeight, claimed);
      this.#fillStream(t.texture, buffer, offset, vec4s);
      t.holds = { buffer, offset, vec4s, at: this.#writeClock };
      claimed.add(t);
      views[i] = t.view;
    }
    return views;
  }

  /**
   * The vec4s of `src` in a stream texture of its own, filled now, for the one
   * dispatch recorded next: the 16-bit conversions (core/half_convert.ts) read
   * their source this way. A conversion can run where a tensor's buffer is
   * asked for (a packed saved activation unpacks then), which may fall between
   * another kernel's {@link Device.streamOperands} and its dispatch, so it must
   * leave the scratch textures alone. One texture per height, refilled by each ask.
   */
  conversionTexture(src: BufferBinding, vec4s: number): GPUTextureView {
    this.assertAlive();
    this.#assertOwn(src, "stream texture");
    const rows = this.#streamRows(vec4s);
    let t = this.#conversionTextures.get(rows);
    if (!t) {
      const texture = this.#streamTexture(rows);
      this.#conversionTextures.set(rows, t = { texture, view: texture.createView() });
    }
    this.#fillStream(t.texture, src.buffer, src.offset ?? 0, vec4s);
    return t.view;
  }

  /**
   * Holds `buffers` until {@link Device.releaseStreamTextures}: while held,
   * {@link Device.streamAsTexture} fills one texture per range of theirs on first
   * use and answers later asks for that range from it, without copying. The
   * caller promises that nothing writes them meanwhile (a training step holds
   * its weights from the forward pass to the optimizer's read of them: one copy
   * instead of three). Costs a texture the size of each range kept.
   */
  keepStreamTextures(buffers: Iterable<GPUBuffer>): void {
    this.#kept.hold(buffers);
  }

  /** Ends {@link Device.keepStreamTextures}' hold (the textures stay, for the next hold). */
  releaseStreamTextures(): void {
    this.#kept.release();
  }

  /**
   * Ends {@link Device.keepStreamTextures}' hold and lets any range of the same
   * size take each kept texture in the next hold: a training step's gradients
   * then reuse its weights' textures instead of a second set as large as the model.
   */
  recycleStreamTextures(): void {
    this.#kept.recycle();
  }

  /** Bytes of the textures kept for held buffers ({@link Device.keepStreamTextures}). */
  get keptTextureBytes(): number {
    return this.#kept.bytes;
  }

  /**
   * Bytes of the scratch stream textures ({@link Device.streamOperands}) and of
   * the 16-bit conversions' ({@link Device.conversionTexture}).
   */
  get scratchTextureBytes(): number {
    let bytes = 0;
    for (const [rows, pool] of this.#scratchPools) {
      bytes += pool.filter((t) => t).length * rows * STREAM_ROW_BYTES;
    }
    for (const rows of this.#conversionTextures.keys()) bytes += rows * STREAM_ROW_BYTES;
    return bytes;
  }

  /** Asks for a stream texture answered from a kept one, without a copy, so far. */
  get keptTextureHits(): number {
    return this.#kept.hits;
  }

  /** A new stream texture of `rows` rows. */
  #streamTexture(rows: number): GPUTexture {
    return this.gpu.createTexture({
      size: [STREAM_ROW_TEXELS, rows],
      format: "rgba32float",
      usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
    });
  }

  /** Records copying `vec4s` vec4s of `buffer` from `offset` into `texture` (whole rows, then the rest). */
  #fillStream(texture: GPUTexture, buffer: GPUBuffer, offset: number, vec4s: number): void {
    this.#endPass();
    const enc = this.#getEncoder();
    const full = Math.floor(vec4s / STREAM_ROW_TEXELS);
    const tail = vec4s - full * STREAM_ROW_TEXELS;
    this.textureCopyBytes += 16 * vec4s;
    if (full > 0) {
      this.textureCopies++;
      this.#transfer(enc, "transfer:texture", (e) =>
        e.copyBufferToTexture(
          { buffer, offset, bytesPerRow: STREAM_ROW_BYTES, rowsPerImage: full },
          { texture },
          [STREAM_ROW_TEXELS, full],
        ));
    }
    if (tail > 0) {
      this.textureCopies++;
      this.#transfer(enc, "transfer:texture", (e) =>
        e.copyBufferToTexture(
          { buffer, offset: offset + full * STREAM_ROW_BYTES },
          { texture, origin: [0, full] },
          [tail, 1],
        ));
    }
  }

  /**
   * Records zeroing `bytes` of `buffer` from `offset` (both multiples of 4) in
   * order with the dispatches around it: a `clearBuffer` (slow on Dawn's OpenGL
   * backend, where tensors are zeroed by a kernel instead: see
   * {@link Device.clearsWithKernel}).
   */
  clear(buffer: GPUBuffer, offset: number, bytes: number): void {
    this.assertAlive();
    if (bytes === 0) return;
    if (offset % 4 !== 0 || bytes % 4 !== 0) {
      throw new Error(`clear: offset ${offset} and size ${bytes} must be multiples of 4 bytes`);
    }
    this.#endPass();
    this.#wrote(buffer);
    this.#transfer(
      this.#getEncoder(),
      "transfer:clear",
      (e) => e.clearBuffer(buffer, offset, bytes),
    );
  }

  /**
   * Records `record` (a copy or a clear, outside any compute pass) into `encoder`,
   * and hands it to the profiler when one is attached, under `key`.
   */
  #transfer(
    encoder: GPUCommandEncoder,
    key: string,
    record: (encoder: GPUCommandEncoder) => void,
  ): void {
    record(encoder);
    this.profiler?.command(key, record);
  }

  /** Records a buffer-to-buffer copy in order with the dispatches around it. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.assertAlive();
    if (bytes === 0) return;
    this.#endPass();
    this.#wrote(dst);
    this.#transfer(
      this.#getEncoder(),
      "transfer:buffer",
      (e) => e.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes),
    );
  }

  /**
   * Writes host `data` into `dst` at `offset`, ordered after everything recorded
   * before it: the queue's own write when nothing recorded waits for a submit,
   * else a mapped staging buffer and a recorded copy (never a write that could
   * overtake pending work on a pooled buffer).
   */
  upload(dst: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    this.assertAlive();
    const bytes = data.byteLength;
    if (bytes === 0) return;
    this.#wrote(dst);
    if (this.#encoder === null && bytes % 4 === 0) {
      // Nothing recorded waits for a submit, so the queue's own write cannot
      // overtake it, and it needs no fresh staging buffer (new memory: its first
      // touch costs more than the copy; see readInto). Shared
      // memory (the collectives' arena) goes through a reused host copy: Dawn's
      // writeBuffer crashes the process (SIGSEGV) when given a view of it.
      const view = new Uint8Array(data.buffer, data.byteOffset, bytes);
      let src: Uint8Array<ArrayBuffer>;
      if (view.buffer instanceof ArrayBuffer) src = view as Uint8Array<ArrayBuffer>;
      else {
        if (this.#uploadScratch.byteLength < bytes) this.#uploadScratch = new Uint8Array(bytes);
        src = this.#uploadScratch.subarray(0, bytes);
        src.set(view);
      }
      this.gpu.queue.writeBuffer(dst, offset, src);
      return;
    }
    const padded = Math.ceil(bytes / 4) * 4;
    const staging = this.gpu.createBuffer({
      size: padded,
      usage: GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
    new Uint8Array(staging.getMappedRange()).set(
      new Uint8Array(data.buffer, data.byteOffset, bytes),
    );
    staging.unmap();
    this.copy(staging, 0, dst, offset, padded);
    this.#afterSubmit.push(() => staging.destroy());
  }

  /** Reads `bytes` of `src` back to the host: submits pending work and waits (a sync point). */
  async read(src: GPUBuffer, bytes: number, offset = 0): Promise<ArrayBuffer> {
    const out = new Uint8Array(bytes);
    await this.readInto(src, out, offset);
    return out.buffer;
  }

  /**
   * Reads `dst.byteLength` bytes of `src` (from `offset`) into `dst`, which the
   * caller may reuse: no new host memory, whose first touch costs more than the
   * copy (a fresh 704 KiB copy took 0.38 ms, a copy into a used array 0.015 ms,
   * on 2026-12-02's Zen 5 build machine). Submits pending work and waits.
   */
  async readInto(src: GPUBuffer, dst: ArrayBufferView, offset = 0): Promise<void> {
    this.assertAlive();
    const bytes = dst.byteLength;
    if (bytes === 0) return;
    await this.#readRounds([{ buffer: src, offset, size: bytes }], [
      new Uint8Array(dst.buffer, dst.byteOffset, bytes),
    ]);
  }

  /**
   * A MAP_READ staging buffer of at least `bytes`, reused across reads: new
   * buffers cost an allocation and (on Dawn) a zero-fill each time.
   */
  #takeReadStaging(bytes: number): GPUBuffer {
    const size = sizeClass(bytes);
    const hit = this.#readStaging.get(size)?.pop();
    if (hit) return hit;
    return this.gpu.createBuffer({
      size,
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
    });
  }

  #returnReadStaging(b: GPUBuffer): void {
    let list = this.#readStaging.get(b.size);
    if (!list) this.#readStaging.set(b.size, list = []);
    if (list.length < 4) list.push(b);
    else b.destroy();
  }

  /**
   * Reads several buffers: with one submit and one wait where they fit in
   * {@link READ_STAGING_MAX_BYTES}, else in rounds of that many bytes.
   */
  async readMany(srcs: BufferBinding[]): Promise<ArrayBuffer[]> {
    this.assertAlive();
    const out = srcs.map((s) => new ArrayBuffer(s.size));
    await this.#readRounds(srcs, out.map((b) => new Uint8Array(b)));
    return out;
  }

  /**
   * Copies each of `srcs` into the host bytes `dsts[i]` (as long as it) through
   * staging buffers of at most {@link READ_STAGING_MAX_BYTES}: one round (one
   * copy batch, one submit, one wait) per staging buffer's worth, a source
   * larger than one cut into pieces. A save of GPT-2 small read its 154 MB
   * embedding's two moments through one 309 MB staging buffer, which the
   * device then kept, beside the host copies.
   */
  async #readRounds(srcs: readonly BufferBinding[], dsts: readonly Uint8Array[]): Promise<void> {
    const most = READ_STAGING_MAX_BYTES;
    // Pieces of at most `most` bytes (multiples of 4, as buffer copies need).
    const pieces: { src: number; at: number; bytes: number }[] = [];
    srcs.forEach((s, i) => {
      for (let at = 0; at < s.size; at += most) {
        pieces.push({ src: i, at, bytes: Math.min(most, s.size - at) });
      }
    });
    for (let first = 0; first < pieces.length;) {
      let end = first, total = 0;
      while (end < pieces.length && (end === first || total + padded4(pieces[end].bytes) <= most)) {
        total += padded4(pieces[end++].bytes);
      }
      const round = pieces.slice(first, end);
      first = end;
      const staging = this.#takeReadStaging(total);
      let off = 0;
      const offs = round.map((p) => {
        const s = srcs[p.src];
        this.copy(s.buffer, (s.offset ?? 0) + p.at, staging, off, padded4(p.bytes));
        const here = off;
        off += padded4(p.bytes);
        return here;
      });
      this.flush();
      this.hostSyncs++;
      this.bytesRead += total;
      await staging.mapAsync(GPUMapMode.READ, 0, total);
      const range = staging.getMappedRange(0, total);
      round.forEach((p, k) => {
        dsts[p.src].set(new Uint8Array(range, offs[k], p.bytes), p.at);
      });
      staging.unmap();
      this.#returnReadStaging(staging);
    }
  }

  /**
   * Destroys `buffer` (one the caller created on {@link Device.gpu}) once the
   * work recorded so far has been submitted, which may still bind it.
   */
  retire(buffer: GPUBuffer): void {
    this.#afterSubmit.push(() => buffer.destroy());
  }

  /** Submits everything recorded so far. Does not wait. */
  flush(): void {
    this.#endPass();
    if (this.#encoder) {
      const prof = this.profiler;
      if (prof?.mode === "timestamp") prof.resolve(this.gpu, this.#encoder);
      this.gpu.queue.submit([this.#encoder.finish()]);
      this.#encoder = null;
      this.#batched = 0;
      this.submits++;
      prof?.afterSubmit();
    }
    const after = this.#afterSubmit;
    this.#afterSubmit = [];
    for (const f of after) f();
  }

  /** Submits pending work and waits until the GPU has finished it. */
  async sync(): Promise<void> {
    this.flush();
    this.hostSyncs++;
    await this.gpu.queue.onSubmittedWorkDone();
  }

  #runningPass: string | null = null;

  /** The pass {@link Device.exclusive} runs now ("Trainer.step", …), or null. */
  get runningPass(): string | null {
    return this.#runningPass;
  }

  /**
   * Runs `fn`, a pass over this device's models (a training step, an
   * evaluation, one generated token), refusing to start while another runs:
   * autograd's switch ({@link Device.gradEnabled}) and the tensor scopes are the
   * device's, so two passes interleaved at their `await`s would record into each
   * other. `what` names the pass in the error.
   */
  async exclusive<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.#runningPass) {
      throw new Error(
        `${what}: this device is still running ${this.#runningPass}; await it first ` +
          `(a device runs one training step, evaluation or generated token at a time)`,
      );
    }
    this.#runningPass = what;
    try {
      return await fn();
    } finally {
      this.#runningPass = null;
    }
  }

  /** Runs `fn` with autograd recording turned off on this device. */
  noGrad<T>(fn: () => T): T {
    const prev = this.gradEnabled;
    this.gradEnabled = false;
    try {
      const r = fn();
      if (r instanceof Promise) {
        return r.finally(() => {
          this.gradEnabled = prev;
        }) as T;
      }
      this.gradEnabled = prev;
      return r;
    } catch (e) {
      this.gradEnabled = prev;
      throw e;
    }
  }

  /** Submits pending work, frees pooled buffers and destroys the device. */
  destroy(): void {
    if (this.#lost) return;
    this.flush();
    this.pool.clear();
    for (const u of this.#uniforms.values()) u.buffer.destroy();
    this.#uniforms.clear();
    for (const list of this.#readStaging.values()) for (const b of list) b.destroy();
    this.#readStaging.clear();
    for (const pool of this.#scratchPools.values()) for (const t of pool) t?.texture.destroy();
    this.#scratchPools.clear();
    for (const t of this.#conversionTextures.values()) t.texture.destroy();
    this.#conversionTextures.clear();
    this.#kept.destroy();
    this.#bindGroups.clear();
    this.#lost = true;
    this.gpu.destroy();
  }

  /**
   * Destroys the device and waits until the implementation reports it lost
   * (bounded by `timeoutMs`): call this before a Worker holding the device
   * ends, since tearing a Worker down mid-release can corrupt the heap. The
   * Device then drops its WebGPU objects (`gpu` and `adapter` throw); on Dawn
   * over GL, closing the thread's last device also releases the thread's EGL
   * state (see `GPUProvider.threadHooks`).
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.destroy();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.gpu.lost.then(() => {}),
      new Promise((r) => (timer = setTimeout(r, timeoutMs))),
    ]);
    clearTimeout(timer);
    // Drop every WebGPU object this Device holds, so that nothing here keeps the
    // native device alive (see GPUProvider.threadHooks).
    this.pool.close();
    this.#pipelines.clear();
    this.#encoder = null;
    this.#pass = null;
    this.#adapter = null;
    this.#gpu = null;
    await this.provider.threadHooks?.closed();
  }

  #closed = false;

  #getEncoder(): GPUCommandEncoder {
    if (!this.#encoder) this.#encoder = this.gpu.createCommandEncoder();
    return this.#encoder;
  }

  #computePass(): GPUComputePassEncoder {
    if (!this.#pass) this.#pass = this.#getEncoder().beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }
}
