/**
 * Hostile or broken Hugging Face directories (issue #11, part 7): every file the
 * loader reads must resolve inside the directory and be a regular file, every
 * safetensors header is checked against its file's size before any data is read,
 * non-JSON index and config files are refused by name, and non-finite weights are
 * refused naming the tensor. Each case must fail fast with a one-line
 * CheckpointError naming the file, without reading big data.
 */

import { deepStrictEqual, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import {
  CheckpointError,
  encodeSafetensors,
  MAX_HEADER_BYTES,
  readTensors,
  SafetensorsFile,
} from "../models/checkpoint/mod.ts";
import { readHfConfig, readHfDir, readHfGpt2 } from "../models/hf/mod.ts";
import { readWordPieceTokenizer } from "../data/wordpiece_tokenizer.ts";
import { DataError } from "../data/errors.ts";
import { randomArray } from "./helpers.ts";

const GPT2_CONFIG = {
  model_type: "gpt2",
  vocab_size: 5,
  n_positions: 3,
  n_embd: 4,
  n_layer: 1,
  n_head: 2,
};

/** A valid one-tensor safetensors file. */
function smallFile(seed = 1): Uint8Array {
  return encodeSafetensors([{ name: "wte.weight", shape: [2, 4], data: randomArray(8, seed) }]);
}

/** The bytes of a safetensors file with `header` (JSON) and `data`, unvalidated. */
function rawFile(header: unknown, data: Uint8Array, claimedLen?: bigint): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, claimedLen ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

async function hfDir(
  files: Record<string, string | Uint8Array>,
  config: unknown = GPT2_CONFIG,
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "hostile_" });
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
  for (const [name, content] of Object.entries(files)) {
    if (typeof content === "string") await Deno.writeTextFile(join(dir, name), content);
    else await Deno.writeFile(join(dir, name), content);
  }
  return dir;
}

function index(map: Record<string, unknown>): string {
  return JSON.stringify({ metadata: {}, weight_map: map });
}

/** Asserts a one-line CheckpointError whose message matches every pattern, quickly. */
async function refused(
  what: Promise<unknown>,
  ...patterns: (RegExp | string)[]
): Promise<string> {
  const t0 = performance.now();
  let msg = "";
  await rejects(what, (e: Error) => {
    ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
    msg = e.message;
    return true;
  });
  const ms = performance.now() - t0;
  ok(!msg.includes("\n"), `one line: ${msg}`);
  for (const p of patterns) {
    if (typeof p === "string") ok(msg.includes(p), `"${msg}" should name ${p}`);
    else ok(p.test(msg), `"${msg}" should match ${p}`);
  }
  ok(ms < 2000, `refused in ${ms.toFixed(0)} ms`);
  return msg;
}

async function cleanup(...dirs: string[]): Promise<void> {
  for (const d of dirs) await Deno.remove(d, { recursive: true });
}

Deno.test("weight_map with .. or an absolute path is refused before any file is read", async () => {
  const dir = await hfDir({
    "model.safetensors.index.json": index({
      "wte.weight": "model-00001.safetensors",
      "wpe.weight": "../../../../dev/zero",
    }),
    "model-00001.safetensors": smallFile(),
  });
  const idx = join(dir, "model.safetensors.index.json");
  await refused(
    readHfDir(dir),
    `${idx} (weight_map["wpe.weight"]): file "../../../../dev/zero" contains ".."; refused`,
  );
  await Deno.writeTextFile(idx, index({ "wte.weight": "/etc/passwd" }));
  await refused(readHfDir(dir), idx, "absolute path", '"/etc/passwd"');
  await Deno.writeTextFile(idx, index({ "wte.weight": "sub/../model-00001.safetensors" }));
  await refused(readHfDir(dir), /contains "\.\."; refused/);
  await Deno.writeTextFile(idx, index({ "wte.weight": 7 }));
  await refused(readHfDir(dir), idx, 'weight_map["wte.weight"] is 7');
  await Deno.writeTextFile(idx, JSON.stringify({ weight_map: ["a"] }));
  await refused(readHfDir(dir), idx, '"weight_map" is missing or not an object');
  // the same index with a proper name loads
  await Deno.writeTextFile(idx, index({ "wte.weight": "model-00001.safetensors" }));
  const hf = await readHfDir(dir);
  deepStrictEqual(hf.names, ["wte.weight"]);
  // and an index that names a tensor its file lacks is refused
  await Deno.writeTextFile(
    idx,
    index({ "wte.weight": "model-00001.safetensors", "wpe.weight": "model-00001.safetensors" }),
  );
  await refused(readHfDir(dir), join(dir, "model-00001.safetensors"), 'no tensor "wpe.weight"');
  await cleanup(dir);
});

Deno.test("symlinks out of the directory (to files, /dev/zero, /etc/passwd) are refused", async () => {
  const outside = await Deno.makeTempDir({ prefix: "hostile_outside_" });
  await Deno.writeFile(join(outside, "w.safetensors"), smallFile());
  const dir = await hfDir({});
  const single = join(dir, "model.safetensors");
  await Deno.symlink(join(outside, "w.safetensors"), single);
  await refused(readHfDir(dir), single, "outside", "refused");
  await Deno.remove(single);
  await Deno.symlink("/dev/zero", single);
  await refused(readHfDir(dir), single, "/dev/zero", "outside");
  await Deno.remove(single);
  // a shard that is a symlink out, named by the index
  await Deno.writeTextFile(
    join(dir, "model.safetensors.index.json"),
    index({ "wte.weight": "shard.safetensors" }),
  );
  await Deno.symlink("/etc/passwd", join(dir, "shard.safetensors"));
  await refused(readHfDir(dir), join(dir, "shard.safetensors"), "outside", "named in");
  // config.json itself
  await Deno.remove(join(dir, "config.json"));
  await Deno.symlink("/dev/zero", join(dir, "config.json"));
  await refused(readHfConfig(dir), join(dir, "config.json"), "outside");
  // a symlink that stays inside is fine
  const inside = await hfDir({ "real.safetensors": smallFile() });
  await Deno.symlink("real.safetensors", join(inside, "model.safetensors"));
  deepStrictEqual((await readHfDir(inside)).names, ["wte.weight"]);
  await cleanup(dir, inside, outside);
});

Deno.test("the Hugging Face hub cache layout (snapshot symlinks into blobs/) loads", async () => {
  const repo = await Deno.makeTempDir({ prefix: "models--org--tiny_" });
  await Deno.mkdir(join(repo, "blobs"));
  await Deno.mkdir(join(repo, "snapshots", "abc123"), { recursive: true });
  await Deno.writeFile(join(repo, "blobs", "1111"), smallFile());
  await Deno.writeTextFile(join(repo, "blobs", "2222"), JSON.stringify(GPT2_CONFIG));
  const snap = join(repo, "snapshots", "abc123");
  await Deno.symlink("../../blobs/1111", join(snap, "model.safetensors"));
  await Deno.symlink("../../blobs/2222", join(snap, "config.json"));
  const hf = await readHfDir(snap);
  deepStrictEqual(hf.names, ["wte.weight"]);
  deepStrictEqual(hf.fileOf("wte.weight"), join(snap, "model.safetensors"));
  // but not out of the repository
  await Deno.remove(join(snap, "model.safetensors"));
  await Deno.symlink("/dev/zero", join(snap, "model.safetensors"));
  await refused(readHfDir(snap), "outside");
  await cleanup(repo);
});

Deno.test("a special file (/dev/zero, a directory) is not read as safetensors", async () => {
  await refused(SafetensorsFile.read("/dev/zero"), "/dev/zero: not a regular file");
  const dir = await hfDir({});
  await Deno.mkdir(join(dir, "model.safetensors"));
  await refused(readHfDir(dir), join(dir, "model.safetensors"), "not a regular file");
  await cleanup(dir);
});

Deno.test("header length past the file or past the cap is refused from 8 bytes", async () => {
  const dir = await hfDir({});
  const path = join(dir, "model.safetensors");
  await Deno.writeFile(path, rawFile({}, new Uint8Array(8), 1n << 40n));
  await refused(readHfDir(dir), path, "the header claims 1099511627776 bytes");
  // A 200 MB sparse file that claims a 150 MB header: refused by the cap, not read.
  const f = await Deno.open(path, { write: true, truncate: true });
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, 150n * 1024n * 1024n, true);
  await f.write(head);
  await f.truncate(200 * 1024 * 1024);
  f.close();
  await refused(readHfDir(dir), path, `more than the ${MAX_HEADER_BYTES} accepted`);
  await Deno.writeFile(path, rawFile({}, new Uint8Array(0)).subarray(0, 5));
  await refused(readHfDir(dir), path, "5 bytes is too short");
  await cleanup(dir);
});

Deno.test("data_offsets past the end, holes, trailing bytes and truncation are refused", async () => {
  const dir = await hfDir({});
  const path = join(dir, "model.safetensors");
  const t = (o: number[], shape = [2]) => ({ x: { dtype: "F32", shape, data_offsets: o } });
  // A sparse 100 MB file whose header points past its end: refused before the data is read.
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  await f.write(rawFile(t([0, 800_000_000], [200_000_000]), new Uint8Array(0)));
  await f.truncate(100 * 1024 * 1024);
  f.close();
  await refused(readHfDir(dir), path, 'tensor "x" needs data bytes [0, 800000000)');
  await Deno.writeFile(path, rawFile(t([4, 12]), new Uint8Array(12)));
  await refused(readHfDir(dir), path, 'before tensor "x" belong to no tensor');
  await Deno.writeFile(path, rawFile(t([0, 8]), new Uint8Array(12)));
  await refused(readHfDir(dir), path, "the tensors end at data byte 8", "12 data bytes");
  const good = smallFile();
  await Deno.writeFile(path, good.subarray(0, good.length - 3));
  await refused(readHfDir(dir), path, 'tensor "wte.weight"', "truncated file?");
  await Deno.writeFile(path, rawFile(t([0, -8]), new Uint8Array(8)));
  await refused(readHfDir(dir), path, "invalid data_offsets");
  await Deno.writeFile(path, rawFile({ x: { dtype: "F32", shape: [2, "a"] } }, new Uint8Array(8)));
  await refused(readHfDir(dir), path, "invalid shape");
  await Deno.writeFile(path, rawFile([1, 2], new Uint8Array(0)));
  await refused(readHfDir(dir), path, "the header is not a JSON object");
  const junk = rawFile({}, new Uint8Array(0));
  junk.set(new TextEncoder().encode("{x"), 8);
  await Deno.writeFile(path, junk);
  await refused(readHfDir(dir), path, "the header is not valid JSON");
  await cleanup(dir);
});

Deno.test("non-JSON index.json and config.json are refused naming the file", async () => {
  const dir = await hfDir({ "model.safetensors.index.json": "this is not JSON\n{" });
  await refused(
    readHfDir(dir),
    join(dir, "model.safetensors.index.json"),
    "not valid JSON",
  );
  await Deno.writeTextFile(join(dir, "config.json"), '{"n_embd": 4,,}');
  await refused(readHfDir(dir), join(dir, "config.json"), "not valid JSON");
  await Deno.writeFile(join(dir, "config.json"), new Uint8Array([0x7b, 0xff, 0x7d]));
  await refused(readHfConfig(dir), join(dir, "config.json"), "not valid JSON");
  await Deno.writeTextFile(join(dir, "config.json"), "[1, 2]");
  await refused(readHfConfig(dir), join(dir, "config.json"), "not a JSON object");
  await Deno.remove(join(dir, "config.json"));
  await refused(readHfConfig(dir), join(dir, "config.json"), "no such file");
  await cleanup(dir);
});

/** HF GPT-2 tensors for GPT2_CONFIG, random, in Conv1D layout. */
function gpt2Tensors(): { name: string; shape: number[]; data: Float32Array }[] {
  const h = 4,
    shapes: Record<string, number[]> = {
      "wte.weight": [5, h],
      "wpe.weight": [3, h],
      "h.0.ln_1.weight": [h],
      "h.0.ln_1.bias": [h],
      "h.0.attn.c_attn.weight": [h, 3 * h],
      "h.0.attn.c_attn.bias": [3 * h],
      "h.0.attn.c_proj.weight": [h, h],
      "h.0.attn.c_proj.bias": [h],
      "h.0.ln_2.weight": [h],
      "h.0.ln_2.bias": [h],
      "h.0.mlp.c_fc.weight": [h, 4 * h],
      "h.0.mlp.c_fc.bias": [4 * h],
      "h.0.mlp.c_proj.weight": [4 * h, h],
      "h.0.mlp.c_proj.bias": [h],
      "ln_f.weight": [h],
      "ln_f.bias": [h],
    };
  return Object.entries(shapes).map(([name, shape], i) => ({
    name,
    shape,
    data: randomArray(shape.reduce((a, b) => a * b, 1), i + 1),
  }));
}

Deno.test("NaN or Inf weights in an HF file are refused naming the tensor when read", async () => {
  const tensors = gpt2Tensors();
  const dir = await hfDir({ "model.safetensors": encodeSafetensors(tensors) });
  const { tensors: ours } = await readHfGpt2(dir);
  ok(ours.has("h.0.attn.c_attn.weight"));
  // The values are read when assigned (every tensor before any is written), or here by hand.
  const readAll = async () => readTensors((await readHfGpt2(dir)).tensors);
  // Overwrite one float of c_fc's weight with NaN, then another tensor's with -Inf, by hand.
  const path = join(dir, "model.safetensors");
  const bytes = await Deno.readFile(path);
  const file = SafetensorsFile.parse(bytes);
  const headerEnd = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const poke = (name: string, element: number, value: number) => {
    const at = headerEnd + file.info(name).offsets[0] + 4 * element;
    new DataView(bytes.buffer).setFloat32(at, value, true);
  };
  poke("h.0.mlp.c_fc.weight", 7, NaN);
  await Deno.writeFile(path, bytes);
  await refused(
    readAll(),
    path,
    'tensor "h.0.mlp.c_fc.weight"',
    "1 non-finite value (first: NaN at element 7)",
  );
  poke("h.0.mlp.c_fc.weight", 7, 0.5);
  poke("ln_f.bias", 2, -Infinity);
  await Deno.writeFile(path, bytes);
  await refused(readAll(), 'tensor "ln_f.bias"', "-Infinity at element 2");
  // every byte of a tensor set to 0xFF (the NaN pattern the issue reported)
  poke("ln_f.bias", 2, 0);
  const wte = file.info("wte.weight").offsets;
  bytes.fill(0xff, headerEnd + wte[0], headerEnd + wte[1]);
  await Deno.writeFile(path, bytes);
  await refused(readAll(), 'tensor "wte.weight"', "holds 20 non-finite values");
  await cleanup(dir);
});

Deno.test("an HF file changed after it was opened is refused when its tensors are read", async () => {
  const dir = await hfDir({ "model.safetensors": encodeSafetensors(gpt2Tensors()) });
  const path = join(dir, "model.safetensors");
  const bytes = await Deno.readFile(path);
  // Only the header is read on opening: the values come from the file when asked for.
  const opened = await readHfGpt2(dir);
  deepStrictEqual(opened.tensors.shapeOf("h.0.attn.c_attn.weight"), [12, 4]);
  deepStrictEqual(opened.tensors.get("wpe.weight")!.shape, [3, 4]);
  // Appended to: another size.
  await Deno.writeFile(path, new Uint8Array(bytes.length + 4));
  throws(() => opened.tensors.get("wpe.weight"), (e: Error) => {
    ok(e instanceof CheckpointError);
    for (const s of [path, "changed since it was opened", `${bytes.length} bytes then`]) {
      ok(e.message.includes(s), e.message);
    }
    return true;
  });
  // The same size, rewritten later (another modification time).
  await Deno.writeFile(path, bytes);
  const again = await readHfGpt2(dir);
  await Deno.utime(path, new Date(), new Date(Date.now() + 60_000));
  throws(
    () => again.tensors.get("wpe.weight"),
    /changed since it was opened .*another modification time\): it was written to or replaced/,
  );
  // Gone.
  await Deno.remove(path);
  throws(() => again.tensors.get("wpe.weight"), /cannot open it again to read its tensors/);
  await cleanup(dir);
});

Deno.test("tokenizer files of an HF directory: symlinks out, special and non-UTF-8 files refused", async () => {
  const dir = await hfDir({});
  await Deno.symlink("/etc/passwd", join(dir, "vocab.txt"));
  await rejects(readWordPieceTokenizer(dir), (e: Error) => {
    ok(e instanceof DataError);
    ok(e.message.includes(join(dir, "vocab.txt")) && e.message.includes("outside"), e.message);
    return true;
  });
  await Deno.remove(join(dir, "vocab.txt"));
  await Deno.mkdir(join(dir, "vocab.txt"));
  await rejects(readWordPieceTokenizer(dir), /vocab\.txt: not a regular file/);
  await Deno.remove(join(dir, "vocab.txt"));
  await Deno.writeFile(
    join(dir, "vocab.txt"),
    new Uint8Array([0x5b, 0x50, 0x41, 0x44, 0x5d, 0xe9]),
  );
  await rejects(readWordPieceTokenizer(dir), /vocab\.txt: 1 byte is not valid UTF-8/);
  await Deno.remove(join(dir, "vocab.txt"));
  await Deno.writeTextFile(join(dir, "tokenizer.json"), "{\n oops");
  await rejects(readWordPieceTokenizer(dir), /tokenizer\.json: not valid JSON \([^\n]*\)$/);
  await cleanup(dir);
});

Deno.test("a CheckpointError from SafetensorsFile.parse has one line", () => {
  const junk = new Uint8Array(20);
  new DataView(junk.buffer).setBigUint64(0, 4n, true);
  throws(() => SafetensorsFile.parse(junk, "j.st"), (e: Error) => !e.message.includes("\n"));
});
