/**
 * The contract between `kernels/` and `core/`: a kernel is WGSL source with one
 * `main` entry point and a unique cache key per specialization. Storage buffers
 * are bound at `@group(0) @binding(0..n-1)` in the order the op passes them; a
 * uniform `params` block, when the kernel has one, is bound right after them.
 * @module
 */

/** A compiled-once unit of WGSL: one specialization of one kernel. */
export interface KernelSource {
  /** Unique per (kernel, specialization); the pipeline cache key. */
  readonly key: string;
  /** Complete WGSL module with an entry point named `main`. */
  readonly code: string;
}

/**
 * One invocation writing one word (binding 0: a storage buffer of u32): what a
 * dispatch costs with no work in it, the baseline `deno task profile` reports.
 */
export const NOOP_KERNEL: KernelSource = {
  key: "profile:noop",
  code: `@group(0) @binding(0) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(1)
fn main() { o[0] = 1u; }`,
};

/**
 * A kernel whose WGSL is generated when `code` is first read. A device looks
 * its pipeline up by `key` and reads `code` only to compile it, so an op that
 * records the same specialization every step does not generate it again (the
 * fused attention kernels' WGSL took ~0.6 ms of host time per reference step).
 */
export function lazyKernel(key: string, generate: () => string): KernelSource {
  let code: string | undefined;
  return {
    key,
    get code() {
      return code ??= generate();
    },
  };
}

/**
 * WGSL's portable limit on the bytes of `function`-address-space variables one
 * entry point reaches (WGSL spec, "Limits"): a kernel past it may be refused by
 * a conforming implementation. The generated kernels with large register blocks
 * (matmul, fused attention) size their blocks under it.
 */
export const FUNCTION_VARIABLE_BYTES = 8192;

/** Packs a uniform block of u32/i32/f32 fields (4 bytes each, in declaration order). */
export class Params {
  #view: DataView;
  #n = 0;

  /** Reserves `fields` 4-byte fields (rounded up to 16 bytes as WGSL requires). */
  constructor(fields: number) {
    this.#view = new DataView(new ArrayBuffer(Math.max(16, Math.ceil(fields / 4) * 16)));
  }

  /** Appends an unsigned 32-bit field. */
  u32(v: number): this {
    this.#view.setUint32(4 * this.#n++, v >>> 0, true);
    return this;
  }

  /** Appends a signed 32-bit field. */
  i32(v: number): this {
    this.#view.setInt32(4 * this.#n++, v | 0, true);
    return this;
  }

  /** Appends a 32-bit float field. */
  f32(v: number): this {
    this.#view.setFloat32(4 * this.#n++, v, true);
    return this;
  }

  /** The packed bytes. */
  get buffer(): ArrayBuffer {
    return this.#view.buffer as ArrayBuffer;
  }
}

/**
 * Invocations per workgroup of the software (CPU adapter) kernels where the
 * adapter's SIMD width is not known to be wider: one SIMD step of llvmpipe at
 * its default 256 bits (8 f32 lanes).
 */
export const SOFTWARE_LANES = 8;

/** Workgroup widths the software kernels take: 8, or 16 for llvmpipe at 512 bits. */
export const SOFTWARE_LANE_WIDTHS: readonly number[] = [SOFTWARE_LANES, 16];

/** Ceiling division, for workgroup counts. */
export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}
