/**
 * Hugging Face `config.json` fields as the readers check them: a field of the
 * wrong type or range and a setting this project does not build (untied output
 * layers, cross-attention) are refused by name where the config is read (they
 * failed inside a kernel as "a bug", or ran as another model); a BERT config
 * with one token type is refused for sentence-pair work; the family is found
 * without `model_type`, and a reader given the other family's config says so;
 * and a 16-bit safetensors write refuses finite values that would round to
 * infinity.
 */

import { deepStrictEqual, throws } from "node:assert/strict";
import { encodeSafetensors } from "../models/checkpoint/safetensors.ts";
import { bertConfigFromHf, gpt2ConfigFromHf } from "../models/hf/mod.ts";
import { requireSentencePairs } from "../models/hf/bert.ts";
import { hfModelFamily } from "../models/hf/config_fields.ts";
import { TINY_HF_CONFIG } from "./bert_fixture.ts";

const gpt2Config = {
  model_type: "gpt2",
  vocab_size: 40,
  n_embd: 8,
  n_layer: 2,
  n_head: 2,
  n_positions: 16,
};

Deno.test("HF configs: fields of the wrong type, untied heads and a missing model_type", () => {
  // A number written as a string reached the layer-norm kernel and failed there as "a bug".
  throws(() => bertConfigFromHf({ ...TINY_HF_CONFIG, layer_norm_eps: "1e-3" }), {
    message: 'config.json: "layer_norm_eps" must be a number ≥ 0, got "1e-3"',
  });
  throws(
    () => bertConfigFromHf({ ...TINY_HF_CONFIG, hidden_dropout_prob: 1 }),
    /"hidden_dropout_prob" must be a number in \[0, 1\), got 1/,
  );
  throws(
    () => gpt2ConfigFromHf({ ...gpt2Config, layer_norm_epsilon: "1e-5" }),
    /"layer_norm_epsilon" must be a number ≥ 0, got "1e-5"/,
  );
  throws(() => gpt2ConfigFromHf({ ...gpt2Config, attn_pdrop: -0.1 }), /"attn_pdrop" must be/);
  // An untied output layer was silently tied (Hugging Face would build a separate one).
  throws(
    () => bertConfigFromHf({ ...TINY_HF_CONFIG, tie_word_embeddings: false }),
    /"tie_word_embeddings" is false, which is not supported: this BERT's MLM decoder/,
  );
  throws(
    () => gpt2ConfigFromHf({ ...gpt2Config, tie_word_embeddings: false }),
    /"tie_word_embeddings" is false, which is not supported: this GPT's output layer/,
  );
  throws(
    () => gpt2ConfigFromHf({ ...gpt2Config, add_cross_attention: true }),
    /"add_cross_attention" is true, which is not supported/,
  );
  deepStrictEqual(gpt2ConfigFromHf({ ...gpt2Config, tie_word_embeddings: true }).numLayers, 2);
  // The family: model_type, else the field names (Google's converted BERT configs have none).
  const { model_type: _bert, ...bertNoType } = TINY_HF_CONFIG;
  const { model_type: _gpt, ...gptNoType } = gpt2Config;
  deepStrictEqual(
    [TINY_HF_CONFIG, bertNoType, gpt2Config, gptNoType, { model_type: "roberta" }].map(
      hfModelFamily,
    ),
    ["bert", "bert", "gpt", "gpt", "gpt"],
  );
  // A reader given the other family's config without model_type says so (generate on a BERT
  // folder asked for "n_embd"); a config of neither family's fields names the field it misses.
  throws(() => gpt2ConfigFromHf(bertNoType), {
    message: "config.json: BERT's fields and no model_type: a BERT, where a GPT-2 is read",
  });
  throws(() => bertConfigFromHf(gptNoType), {
    message: "config.json: GPT-2's fields and no model_type: a GPT-2, where a BERT is read",
  });
  throws(() => bertConfigFromHf({}), /"hidden_size" must be a positive integer, got undefined/);
  throws(() => gpt2ConfigFromHf({ model_type: "roberta" }), /model_type is "roberta", expected/);
  // Sentence pairs need two token types; fill-mask does not.
  requireSentencePairs({ typeVocabSize: 2 }, "x");
  throws(
    () => requireSentencePairs(bertConfigFromHf({ ...TINY_HF_CONFIG, type_vocab_size: 1 }), "d"),
    /d: type_vocab_size 1: training and eval feed sentence pairs/,
  );
});

Deno.test("a 16-bit safetensors write refuses finite values past its range", () => {
  const t = (dtype: "F16" | "BF16", ...v: number[]) => ({
    name: "ln_f.bias",
    shape: [v.length],
    data: Float32Array.from(v),
    dtype,
  });
  encodeSafetensors([t("F16", 65504, -65504, Infinity, NaN)]); // in range, or not finite already
  throws(() => encodeSafetensors([t("F16", 1, 1e5, -7e4)]), {
    message: 'tensor "ln_f.bias": 2 finite values past F16\'s range (100000 at index 1; F16 ' +
      "holds up to 65504) would be stored as infinity: write it as BF16 (F32's range) or F32",
  });
  encodeSafetensors([t("BF16", 1e5, 3e38)]);
  throws(() => encodeSafetensors([t("BF16", 3.4e38)]), /1 finite value past BF16's range/);
});
