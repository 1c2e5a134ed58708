/**
 * export-hf's `--output` check: a directory holding a training checkpoint's iteration
 * folders (`iter_%07d`, as saves and Megatron name them) is refused even without its
 * `latest` file; a folder that only looks alike (`iter_5`) is not a checkpoint's.
 */

import { deepStrictEqual, match, ok } from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

/** A directory that passes export-hf's first check of `--load` (its contents are not read). */
async function checkpointStub(dir: string): Promise<string> {
  const ck = join(dir, "ck");
  await Deno.mkdir(join(ck, "iter_0000001"), { recursive: true });
  await Deno.writeTextFile(join(ck, "latest"), "1\n");
  await Deno.writeTextFile(join(ck, "iter_0000001", "checkpoint.json"), "{}");
  return ck;
}

Deno.test("export-hf refuses an --output holding iteration folders, not look-alikes", async () => {
  await using temp = await tempDir({ prefix: "export_hf_output-" });
  const dir = temp.path;
  const ck = await checkpointStub(dir);

  // A checkpoint whose save was killed before `latest` was written: refused.
  const saved = join(dir, "saved");
  await Deno.mkdir(join(saved, "iter_0000100"), { recursive: true });
  const refused = await runCli("cli/export_hf.ts", ["--load", ck, "--output", saved]);
  deepStrictEqual(refused.code, 2, refused.stderr);
  match(
    refused.stderr,
    /--output .*saved holds a training checkpoint \(iteration folders, iter_0000100 and the like\)/,
  );

  // No tool writes `iter_5`: the export goes on (and fails on the stub's checkpoint.json).
  const other = join(dir, "other");
  await Deno.mkdir(join(other, "iter_5"), { recursive: true });
  const past = await runCli("cli/export_hf.ts", ["--load", ck, "--output", other]);
  deepStrictEqual(past.code, 1, past.stderr);
  ok(!/holds a training checkpoint/.test(past.stderr), past.stderr);
  match(past.stderr, /checkpoint\.json: not a webgpu-megatron-checkpoint file/);
  deepStrictEqual([...Deno.readDirSync(other)].map((e) => e.name), ["iter_5"]);
});
