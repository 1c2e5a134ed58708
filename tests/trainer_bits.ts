/**
 * Three trainer steps of a small GPT on a fresh device of the test backend, for
 * tests that compare a device setting's losses and weights bit for bit with
 * another's (kept and scratch stream textures against copying every read).
 * @module
 */

import { Device } from "../core/device.ts";
import { TokenIds } from "../core/token_ids.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { Trainer, type TrainerOptions } from "../models/trainer.ts";
import { prng, testBackend } from "./helpers.ts";

const cfg: GptConfig = {
  vocabSize: 300,
  numLayers: 2,
  hiddenSize: 64,
  numHeads: 4,
  maxPositions: 16,
  hiddenDropout: 0,
  attentionDropout: 0,
};

/** What {@link trainThreeSteps} reports. */
export interface TrainedBits {
  /** The three steps' losses. */
  losses: number[];
  /** The final weights, in `namedParams` order. */
  w: Float32Array[];
  /** Whether the device is a CPU adapter (GPUs read buffers: no stream textures). */
  software: boolean;
  /** Copies into stream textures during the steps. */
  textureCopies: number;
  /** `Device.keptTextureHits` at the end. */
  keptHits: number;
  /** `Device.keptTextureBytes` at the end. */
  keptBytes: number;
  /** `Device.scratchTextureHits` at the end. */
  scratchHits: number;
}

/**
 * Trains 3 steps (batch 2 × 16 tokens, fixed random ids) after `setup` has
 * configured the device, with `trainer` options over a clipped, warmed-up
 * schedule; closes the device.
 */
export async function trainThreeSteps(
  setup: (device: Device) => void,
  trainer: Partial<TrainerOptions> = {},
): Promise<TrainedBits> {
  const device = await Device.create({ backend: testBackend() });
  try {
    setup(device);
    const m = Gpt.serial(device, cfg, 3);
    const t = new Trainer(device, m, {
      schedule: { lr: 3e-3, warmupIters: 1, decayIters: 3 },
      clipGrad: 1,
      ...trainer,
    });
    const r = prng(5);
    const ids = () => Int32Array.from({ length: 2 * 16 }, () => Math.floor(r() * cfg.vocabSize));
    const losses: number[] = [];
    const copies0 = device.textureCopies;
    for (let s = 0; s < 3; s++) {
      const x = ids(), y = ids();
      const res = await t.step(
        1,
        () => m.loss(TokenIds.fromHost(device, x, [2, 16]), TokenIds.fromHost(device, y, [2, 16])),
      );
      losses.push(res.loss);
    }
    const named = m.namedParams();
    const w = (await device.readMany(named.map(([, p]) => p.tensor.binding))).map((b) =>
      new Float32Array(b)
    );
    m.dispose();
    return {
      losses,
      w,
      software: device.isSoftware,
      textureCopies: device.textureCopies - copies0,
      keptHits: device.keptTextureHits,
      keptBytes: device.keptTextureBytes,
      scratchHits: device.scratchTextureHits,
    };
  } finally {
    // close, not destroy: a Dawn GL device left to the process's exit can abort it after every
    // test passed (glvnd frees the test thread's EGL state twice; see Device.close).
    await device.close();
  }
}
