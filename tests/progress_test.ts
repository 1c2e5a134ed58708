/**
 * Progress callbacks of checkpoint save/load and Hugging Face read/write
 * (for the CLIs' stderr bars), and the bars' silence off a terminal.
 */
import { deepStrictEqual, equal } from "node:assert/strict";
import type { ParamInfo } from "../core/nn.ts";
import { Tensor } from "../core/tensor.ts";
import { stderrProgress } from "../cli/log.ts";
import { loadCheckpoint, saveCheckpoint } from "../models/checkpoint/mod.ts";
import { readHfDir, writeHfDir } from "../models/hf/io.ts";
import { gpuTest, testDevice } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();

function recorder(): { calls: [number, number][]; cb: (d: number, t: number) => void } {
  const calls: [number, number][] = [];
  return { calls, cb: (d, t) => calls.push([d, t]) };
}

Deno.test("checkpoint save and load report their stages", gpuTest, async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const p = (data: number[]): ParamInfo => ({
    tensor: Tensor.fromArray(dev, Float32Array.from(data), [data.length]).keep(),
    decay: true,
    partitionDim: null,
    partitionBlocks: 1,
  });
  const params: [string, ParamInfo][] = [["a", p([1, 2, 3])], ["b", p([4])]];
  const s = recorder();
  await saveCheckpoint(dir, { iteration: 1, params, progress: s.cb });
  deepStrictEqual(s.calls, [[0, 3], [1, 3], [2, 3], [3, 3]]);
  const l = recorder();
  const back: [string, ParamInfo][] = [["a", p([0, 0, 0])], ["b", p([0])]];
  await loadCheckpoint(dir, { params: back, progress: l.cb });
  deepStrictEqual(l.calls, [[0, 3], [1, 3], [2, 3], [3, 3]]);
  deepStrictEqual(Array.from(new Float32Array(await back[0][1].tensor.read())), [1, 2, 3]);
});

Deno.test("Hugging Face write and read report their files", async () => {
  await using temp = await tempDir();
  const dir = temp.path;
  const w = recorder();
  await writeHfDir(dir, { model_type: "gpt2" }, [["x", {
    shape: [2],
    data: Float32Array.from([1, 2]),
  }]], w.cb);
  deepStrictEqual(w.calls, [[0, 2], [1, 2], [2, 2]]);
  const r = recorder();
  const hf = await readHfDir(dir, r.cb);
  deepStrictEqual(r.calls, [[0, 1], [1, 1]]);
  deepStrictEqual(hf.names, ["x"]);
});

Deno.test("progress bars stay off stderr when it is not a terminal", () => {
  // Tests run with stderr piped: the callback is a no-op and prints nothing.
  const cb = stderrProgress("loading");
  cb(0, 10);
  cb(10, 10);
  equal(Deno.stderr.isTerminal(), false);
});
