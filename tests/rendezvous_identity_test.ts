/**
 * Job identity at rendezvous (issue #11, "Jobs mixed up"): two jobs started
 * within 50 ms on one `--master-port` used to pair their ranks (job B's rank 0
 * trained with job A's rank 1). Every job now has a run id (`--rdzv-id`,
 * `TORCHELASTIC_RUN_ID`, `SLURM_JOB_ID`, or one the `procs` launcher draws);
 * the store and the peers refuse a rank of another run, naming both.
 *
 * The race is tested directly: two real jobs on one port, several trials; each
 * job either trains exactly its own losses or fails quickly with a clear reason.
 *
 * This file is also the worker module of the two-node race (run through
 * cli/launch.ts): each rank gathers the job tags of the whole world.
 */

import assert from "node:assert/strict";
import { resolveDistConfig, splitDistArgs } from "../collectives/env.ts";
import type { WorkerContext } from "../collectives/launch.ts";
import { HELLO_ANSWER_MS, StoreClient, StoreServer, WIRE_PROTOCOL } from "../collectives/store.ts";
import { freeLocalPort, readJson, TcpMesh, writeJson } from "../collectives/tcp.ts";
import { makeRunDir, runCli, TINY_RUN_FLAGS } from "./cli_helpers.ts";

/** Worker side of the two-node race: every rank's job tag, gathered over the world. */
export default async function main(ctx: WorkerContext): Promise<void> {
  const tag = Number(ctx.args[0]);
  const tags = await ctx.group.allGather(new Int32Array([tag]));
  await ctx.group.barrier();
  if (ctx.rank === 0) console.log(`TAGS ${Array.from(tags).join(",")}`);
}

const ROOT = new URL("../", import.meta.url).pathname;
const dec = new TextDecoder();

Deno.test("dist flags: torchrun's _ spellings, run ids, torchrun's agent store, where the store listens", () => {
  const { flags, rest } = splitDistArgs([
    "--nproc_per_node=2",
    "--master_port",
    "1234",
    "--rdzv_id",
    "job-7",
    "--lr",
    "1",
  ]);
  assert.deepEqual(rest, ["--lr", "1"]);
  assert.deepEqual(flags, { "nproc-per-node": "2", "master-port": "1234", "rdzv-id": "job-7" });
  const f = resolveDistConfig(flags, {});
  assert.deepEqual([f.world, f.runId, f.runIdSource, f.storeHost], [
    2,
    "job-7",
    "--rdzv-id",
    "127.0.0.1",
  ]);
  // A multi-node job listens on --master-addr; a one-node job on loopback whatever MASTER_ADDR says.
  const mn = resolveDistConfig({ nnodes: "2", "node-rank": "0", "master-addr": "10.0.0.1" }, {});
  assert.equal(mn.storeHost, "10.0.0.1");
  assert.equal(mn.runId, undefined);
  const torch = {
    RANK: "1",
    WORLD_SIZE: "2",
    LOCAL_RANK: "1",
    LOCAL_WORLD_SIZE: "2",
    MASTER_ADDR: "myhost",
    MASTER_PORT: "29500",
    TORCHELASTIC_RUN_ID: "abc",
    TORCHELASTIC_USE_AGENT_STORE: "True",
    TORCHELASTIC_RESTART_COUNT: "0",
  };
  const t = resolveDistConfig({}, torch);
  assert.deepEqual(
    [t.source, t.masterPort, t.storeHost, t.runId, t.runIdSource],
    ["torchrun", 29501, "127.0.0.1", "abc", "TORCHELASTIC_RUN_ID"],
  );
  // An explicit --master-port wins; torchrun's default id "none" names nothing; --standalone
  // (agent store not used) keeps MASTER_PORT.
  assert.equal(resolveDistConfig({ "master-port": "4000" }, torch).masterPort, 4000);
  assert.equal(resolveDistConfig({}, { ...torch, TORCHELASTIC_RUN_ID: "none" }).runId, undefined);
  const sa = resolveDistConfig({}, { ...torch, TORCHELASTIC_USE_AGENT_STORE: "False" });
  assert.equal(sa.masterPort, 29500);
  assert.throws(() => resolveDistConfig({}, { ...torch, MASTER_PORT: "65535" }), /next port/);
  // Two nodes under torchrun: the store is on MASTER_ADDR.
  const t2 = resolveDistConfig({}, { ...torch, WORLD_SIZE: "4", LOCAL_WORLD_SIZE: "2" });
  assert.equal(t2.storeHost, "myhost");
  const s = resolveDistConfig({}, {
    SLURM_PROCID: "0",
    SLURM_NTASKS: "4",
    SLURM_JOB_ID: "4242",
    SLURM_STEP_ID: "3",
    SLURM_STEP_NUM_NODES: "2",
    SLURM_JOB_NODELIST: "gpu[01-02]",
  });
  assert.deepEqual([s.runId, s.storeHost], ["4242.3", "gpu01"]);
  // Open MPI on one host needs no MASTER_ADDR: the store is on loopback.
  const o = resolveDistConfig({}, {
    OMPI_COMM_WORLD_RANK: "1",
    OMPI_COMM_WORLD_SIZE: "2",
    OMPI_COMM_WORLD_LOCAL_SIZE: "2",
    OMPI_MCA_ess_base_jobid: "77",
  });
  assert.deepEqual([o.source, o.storeHost, o.runId], ["openmpi", "127.0.0.1", "77"]);
  assert.throws(() => resolveDistConfig({ "rdzv-id": "a b" }, {}), /printable/);
});

Deno.test("rendezvous: a node started for another world size is refused, and every rank's wait fails at once", async () => {
  const server = StoreServer.listen("127.0.0.1", 0, "job", undefined, 4);
  try {
    const zero = await StoreClient.connect("127.0.0.1", server.port, 2000, {
      rank: 0,
      runId: "job",
      world: 4,
    });
    // Node 0's rank waits for a peer's address (it would wait out its whole timeout before).
    const t0 = performance.now();
    const waiting = zero.get("addr/5", 60_000);
    await assert.rejects(
      StoreClient.connect("127.0.0.1", server.port, 2000, { rank: 5, runId: "job", world: 6 }),
      /rank 5 .* was started for a job of 6 ranks, node 0 for 4: start every node with the same --nnodes and --nproc-per-node/,
    );
    await assert.rejects(waiting, /rendezvous failed: rank 5 .* started for a job of 6 ranks/);
    assert.ok(performance.now() - t0 < 10_000);
    // Later waits fail the same way; what was set stays readable.
    await zero.set("k", "v");
    assert.equal(await zero.get("k", 1000), "v");
    await assert.rejects(zero.get("addr/1", 60_000), /rendezvous failed/);
    zero.close();
  } finally {
    server.close();
  }
});

/** The store's answer to `hello` sent as is (what a client of another version sends). */
async function answerTo(
  port: number,
  hello: Record<string, unknown>,
): Promise<{ ok: boolean; error: string; protocol?: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeJson(conn, { op: "hello", ...hello });
    return await readJson(conn) as { ok: boolean; error: string; protocol?: number };
  } finally {
    conn.close();
  }
}

Deno.test("rendezvous: nodes of another version of this program stop at rendezvous, naming both versions", async () => {
  const server = StoreServer.listen("127.0.0.1", 0, "job", undefined, 2);
  try {
    // A rank of another job on the same port, whatever its version, does not stop this job.
    const r0 = await answerTo(server.port, { rank: 1, run: "other", world: 2 });
    assert.equal(r0.ok, false);
    assert.match(r0.error, /belongs to run "job"; rank 1 of run "other"/);
    assert.equal(r0.protocol, WIRE_PROTOCOL);
    const zero = await StoreClient.connect("127.0.0.1", server.port, 2000, {
      rank: 0,
      runId: "job",
      world: 2,
    });
    // A client outside any job (rank -1) of another version is refused without stopping the job.
    assert.match(
      (await answerTo(server.port, { rank: -1, run: "job" })).error,
      /rank -1 .* runs another version/,
    );
    await assert.rejects(
      zero.get("addr/1", 200),
      (e: Error) => !/rendezvous failed/.test(e.message),
    );
    const waiting = zero.get("addr/1", 60_000);
    // A node from before the protocol number (its hello has none) is told why, and so is node 0.
    const r1 = await answerTo(server.port, { rank: 1, run: "job", world: 2 });
    assert.equal(r1.ok, false);
    const why = new RegExp(
      `rank 1 .* runs another version of this program \\(no wire protocol: an older version\\), ` +
        `node 0 runs wire protocol ${WIRE_PROTOCOL}: run the same version on every node`,
    );
    assert.match(r1.error, why);
    await assert.rejects(waiting, why);
    zero.close();
  } finally {
    server.close();
  }
  // A store of an older version (its answer names no protocol) is refused by this node.
  const oldStore = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serve = (async () => {
    const c = await oldStore.accept();
    await readJson(c);
    await writeJson(c, { ok: true, value: "job" });
    await new Promise((r) => setTimeout(r, 200));
    c.close();
  })();
  await assert.rejects(
    StoreClient.connect("127.0.0.1", (oldStore.addr as Deno.NetAddr).port, 2000, {
      rank: 1,
      runId: "job",
    }),
    new RegExp(
      `rendezvous refused: the rendezvous store at .* \\(node 0\\) runs another version of this ` +
        `program \\(no wire protocol: an older version\\), this node runs wire protocol ${WIRE_PROTOCOL}`,
    ),
  );
  await serve;
  oldStore.close();
});

Deno.test("rendezvous: a service on the port that reads the hello and never answers is named, not waited out", async () => {
  // An HTTP server waiting for a request line that never comes.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const c of listener) held.push(c);
  })().catch(() => {});
  const t0 = performance.now();
  await assert.rejects(
    StoreClient.connect("127.0.0.1", port, 120_000, { rank: 1, world: 2 }),
    new RegExp(
      `did not answer the rendezvous hello within ${HELLO_ANSWER_MS / 1000} s ` +
        "\\(is something else listening on --master-port\\?\\)",
    ),
  );
  const ms = performance.now() - t0;
  assert.ok(ms < HELLO_ANSWER_MS + 5000, `waited ${Math.round(ms)} ms`);
  listener.close();
  for (const c of held) c.close();
});

Deno.test("rendezvous: a node that never starts is named once per node under --launcher procs", async () => {
  // Each rank process of node 0 met the missing node alike and printed it: twice, not once.
  const r = await runCli(
    "cli/train.ts",
    [
      ...TINY_RUN_FLAGS,
      ...["--train-iters", "2", "--tp", "2", "--nproc-per-node", "2", "--launcher", "procs"],
      ...["--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1"],
      ...["--master-port", String(freeLocalPort()), "--dist-timeout", "3s"],
    ],
    undefined,
    { timeoutMs: 60_000 },
  );
  assert.equal(r.code, 1, r.stderr);
  const said = r.stderr.match(/ranks 2, 3 never joined the rendezvous/g) ?? [];
  assert.equal(said.length, 1, r.stderr);
});

Deno.test("rendezvous: the store refuses a rank of another run and a rank that joins twice, naming both", async () => {
  const server = StoreServer.listen("127.0.0.1", 0, "job-A");
  try {
    await assert.rejects(
      StoreClient.connect("127.0.0.1", server.port, 2000, { rank: 1, runId: "job-B" }),
      /belongs to run "job-A"; rank 1 of run "job-B" .*refused/,
    );
    await assert.rejects(
      StoreClient.connect("127.0.0.1", server.port, 2000, { rank: 1 }),
      /belongs to run "job-A"; rank 1 of a run without id/,
    );
    const one = await StoreClient.connect("127.0.0.1", server.port, 2000, {
      rank: 1,
      runId: "job-A",
    });
    await assert.rejects(
      StoreClient.connect("127.0.0.1", server.port, 2000, { rank: 1, runId: "job-A" }),
      /rank 1 of run "job-A" joined twice/,
    );
    await one.set("k", "v");
    assert.equal(await one.get("k", 1000), "v");
    one.close();
    // Once the first rank 1 has left, the rank is free again.
    await new Promise((r) => setTimeout(r, 50));
    const again = await StoreClient.connect("127.0.0.1", server.port, 2000, {
      rank: 1,
      runId: "job-A",
    });
    again.close();
    assert.equal(server.refused.length, 3);
  } finally {
    server.close();
  }
  // Something else on the port (here: a server that answers garbage) is named as such.
  const foreign = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serve = (async () => {
    const c = await foreign.accept();
    await c.write(new Uint8Array([0, 0, 0, 2, 0x7b, 0x7b]));
    await new Promise((r) => setTimeout(r, 200));
    c.close();
  })();
  await assert.rejects(
    StoreClient.connect("127.0.0.1", (foreign.addr as Deno.NetAddr).port, 2000, { rank: 0 }),
    /not this program's rendezvous store/,
  );
  await serve;
  foreign.close();
  // The peer-to-peer mesh refuses a connection of another run too, and says so on timeout.
  const a = TcpMesh.listen(1, "127.0.0.1", 600, "job-A");
  const b = TcpMesh.listen(0, "127.0.0.1", 600, "job-B");
  try {
    const dial = b.connect("g", 1, () => Promise.resolve(a.address));
    await assert.rejects(
      a.connect("g", 0, () => Promise.resolve("")),
      /refused rank 0 of run "job-B"/,
    );
    (await dial).close();
  } finally {
    a.close();
    b.close();
  }
});

const tiny = [
  ...TINY_RUN_FLAGS,
  "--eval-interval",
  "100",
  "--train-iters",
  "3",
  "--tp",
  "2",
  "--nproc-per-node",
  "2",
  "--launcher",
  "procs",
  "--backend",
  "deno",
  "--dist-timeout",
  "30s",
];

interface Job {
  code: number;
  stderr: string;
  ms: number;
  losses: number[] | null;
}

async function xdgDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "xdg-" });
  await Deno.chmod(d, 0o700);
  return d;
}

async function trainJob(dir: string, name: string, seed: number, port: number): Promise<Job> {
  const log = `${dir}/${name}.jsonl`;
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}cli/train.ts`,
      ...tiny,
      "--data-path",
      `${dir}/data.txt`,
      "--seed",
      String(seed),
      "--master-port",
      String(port),
      "--log-json",
      log,
    ],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t0;
  let losses: number[] | null = null;
  try {
    losses = (await Deno.readTextFile(log)).trim().split("\n").filter((l) => l)
      .map((l) => JSON.parse(l).loss as number);
    await Deno.remove(log);
  } catch { /* no log */ }
  return { code: out.code, stderr: dec.decode(out.stderr), ms, losses };
}

Deno.test({
  name: "race: two --launcher procs jobs started within 50 ms on one port never pair their ranks",
  timeout: 85_000,
  fn: async () => {
    const dir = await makeRunDir();
    // Each seed's own losses, from a job alone on its port.
    const ref = [
      await trainJob(dir, "ref1", 1, freeLocalPort()),
      await trainJob(dir, "ref2", 2, freeLocalPort()),
    ];
    for (const r of ref) assert.equal(r.code, 0, r.stderr);
    assert.notDeepEqual(ref[0].losses, ref[1].losses);
    const trials = 4;
    const report: string[] = [];
    for (let t = 0; t < trials; t++) {
      const port = freeLocalPort();
      const a = trainJob(dir, `a${t}`, 1, port);
      await new Promise((r) => setTimeout(r, (t * 17) % 50));
      const b = trainJob(dir, `b${t}`, 2, port);
      const jobs = await Promise.all([a, b]);
      let ok = 0;
      jobs.forEach((j, i) => {
        if (j.code === 0) {
          ok++;
          assert.deepEqual(
            j.losses,
            ref[i].losses,
            `trial ${t}: job ${"AB"[i]} trained someone else's losses`,
          );
        } else {
          // Failed for a reason it names: the port is taken, or its rank was refused naming both runs.
          assert.match(
            j.stderr,
            /already in use|belongs to run "[0-9a-f]{16}"; rank \d of run "[0-9a-f]{16}"/,
            `trial ${t}: job ${"AB"[i]}: ${j.stderr}`,
          );
          assert.ok(j.ms < 20000, `trial ${t}: job ${"AB"[i]} took ${j.ms} ms to fail`);
        }
      });
      assert.equal(ok, 1, `trial ${t}: ${jobs.map((j) => j.stderr).join("\n---\n")}`);
      report.push(jobs.map((j, i) => `${"AB"[i]}:${j.code}/${Math.round(j.ms)}ms`).join(" "));
    }
    console.log(`race trials (job:exit/ms): ${report.join(" | ")}`);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "race: two 2-node jobs with their own --rdzv-id on one port never pair their ranks",
  timeout: 60_000,
  fn: async () => {
    const xdg = await xdgDir();
    const report: string[] = [];
    for (let t = 0; t < 3; t++) {
      const port = freeLocalPort();
      const node = (job: number, nodeRank: number) =>
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            `${ROOT}cli/launch.ts`,
            "--nnodes=2",
            `--node-rank=${nodeRank}`,
            "--nproc-per-node=1",
            "--master-addr=127.0.0.1",
            `--master-port=${port}`,
            "--dist-timeout=10s",
            `--rdzv-id=job-${job}`,
            new URL(import.meta.url).pathname,
            String(job),
          ],
          env: { XDG_RUNTIME_DIR: xdg },
          stdout: "piped",
          stderr: "piped",
        }).output();
      // Job 1's node 1 first, then both node 0s and job 2's node 1, a few ms apart.
      const outs: Promise<Deno.CommandOutput>[] = [];
      for (const [job, nr] of [[1, 1], [2, 0], [1, 0], [2, 1]]) {
        outs.push(node(job, nr));
        await new Promise((r) => setTimeout(r, 5 + t * 10));
      }
      const [j1n1, j2n0, j1n0, j2n1] = await Promise.all(outs);
      const jobs = [[j1n0, j1n1], [j2n0, j2n1]];
      let ok = 0;
      jobs.forEach(([n0, n1], i) => {
        const err = dec.decode(n0.stderr) + dec.decode(n1.stderr);
        if (n0.code === 0 && n1.code === 0) {
          ok++;
          assert.match(dec.decode(n0.stdout), new RegExp(`TAGS ${i + 1},${i + 1}`));
        } else {
          assert.match(err, /already in use|belongs to run "job-\d"; rank 1 of run "job-\d"/, err);
        }
      });
      assert.equal(ok, 1);
      report.push(jobs.map(([n0, n1], i) => `job${i + 1}:${n0.code},${n1.code}`).join(" "));
    }
    console.log(`two-node race trials (job:node0,node1 exit): ${report.join(" | ")}`);
    await Deno.remove(xdg, { recursive: true });
  },
});
