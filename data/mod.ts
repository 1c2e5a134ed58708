/**
 * The data layer: tokenizers (GPT-2 BPE, byte-level, BERT WordPiece), corpora (the default book,
 * text files and folders, `.bin` token files), GPT batch sampling and evaluation windows (of one
 * corpus or a blend, as Megatron's), BERT sentence-pair batches with MLM masking, and entropy
 * baselines. Host-only; no GPU.
 * @module
 */

export { DataError } from "./errors.ts";
export { DataRng, type DataRngState } from "./rng.ts";
export {
  createGpt2Tokenizer,
  createTokenizer,
  type Tokenizer,
  TOKENIZER_NAMES,
  type TokenizerName,
} from "./tokenizer.ts";
export { ByteTokenizer } from "./byte_tokenizer.ts";
export { GPT2_EOS_ID, GPT2_VOCAB_SIZE } from "./gpt2_vocab.ts";
export {
  type BertSpecialIds,
  createBertTokenizer,
  readWordPieceTokenizer,
  vocabFromSentencePieceStyle,
  WordPieceTokenizer,
  writeWordPieceTokenizer,
} from "./wordpiece_tokenizer.ts";
export { type BertBasicOptions, bertBasicTokenize } from "./bert_basic.ts";
export {
  countInvalidUtf8,
  type DecodedText,
  decodeUtf8Counted,
  invalidUtf8Warning,
} from "./utf8.ts";
export { MAX_TOKENIZER_FILE_BYTES, readDirFile } from "./files.ts";
export { loadMobyDick } from "./moby_dick.ts";
export {
  type CorpusOptions,
  type CorpusTokens,
  DEFAULT_CORPUS_NAME,
  listTextFiles,
  loadBytes,
  loadText,
  loadTokens,
  splitTrainVal,
  TEXT_EXTENSIONS,
  type TrainValSplit,
} from "./corpus.ts";
export {
  checkIdsInVocab,
  decodeTokenBin,
  encodeTokenBin,
  MAX_BIN_VOCAB,
  openTokenBin,
  readTokenBin,
  type TokenBinMeta,
  writeTokenBin,
} from "./token_bin.ts";
export {
  asTokenStream,
  type FileIdentity,
  forEachPiece,
  isTokenStream,
  MemoryTokenStream,
  TokenBinStream,
  type TokenStream,
  type TokenStreamLike,
} from "./token_stream.ts";
export {
  evalBatches,
  evalWindowCount,
  evalWindowStarts,
  GptBatchSampler,
  type GptSamplerOptions,
  type GptSamplerState,
  type LmBatch,
  sliceBatch,
} from "./gpt_batches.ts";
export {
  blendCounts,
  blendOrder,
  BlendSchedule,
  type BlendScheduleState,
  normalizeWeights,
} from "./blend.ts";
export {
  blendedEvalBatches,
  BlendedGptBatchSampler,
  type BlendedSamplerState,
} from "./blended_gpt_batches.ts";
export { blendUnigramEntropy, uniformEntropy, unigramEntropy } from "./stats.ts";
export { splitDocuments, splitParagraphSentences } from "./sentences.ts";
export {
  type BertBatch,
  BertBatchSampler,
  type BertCorpus,
  bertEvalBatches,
  type BertEvalOptions,
  type BertSamplerOptions,
  type BertSamplerState,
  type BertVocab,
  maskTokens,
  MLM_IGNORE_INDEX,
  prepareBertCorpus,
  sampleSopPair,
  type SopPair,
} from "./bert_batches.ts";
