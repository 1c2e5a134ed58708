/**
 * Corrupt checkpoints (issue #11, part 8): every file a checkpoint writes has its
 * size and SHA-256 in checkpoint.json, checked on load with an error naming the
 * file; non-finite weights are refused naming the tensor; checkpoints written
 * before checksums existed still load, with a warning. A directory holding
 * another iteration's checkpoint is refused.
 */

import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { join } from "node:path";
import { full } from "../core/ops/mod.ts";
import { AdamW } from "../core/optim.ts";
import {
  CheckpointError,
  gptCheckpointInfo,
  loadCheckpoint,
  openCheckpoint,
  readCheckpointFull,
  SafetensorsFile,
  saveCheckpoint,
  sha256Hex,
} from "../models/checkpoint/mod.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { gpuTest, testDevice } from "./helpers.ts";
import { runCli } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();
const tiny: GptConfig = {
  vocabSize: 37,
  numLayers: 1,
  hiddenSize: 8,
  numHeads: 2,
  maxPositions: 8,
};

async function savedCheckpoint(): Promise<{ dir: string; iter: string; model: Gpt }> {
  const dir = await Deno.makeTempDir({ prefix: "ck_checksum_" });
  const model = Gpt.serial(dev, tiny, 1);
  const params = model.namedParams();
  const opt = new AdamW(params.map(([, p]) => p));
  for (const [, p] of params) p.tensor.grad = full(dev, p.tensor.shape, 0.5).keep();
  opt.update(1e-3);
  const iter = await saveCheckpoint(dir, {
    iteration: 3,
    params,
    optimizer: opt,
    ...gptCheckpointInfo(tiny),
  });
  return { dir, iter, model };
}

function load(dir: string, model: Gpt, warn?: (m: string) => void) {
  const params = model.namedParams();
  return loadCheckpoint(dir, {
    params,
    optimizer: new AdamW(params.map(([, p]) => p)),
    warn: warn ?? ((m) => {
      throw new Error(`unexpected warning: ${m}`);
    }),
  });
}

/** Removes the checksums from `iter`'s checkpoint.json (as an older version wrote it); returns its path. */
async function dropChecksums(iter: string): Promise<string> {
  const metaPath = join(iter, "checkpoint.json");
  const meta = JSON.parse(await Deno.readTextFile(metaPath));
  delete meta.files;
  await Deno.writeTextFile(metaPath, JSON.stringify(meta));
  return metaPath;
}

/** Writes `value` over element `element` of tensor `name` in the safetensors file `path`. */
async function pokeFloat(path: string, name: string, element: number, value: number) {
  const bytes = await Deno.readFile(path);
  const dataStart = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const at = dataStart + SafetensorsFile.parse(bytes).info(name).offsets[0] + 4 * element;
  new DataView(bytes.buffer).setFloat32(at, value, true);
  await Deno.writeFile(path, bytes);
}

async function refusedNaming(p: Promise<unknown>, ...parts: string[]): Promise<string> {
  let msg = "";
  await rejects(p, (e: Error) => {
    ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
    msg = e.message;
    return true;
  });
  ok(!msg.includes("\n"), msg);
  for (const s of parts) ok(msg.includes(s), `"${msg}" should name ${s}`);
  return msg;
}

Deno.test("checkpoint.json records the size and SHA-256 of every file", gpuTest, async () => {
  const { dir, iter, model } = await savedCheckpoint();
  const meta = JSON.parse(await Deno.readTextFile(join(iter, "checkpoint.json")));
  deepStrictEqual(Object.keys(meta.files).sort(), [
    "model_tp00.safetensors",
    "optimizer_tp00.safetensors",
  ]);
  for (const [name, d] of Object.entries(meta.files) as [string, { bytes: number }][]) {
    const bytes = await Deno.readFile(join(iter, name));
    deepStrictEqual(d, { bytes: bytes.length, sha256: sha256Hex(bytes) });
  }
  // nothing but the documented files is left in the directory
  const names = [];
  for await (const e of Deno.readDir(iter)) names.push(e.name);
  deepStrictEqual(names.sort(), [
    "checkpoint.json",
    "model_tp00.safetensors",
    "optimizer_tp00.safetensors",
  ]);
  const r = await load(dir, model);
  equal(r.iteration, 3);
  model.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test(
  "an iteration directory holding another iteration's checkpoint (renamed, copied over) is refused",
  gpuTest,
  async () => {
    // It loaded as the directory's number: the run replayed iterations 4… as 8…
    // and saved them under numbers they were not.
    const { dir, iter, model } = await savedCheckpoint();
    const renamed = join(dir, "iter_0000008");
    await Deno.rename(iter, renamed);
    await Deno.writeTextFile(join(dir, "latest_checkpointed_iteration.txt"), "8");
    await Deno.writeTextFile(join(dir, "latest"), "8\n");
    await refusedNaming(
      load(dir, model),
      join(renamed, "checkpoint.json"),
      "is the checkpoint of iteration 3, not 8",
      "iter_0000003",
    );
    await Deno.rename(renamed, iter);
    await Deno.writeTextFile(join(dir, "latest_checkpointed_iteration.txt"), "3");
    await Deno.writeTextFile(join(dir, "latest"), "3\n");
    await load(dir, model);
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "one flipped byte, in weights or header, is refused naming the file",
  gpuTest,
  async () => {
    const { dir, iter, model } = await savedCheckpoint();
    for (const name of ["model_tp00.safetensors", "optimizer_tp00.safetensors"]) {
      const path = join(iter, name);
      const good = await Deno.readFile(path);
      for (const at of [good.length - 5, 20]) { // a weight byte, then a header byte
        const bad = good.slice();
        bad[at] ^= 0x01;
        await Deno.writeFile(path, bad);
        await refusedNaming(load(dir, model), path, "SHA-256", "does not match", "corrupt");
      }
      await Deno.writeFile(path, good.subarray(0, good.length - 4));
      await refusedNaming(
        load(dir, model),
        path,
        `is ${good.length - 4} bytes but checkpoint.json says ${good.length}`,
      );
      await Deno.writeFile(path, good);
    }
    await load(dir, model);
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "an opened checkpoint reads its tensors when asked, and refuses a file changed since",
  gpuTest,
  async () => {
    const { dir, iter, model } = await savedCheckpoint();
    const whole = await readCheckpointFull(dir, { optimizer: true });
    const opened = await openCheckpoint(dir, { optimizer: true });
    deepStrictEqual([...opened.tensors.keys()], [...whole.tensors.keys()]);
    for (const [n, t] of whole.tensors) {
      deepStrictEqual(opened.tensors.shapeOf(n), t.shape, n);
      deepStrictEqual(opened.tensors.get(n), t, n);
      deepStrictEqual(opened.moments!.m.get(n), whole.moments!.get(n)!.m, n);
      deepStrictEqual(opened.moments!.v.get(n), whole.moments!.get(n)!.v, n);
    }
    // The checksums were checked when it was opened; a file rewritten since (its
    // bytes the same, a newer modification time) is refused when read, naming it.
    const path = join(iter, "model_tp00.safetensors");
    await Deno.utime(path, new Date(), new Date(Date.now() + 60_000));
    let msg = "";
    try {
      opened.tensors.get("ln_f.bias");
    } catch (e) {
      msg = (e as Error).message;
    }
    ok(msg.includes(path) && msg.includes("changed since it was opened"), msg);
    await load(dir, model);
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "export-hf stopped mid-write by a NaN (a checkpoint without checksums) leaves --output as it was",
  gpuTest,
  async () => {
    const { dir, iter, model } = await savedCheckpoint();
    const out = join(dir, "out");
    const first = await runCli("cli/export_hf.ts", ["--load", dir, "--output", out]);
    equal(first.code, 0, first.stderr);
    const before = await Deno.readFile(join(out, "model.safetensors"));
    // The export reads each tensor as it writes it: a NaN in the last one comes mid-write.
    await dropChecksums(iter);
    await pokeFloat(join(iter, "model_tp00.safetensors"), "ln_f.bias", 0, NaN);
    const failed = await runCli("cli/export_hf.ts", ["--load", dir, "--output", out]);
    ok(failed.code !== 0, failed.stderr);
    ok(
      failed.stderr.includes('tensor "ln_f.bias"') && failed.stderr.includes("NaN"),
      failed.stderr,
    );
    deepStrictEqual(await Deno.readFile(join(out, "model.safetensors")), before);
    deepStrictEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
      "config.json",
      "model.safetensors",
    ]);
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "a checkpoint without checksums loads with a warning; NaN in it is refused by tensor",
  gpuTest,
  async () => {
    const { dir, iter, model } = await savedCheckpoint();
    const metaPath = await dropChecksums(iter);
    const warnings: string[] = [];
    const r = await load(dir, model, (m) => warnings.push(m));
    equal(r.iteration, 3);
    deepStrictEqual(warnings, [
      `${metaPath} records no checksums (written by an older version): its files are loaded unverified`,
    ]);
    // Unverified files still get every other check: a NaN written by hand is named.
    const path = join(iter, "model_tp00.safetensors");
    await pokeFloat(path, "h.0.mlp.c_fc.weight", 3, NaN);
    await refusedNaming(
      readCheckpointFull(dir, { warn: () => {} }),
      path,
      'tensor "h.0.mlp.c_fc.weight"',
      "non-finite value (first: NaN at element 3)",
    );
    // an Inf in the optimizer state too
    const opath = join(iter, "optimizer_tp00.safetensors");
    await pokeFloat(opath, "ln_f.bias.exp_avg_sq", 0, Infinity);
    await pokeFloat(path, "h.0.mlp.c_fc.weight", 3, 0);
    await refusedNaming(
      load(dir, model, () => {}),
      opath,
      'tensor "ln_f.bias.exp_avg_sq"',
      "Infinity at element 0",
    );
    model.dispose();
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "at tp 2 rank 0 gathers every rank's checksums into checkpoint.json",
  gpuTest,
  async () => {
    await using temp = await tempDir({ prefix: "ck_checksum_tp2_" });
    const dir = temp.path;
    const model = Gpt.serial(dev, tiny, 1);
    const params = model.namedParams();
    let waiting = 0;
    let release: () => void = () => {};
    let gate = new Promise<void>((r) => release = r);
    const barrier = async () => {
      if (++waiting === 2) {
        waiting = 0;
        const open = release;
        gate = new Promise<void>((r) => release = r);
        open();
        return;
      }
      await gate;
    };
    const save = (tpRank: number) =>
      saveCheckpoint(dir, {
        iteration: 1,
        params,
        tp: 2,
        tpRank,
        barrier,
        ...gptCheckpointInfo(tiny),
      });
    const [iter] = await Promise.all([save(0), save(1)]);
    const meta = JSON.parse(await Deno.readTextFile(join(iter, "checkpoint.json")));
    deepStrictEqual(Object.keys(meta.files).sort(), [
      "model_tp00.safetensors",
      "model_tp01.safetensors",
    ]);
    const b1 = await Deno.readFile(join(iter, "model_tp01.safetensors"));
    equal(meta.files["model_tp01.safetensors"].sha256, sha256Hex(b1));
    await readCheckpointFull(dir);
    b1[b1.length - 1] ^= 0x80;
    await Deno.writeFile(join(iter, "model_tp01.safetensors"), b1);
    await refusedNaming(readCheckpointFull(dir), join(iter, "model_tp01.safetensors"), "SHA-256");
    model.dispose();
  },
);
