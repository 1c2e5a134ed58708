/**
 * Training-step benchmark of the project's GPT (rows and runners in `bench/train.ts`; with
 * TensorFlow.js beside it: `bench/tfjs/train.ts`, `deno task bench:tfjs`).
 *
 *     deno bench -A bench/train_bench.ts        # deno bench report + Markdown table
 *     deno run -A bench/train_bench.ts          # only the table
 * @module
 */

import { trainBenchEntry } from "./train.ts";

await trainBenchEntry(import.meta.main);
