import assert from "node:assert/strict";
import { tempDir } from "./temp_dir.ts";

Deno.test("data layer imports by file:// URL with --no-config from another directory", async () => {
  await using temp = await tempDir({ prefix: "data_url_import_" });
  const dir = temp.path;
  const modUrl = new URL("../data/mod.ts", import.meta.url).href;
  await Deno.writeTextFile(
    `${dir}/main.ts`,
    `import * as data from ${JSON.stringify(modUrl)};
const text = await data.loadText();
const gpt2 = await data.createTokenizer("gpt2");
const bert = await data.createBertTokenizer();
const ids = Uint32Array.from(gpt2.encode(text.slice(0, 5000)));
const batch = new data.GptBatchSampler(ids, { batchSize: 2, seqLength: 8, seed: 1 }).next();
console.log(JSON.stringify({
  chars: text.length,
  hello: Array.from(gpt2.encode("Hello world")),
  cls: bert.special.cls,
  rows: batch.batchSize,
}));
`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "-A", "main.ts"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  assert.deepEqual(JSON.parse(lines[lines.length - 1]), {
    chars: 1217672,
    hello: [15496, 995],
    cls: 101,
    rows: 2,
  });
});
