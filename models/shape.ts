/**
 * The shape of a transformer (GPT or BERT), resolved once: defaults filled in
 * (`ffnHiddenSize` = 4·hidden, `kvChannels` = hidden / heads) and checked against
 * the tensor-parallel size, so that models, FLOP counts, checkpoints and the
 * Hugging Face export all read the same numbers.
 * @module
 */

/** The shape fields a config gives; the optional ones have defaults. */
export interface ShapeConfig {
  /** Tokenizer vocabulary (before padding). */
  vocabSize: number;
  /** Transformer layers. */
  numLayers: number;
  /** Hidden size h. */
  hiddenSize: number;
  /** Attention heads (h must divide by it; heads by tp). */
  numHeads: number;
  /** Position table size. */
  maxPositions: number;
  /** MLP inner size (default 4h). */
  ffnHiddenSize?: number;
}

/** A shape with every default filled in, checked. */
export interface TransformerShape {
  /** Tokenizer vocabulary (before padding). */
  vocabSize: number;
  /** Transformer layers. */
  numLayers: number;
  /** Hidden size h. */
  hiddenSize: number;
  /** Attention heads, all tensor-parallel ranks together. */
  numHeads: number;
  /** Position table size. */
  maxPositions: number;
  /** MLP inner size. */
  ffnHiddenSize: number;
  /**
   * Size of one attention head, h / heads, under Megatron's name (`--kv-channels`,
   * and so in checkpoint metadata); the attention code calls it `headDim`.
   */
  kvChannels: number;
}

/**
 * A shape that cannot be built; the message names the config field
 * (`hiddenSize 30 is not divisible by numHeads 4`), which the command line
 * words as its flags.
 */
export class ShapeError extends Error {
  /** A shape error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "ShapeError";
  }
}

/** The default MLP inner size of hidden size `h`: 4h. */
export function defaultFfnHiddenSize(h: number): number {
  return 4 * h;
}

/**
 * Fills the defaults of `c` and checks that it builds at `tp` tensor-parallel
 * ranks: every size a positive integer, hidden divisible by heads, heads and
 * the MLP size divisible by `tp`. Throws {@link ShapeError}.
 */
export function resolveShape(c: ShapeConfig, tp = 1): TransformerShape {
  const pos = (name: string, v: number | undefined) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
      throw new ShapeError(`${name} must be a positive integer, got ${v}`);
    }
  };
  pos("vocabSize", c.vocabSize);
  pos("numLayers", c.numLayers);
  pos("hiddenSize", c.hiddenSize);
  pos("numHeads", c.numHeads);
  pos("maxPositions", c.maxPositions);
  pos("the tensor-parallel size", tp);
  const ffnHiddenSize = c.ffnHiddenSize ?? defaultFfnHiddenSize(c.hiddenSize);
  pos("ffnHiddenSize", ffnHiddenSize);
  if (c.hiddenSize % c.numHeads !== 0) {
    throw new ShapeError(
      `hiddenSize ${c.hiddenSize} is not divisible by numHeads ${c.numHeads}`,
    );
  }
  if (c.numHeads % tp !== 0) {
    throw new ShapeError(
      `numHeads ${c.numHeads} is not divisible by the tensor-parallel size ${tp}`,
    );
  }
  if (ffnHiddenSize % tp !== 0) {
    throw new ShapeError(
      `ffnHiddenSize ${ffnHiddenSize} (the MLP size) is not divisible by the tensor-parallel ` +
        `size ${tp}`,
    );
  }
  return {
    vocabSize: c.vocabSize,
    numLayers: c.numLayers,
    hiddenSize: c.hiddenSize,
    numHeads: c.numHeads,
    maxPositions: c.maxPositions,
    ffnHiddenSize,
    kvChannels: c.hiddenSize / c.numHeads,
  };
}

/** Dropout probability of a config that does not set one (GPT-2's and BERT's). */
export const DEFAULT_DROPOUT = 0.1;

/** Vocabulary padding multiple (times tp) of a config that does not set one (Megatron's). */
export const DEFAULT_VOCAB_MULTIPLE = 128;

/** Dropout probabilities a config may set. */
export interface DropoutConfig {
  /** Dropout on embeddings and residual branches (default {@link DEFAULT_DROPOUT}). */
  hiddenDropout?: number;
  /** Dropout on attention probabilities (default {@link DEFAULT_DROPOUT}). */
  attentionDropout?: number;
}

/** What GPT's and BERT's configs share: the shape, dropout and vocabulary padding. */
export interface TransformerConfig extends ShapeConfig, DropoutConfig {
  /** Round the vocabulary up to a multiple of this times tp (default {@link DEFAULT_VOCAB_MULTIPLE}). */
  vocabMultiple?: number;
  /**
   * Fused (FlashAttention-style) attention kernels, O(T·d) memory per head;
   * false: the unfused ops with the `[B, heads, T, T]` probabilities. Default
   * `FUSED_ATTENTION_DEFAULT` (models/blocks.ts); the results agree to float rounding.
   */
  fusedAttention?: boolean;
  /** Recompute each layer's activations in the backward pass (less memory, one more forward). */
  recomputeActivations?: boolean;
}

/** The keys of a {@link TransformerConfig}. */
const TRANSFORMER_CONFIG_KEYS = [
  "vocabSize",
  "numLayers",
  "hiddenSize",
  "numHeads",
  "maxPositions",
  "ffnHiddenSize",
  "hiddenDropout",
  "attentionDropout",
  "vocabMultiple",
  "fusedAttention",
  "recomputeActivations",
] as const satisfies readonly (keyof TransformerConfig)[];

/**
 * Checks a GPT or BERT config at `tp` ranks: its keys where the model's
 * `ownKeys` are given (those of {@link TransformerConfig} and `ownKeys`), its shape ({@link resolveShape}),
 * its dropout probabilities (in [0, 1)) and its vocabulary multiple (a
 * positive integer). Returns the resolved shape.
 */
export function validateTransformerConfig(
  c: ShapeConfig & DropoutConfig & Pick<TransformerConfig, "vocabMultiple">,
  tp = 1,
  ownKeys?: readonly string[],
): TransformerShape {
  // A key the model does not read is refused: nanoGPT's `dropout: 0` was taken
  // without a word, and the model trained at the default dropout.
  const known = new Set<string>([...TRANSFORMER_CONFIG_KEYS, ...ownKeys ?? []]);
  const unknown = ownKeys ? Object.keys(c).filter((k) => !known.has(k)) : [];
  if (unknown.length > 0) {
    throw new ShapeError(
      `unknown config key${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}; ` +
        `the model reads ${[...known].join(", ")}`,
    );
  }
  const shape = resolveShape(c, tp);
  const m = c.vocabMultiple;
  if (m !== undefined && !(Number.isInteger(m) && m > 0)) {
    throw new ShapeError(`vocabMultiple must be a positive integer, got ${m}`);
  }
  for (
    const [n, p] of [
      ["hiddenDropout", c.hiddenDropout],
      ["attentionDropout", c.attentionDropout],
    ] as const
  ) {
    if (p !== undefined && !(p >= 0 && p < 1)) {
      throw new ShapeError(`${n} must be in [0, 1), got ${p}`);
    }
  }
  return shape;
}
