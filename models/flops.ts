/**
 * Floating-point operation counts of a GPT training iteration (matmuls only, as
 * Megatron reports them): forward 2·(params-in-matmuls)·tokens plus attention,
 * backward twice the forward, and one more forward with activation recomputation.
 * @module
 */

import type { TransformerShape } from "./shape.ts";

/**
 * The shape facts the count needs: a resolved shape's layers, hidden and MLP
 * sizes, the padded vocabulary and the sequence length.
 */
export interface FlopsShape
  extends Pick<TransformerShape, "numLayers" | "hiddenSize" | "ffnHiddenSize"> {
  /** Rows of the vocabulary table: the vocabulary padded as `paddedVocabSize` (models/gpt.ts) pads it. */
  paddedVocab: number;
  /** Sequence length. */
  seqLength: number;
}

/**
 * FLOPs of one forward pass over `tokens` tokens. `headShare` is the share of
 * tokens the vocabulary head runs on (1 for GPT; BERT's MLM head sees only the
 * masked ~15%).
 */
export function forwardFlops(s: FlopsShape, tokens: number, headShare = 1): number {
  const h = s.hiddenSize;
  const perLayer = 2 * (4 * h * h + 2 * h * s.ffnHiddenSize) + 2 * 2 * s.seqLength * h;
  return tokens * (s.numLayers * perLayer + headShare * 2 * h * s.paddedVocab);
}

/** FLOPs of one training iteration (forward + backward, + recompute). */
export function trainingFlops(
  s: FlopsShape,
  tokens: number,
  recompute = false,
  headShare = 1,
): number {
  return (recompute ? 4 : 3) * forwardFlops(s, tokens, headShare);
}
