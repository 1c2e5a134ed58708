/**
 * The CLIs' exported `main` (deno.json's `./cli/train`, `./cli/eval`, …) used
 * from a program of one's own: it returns the exit code, and the program goes on
 * and ends by itself, after tensor-parallel jobs too. Before, a job of several
 * ranks exited the whole program (collectives/launch.ts called `Deno.exit`), and
 * `train`'s signal listeners kept it alive after a job in Workers.
 * @module
 */

import { equal, match } from "node:assert/strict";
import { TINY_RUN_FLAGS } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";
import { fileURLToPath as fromFileUrl } from "node:url";

Deno.test("cli main(): train and eval at TP=2 return their exit codes, and the calling program goes on and ends", async () => {
  await using temp = await tempDir({ prefix: "cli_main-" });
  const cli = (name: string) => new URL(`../cli/${name}.ts`, import.meta.url).href;
  const flags = JSON.stringify([...TINY_RUN_FLAGS, "--train-iters", "2"]);
  const program = `${temp.path}/program.ts`;
  await Deno.writeTextFile(
    program,
    `import { main as train } from ${JSON.stringify(cli("train"))};
import { main as evaluate } from ${JSON.stringify(cli("eval"))};
const flags = ${flags};
const ck = ${JSON.stringify(`${temp.path}/ck`)};
const text = ${
      JSON.stringify(fromFileUrl(new URL("../data/assets/moby_dick.txt", import.meta.url)))
    };
console.log("train", await train([...flags, "--tp", "2", "--nproc-per-node", "2", "--save", ck]));
console.log("eval", await evaluate(["--load", ck, "--data-path", text, "--tp", "2", "--eval-iters", "1"]));
console.log("refused", await train([...flags, "--tp", "2", "--nproc-per-node", "3"]));
console.log("after");
`,
  );
  const xdg = `${temp.path}/xdg`;
  await Deno.mkdir(xdg, { mode: 0o700 });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", program],
    cwd: temp.path,
    env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    // Ends in seconds; before the fix it waited forever on train's signal listeners.
    signal: AbortSignal.timeout(120_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  equal(out.code, 0, `${stdout}\n${stderr}`);
  match(stdout, /^train 0$/m);
  match(stdout, /^eval 0$/m);
  match(stdout, /^refused 2$/m);
  match(stdout, /^after$/m);
});
