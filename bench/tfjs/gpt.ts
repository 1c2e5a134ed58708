/**
 * The project's GPT written with TensorFlow.js ops, as a bench-only training
 * baseline on TF.js's WebGPU backend (same `GPU` object and adapter kind as the
 * project's device, see {@link createTfjs}).
 *
 * The model mirrors `models/gpt.ts`: pre-LN layers, learned positions, tied
 * input/output embeddings, a GeLU (tanh) MLP of `ffn` (default 4h), causal
 * softmax attention, layer norms (eps 1e-5), init N(0, 0.02) with the residual
 * output projections scaled by 1/sqrt(2·layers), and optional dropout on the
 * embeddings, attention probabilities and residual branches. A training step
 * takes gradients with `tf.variableGrads`, clips them to a global norm of 1
 * and applies `tf.train.adam` (no weight decay: TF.js's Adam has none, and
 * leaving it out only spares TF.js work), then reads the loss and the
 * gradient norm back in one transfer, as the project's trainer does.
 * @module
 */

import type * as tfns from "npm:@tensorflow/tfjs-core@4.22.0";
// tfjs-core's Node bundle (what Deno loads) registers no gradients, and its ESM
// `dist/register_all_gradients.js` cannot load under Deno (extensionless relative
// imports). The union package's Node bundle registers all of them, into the
// registry that tfjs-core shares through a global: imported only for that.
import "npm:@tensorflow/tfjs@4.22.0";
import { DataRng } from "../../data/rng.ts";
import type { Tfjs } from "./backend.ts";

type Tf = typeof tfns;
type Tensor = tfns.Tensor;
type Tensor2D = tfns.Tensor2D;
type Variable = tfns.Variable;

/** Shape and regularisation of a {@link TfjsGpt}. */
export interface TfjsGptConfig {
  /** Vocabulary size (also the output width: no padding). */
  vocabSize: number;
  /** Transformer layers. */
  numLayers: number;
  /** Hidden size h. */
  hiddenSize: number;
  /** Attention heads (h must divide by it). */
  numHeads: number;
  /** Position table size (≥ the sequence length trained on). */
  maxPositions: number;
  /** MLP inner size (default 4h). */
  ffnHiddenSize?: number;
  /** Dropout rate on embeddings, attention probabilities and residual branches (0 = off). */
  dropout: number;
}

interface Layer {
  ln1g: Variable;
  ln1b: Variable;
  wqkv: Variable;
  bqkv: Variable;
  wo: Variable;
  bo: Variable;
  ln2g: Variable;
  ln2b: Variable;
  w1: Variable;
  b1: Variable;
  w2: Variable;
  b2: Variable;
}

/** A pre-LN GPT whose parameters are TF.js variables. */
export class TfjsGpt {
  readonly #tf: Tf;
  readonly #wte: Variable;
  readonly #wpe: Variable;
  readonly #layers: Layer[] = [];
  readonly #lnfG: Variable;
  readonly #lnfB: Variable;
  readonly #masks = new Map<number, Tensor>();
  readonly #positions = new Map<string, Tensor>();
  /** Every trainable variable. */
  readonly variables: Variable[] = [];

  /** Builds the model with weights drawn from `seed`. */
  constructor(tf: Tf, readonly config: TfjsGptConfig, seed: number) {
    this.#tf = tf;
    const c = config;
    const h = c.hiddenSize;
    const ffn = c.ffnHiddenSize ?? 4 * h;
    if (h % c.numHeads !== 0) throw new Error(`hidden ${h} is not divisible by ${c.numHeads}`);
    let s = seed;
    const v = (_name: string, t: Tensor) => {
      const x = tf.variable(t, true);
      t.dispose();
      this.variables.push(x);
      return x;
    };
    const normal = (name: string, shape: number[], std = 0.02) =>
      v(name, tf.randomNormal(shape, 0, std, "float32", s++));
    const zeros = (name: string, shape: number[]) => v(name, tf.zeros(shape));
    const ones = (name: string, shape: number[]) => v(name, tf.ones(shape));
    const outStd = 0.02 / Math.sqrt(2 * c.numLayers);
    this.#wte = normal("wte", [c.vocabSize, h]);
    this.#wpe = normal("wpe", [c.maxPositions, h]);
    for (let i = 0; i < c.numLayers; i++) {
      this.#layers.push({
        ln1g: ones("ln1g", [h]),
        ln1b: zeros("ln1b", [h]),
        wqkv: normal("wqkv", [h, 3 * h]),
        bqkv: zeros("bqkv", [3 * h]),
        wo: normal("wo", [h, h], outStd),
        bo: zeros("bo", [h]),
        ln2g: ones("ln2g", [h]),
        ln2b: zeros("ln2b", [h]),
        w1: normal("w1", [h, ffn]),
        b1: zeros("b1", [ffn]),
        w2: normal("w2", [ffn, h], outStd),
        b2: zeros("b2", [h]),
      });
    }
    this.#lnfG = ones("lnfg", [h]);
    this.#lnfB = zeros("lnfb", [h]);
  }

  /** Parameter count. */
  get parameterCount(): number {
    return this.variables.reduce((n, x) => n + x.size, 0);
  }

  #layerNorm(x: Tensor, g: Tensor, b: Tensor): Tensor {
    const tf = this.#tf;
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), g), b);
  }

  #gelu(x: Tensor): Tensor {
    const tf = this.#tf;
    // 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))
    const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
    return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
  }

  #drop(x: Tensor, training: boolean): Tensor {
    const p = this.config.dropout;
    return training && p > 0 ? this.#tf.dropout(x, p) : x;
  }

  /** The additive causal mask `[T, T]` (0 on and below the diagonal, -1e9 above). */
  #mask(T: number): Tensor {
    let m = this.#masks.get(T);
    if (!m) {
      const a = new Float32Array(T * T);
      for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) a[i * T + j] = -1e9;
      m = this.#tf.keep(this.#tf.tensor2d(a, [T, T]));
      this.#masks.set(T, m);
    }
    return m;
  }

  #positionIds(B: number, T: number): Tensor {
    const key = `${B}x${T}`;
    let p = this.#positions.get(key);
    if (!p) {
      const ids = new Int32Array(B * T);
      for (let i = 0; i < ids.length; i++) ids[i] = i % T;
      p = this.#tf.keep(this.#tf.tensor1d(ids, "int32"));
      this.#positions.set(key, p);
    }
    return p;
  }

  /** Mean next-token cross-entropy of `targets` given `ids` (both `[B, T]` int32). */
  loss(ids: Tensor2D, targets: Tensor2D, training = true): tfns.Scalar {
    const tf = this.#tf;
    const [B, T] = ids.shape;
    const { hiddenSize: h, numHeads: H, vocabSize: V } = this.config;
    const d = h / H;
    const flat = tf.reshape(ids, [B * T]);
    let x = tf.add(tf.gather(this.#wte, flat), tf.gather(this.#wpe, this.#positionIds(B, T)));
    x = this.#drop(x, training); // [B·T, h]
    const heads = (t: Tensor) => tf.transpose(tf.reshape(t, [B, T, H, d]), [0, 2, 1, 3]);
    for (const l of this.#layers) {
      const a = this.#layerNorm(x, l.ln1g, l.ln1b);
      const qkv = tf.add(tf.matMul(a, l.wqkv), l.bqkv);
      const [q, k, v] = tf.split(qkv, 3, 1).map(heads); // [B, H, T, d]
      const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(d)), this.#mask(T));
      const probs = this.#drop(tf.softmax(scores), training);
      const ctx = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [B * T, h]);
      x = tf.add(x, this.#drop(tf.add(tf.matMul(ctx, l.wo), l.bo), training));
      const m = this.#layerNorm(x, l.ln2g, l.ln2b);
      const up = this.#gelu(tf.add(tf.matMul(m, l.w1), l.b1));
      x = tf.add(x, this.#drop(tf.add(tf.matMul(up, l.w2), l.b2), training));
    }
    const logits = tf.matMul(this.#layerNorm(x, this.#lnfG, this.#lnfB), this.#wte, false, true);
    const labels = tf.oneHot(tf.reshape(targets, [B * T]), V);
    return tf.losses.softmaxCrossEntropy(labels, logits) as tfns.Scalar;
  }

  /** Frees the variables and cached constants. */
  dispose(): void {
    for (const x of this.variables) x.dispose();
    for (const m of this.#masks.values()) m.dispose();
    for (const p of this.#positions.values()) p.dispose();
  }
}

/** One training step's numbers. */
export interface TfjsStepResult {
  /** Loss before the update. */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

/** Trains a {@link TfjsGpt} with Adam and global-norm clipping. */
export class TfjsTrainer {
  readonly #optimizer: tfns.AdamOptimizer;
  readonly #errors: string[] = [];

  /** A trainer at learning rate `lr`, clipping the global gradient norm to `clipGrad`. */
  constructor(readonly tfjs: Tfjs, readonly model: TfjsGpt, lr = 1e-3, readonly clipGrad = 1) {
    this.#optimizer = tfjs.tf.train.adam(lr, 0.9, 0.999, 1e-8);
    // A WebGPU validation error drops the whole command buffer it is in, so a
    // step would "run" faster while doing less: watch for them and fail the step.
    const device = (tfjs.tf.backend() as unknown as { device?: GPUDevice }).device;
    device?.addEventListener("uncapturederror", (e) => {
      this.#errors.push((e as GPUUncapturedErrorEvent).error.message.split("\n")[0]);
    });
  }

  /** One step on token ids and targets (`Int32Array`s of `batch·seq`); reads back once. */
  async step(ids: Int32Array, targets: Int32Array, batch: number, seq: number): Promise<
    TfjsStepResult
  > {
    const tf = this.tfjs.tf;
    const out = tf.tidy(() => {
      const x = tf.tensor2d(ids, [batch, seq], "int32");
      const y = tf.tensor2d(targets, [batch, seq], "int32");
      const { value, grads } = tf.variableGrads(() => this.model.loss(x, y), this.model.variables);
      const names = Object.keys(grads);
      // addN in chunks: one addN of every gradient binds more storage buffers than
      // Dawn's GL adapter allows per stage (8), which invalidates the pipeline
      let parts = names.map((n) => tf.sum(tf.square(grads[n])));
      while (parts.length > 1) {
        const next: Tensor[] = [];
        for (let i = 0; i < parts.length; i += 4) {
          const chunk = parts.slice(i, i + 4);
          next.push(chunk.length === 1 ? chunk[0] : tf.addN(chunk));
        }
        parts = next;
      }
      const sq = parts[0];
      const norm = tf.sqrt(sq);
      const coef = tf.minimum(tf.div(this.clipGrad, tf.add(norm, 1e-6)), 1);
      this.#optimizer.applyGradients(
        names.map((name) => ({ name, tensor: tf.mul(grads[name], coef) })),
      );
      return tf.stack([value, norm]);
    });
    const [loss, gradNorm] = await out.data();
    out.dispose();
    if (this.#errors.length) throw new Error(`TF.js WebGPU error: ${this.#errors[0]}`);
    return { loss, gradNorm };
  }

  /** Frees the optimizer state. */
  dispose(): void {
    this.#optimizer.dispose();
  }
}

/** What {@link measureTfjsGpt} measured. */
export interface TfjsMeasurement {
  /** Mean milliseconds per timed step. */
  msPerStep: number;
  /** Tokens (batch·seq) per second over the timed steps. */
  tokensPerS: number;
  /** Each timed step's milliseconds. */
  stepMs: number[];
  /** Loss of the last step (sanity). */
  loss: number;
}

/**
 * Trains a fresh {@link TfjsGpt} on random tokens from `seed`: `warmup` untimed
 * steps (shader compilation), then `steps` timed ones.
 */
export async function measureTfjsGpt(
  tfjs: Tfjs,
  config: TfjsGptConfig,
  opts: { batch: number; seq: number; warmup: number; steps: number; seed?: number },
): Promise<TfjsMeasurement> {
  const model = new TfjsGpt(tfjs.tf, config, opts.seed ?? 1);
  const trainer = new TfjsTrainer(tfjs, model);
  const rng = new DataRng(opts.seed ?? 7);
  const n = opts.batch * opts.seq;
  const tokens = () => Int32Array.from({ length: n }, () => rng.nextInt(config.vocabSize));
  try {
    for (let i = 0; i < opts.warmup; i++) {
      await trainer.step(tokens(), tokens(), opts.batch, opts.seq);
    }
    const stepMs: number[] = [];
    let loss = NaN;
    for (let i = 0; i < opts.steps; i++) {
      const t0 = performance.now();
      loss = (await trainer.step(tokens(), tokens(), opts.batch, opts.seq)).loss;
      stepMs.push(performance.now() - t0);
    }
    const msPerStep = stepMs.reduce((a, b) => a + b, 0) / stepMs.length;
    return { msPerStep, tokensPerS: (n * 1000) / msPerStep, stepMs, loss };
  } finally {
    trainer.dispose();
    model.dispose();
  }
}
