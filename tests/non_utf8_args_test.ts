/**
 * Arguments with bytes that are not UTF-8 reach a Deno program already
 * replaced by U+FFFD: every command says so once, instead of only "does not
 * exist" for a file that does.
 */

import { equal, match, ok } from "node:assert/strict";
import { nonUtf8Warning } from "../cli/errors.ts";
import { withTimeLimit } from "./helpers.ts";
import { tempDir } from "./temp_dir.ts";

Deno.test("nonUtf8Warning names the arguments that lost bytes, and only those", () => {
  equal(nonUtf8Warning(["--data-path", "corpus.txt"]), null);
  match(nonUtf8Warning(["--data-path", "v\uFFFDal.txt"])!, /^warning: argument 2 held bytes/);
  match(nonUtf8Warning(["a\uFFFD", "b", "\uFFFD"])!, /^warning: arguments 1, 3 held bytes/);
  // A prompt is not a file name: the warning says what it becomes.
  const prompt = nonUtf8Warning(["--load", "ck", "--prompt", "\uFFFDt\uFFFD"])!;
  match(prompt, /argument 4 held bytes .* so the prompt holds U\+FFFD in their place/);
  ok(!/file so named/.test(prompt), prompt);
  match(nonUtf8Warning(["--prompt=\uFFFD"])!, /so the prompt holds U\+FFFD/);
});

Deno.test(
  "a file named in Latin-1 is reported with the reason it cannot be found",
  withTimeLimit(60),
  async () => {
    await using temp = await tempDir({ prefix: "non_utf8_" });
    // The file exists under its raw name; bash passes that name's bytes as they are.
    const script = `printf '{}\\n' > $'${temp.path}/l\\xffog.jsonl' && ` +
      `exec "$0" run -A cli/plot.ts $'${temp.path}/l\\xffog.jsonl'`;
    const out = await new Deno.Command("bash", {
      args: ["-c", script, Deno.execPath()],
      cwd: new URL("..", import.meta.url).pathname,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    equal(out.code, 1, stderr);
    match(stderr, /^warning: argument 1 held bytes that are not UTF-8; .*U\+FFFD/m);
    ok(/^error: /m.test(stderr), stderr);
  },
);
