/**
 * Fixture for `watchdog_test.ts` (not a test file of the suite: run in a
 * subprocess). WATCHDOG_FIXTURE picks how a test hangs:
 *  - `native`: blocked inside a native call (reading a FIFO nobody writes), as a
 *    stuck GPU wait blocks the thread; its own limit 1 s; it first starts a child
 *    process (pid written to WATCHDOG_FIXTURE_PID) that must die with it;
 *  - `hot`: a JavaScript hot loop under its own limit of 1 s, then a test that passes;
 *  - `default`: a hot loop under the default limit (TEST_TIME_LIMIT_S);
 *  - `file`: tests that each finish but together outlast TEST_FILE_TIME_LIMIT_S.
 * @module
 */

import { gpuTest, withTimeLimit } from "./helpers.ts";

function hotLoop(seconds: number): void {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) { /* no await: nothing else on this thread runs */ }
}

const scenario = Deno.env.get("WATCHDOG_FIXTURE");

Deno.test("watchdog fixture: a quick test passes", gpuTest, () => {});

if (scenario === "native") {
  Deno.test("watchdog fixture: blocked in a native call", withTimeLimit(1), () => {
    const dir = Deno.makeTempDirSync();
    const fifo = `${dir}/fifo`;
    new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
    const child = new Deno.Command("sleep", { args: ["300"] }).spawn();
    Deno.writeTextFileSync(Deno.env.get("WATCHDOG_FIXTURE_PID")!, String(child.pid));
    Deno.readTextFileSync(fifo); // blocks in the kernel until a writer comes: never
  });
}

if (scenario === "hot") {
  Deno.test("watchdog fixture: a hot loop", withTimeLimit(1), () => hotLoop(60));
  Deno.test("watchdog fixture: the run goes on", gpuTest, () => {});
}

if (scenario === "default") {
  Deno.test("watchdog fixture: a hot loop under the default limit", gpuTest, () => hotLoop(60));
}

if (scenario === "file") {
  for (let i = 0; i < 60; i++) {
    Deno.test(`watchdog fixture: part ${i}`, gpuTest, async () => {
      await new Promise((r) => setTimeout(r, 500));
    });
  }
}
