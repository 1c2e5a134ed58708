/**
 * `deno task launch` (through its task and permission set): `--help` before the module prints
 * the flags, and a missing module is a usage error (exit 2), not a module path.
 * @module
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;

async function task(...args: string[]) {
  const xdg = await Deno.makeTempDir({ prefix: "xdg-" });
  await Deno.chmod(xdg, 0o700);
  try {
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "launch", ...args],
      cwd: root,
      env: { XDG_RUNTIME_DIR: xdg, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
  } finally {
    await Deno.remove(xdg, { recursive: true });
  }
}

Deno.test("deno task launch --help prints the flags and exits 0", async () => {
  for (const flag of ["--help", "-h"]) {
    const r = await task(flag);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^usage: deno task launch \[distributed flags\] WORKER_MODULE/);
    assert.match(r.out, /--nproc-per-node INT/);
    assert.equal(r.err, "");
  }
});

Deno.test("deno task launch without a module is a usage error", async () => {
  const r = await task("--nproc-per-node", "2");
  assert.equal(r.code, 2);
  assert.match(r.err, /no WORKER_MODULE: usage: deno task launch/);
});
