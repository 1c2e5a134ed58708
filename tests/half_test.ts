/**
 * 16-bit formats on the host (core/half.ts) against independent references —
 * fp16 against the JavaScript engine's own `Math.f16round`/`Float16Array`, bf16
 * against a nearest-neighbour search in f64 — including fp16 subnormals, ties,
 * overflow to infinity and NaN; safetensors F16/BF16 written and read back; and
 * a GPT-2 exported as F16 and BF16 imports to the same loss as its F32 export
 * within the format's tolerance.
 */

import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { join } from "node:path";
import {
  bf16BitsToF32,
  decodeHalfInto,
  encodeHalfInto,
  f16BitsToF32,
  f32Bits,
  f32FromBits,
  f32ToBf16Bits,
  f32ToF16Bits,
  fromHalfBits,
  roundToHalf,
} from "../core/half.ts";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { HalfOverflowError } from "../models/checkpoint/safetensors.ts";
import {
  encodeSafetensors,
  gptCheckpointInfo,
  paramsToHost,
  SafetensorsFile,
  saveCheckpoint,
} from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { assignGpt2, readHfGpt2, writeHfGpt2 } from "../models/hf/mod.ts";
import { exportHf, STAGING_PREFIX } from "../cli/export_hf.ts";
import { gpuTest, prng, randomArray, testDevice } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

/** Edge values: zeros, fp16 subnormals and their ties, the largest fp16 and just past it, inf, NaN. */
const EDGES = [
  0,
  -0,
  1,
  -1,
  2 ** -24, // smallest fp16 subnormal
  2 ** -25, // its half: a tie, rounds to even (0)
  3 * 2 ** -25, // 1.5 units: tie, rounds to 2 units
  2 ** -25 + 2 ** -40, // just above the tie: rounds up
  2 ** -14, // smallest normal
  2 ** -14 - 2 ** -25, // between the largest subnormal and the smallest normal
  65504, // largest fp16
  65519, // rounds down to 65504
  65520, // rounds up to infinity
  1e6,
  -1e6,
  3.4e38,
  Infinity,
  -Infinity,
  NaN,
  1 + 2 ** -11, // fp16 tie between 1 and 1 + 2^-10: to even (1)
  1 + 3 * 2 ** -11, // tie: to even (1 + 2^-9)
  1 + 2 ** -8, // bf16 tie between 1 and 1 + 2^-7: to even (1)
  1 + 3 * 2 ** -8, // bf16 tie: to even (1 + 2^-6)
  1e-40, // an f32 subnormal
];

function randomF32s(n: number, seed: number): number[] {
  const r = prng(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(f32FromBits(Math.floor(r() * 2 ** 32)));
  // and values in fp16's range, where the rounding matters most
  for (let i = 0; i < n; i++) out.push(Math.fround((r() - 0.5) * 2 ** (Math.floor(r() * 40) - 26)));
  return out;
}

const same = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

/** bf16 by search: the nearer of the two bf16 neighbours of x (f64 distances), ties to even. */
function bf16Ref(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const b = f32Bits(x);
  const lo = b & 0xffff0000, hi = (lo + 0x10000) >>> 0;
  if (!Number.isFinite(x)) return x;
  // Past the largest finite bf16 the next step is 2^128 (IEEE rounds as if the exponent
  // went on), which stores as infinity.
  const vlo = f32FromBits(lo), vhi = f32FromBits(hi);
  const vhiNum = Number.isFinite(vhi) ? vhi : Math.sign(vhi) * 2 ** 128;
  const dlo = Math.abs(x - vlo), dhi = Math.abs(vhiNum - x);
  if (dlo < dhi) return vlo;
  if (dhi < dlo) return vhi;
  return (lo >>> 16) & 1 ? vhi : vlo;
}

Deno.test("fp16 conversion equals Math.f16round (ties, subnormals, overflow, NaN)", () => {
  for (const x of [...EDGES, ...randomF32s(20000, 1)]) {
    const xf = Math.fround(x);
    const got = f16BitsToF32(f32ToF16Bits(xf));
    const want = Math.f16round(xf);
    ok(same(got, want), `fp16(${xf}) = ${got}, want ${want}`);
  }
  strictEqual(f16BitsToF32(f32ToF16Bits(65520)), Infinity);
  strictEqual(f16BitsToF32(f32ToF16Bits(2 ** -25)), 0);
  strictEqual(f16BitsToF32(f32ToF16Bits(3 * 2 ** -25)), 2 ** -23);
});

Deno.test("every fp16 value survives f16 → f32 → f16, and matches Float16Array", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const ref = new Float16Array(all.buffer);
  for (let h = 0; h < 65536; h++) {
    const v = f16BitsToF32(h);
    ok(same(v, ref[h]), `bits ${h.toString(16)}: ${v} vs ${ref[h]}`);
    if (!Number.isNaN(v)) strictEqual(f32ToF16Bits(v), h, `bits ${h.toString(16)}`);
    else ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(v))));
  }
});

Deno.test("bf16 conversion rounds to nearest even (against a neighbour search)", () => {
  for (const x of [...EDGES, ...randomF32s(20000, 2)]) {
    const xf = Math.fround(x);
    const got = bf16BitsToF32(f32ToBf16Bits(xf));
    const want = bf16Ref(xf);
    ok(same(got, want), `bf16(${xf}) = ${got}, want ${want}`);
  }
  strictEqual(bf16BitsToF32(f32ToBf16Bits(1 + 2 ** -8)), 1);
  strictEqual(bf16BitsToF32(f32ToBf16Bits(1 + 3 * 2 ** -8)), 1 + 2 ** -6);
  // the largest finite f32 rounds up past bf16's largest finite: infinity
  strictEqual(bf16BitsToF32(f32ToBf16Bits(3.4028234663852886e38)), Infinity);
  for (let h = 0; h < 65536; h++) {
    const v = bf16BitsToF32(h);
    if (!Number.isNaN(v)) strictEqual(f32ToBf16Bits(v), h);
  }
});

Deno.test("safetensors writes F16 and BF16 rounded to nearest even and reads them back", async () => {
  const data = Float32Array.from([...EDGES.filter(Number.isFinite), ...randomArray(500, 3, -4, 4)]);
  // A finite value that rounds to infinity is refused (below); the rest are written.
  const fp16 = data.filter((x) => Number.isFinite(Math.f16round(x)));
  const bf16 = data.filter((x) => Number.isFinite(bf16Ref(x)));
  await using temp = await tempDir();
  const dir = temp.path;
  const path = join(dir, "h.safetensors");
  const bytes = encodeSafetensors([
    { name: "a", shape: [fp16.length], data: fp16, dtype: "F16" },
    { name: "b", shape: [bf16.length], data: bf16, dtype: "BF16" },
    { name: "c", shape: [data.length], data },
    { name: "d", shape: [3], data: Int32Array.from([1, -2, 3]) },
  ]);
  await Deno.writeFile(path, bytes);
  const f = await SafetensorsFile.read(path);
  deepStrictEqual([f.info("a").dtype, f.info("b").dtype, f.info("c").dtype], [
    "F16",
    "BF16",
    "F32",
  ]);
  const a = f.floats("a", { allowNonFinite: true }), b = f.floats("b", { allowNonFinite: true });
  const ra = roundToHalf(fp16, "fp16"), rb = roundToHalf(bf16, "bf16");
  for (let i = 0; i < fp16.length; i++) {
    ok(same(a[i], ra[i]) && same(a[i], Math.f16round(fp16[i])), `F16 [${i}] ${a[i]}`);
  }
  for (let i = 0; i < bf16.length; i++) {
    ok(same(b[i], rb[i]) && same(b[i], bf16Ref(bf16[i])), `BF16 [${i}] ${b[i]}`);
  }
  // 65520, ±1e6 and 3.4e38 round to infinity in fp16; 3.4e38 in bf16 too.
  throws(
    () => encodeSafetensors([{ name: "a", shape: [data.length], data, dtype: "F16" }]),
    (e) =>
      e instanceof HalfOverflowError && /^tensor "a": 4 finite values past F16's/.test(e.message),
  );
  throws(
    () => encodeSafetensors([{ name: "b", shape: [data.length], data, dtype: "BF16" }]),
    /tensor "b": 1 finite value past BF16's range \(3\.39+\d*e\+38 at index 15\) would be stored as infinity: write it as F32$/,
  );
  deepStrictEqual(f.floats("c"), data);
  deepStrictEqual(f.ints("d"), Int32Array.from([1, -2, 3]));
});

const dev = await testDevice();
const cfg: GptConfig = {
  vocabSize: 37,
  numLayers: 2,
  hiddenSize: 16,
  numHeads: 2,
  maxPositions: 8,
  hiddenDropout: 0,
  attentionDropout: 0,
};

async function lossOfHf(dir: string, ids: Int32Array, tg: Int32Array): Promise<number> {
  const hf = await readHfGpt2(dir);
  const m = Gpt.serial(dev, hf.config, 9);
  assignGpt2(m.namedParams(), hf.tensors, hf.config, {}, hf.source);
  m.train(false);
  const B = 2, T = ids.length / 2;
  const l = await tidy(
    dev,
    async () =>
      await (await m.loss(TokenIds.fromHost(dev, ids, [B, T]), TokenIds.fromHost(dev, tg, [B, T])))
        .item(),
  );
  m.dispose();
  return l;
}

Deno.test(
  "a GPT-2 exported as F16 or BF16 evaluates to its F32 loss within the format's tolerance",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const m = Gpt.serial(dev, cfg, 4);
    const w = await paramsToHost(m.namedParams());
    m.dispose();
    const r = prng(5);
    const ids = Int32Array.from({ length: 16 }, () => Math.floor(r() * cfg.vocabSize));
    const tg = Int32Array.from({ length: 16 }, () => Math.floor(r() * cfg.vocabSize));
    const loss: Record<string, number> = {};
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      await writeHfGpt2(join(dir, dtype), cfg, (n) => w.get(n), undefined, dtype);
      const f = await SafetensorsFile.read(join(dir, dtype, "model.safetensors"));
      strictEqual(f.info("transformer.wte.weight").dtype, dtype);
      const config = JSON.parse(await Deno.readTextFile(join(dir, dtype, "config.json")));
      if (dtype !== "F32") {
        strictEqual(config.torch_dtype, dtype === "F16" ? "float16" : "bfloat16");
      }
      // the stored values are the f32 weights rounded to the format
      const wte = w.get("wte.weight")!.data.subarray(0, cfg.vocabSize * cfg.hiddenSize);
      const want = dtype === "F32" ? wte : roundToHalf(wte, dtype === "F16" ? "fp16" : "bf16");
      deepStrictEqual(f.floats("transformer.wte.weight"), Float32Array.from(want));
      loss[dtype] = await lossOfHf(join(dir, dtype), ids, tg);
    }
    // fp16 keeps 11 significant bits (relative error ≤ 2^-11 per weight), bf16 8 (≤ 2^-8).
    const rel = (x: number) => Math.abs(x - loss.F32) / loss.F32;
    ok(rel(loss.F16) < 2e-3, `F16 loss ${loss.F16} vs F32 ${loss.F32}`);
    ok(rel(loss.BF16) < 1e-2, `BF16 loss ${loss.BF16} vs F32 ${loss.F32}`);
    ok(
      loss.F16 !== loss.F32 || loss.BF16 !== loss.F32,
      "the 16-bit exports should differ slightly",
    );
  },
);

/** A checkpoint of the tiny GPT at iteration 3, for the export tests. */
async function saveTinyCheckpoint(ck: string): Promise<void> {
  const m = Gpt.serial(dev, cfg, 6);
  await saveCheckpoint(ck, {
    iteration: 3,
    params: m.namedParams(),
    ...gptCheckpointInfo(m.config),
  });
  m.dispose();
}

Deno.test("deno task export-hf --dtype writes the chosen safetensors type", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  await saveTinyCheckpoint(join(dir, "ck"));
  // A weight past fp16's range: refused naming the tensor and the flags, --output unchanged
  // (it was written as infinity, and the project's own loader then refused the export).
  const big = Gpt.serial(dev, cfg, 6);
  const [, bias] = big.namedParams().find(([n]) => n === "ln_f.bias")!;
  bias.tensor.write(new Float32Array(bias.tensor.size).fill(1e5));
  await saveCheckpoint(join(dir, "big"), {
    iteration: 1,
    params: big.namedParams(),
    ...gptCheckpointInfo(big.config),
  });
  big.dispose();
  await Deno.mkdir(join(dir, "big-out"));
  await rejects(
    exportHf(join(dir, "big"), join(dir, "big-out"), undefined, undefined, "F16"),
    /tensor "transformer\.ln_f\.bias": 16 finite values past F16's range .* \(--dtype bf16 or --dtype fp32\); .*big-out is unchanged$/,
  );
  deepStrictEqual([...Deno.readDirSync(join(dir, "big-out"))], []);
  ok(await exportHf(join(dir, "big"), join(dir, "big-out"), undefined, undefined, "BF16"));
  for (const dtype of ["F16", "BF16"] as const) {
    const out = join(dir, dtype);
    await Deno.mkdir(out);
    const line = await exportHf(join(dir, "ck"), out, undefined, undefined, dtype);
    ok(line.endsWith(`as ${dtype}`), line);
    const f = await SafetensorsFile.read(join(out, "model.safetensors"));
    for (const n of f.tensors.keys()) strictEqual(f.info(n).dtype, dtype, n);
  }
});

Deno.test(
  "export-hf replaces an earlier export's model files, keeps other files, and a failure leaves the directory as it was",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    await saveTinyCheckpoint(join(dir, "ck"));
    const out = join(dir, "out");
    await Deno.mkdir(out);
    // Another model's files (a sharded BERT export) and the user's own.
    for (
      const f of ["vocab.txt", "model.safetensors.index.json", "model-00001-of-00002.safetensors"]
    ) {
      await Deno.writeTextFile(join(out, f), "stale");
    }
    await Deno.writeTextFile(join(out, "README.md"), "mine");
    await exportHf(join(dir, "ck"), out);
    const names = () => [...Deno.readDirSync(out)].map((e) => e.name).sort();
    deepStrictEqual(names(), ["README.md", "config.json", "model.safetensors"]);
    const before = await Deno.readFile(join(out, "model.safetensors"));
    // A failed export (here: no such iteration) changes nothing and leaves no staging folder.
    await rejects(exportHf(join(dir, "ck"), out, 7));
    deepStrictEqual(names(), ["README.md", "config.json", "model.safetensors"]);
    deepStrictEqual(await Deno.readFile(join(out, "model.safetensors")), before);
    await rejects(exportHf(join(dir, "ck"), join(dir, "new"), 7));
    await rejects(Deno.stat(join(dir, "new")), Deno.errors.NotFound);
  },
);

Deno.test(
  "export-hf keeps GPT-2's tokenizer files for a GPT-2-tokenizer model, names what it replaces, and removes dead exports' staging folders",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const dir = temp.path;
    const ck = join(dir, "ck");
    const m = Gpt.serial(dev, cfg, 6);
    await saveCheckpoint(ck, {
      iteration: 3,
      params: m.namedParams(),
      ...gptCheckpointInfo(m.config),
      state: { args: { tokenizer: "gpt2" } },
    });
    m.dispose();
    const out = join(dir, "out");
    await Deno.mkdir(out);
    for (
      const f of ["vocab.json", "merges.txt", "tokenizer.json", "vocab.txt", "pytorch_model.bin"]
    ) {
      await Deno.writeTextFile(join(out, f), "earlier");
    }
    // Staging folders of a process of this host that no longer exists (past any pid_max), of a
    // live one (this process), and of another host (shared storage): only the first goes.
    const host = Deno.hostname();
    for (
      const name of [`2147483000-${host}-x`, `${Deno.pid}-${host}-y`, `2147483000-elsewhere-z`]
    ) {
      await Deno.mkdir(join(out, `${STAGING_PREFIX}${name}`));
    }
    const line = await exportHf(ck, out);
    ok(line.endsWith("(replacing pytorch_model.bin, vocab.txt)"), line);
    const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    deepStrictEqual(
      names,
      [
        `${STAGING_PREFIX}2147483000-elsewhere-z`,
        `${STAGING_PREFIX}${Deno.pid}-${host}-y`,
        "config.json",
        "merges.txt",
        "model.safetensors",
        "tokenizer.json",
        "vocab.json",
      ].sort(), // (this process's pid sorts before or after 2147483000)
    );
  },
);

Deno.test("fromHalfBits: every fp16 and bf16 bit pattern as the scalar conversions give it", () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  for (const [dtype, scalar] of [["fp16", f16BitsToF32], ["bf16", bf16BitsToF32]] as const) {
    const got = fromHalfBits(all, dtype);
    // NaN's payload is not compared: a JavaScript number carries none
    const same = all.every((b) =>
      Number.isNaN(scalar(b)) ? Number.isNaN(got[b]) : f32Bits(got[b]) === f32Bits(scalar(b))
    );
    ok(same, dtype);
  }
});

Deno.test("encodeHalfInto/decodeHalfInto (bulk, in place) equal the scalar conversions", () => {
  // random bit patterns (NaN, inf, subnormals included), in a view at an offset
  const n = 20000;
  const buf = new Float32Array(n + 3);
  const bits = new Uint32Array(buf.buffer);
  let x = 987654321;
  for (let i = 0; i < bits.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bits[i] = x;
  }
  buf.set([0, -0, Infinity, -Infinity, 65520, 2 ** -25, 1 + 2 ** -8], 3);
  const src = buf.subarray(3);
  for (const format of ["fp16", "bf16"] as const) {
    const scalar = format === "fp16" ? f32ToF16Bits : f32ToBf16Bits;
    const h = new Uint16Array(n);
    encodeHalfInto(src, h, format);
    for (let i = 0; i < n; i++) strictEqual(h[i], scalar(src[i]), `${format} [${i}] of ${src[i]}`);
    const back = new Float32Array(n);
    decodeHalfInto(h, back, format);
    const one = format === "fp16" ? f16BitsToF32 : bf16BitsToF32;
    for (let i = 0; i < n; i++) {
      const want = one(h[i]);
      ok(Object.is(back[i], Math.fround(want)), `${format} decode [${i}]: ${back[i]} vs ${want}`);
    }
  }
});
