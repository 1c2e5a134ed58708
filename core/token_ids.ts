/**
 * Token ids (or any integer indices) whose values the host knows. Ops that index
 * by ids on the host, the embedding backward (it builds a scatter index per
 * table row) and the cross-entropy's count of counted targets, take a
 * {@link TokenIds} rather than a bare `i32` tensor; a `TokenIds` can only be made
 * from host data, so an index tensor computed on the GPU is refused where it is
 * passed (by the type checker, or with a clear error at the call), never later
 * in the backward pass.
 * @module
 */

import type { Device } from "./device.ts";
import { fmtShape, numel, Tensor } from "./tensor.ts";

/** An `i32` GPU tensor of ids together with its host copy. */
export class TokenIds {
  /** The ids on the GPU (`i32`), as kernels bind them. */
  readonly tensor: Tensor;
  /** The host copy (the caller must not modify it). */
  readonly host: Int32Array;

  private constructor(tensor: Tensor, host: Int32Array) {
    this.tensor = tensor;
    this.host = host;
  }

  /** Ids `ids` (copied) of `shape` (default: 1-D), uploaded to `device`. */
  static fromHost(
    device: Device,
    ids: Int32Array | readonly number[],
    shape: readonly number[] = [ids.length],
  ): TokenIds {
    if (numel(shape) !== ids.length) {
      throw new Error(
        `TokenIds.fromHost: ${ids.length} ids do not fill shape ${fmtShape(shape)} (${
          numel(shape)
        } elements)`,
      );
    }
    if (!(ids instanceof Int32Array)) {
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i];
        if (!Number.isInteger(id) || id < -(2 ** 31) || id >= 2 ** 31) {
          throw new RangeError(
            `TokenIds.fromHost: id ${id} at index ${i} is not an int32 ` +
              "(ids must be integers in [-2^31, 2^31))",
          );
        }
      }
    }
    const host = Int32Array.from(ids);
    return new TokenIds(Tensor.fromArray(device, host, shape, "i32"), host);
  }

  /**
   * Throws a clear error unless `ids` is a {@link TokenIds} (for callers from
   * untyped code, or a tensor cast past the type checker), or, with `device`,
   * unless they live on that device: `op` names the caller and `what` the
   * argument.
   */
  static check(op: string, ids: unknown, what = "ids", device?: Device): TokenIds {
    if (ids instanceof TokenIds) {
      if (device && ids.device !== device) {
        throw new Error(
          `${op}: the ${what} are on another device than the op's tensors ` +
            "(make them with TokenIds.fromHost on the device of the model or tensors they go with)",
        );
      }
      return ids;
    }
    const got = ids instanceof Tensor ? `a ${ids.dtype} Tensor ${fmtShape(ids.shape)}` : typeof ids;
    throw new Error(
      `${op}: ${what} must be TokenIds (made with TokenIds.fromHost), got ${got}; ` +
        `the op reads the ${what}' host copy, which a tensor computed on the GPU does not have ` +
        "(read it back with readInt() and make TokenIds from that)",
    );
  }

  /** The device holding the tensor. */
  get device(): Device {
    return this.tensor.device;
  }

  /** Dimensions. */
  get shape(): readonly number[] {
    return this.tensor.shape;
  }

  /** Number of ids. */
  get size(): number {
    return this.tensor.size;
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.tensor.rank;
  }

  /** The same ids viewed as `shape` (shares the GPU storage and the host copy). */
  view(shape: readonly number[]): TokenIds {
    return new TokenIds(this.tensor.view(shape), this.host);
  }

  /**
   * Throws a clear error if an id is negative or not below `vocab` (a padded
   * vocabulary's extra rows exist in the table but stand for no token): `op`
   * names the caller.
   */
  checkInVocab(op: string, vocab: number): void {
    for (const id of this.host) {
      if (id < 0 || id >= vocab) {
        throw new Error(`${op}: token id ${id} is outside the vocabulary of ${vocab}`);
      }
    }
  }

  /** Marks the tensor as surviving scopes (returns itself). */
  keep(): this {
    this.tensor.keep();
    return this;
  }

  /** Frees the GPU tensor. Idempotent. */
  dispose(): void {
    this.tensor.dispose();
  }

  /** A short description. */
  toString(): string {
    return `TokenIds(${fmtShape(this.shape)})`;
  }
}
