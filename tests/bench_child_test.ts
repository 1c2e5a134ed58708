/**
 * A benchmark stopped by a signal stops its child process too and removes its
 * temporary files (bench/child.ts `outputOrStop`): a stopped `bench:layernorm`
 * left its `train` child running and its log behind.
 */

import { ok, strictEqual } from "node:assert/strict";
import { processExists } from "../cli/processes.ts";
import { tempDir } from "./temp_dir.ts";

Deno.test("outputOrStop: SIGTERM to the benchmark ends its child and removes its files", async () => {
  await using temp = await tempDir();
  const pidFile = `${temp.path}/child.pid`, scratch = `${temp.path}/scratch.jsonl`;
  await Deno.writeTextFile(scratch, "{}\n");
  const script = `${temp.path}/bench.ts`;
  await Deno.writeTextFile(
    script,
    `import { outputOrStop } from ${
      JSON.stringify(new URL("../bench/child.ts", import.meta.url).href)
    };
const out = await outputOrStop("sh", { args: ["-c", "echo $$ > ${pidFile}; exec sleep 60"] }, [${
      JSON.stringify(scratch)
    }]);
console.log("child ended by itself", out.code);`,
  );
  const bench = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let pid = NaN;
  for (let i = 0; i < 200 && !(pid > 0); i++) {
    await new Promise((r) => setTimeout(r, 50));
    pid = Number(await Deno.readTextFile(pidFile).catch(() => ""));
  }
  ok(pid > 0, "the child started");
  bench.kill("SIGTERM");
  const out = await bench.output();
  strictEqual(out.code, 128 + 15, new TextDecoder().decode(out.stderr));
  ok(!new TextDecoder().decode(out.stdout).includes("ended by itself"));
  strictEqual(processExists(pid), false, "the child is gone");
  ok(!(await Deno.stat(scratch).then(() => true, () => false)), "the temporary file is removed");
});
