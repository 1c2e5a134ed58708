/** One transformer shape: defaults filled once, every check with its own message. */

import { deepStrictEqual, equal, throws } from "node:assert/strict";
import { resolveShape, ShapeError, validateTransformerConfig } from "../models/shape.ts";
import { parseSplit } from "../cli/train_args.ts";
import { UsageError } from "../cli/flags.ts";

const base = { vocabSize: 256, numLayers: 2, hiddenSize: 64, numHeads: 4, maxPositions: 32 };

Deno.test("resolveShape fills the defaults", () => {
  deepStrictEqual(resolveShape(base), {
    ...base,
    ffnHiddenSize: 256,
    kvChannels: 16,
  });
  equal(resolveShape({ ...base, ffnHiddenSize: 96 }, 2).ffnHiddenSize, 96);
});

Deno.test("resolveShape refuses each bad shape with a message naming it", () => {
  const cases: [Record<string, number>, number, RegExp][] = [
    [{ vocabSize: 0 }, 1, /vocabSize must be a positive integer, got 0/],
    [{ numLayers: 0 }, 1, /numLayers must be a positive integer/],
    [{ hiddenSize: 1.5 }, 1, /hiddenSize must be a positive integer/],
    [{ numHeads: -1 }, 1, /numHeads must be a positive integer/],
    [{ maxPositions: 0 }, 1, /maxPositions must be a positive integer/],
    [{ ffnHiddenSize: 0 }, 1, /ffnHiddenSize must be a positive integer/],
    [{}, 0, /tensor-parallel size must be a positive integer/],
    [{ hiddenSize: 30 }, 1, /hiddenSize 30 is not divisible by numHeads 4/],
    [{}, 3, /numHeads 4 is not divisible by the tensor-parallel size 3/],
    [
      { ffnHiddenSize: 99 },
      2,
      /ffnHiddenSize 99 \(the MLP size\) is not divisible by the tensor-parallel size 2/,
    ],
  ];
  for (const [change, tp, pattern] of cases) {
    throws(
      () => resolveShape({ ...base, ...change }, tp),
      (e) => e instanceof ShapeError && pattern.test(e.message),
      JSON.stringify(change),
    );
  }
});

Deno.test("validateTransformerConfig also checks dropout", () => {
  equal(validateTransformerConfig({ ...base, hiddenDropout: 0.1 }).kvChannels, 16);
  throws(
    () => validateTransformerConfig({ ...base, attentionDropout: 1 }),
    /attentionDropout must be in \[0, 1\), got 1/,
  );
});

Deno.test("--split takes Megatron's weights", () => {
  const s = parseSplit("949,50,1");
  equal(s.train, 0.949);
  equal(s.valid, 0.05);
  equal(Math.round(s.test * 1000), 1);
  deepStrictEqual(parseSplit("98,2"), { train: 0.98, valid: 0.02, test: 0 });
  deepStrictEqual(parseSplit("1"), { train: 1, valid: 0, test: 0 });
  for (const bad of ["", "a,b", "1,2,3,4", "-1,2", "0,1"]) {
    throws(() => parseSplit(bad), UsageError, bad);
  }
});

Deno.test("the command line words a shape error in its flags", async () => {
  const { inFlagTerms } = await import("../cli/train_config.ts");
  equal(
    inFlagTerms("hiddenSize 30 is not divisible by numHeads 4"),
    "--hidden-size 30 is not divisible by --num-attention-heads 4",
  );
  equal(
    inFlagTerms("ffnHiddenSize 99 (the MLP size) is not divisible by the tensor-parallel size 2"),
    "--ffn-hidden-size 99 (the MLP size) is not divisible by the tensor-parallel size 2",
  );
  equal(
    inFlagTerms("attentionDropout must be in [0, 1), got 1"),
    "--attention-dropout must be in [0, 1), got 1",
  );
});
