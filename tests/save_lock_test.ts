/**
 * The save lock's holder check (cli/save_lock.ts): a holder that exits within
 * EXITING_HOLDER_WAIT_MS (rank 0's process, after its launcher was killed with
 * SIGKILL) gives the lock up to a run restarted at once; a live one keeps it;
 * this process's own pid, or one a later process reuses, is a stale lock once
 * its heartbeat has stopped (a live lock in another container keeps beating).
 * A process spawned a moment ago started now, whatever `ps` prints for it.
 * The command-line side (the refusal's message, a dead holder taken over,
 * release at exit) is in tests/train_cli_test.ts.
 */

import { match, ok, rejects, strictEqual } from "node:assert/strict";
import {
  EXITING_HOLDER_WAIT_MS,
  LOCK_HEARTBEAT_MS,
  LOCK_STALE_MS,
  SAVE_LOCK_FILE,
  takeSaveLock,
} from "../cli/save_lock.ts";
import { UsageError } from "../cli/flags.ts";
import { processStartMs } from "../cli/processes.ts";
import { tempDir } from "./temp_dir.ts";

/**
 * Writes `dir`'s lock as a holder of this host with `fields` (pid, start time
 * and, for this version's locks, heartbeatMs); returns the lock's path.
 */
async function writeLock(
  dir: string,
  fields: { pid: number; started: string; heartbeatMs?: number },
): Promise<string> {
  const path = `${dir}/${SAVE_LOCK_FILE}`;
  await Deno.writeTextFile(path, JSON.stringify({ host: Deno.hostname(), ...fields }));
  return path;
}

/** An hour before now, as a lock records its start. */
const anHourAgo = () => new Date(Date.now() - 3600_000).toISOString();

async function lockedBy(seconds: string): Promise<{ dir: string; holder: Deno.ChildProcess }> {
  const dir = await Deno.makeTempDir({ prefix: "save_lock-" });
  const holder = new Deno.Command("sleep", { args: [seconds] }).spawn();
  await writeLock(dir, { pid: holder.pid, started: new Date().toISOString() });
  return { dir, holder };
}

Deno.test("save lock: a holder that exits within the wait gives it up to a run started at once", async () => {
  const { dir, holder } = await lockedBy("0.8");
  const t0 = performance.now();
  const release = await takeSaveLock(dir);
  const waited = performance.now() - t0;
  const now = JSON.parse(await Deno.readTextFile(`${dir}/${SAVE_LOCK_FILE}`));
  strictEqual(now.pid, Deno.pid);
  ok(waited < EXITING_HOLDER_WAIT_MS + 1000, `waited ${waited} ms`);
  release();
  await holder.status;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("save lock: a holder still alive after the wait keeps it", async () => {
  const { dir, holder } = await lockedBy("60");
  const t0 = performance.now();
  await rejects(takeSaveLock(dir), (e) => {
    ok(e instanceof UsageError);
    match(e.message, new RegExp(`is in use by another run \\(pid ${holder.pid} on `));
    return true;
  });
  ok(performance.now() - t0 >= EXITING_HOLDER_WAIT_MS - 50, "refused before the wait was over");
  holder.kill("SIGKILL");
  await holder.status;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a process spawned a moment ago started now, though ps prints its elapsed time wrapped", async () => {
  // procps prints a negative elapsed time (a process younger than the uptime's tick) as
  // 4123168608 s in about one call of seven: 30 spawns catch that nearly always.
  for (let i = 0; i < 30; i++) {
    const before = Date.now();
    const p = new Deno.Command("sleep", { args: ["5"] }).spawn();
    try {
      const since = await processStartMs(p.pid);
      if (since === null) return; // no ps here: the lock then waits, as its test shows
      ok(
        since >= before - 2000 && since <= Date.now(),
        `spawn ${i}: started ${(Date.now() - since) / 1000} s ago by ps`,
      );
    } finally {
      p.kill("SIGKILL");
      await p.status;
    }
  }
});

Deno.test("save lock: its own pid, or a pid reused by a later process, is a stale lock", async () => {
  // A run restarted in a container (the same host name) gets the killed run's pid again.
  await using temp = await tempDir({ prefix: "save_lock-" });
  const dir = temp.path;
  const hour = anHourAgo();
  const path = await writeLock(dir, { pid: Deno.pid, started: hour });
  let release = await takeSaveLock(dir);
  strictEqual(JSON.parse(await Deno.readTextFile(path)).started > hour, true);
  release();
  // A live process that started an hour after the lock's time is not its holder.
  const other = new Deno.Command("sleep", { args: ["60"] }).spawn();
  await writeLock(dir, { pid: other.pid, started: hour });
  const t0 = performance.now();
  release = await takeSaveLock(dir);
  ok(
    performance.now() - t0 < EXITING_HOLDER_WAIT_MS,
    "waited for a process that is not the holder",
  );
  strictEqual(JSON.parse(await Deno.readTextFile(path)).pid, Deno.pid);
  release();
  other.kill("SIGKILL");
  await other.status;
});

Deno.test("save lock: a pid that cannot be the holder's is gone only once the lock's heartbeat has stopped", async () => {
  // Another container of this host name may run with the same pid: its lock stays touched.
  await using temp = await tempDir({ prefix: "save_lock-" });
  const dir = temp.path;
  const path = await writeLock(dir, {
    pid: Deno.pid,
    started: anHourAgo(),
    heartbeatMs: LOCK_HEARTBEAT_MS,
  });
  const beat = setInterval(() => Deno.utimeSync(path, new Date(), new Date()), 200);
  try {
    await rejects(takeSaveLock(dir), /is in use by another run/);
  } finally {
    clearInterval(beat);
  }
  // Untouched for longer than LOCK_STALE_MS: a dead predecessor's, taken over at once.
  const old = new Date(Date.now() - LOCK_STALE_MS - 1000);
  Deno.utimeSync(path, old, old);
  const t0 = performance.now();
  const release = await takeSaveLock(dir);
  ok(performance.now() - t0 < 2000, "waited for a stale heartbeat");
  strictEqual(JSON.parse(await Deno.readTextFile(path)).heartbeatMs, LOCK_HEARTBEAT_MS);
  release();
});
