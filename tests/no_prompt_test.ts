/**
 * The permissions the docs name are enough: run on a terminal (a pseudo-terminal
 * from util-linux's `script`), where Deno asks for any permission a program uses
 * without holding it, the README's library example and a host-memory read print
 * no "Deno requests …" prompt. An outside-in audit found three: Deno's WebGPU
 * backend read three variables, Dawn looked in /dev/dri, and `train` run by URL
 * with `--allow-sys=hostname` read the host's memory, each without asking first.
 */

import { doesNotMatch, equal } from "node:assert/strict";
import { gpuTest } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

const root = new URL("../", import.meta.url).pathname;

/** Runs `deno run PERMS FILE` on a pseudo-terminal; its exit code and everything it wrote. */
async function onTerminal(perms: string[], file: string): Promise<{ code: number; out: string }> {
  const deno = [Deno.execPath(), "run", "--no-config", ...perms, file];
  const quoted = deno.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const out = await new Deno.Command("script", {
    args: ["-qec", quoted, "/dev/null"],
    cwd: root,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

const haveScript = (() => {
  try {
    return new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

for (
  const [name, perms, backend] of [
    ["Dawn with --allow-ffi --allow-env --allow-read=/dev/dri", [
      "--allow-ffi",
      "--allow-env",
      "--allow-read=/dev/dri",
    ], "dawn"],
    ["Deno's WebGPU with no permissions", [], "deno"],
  ] as const
) {
  Deno.test({
    name: `the README's library example asks for nothing more: ${name}`,
    ignore: !haveScript,
    ...gpuTest,
    fn: async () => {
      await using temp = await tempDir({ prefix: "no_prompt_" });
      const file = `${temp.path}/example.ts`;
      await Deno.writeTextFile(
        file,
        `import { Device, Gpt, TokenIds, Trainer } from ${JSON.stringify(`${root}mod.ts`)};
const device = await Device.create({ backend: ${JSON.stringify(backend)} });
const gpt = Gpt.serial(device, { vocabSize: 256, numLayers: 1, hiddenSize: 32, numHeads: 2, maxPositions: 16 }, 1);
const trainer = new Trainer(device, gpt, { schedule: { lr: 3e-3, decayIters: 100 }, clipGrad: 1 });
const ids = TokenIds.fromHost(device, new Int32Array(2 * 16), [2, 16]);
const { loss } = await trainer.step(1, () => gpt.loss(ids, ids));
console.log("loss", loss);
await device.close();
`,
      );
      const r = await onTerminal(perms.slice(), file);
      doesNotMatch(r.out, /Deno requests|NotCapable|PermissionDenied/, r.out);
      equal(r.code, 0, r.out);
    },
  });
}

Deno.test({
  name: "the host-memory check asks for nothing without --allow-sys=systemMemoryInfo",
  ignore: !haveScript,
  fn: async () => {
    await using temp = await tempDir({ prefix: "no_prompt_" });
    const file = `${temp.path}/memory.ts`;
    await Deno.writeTextFile(
      file,
      `import { hostMemoryBytes } from ${JSON.stringify(`${root}cli/limits.ts`)};
console.log("memory", hostMemoryBytes());
`,
    );
    const r = await onTerminal(["--allow-sys=hostname"], file);
    doesNotMatch(r.out, /Deno requests/, r.out);
    equal(r.code, 0, r.out);
  },
});
