/**
 * Collectives over TCP on 127.0.0.1: Workers forced onto loopback TCP (2, 3,
 * 4 ranks), two real OS processes forming one group (payloads through a shared
 * mapping, and with `--host-shm off` through the socket), a mixed ring (2 processes
 * × 2 Workers), a rank killed mid-collective, and rendezvous errors.
 */

import assert from "node:assert/strict";
import { resolveDistConfig } from "../collectives/env.ts";
import { Communicator } from "../collectives/group.ts";
import { runWorkers } from "../collectives/launch.ts";
import { StoreClient, StoreServer } from "../collectives/store.ts";
import { freeLocalPort } from "../collectives/tcp.ts";

const OPS = new URL("./collectives_ops_worker.ts", import.meta.url);
const MODES = new URL("./collectives_modes_worker.ts", import.meta.url);
const LAUNCH = new URL("../cli/launch.ts", import.meta.url).pathname;
const SIZES = "0,1,7,13,300001,4194304";

function spawnNode(args: string[], permissions = ["-A"]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, LAUNCH, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
  }).spawn();
}

function nodeArgs(nnodes: number, nodeRank: number, nproc: number, port: number, timeout: string) {
  return [
    `--nnodes=${nnodes}`,
    `--node-rank=${nodeRank}`,
    `--nproc-per-node=${nproc}`,
    "--master-addr=127.0.0.1",
    `--master-port=${port}`,
    `--dist-timeout=${timeout}`,
  ];
}

for (const n of [2, 3, 4]) {
  Deno.test(`tcp: every op matches the reference, ${n} ranks over loopback`, async () => {
    const c = resolveDistConfig({
      "nproc-per-node": String(n),
      "dist-timeout": "30s",
      "master-port": String(freeLocalPort()),
    }, {});
    const res = await runWorkers(c, OPS, [SIZES], { gpus: [], forceTcp: true });
    assert.ok(res.ok, JSON.stringify(res.ranks));
    for (const r of res.ranks) assert.deepEqual(r.result, []);
  });
}

async function runNodes(
  nnodes: number,
  nproc: number,
  extra: string[],
  flags: string[] = [],
  permissions?: string[],
) {
  const port = freeLocalPort();
  const procs = Array.from(
    { length: nnodes },
    (_, i) =>
      spawnNode(
        [...nodeArgs(nnodes, i, nproc, port, "30s"), ...flags, OPS.pathname, ...extra],
        permissions,
      ),
  );
  return await Promise.all(procs.map((p) => p.output()));
}

for (const shm of ["on", "off"]) {
  Deno.test(`tcp: two OS processes on 127.0.0.1 form one group, --host-shm ${shm}`, async () => {
    const outs = await runNodes(2, 1, ["0,1,7,13,300001", "--throw", "--print"], [
      `--host-shm=${shm}`,
    ]);
    const text = new TextDecoder().decode(outs[0].stdout);
    for (const o of outs) assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
    // on: the payloads went through a mapping both processes share
    assert.match(text, new RegExp(`OPS_OK world=2 mapped=${shm === "on"}`));
  });
}

Deno.test("tcp: processes without FFI permission use the socket and say why", async () => {
  const noFfi = ["--allow-read", "--allow-write", "--allow-net", "--allow-env", "--allow-run"];
  const outs = await runNodes(2, 1, ["0,1,300001", "--throw", "--print"], [], noFfi);
  for (const o of outs) assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
  assert.match(new TextDecoder().decode(outs[0].stdout), /OPS_OK world=2 mapped=false/);
  // the dialing rank could not create the file, and says so once
  const err = new TextDecoder().decode(outs[0].stderr);
  assert.match(
    err,
    /rank 0: the link to rank 1 \(same host\) sends payloads through its socket, not shared memory: no FFI permission/,
  );
});

Deno.test("tcp: 2 processes x 2 Workers form one ring of 4 (shm + tcp links)", async () => {
  const outs = await runNodes(2, 2, ["0,1,7,13,300001", "--throw", "--print"]);
  for (const o of outs) assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
  assert.match(new TextDecoder().decode(outs[0].stdout), /OPS_OK world=4/);
});

Deno.test("tcp: a process killed mid-collective makes the other fail, naming it", async () => {
  const port = freeLocalPort();
  const a = spawnNode([...nodeArgs(2, 0, 1, port, "3s"), MODES.pathname, "loop"]);
  const b = spawnNode([...nodeArgs(2, 1, 1, port, "3s"), MODES.pathname, "loop"]);
  const reader = b.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("STARTED")) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  const t0 = performance.now();
  b.kill("SIGKILL");
  await b.status;
  reader.releaseLock();
  const out = await a.output();
  const took = performance.now() - t0;
  const err = new TextDecoder().decode(out.stderr);
  assert.notEqual(out.code, 0);
  assert.match(err, /rank 1/);
  assert.ok(took < 8000, `took ${took} ms`);
});

Deno.test("rendezvous: port in use, unreachable master, missing rank are clear errors", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  assert.throws(() => StoreServer.listen("127.0.0.1", port), /already in use/);
  busy.close();
  const closed = freeLocalPort();
  await assert.rejects(
    StoreClient.connect("127.0.0.1", closed, 300),
    /could not reach the rendezvous store/,
  );
  const server = StoreServer.listen("127.0.0.1", 0);
  try {
    await assert.rejects(
      Communicator.create({
        rank: 0,
        world: 3,
        store: { hostname: "127.0.0.1", port: server.port },
        timeoutMs: 500,
      }),
      /ranks 1, 2 never joined/,
    );
  } finally {
    server.close();
  }
});
