/**
 * Hugging Face interop: read and write HF model directories, and map GPT-2 and
 * BERT checkpoints to and from this project's parameter names and layouts.
 * @module
 */

export {
  type HfDir,
  type HfDType,
  readHfConfig,
  readHfDir,
  TORCH_DTYPE,
  writeHfDir,
} from "./io.ts";
export {
  assignHfTensors,
  type ConcreteEntry,
  expandTable,
  exportTensors,
  exportTensorSource,
  type FullTensors,
  importTensors,
  type MapEntry,
  renamedSource,
  transpose2d,
} from "./mapping.ts";
export {
  assignGpt2,
  GPT2_TABLE,
  gpt2ConfigFromHf,
  gpt2ConfigToHf,
  gpt2TensorsFromHf,
  gpt2TensorSourceToHf,
  gpt2TensorsToHf,
  type HfGpt2,
  readHfGpt2,
  writeHfGpt2,
} from "./gpt2.ts";
export {
  assignBert,
  BERT_PRETRAINING_HEADS,
  BERT_TABLE,
  BERT_VOCAB_ROWS,
  bertConfigFromHf,
  bertConfigToHf,
  bertFromHfDir,
  type BertHfConfig,
  bertPaddedRows,
  bertTensorsFromHf,
  bertTensorSourceToHf,
  bertTensorsToHf,
  lacksPretrainingHeads,
  normaliseBertName,
} from "./bert.ts";
