/**
 * Test time limits (`watchdog.ts`): a hang becomes a failure that names the
 * test. A test stuck in JavaScript fails at its limit and the run goes on; a
 * test whose thread is blocked in a native call (as by a stuck GPU wait) gets
 * the process killed, with `test "NAME" exceeded its time limit of N s`, along
 * with the processes it started; a test file that outlasts its limit likewise.
 * @module
 */

import { match, notStrictEqual, ok } from "node:assert/strict";

const FIXTURE = new URL("./watchdog_stuck.ts", import.meta.url).pathname;
const PRELOAD = new URL("./watchdog.ts", import.meta.url).pathname;

async function runFixture(env: Record<string, string>) {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check", "--preload", PRELOAD, FIXTURE],
    env: { NO_COLOR: "1", TEST_KILL_GRACE_S: "1", ...env },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000), // the fixtures hang for 60 s or more if unguarded
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    text: dec.decode(out.stdout) + dec.decode(out.stderr),
    stderr: dec.decode(out.stderr),
    seconds: (performance.now() - started) / 1000,
  };
}

async function isGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      if (/^\d+ \(.*\) Z/.test(stat)) return true; // a zombie is dead
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

Deno.test({
  name: "watchdog: a test blocked in a native call is killed with its name, and its children",
  ignore: Deno.build.os !== "linux", // mkfifo, /proc
  async fn() {
    const pidFile = await Deno.makeTempFile();
    try {
      const r = await runFixture({ WATCHDOG_FIXTURE: "native", WATCHDOG_FIXTURE_PID: pidFile });
      notStrictEqual(r.code, 0, r.text);
      match(
        r.text,
        /test "watchdog fixture: blocked in a native call" exceeded its time limit of 1 s/,
      );
      ok(r.seconds < 30, `took ${r.seconds.toFixed(1)} s`);
      const pid = Number(await Deno.readTextFile(pidFile));
      ok(pid > 0, "the fixture wrote its child's pid");
      ok(await isGone(pid), `the stuck test's child process ${pid} was left running`);
    } finally {
      await Deno.remove(pidFile);
    }
  },
});

Deno.test("watchdog: a hot loop fails at its own limit and the run goes on", async () => {
  const r = await runFixture({ WATCHDOG_FIXTURE: "hot" });
  notStrictEqual(r.code, 0, r.text);
  match(r.text, /watchdog fixture: a hot loop => .*watchdog_stuck\.ts:\d+:\d+/);
  match(r.text, /Test timed out after 1000ms/);
  match(r.text, /watchdog fixture: the run goes on \.\.\. ok/);
  ok(r.seconds < 30, `took ${r.seconds.toFixed(1)} s`);
});

Deno.test("watchdog: the default limit comes from TEST_TIME_LIMIT_S", async () => {
  const r = await runFixture({ WATCHDOG_FIXTURE: "default", TEST_TIME_LIMIT_S: "2" });
  notStrictEqual(r.code, 0, r.text);
  match(r.text, /watchdog fixture: a hot loop under the default limit => /);
  match(r.text, /Test timed out after 2000ms/);
  ok(r.seconds < 30, `took ${r.seconds.toFixed(1)} s`);
});

Deno.test("watchdog: a test file is bounded as a whole", async () => {
  const r = await runFixture({ WATCHDOG_FIXTURE: "file", TEST_FILE_TIME_LIMIT_S: "3" });
  notStrictEqual(r.code, 0, r.text);
  // On the process's own stderr, written before the kill: not through the test
  // runner's console pipe, whose reader thread the kill can beat.
  match(r.stderr, /test file "\S*watchdog_stuck\.ts" exceeded its time limit of 3 s/);
  ok(r.seconds < 30, `took ${r.seconds.toFixed(1)} s`);
});
