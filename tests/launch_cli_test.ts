/**
 * `deno task launch` (through its task and permission set): `--help` before the module prints
 * the flags, a missing module is a usage error (exit 2), not a module path, a module given by
 * URL runs (the task's permission set allows imports, which its ranks inherit), and a hung rank
 * does not hold the job past the dist timeout and a short grace.
 * @module
 */
import assert from "node:assert/strict";
import { TINY_RUN_FLAGS } from "./cli_helpers.ts";

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

Deno.test("deno task launch runs a module given by URL, as its help says", async () => {
  const code = "export default (ctx) => console.log(`rank ${ctx.rank} ran`);\n";
  const lockFile = `${root}deno.lock`;
  const lockBefore = await Deno.readTextFile(lockFile);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(code, { headers: { "content-type": "application/javascript" } }),
  );
  try {
    const url = `http://127.0.0.1:${server.addr.port}/rank.js`;
    for (const launcher of ["workers", "procs"]) {
      const r = await task("--nproc-per-node", "2", "--launcher", launcher, url);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(r.out.trim().split("\n").sort(), ["rank 0 ran", "rank 1 ran"]);
    }
  } finally {
    await server.shutdown();
    // Deno records a remote module in the project's lock file (the rank processes too, which
    // find deno.json from their module): this test's module on a random port does not belong.
    await Deno.writeTextFile(lockFile, lockBefore);
  }
});

Deno.test("deno task launch: a hung Worker is terminated soon after its peer times out", async () => {
  const timeoutS = 3;
  const t0 = performance.now();
  const r = await task(
    "--nproc-per-node",
    "2",
    "--dist-timeout",
    `${timeoutS}s`,
    "tests/launch_hang_worker.ts",
  );
  const s = (performance.now() - t0) / 1000;
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /rank 0 failed: .*rank 1/);
  // Rank 0 fails at the timeout; rank 1 then gets the timeout plus 5 s (WORKER_AFTER_FAILURE_GRACE_MS
  // caps that at a minute), and nobody waits for a hung Worker to close: before, the launcher
  // then waited 15 s more for it to release its device.
  assert.ok(s < 2 * timeoutS + 5 + 6, `the job took ${s.toFixed(1)} s`);
  console.log(`hung Worker: job ended in ${s.toFixed(1)} s (dist timeout ${timeoutS} s)`);
});

Deno.test("deno task launch of the train worker: a bad flag is said once (twice in a race), not per rank; exit 2", async () => {
  const r = await task("--nproc-per-node", "2", "cli/train_worker.ts", "--train-iters", "abc");
  assert.equal(r.code, 2, r.err);
  const said = r.err.split("\n").filter((l) =>
    l.includes('--train-iters expects an integer, got "abc"')
  );
  // Rank 0 prints it as `error: …`, and the launcher skips what a rank printed itself and a
  // failure that repeats the first. When rank 1's failure reaches the launcher before rank 0 has
  // printed, both say it (a race between two threads' prints): at most twice, never per rank
  // plus a "not started" (three lines before the thirtieth session).
  assert.ok(said.length >= 1 && said.length <= 2, r.err);
  assert.doesNotMatch(r.err, /not started/);
});

Deno.test("deno task launch of the train worker: two ranks in one process open Deno's WebGPU, as train's own launch does", async () => {
  // Without --backend the ranks opened Dawn, whose devices in one process run one at a time.
  const r = await task(
    ...["--nproc-per-node", "2", "cli/train_worker.ts", ...TINY_RUN_FLAGS],
    ...["--tensor-model-parallel-size", "2", "--train-iters", "1"],
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^device: deno \| .* \| 2 ranks$/m);
});

Deno.test("rank processes of a program imported by URL get --allow-import for its host, as their launcher holds it", async () => {
  // A scoped permission is not passed on, but for the one a child needs to load its own program
  // and the system facts a permission set grants one by one.
  const dir = await Deno.makeTempDir({ prefix: "granted-" });
  try {
    const program = `${dir}/program.ts`;
    const procs = new URL("../collectives/procs.ts", import.meta.url).href;
    await Deno.writeTextFile(
      program,
      `import { grantedPermissionFlags } from ${JSON.stringify(procs)};
console.log(JSON.stringify([
  grantedPermissionFlags("http://127.0.0.1:1234/cli/train.ts"),
  grantedPermissionFlags("http://example.org/cli/train.ts"),
  grantedPermissionFlags(),
]));
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-import=127.0.0.1:1234", program],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), [
      ["--allow-read", "--allow-import=127.0.0.1:1234"],
      ["--allow-read"],
      ["--allow-read"],
    ]);
    // The host's name and memory, granted one by one (deno.json's train): passed on, so that a
    // rank process checks its model against the memory (under --launcher procs it did not).
    const sys = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-sys=hostname,systemMemoryInfo", program],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(sys.code, 0, new TextDecoder().decode(sys.stderr));
    assert.deepEqual(
      JSON.parse(new TextDecoder().decode(sys.stdout))[2],
      ["--allow-read", "--allow-sys=hostname,systemMemoryInfo"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
