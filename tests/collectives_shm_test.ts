/**
 * Collectives over shared memory: Workers of this process, 2, 3 and 4 ranks,
 * every op against plain references (see collectives_ops_worker.ts), plus
 * subgroups and failure behaviour.
 */

import assert from "node:assert/strict";
import { resolveDistConfig } from "../collectives/env.ts";
import { runWorkers } from "../collectives/launch.ts";

const OPS = new URL("./collectives_ops_worker.ts", import.meta.url);
const MODES = new URL("./collectives_modes_worker.ts", import.meta.url);
/** 0, 1, odd, not divisible by 2/3/4, several sub-chunks, and 16 MiB of f32. */
export const SIZES = "0,1,7,13,300001,4194304";

function cfg(n: number, timeout = "20s") {
  return resolveDistConfig({ "nproc-per-node": String(n), "dist-timeout": timeout }, {});
}

for (const shmAlgorithm of ["direct", "ring"] as const) {
  for (const n of [2, 3, 4]) {
    Deno.test(`shm (${shmAlgorithm}): every op matches the reference, ${n} ranks`, async () => {
      const res = await runWorkers(cfg(n), OPS, [SIZES], { gpus: [], shmAlgorithm });
      assert.ok(res.ok, JSON.stringify(res.ranks));
      for (const r of res.ranks) assert.deepEqual(r.result, []);
    });
  }
}

Deno.test("shm: TP and DP subgroups of 4 ranks (tp=2)", async () => {
  const res = await runWorkers(cfg(4), MODES, ["subgroups"], { gpus: [] });
  assert.ok(res.ok, JSON.stringify(res.ranks));
  const out = res.ranks.map((r) =>
    r.result as { tp: number[]; dp: number[]; a: number; b: number; c: number[] }
  );
  assert.deepEqual(out.map((o) => o.tp), [[0, 1], [0, 1], [2, 3], [2, 3]]);
  assert.deepEqual(out.map((o) => o.dp), [[0, 2], [1, 3], [0, 2], [1, 3]]);
  assert.deepEqual(out.map((o) => o.a), [3, 3, 7, 7]);
  assert.deepEqual(out.map((o) => o.b), [3, 4, 3, 4]);
  for (const o of out) assert.deepEqual(o.c, [0, 10, 20, 30]);
});

Deno.test("shm: a hung rank makes the others fail within the timeout, naming it", async () => {
  const t0 = performance.now();
  const res = await runWorkers(cfg(3, "1s"), MODES, ["hang", "2", "2500"], {
    gpus: [],
    log: false,
  });
  const took = performance.now() - t0;
  assert.equal(res.ok, false);
  for (const r of res.ranks.slice(0, 2)) {
    assert.equal(r.ok, false);
    assert.match(r.error!, /rank 2/);
  }
  assert.ok(took < 6000, `took ${took} ms`);
});

Deno.test("shm: mismatched sizes or ops are an error, not corrupt data", async () => {
  const a = await runWorkers(cfg(2, "5s"), MODES, ["mismatch", "1"], { gpus: [], log: false });
  assert.equal(a.ok, false);
  assert.ok(
    a.ranks.some((r) =>
      /mismatch.*1001 elements|1001 elements.*mismatch|1000 elements/.test(r.error ?? "")
    ),
    JSON.stringify(a.ranks),
  );
  const b = await runWorkers(cfg(2, "5s"), MODES, ["opmismatch", "1"], { gpus: [], log: false });
  assert.equal(b.ok, false);
  assert.ok(b.ranks.some((r) => /allGather/.test(r.error ?? "")), JSON.stringify(b.ranks));
});

Deno.test("shm: a rank that throws makes the others fail fast", async () => {
  const t0 = performance.now();
  const res = await runWorkers(cfg(3, "20s"), MODES, ["throw", "1"], { gpus: [], log: false });
  assert.equal(res.ok, false);
  assert.ok(res.ranks.every((r) => !r.ok));
  assert.ok(res.ranks.every((r) => /rank 1 failed/.test(r.error!) || r.rank === 1));
  assert.ok(performance.now() - t0 < 5000);
});

Deno.test("runWorkers: a relative module string is refused (a Worker would resolve it against the library)", async () => {
  await assert.rejects(() => runWorkers(cfg(2), "./collectives_modes_worker.ts", []), {
    name: "TypeError",
    message:
      'runWorkers: the worker module must be an absolute URL, got "./collectives_modes_worker.ts": ' +
      'pass new URL("./collectives_modes_worker.ts", import.meta.url)',
  });
});

Deno.test("runWorkers: a job that chooses no device through DRI_PRIME needs no --allow-env", async () => {
  // Before, it read DRI_PRIME whatever the devices: NotCapable, an uncaught trace.
  const dir = await Deno.makeTempDir({ prefix: "no_env-" });
  try {
    const program = `${dir}/program.ts`;
    await Deno.writeTextFile(
      program,
      `import { runWorkers } from ${
        JSON.stringify(new URL("../collectives/launch.ts", import.meta.url).href)
      };
import { resolveDistConfig } from ${
        JSON.stringify(new URL("../collectives/env.ts", import.meta.url).href)
      };
const cfg = resolveDistConfig({ "nproc-per-node": "4", "dist-timeout": "20s" }, {});
const res = await runWorkers(cfg, ${JSON.stringify(MODES.href)}, ["subgroups"], { log: false });
console.log(JSON.stringify(res.ranks.map((r) => r.ok)));
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", program],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "[true,true,true,true]");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
