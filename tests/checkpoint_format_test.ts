/**
 * Safetensors I/O and host-side resharding: round trips, dtype conversion, clear
 * errors for truncated and corrupt files, and TP joins/splits (2→1, 2→4, fused
 * q|k|v blocks, padded rows) that reproduce the full tensor exactly.
 */

import { deepStrictEqual, match, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import {
  encodeSafetensors,
  joinShards,
  resizeRows,
  SafetensorsFile,
  sha256Hex,
  splitShard,
  writeSafetensors,
  writeSafetensorsStreamed,
} from "../models/checkpoint/mod.ts";
import {
  asideDirName,
  isStagingDirName,
  iterationOfDirName,
  iterDirName,
  modelFileName,
  optimizerFileName,
  stagingDirName,
} from "../models/checkpoint/layout.ts";
import { randomArray } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

Deno.test("safetensors round trip is bit-exact, with metadata and i32", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const a = randomArray(12, 1);
  a[3] = -0;
  a[5] = NaN;
  const ids = Int32Array.from([1, -2, 2147483647]);
  const path = join(dir, "x.safetensors");
  await writeSafetensors(path, [
    { name: "a", shape: [3, 4], data: a },
    { name: "ids", shape: [3], data: ids },
    { name: "empty", shape: [0, 2], data: new Float32Array(0) },
  ], { iteration: "7" });
  const f = await SafetensorsFile.read(path);
  deepStrictEqual(f.metadata, { iteration: "7" });
  deepStrictEqual(f.info("a").shape, [3, 4]);
  deepStrictEqual(
    new Uint32Array(f.floats("a", { allowNonFinite: true }).buffer),
    new Uint32Array(a.buffer),
  );
  throws(() => f.floats("a"), /x\.safetensors: tensor "a" \(F32 \[3, 4\]\) holds 1 non-finite/);
  deepStrictEqual(f.ints("ids"), ids);
  deepStrictEqual(f.floats("empty").length, 0);
  // header is 8-byte aligned as the format recommends
  const bytes = await Deno.readFile(path);
  deepStrictEqual(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8, 0);
});

function rawFile(header: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("safetensors reads F16, BF16, F64 and I64", () => {
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x3555, 0x0001, 0x7c00]); // 1, -2, ~0.333, 2^-24, inf
  const bf16 = new Uint16Array([0x3f80, 0xc040]); // 1, -3
  const f64 = new Float64Array([0.5, -1.25]);
  const i64 = new BigInt64Array([5n, -7n]);
  const parts = [f16, bf16, f64, i64].map((x) => new Uint8Array(x.buffer));
  const data = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  const offs: [number, number][] = [];
  for (const p of parts) {
    data.set(p, o);
    offs.push([o, o + p.length]);
    o += p.length;
  }
  const f = SafetensorsFile.parse(
    rawFile({
      h: { dtype: "F16", shape: [5], data_offsets: offs[0] },
      b: { dtype: "BF16", shape: [2], data_offsets: offs[1] },
      d: { dtype: "F64", shape: [2], data_offsets: offs[2] },
      l: { dtype: "I64", shape: [2], data_offsets: offs[3] },
    }, data),
    "mixed.safetensors",
  );
  const h = f.floats("h", { allowNonFinite: true });
  throws(() => f.floats("h"), /tensor "h".*first: Infinity at element 4/);
  deepStrictEqual([h[0], h[1], h[3], h[4]], [1, -2, 2 ** -24, Infinity]);
  deepStrictEqual(Math.abs(h[2] - 1 / 3) < 1e-3, true);
  deepStrictEqual([...f.floats("b")], [1, -3]);
  deepStrictEqual([...f.floats("d")], [0.5, -1.25]);
  deepStrictEqual([...f.ints("l")], [5, -7]);
});

Deno.test("truncated and corrupt safetensors files are refused naming file and tensor", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const path = join(dir, "model_tp00.safetensors");
  const bytes = encodeSafetensors([
    { name: "wte.weight", shape: [4, 4], data: randomArray(16, 2) },
    { name: "ln_f.bias", shape: [4], data: randomArray(4, 3) },
  ]);
  await Deno.writeFile(path, bytes.subarray(0, bytes.length - 10));
  await rejects(SafetensorsFile.read(path), (e: Error) => {
    match(e.message, /model_tp00\.safetensors/);
    match(e.message, /tensor "ln_f\.bias".*truncated/);
    return true;
  });
  await Deno.writeFile(path, bytes.subarray(0, 30));
  await rejects(SafetensorsFile.read(path), /model_tp00\.safetensors: the header claims \d+ bytes/);
  await Deno.writeFile(path, bytes.subarray(0, 5));
  await rejects(SafetensorsFile.read(path), /too short/);
  throws(
    () =>
      SafetensorsFile.parse(
        rawFile({ t: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(12)),
        "c.st",
      ),
    /c\.st: tensor "t" \(F32 \[3\]\) needs 12 bytes but its data_offsets span 8/,
  );
  throws(
    () =>
      SafetensorsFile.parse(
        rawFile({
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
        }, new Uint8Array(12)),
        "o.st",
      ),
    /overlap/,
  );
  throws(
    () =>
      SafetensorsFile.parse(
        rawFile({ t: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
      ),
    /unsupported dtype/,
  );
  const junk = new Uint8Array(20);
  new DataView(junk.buffer).setBigUint64(0, 4n, true);
  throws(() => SafetensorsFile.parse(junk, "j.st"), /j\.st: the header is not valid JSON/);
  await rejects(
    SafetensorsFile.read(join(dir, "nope.safetensors")),
    /nope\.safetensors: no such file/,
  );
});

function range(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => i);
}

Deno.test("resharding 2→1 and 2→4 on host arrays reproduces the full tensor", () => {
  const cases = [
    { shape: [12, 3], part: { dim: 0, blocks: 1 } }, // column-parallel weight / vocab table
    { shape: [12, 3], part: { dim: 0, blocks: 3 } }, // fused q|k|v weight
    { shape: [24], part: { dim: 0, blocks: 3 } }, // fused q|k|v bias
    { shape: [3, 8], part: { dim: 1, blocks: 1 } }, // row-parallel weight
    { shape: [2, 12, 2], part: { dim: 1, blocks: 3 } },
  ];
  for (const { shape, part } of cases) {
    const full = { shape, data: range(shape.reduce((a, b) => a * b, 1)) };
    const two = [0, 1].map((r) => splitShard(full, part, 2, r));
    const joined = joinShards(two.map((s) => s.data), two[0].shape, part); // 2 → 1
    deepStrictEqual(joined, full);
    const four = [0, 1, 2, 3].map((r) => splitShard(joined, part, 4, r)); // 2 → 4
    deepStrictEqual(joinShards(four.map((s) => s.data), four[0].shape, part), full);
  }
  // fused blocks: each rank holds its part of q, k and v in order
  const qkv = { shape: [12], data: range(12) };
  deepStrictEqual([...splitShard(qkv, { dim: 0, blocks: 3 }, 2, 1).data], [2, 3, 6, 7, 10, 11]);
  deepStrictEqual([
    ...splitShard({ shape: [2, 4], data: range(8) }, { dim: 1, blocks: 1 }, 2, 0).data,
  ], [0, 1, 4, 5]);
  throws(
    () => splitShard(qkv, { dim: 0, blocks: 3 }, 8, 0),
    /does not split into 3 block\(s\) × 8 ranks/,
  );
  // replicated tensors pass through
  deepStrictEqual(splitShard(qkv, { dim: null, blocks: 1 }, 4, 2), qkv);
  // padded vocabulary rows: cut or zero-filled
  const table = { shape: [3, 2], data: range(6) };
  deepStrictEqual(resizeRows(table, 4), {
    shape: [4, 2],
    data: Float32Array.from([0, 1, 2, 3, 4, 5, 0, 0]),
  });
  deepStrictEqual(resizeRows(table, 2), { shape: [2, 2], data: Float32Array.from([0, 1, 2, 3]) });
});

Deno.test("checkpoint file and folder names: Megatron's iter_%07d, its staging and aside copies", () => {
  deepStrictEqual(iterDirName(100), "iter_0000100");
  deepStrictEqual(iterDirName(12345678), "iter_12345678");
  deepStrictEqual(iterationOfDirName("iter_0000100"), 100);
  deepStrictEqual(iterationOfDirName("iter_12345678"), 12345678);
  for (const name of ["iter_100", "iter_000100", "iter_0000100.tmp", "iter_0000100.old", "x"]) {
    deepStrictEqual(iterationOfDirName(name), null, name);
  }
  deepStrictEqual(stagingDirName(100), "iter_0000100.tmp");
  deepStrictEqual(asideDirName(100), "iter_0000100.old");
  deepStrictEqual(isStagingDirName("iter_0000100.tmp"), true);
  for (const name of ["iter_5.tmp", "iter_0000100", "iter_0000100.old", "notes.tmp", ".tmp"]) {
    deepStrictEqual(isStagingDirName(name), false, name);
  }
  deepStrictEqual(modelFileName(3), "model_tp03.safetensors");
  deepStrictEqual(optimizerFileName(12), "optimizer_tp12.safetensors");
});

Deno.test("a streamed safetensors file is byte-identical to the encoded one, values computed in turn", async () => {
  await using temp = await tempDir({ prefix: "st_stream_" });
  const dir = temp.path;
  const a = randomArray(12, 1), b = randomArray(7, 2), c = randomArray(6, 3);
  c[2] = 70000; // past fp16's range: fine in F32 and BF16
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    const tensors = [
      { name: "a", shape: [3, 4], data: a, dtype },
      { name: "b", shape: [7], data: b, dtype },
      ...(dtype === "F16" ? [] : [{ name: "c", shape: [2, 3], data: c, dtype }]),
    ];
    const order: string[] = [];
    const path = join(dir, `${dtype}.safetensors`);
    const digest = await writeSafetensorsStreamed(
      path,
      tensors.map((t) => ({
        ...t,
        values: () => {
          order.push(t.name);
          return t.data;
        },
      })),
      { format: "pt" },
    );
    const want = encodeSafetensors(tensors, { format: "pt" });
    const got = await Deno.readFile(path);
    deepStrictEqual(got, want, dtype);
    deepStrictEqual(digest, { bytes: want.length, sha256: sha256Hex(want) });
    deepStrictEqual(order, tensors.map((t) => t.name));
  }
  // A tensor that cannot be stored stops the write, naming it; so does one that does not fill its shape.
  const later = (name: string, shape: number[], data: Float32Array, dtype: "F32" | "F16") => ({
    name,
    shape,
    dtype,
    values: () => data,
  });
  await rejects(
    writeSafetensorsStreamed(join(dir, "x.safetensors"), [later("c", [2, 3], c, "F16")]),
    /tensor "c": 1 finite value past F16's range \(70000 at index 2/,
  );
  await rejects(
    writeSafetensorsStreamed(join(dir, "y.safetensors"), [later("a", [5], a, "F32")]),
    /tensor "a": 12 values do not fill shape \[5\]/,
  );
});
