/**
 * Modules: named parameters and sub-modules, plus the building blocks the models
 * are made of (Linear, LayerNorm, Embedding, Dropout). Parallel versions in
 * `models/` implement the same shapes, so layers can be swapped.
 * @module
 */

import type { Device } from "./device.ts";
import {
  DEFAULT_LAYER_NORM_EPS,
  dropout,
  type DropoutSpec,
  embedding,
  full,
  layerNorm,
  linear,
  randn,
} from "./ops/mod.ts";
import type { RngStream } from "./rng.ts";
import type { Tensor } from "./tensor.ts";
import type { TokenIds } from "./token_ids.ts";

/** Per-parameter facts the optimizer and tensor parallelism need. */
export interface ParamInfo {
  /** The parameter. */
  tensor: Tensor;
  /** Whether decoupled weight decay applies (not for biases and norm gains). */
  decay: boolean;
  /**
   * How the full weight is split across tensor-parallel ranks: the dimension, or
   * null when every rank holds a full replica.
   */
  partitionDim: number | null;
  /**
   * Fused blocks along `partitionDim` (e.g. 3 for q|k|v): each block is split
   * separately and a shard holds its part of every block, in block order.
   */
  partitionBlocks: number;
  /**
   * Ranks the full weight is split over along `partitionDim` (the layer's
   * tensor-parallel group); absent: 1, this rank holds all of it. A trainer
   * reads it to ask for the hooks a split model needs.
   */
  tpSize?: number;
}

/** Base class: a tree of modules with named parameters. */
export abstract class Module {
  /** Training mode (dropout active). */
  training = true;
  #params = new Map<string, ParamInfo>();
  #children = new Map<string, Module>();

  /** Registers a parameter under `name`; marks it persistent and gradient-tracked. */
  protected param(
    name: string,
    tensor: Tensor,
    opts: {
      decay?: boolean;
      partitionDim?: number | null;
      partitionBlocks?: number;
      tpSize?: number;
    } = {},
  ): Tensor {
    tensor.keep().requireGrad();
    tensor.name = name;
    this.#params.set(name, {
      tensor,
      decay: opts.decay ?? true,
      partitionDim: opts.partitionDim ?? null,
      partitionBlocks: opts.partitionBlocks ?? 1,
      ...(opts.tpSize !== undefined && opts.tpSize > 1 ? { tpSize: opts.tpSize } : {}),
    });
    return tensor;
  }

  /** Registers a sub-module under `name`. */
  protected child<M extends Module>(name: string, m: M): M {
    this.#children.set(name, m);
    return m;
  }

  /** Every parameter with its dotted path, in registration order. */
  namedParams(prefix = ""): [string, ParamInfo][] {
    const out: [string, ParamInfo][] = [];
    for (const [n, p] of this.#params) out.push([prefix + n, p]);
    for (const [n, c] of this.#children) out.push(...c.namedParams(`${prefix}${n}.`));
    return out;
  }

  /** Every parameter tensor. */
  parameters(): Tensor[] {
    return this.namedParams().map(([, p]) => p.tensor);
  }

  /** Total number of parameter elements. */
  numParams(): number {
    return this.parameters().reduce((s, t) => s + t.size, 0);
  }

  /** Sets training mode on this module and its children. */
  train(on = true): this {
    this.training = on;
    for (const c of this.#children.values()) c.train(on);
    return this;
  }

  /** Frees all parameters and their gradients. */
  dispose(): void {
    for (const t of this.parameters()) {
      t.grad?.dispose();
      t.dispose();
    }
  }
}

/**
 * The standard deviation of a weight's normal init when none is given: 0.02,
 * GPT-2's and Megatron's (`--init-method-std`).
 */
export const DEFAULT_INIT_STD = 0.02;

/** How to initialise a weight: normal(0, std) from a stream. */
export interface InitSpec {
  /** The random stream to draw from. */
  rng: RngStream;
  /** Standard deviation (default {@link DEFAULT_INIT_STD}). */
  std?: number;
}

/** `y = x·Wᵀ + b` with `W` stored `[out, in]`. */
export class Linear extends Module {
  /** Weight `[out, in]`. */
  readonly weight: Tensor;
  /** Bias `[out]`, if any. */
  readonly bias?: Tensor;

  /** A layer mapping `inFeatures` to `outFeatures`, bias initialised to zero. */
  constructor(
    device: Device,
    readonly inFeatures: number,
    readonly outFeatures: number,
    init: InitSpec,
    opts: { bias?: boolean } = {},
  ) {
    super();
    this.weight = this.param(
      "weight",
      randn(device, [outFeatures, inFeatures], init.rng.next(), init.std ?? DEFAULT_INIT_STD),
    );
    if (opts.bias ?? true) {
      this.bias = this.param("bias", full(device, [outFeatures], 0), { decay: false });
    }
  }

  /** Applies the layer over the last dimension of `x`. */
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** Layer norm over the last dimension with learned gain and bias. */
export class LayerNorm extends Module {
  /** Gain, initialised to ones. */
  readonly weight: Tensor;
  /** Bias, initialised to zeros. */
  readonly bias: Tensor;

  /** A layer norm over `dim` features. */
  constructor(device: Device, readonly dim: number, readonly eps: number = DEFAULT_LAYER_NORM_EPS) {
    super();
    this.weight = this.param("weight", full(device, [dim], 1), { decay: false });
    this.bias = this.param("bias", full(device, [dim], 0), { decay: false });
  }

  /** Normalises the last dimension of `x`. */
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** A lookup table of `num` vectors of size `dim`. */
export class Embedding extends Module {
  /** The table `[num, dim]`. */
  readonly weight: Tensor;

  /** A table initialised normal(0, std). */
  constructor(device: Device, readonly num: number, readonly dim: number, init: InitSpec) {
    super();
    this.weight = this.param(
      "weight",
      randn(device, [num, dim], init.rng.next(), init.std ?? DEFAULT_INIT_STD),
    );
  }

  /** Rows for `ids`. */
  forward(ids: TokenIds): Tensor {
    return embedding(this.weight, ids);
  }
}

/** Inverted dropout drawing its masks from a stream; identity in eval mode. */
export class Dropout extends Module {
  /** Drops with probability `p`, drawing from `rng`. */
  constructor(readonly p: number, readonly rng: RngStream) {
    super();
    if (!(p >= 0 && p < 1)) throw new Error(`dropout probability must be in [0, 1), got ${p}`);
  }

  /** Applies dropout when training and `p > 0`. */
  forward(x: Tensor): Tensor {
    const spec = this.spec();
    return spec ? dropout(x, spec.p, spec.draw) : x;
  }

  /**
   * For a fused op that applies this dropout itself: the probability and a
   * fresh draw when {@link Dropout.forward} would drop (training, `p > 0`),
   * else null. Draws from the stream exactly as `forward` does.
   */
  spec(): DropoutSpec | null {
    if (!this.training || this.p === 0) return null;
    return { p: this.p, draw: this.rng.next() };
  }
}
