/**
 * Training-step benchmark of the project's GPT (rows and runners in `bench/train.ts`; with
 * TensorFlow.js beside it: `bench/tfjs/train.ts`, `deno task bench:tfjs`).
 *
 *     deno bench -A bench/train_bench.ts        # deno bench report + Markdown table
 *     deno run -A bench/train_bench.ts          # only the table
 * @module
 */

import { handled } from "../cli/errors.ts";
import { main, registerBenchesWithTable } from "./train.ts";

// It takes no flags, only the TRAIN_BENCH_* environment (bench/train.ts): a bad value is a usage error.
if (import.meta.main) Deno.exitCode = await handled([], async () => (await main(), 0));
else registerBenchesWithTable();
