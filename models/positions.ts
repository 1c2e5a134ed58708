/**
 * Position ids `[B, T]` (each row 0 … T−1) as persistent {@link TokenIds}, made once
 * per shape and reused by every step.
 * @module
 */

import type { Device } from "../core/device.ts";
import { TokenIds } from "../core/token_ids.ts";

/** A per-model cache of position-id tensors. */
export class PositionIds {
  #byShape = new Map<string, TokenIds>();

  /** A cache on `device`. */
  constructor(readonly device: Device) {}

  /** Position ids for a `[B, T]` batch. */
  get(B: number, T: number): TokenIds {
    const key = `${B}x${T}`;
    let p = this.#byShape.get(key);
    if (!p) {
      const ids = new Int32Array(B * T);
      for (let i = 0; i < ids.length; i++) ids[i] = i % T;
      p = TokenIds.fromHost(this.device, ids, [B, T]).keep();
      this.#byShape.set(key, p);
    }
    return p;
  }

  /** Frees every cached tensor. */
  dispose(): void {
    for (const p of this.#byShape.values()) p.dispose();
    this.#byShape.clear();
  }
}
