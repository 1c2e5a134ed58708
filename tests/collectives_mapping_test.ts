/**
 * TCP links between processes on one host with their payloads in a shared
 * mapping (collectives/mapping.ts): every op against the reference, payloads
 * that go through the socket when the peer has not emptied a slot yet, eager
 * receives that take payloads from their slots before their headers arrive
 * (in order with those that come through the socket), either side refusing, a
 * foreign file refused, and no file left in /dev/shm.
 */

import assert from "node:assert/strict";
import { resolveDistConfig } from "../collectives/env.ts";
import { type Frame, KIND_DATA } from "../collectives/frame.ts";
import { Communicator } from "../collectives/group.ts";
import { runWorkers } from "../collectives/launch.ts";
import { MAPPING_DEPTH, PairMapping, TOKEN_BYTES } from "../collectives/mapping.ts";
import { StoreServer } from "../collectives/store.ts";
import {
  freeLocalPort,
  MAPPING_FILE_PREFIX,
  removeMappingFilesOf,
  type TcpLink,
} from "../collectives/tcp.ts";

const OPS = new URL("./collectives_ops_worker.ts", import.meta.url);
const MODES = new URL("./collectives_modes_worker.ts", import.meta.url);
const SIZES = "0,1,7,4097,300001,4194304";

/** This process's mapping files still named in /dev/shm. */
function leftovers(): string[] {
  try {
    return [...Deno.readDirSync("/dev/shm")].map((e) => e.name)
      .filter((n) => n.startsWith(`webgpu-megatron-${Deno.pid}-`));
  } catch {
    return [];
  }
}

/** Message `i` of a test stream: `floats` f32 values of an all-gather, call `i`. */
function dataFrame(i: number, floats: number): Frame {
  return {
    kind: KIND_DATA,
    op: "allGather",
    seq: i,
    count: floats,
    elemBytes: 4,
    extra: 0,
    stage: 0,
    sub: 0,
    bytes: floats * 4,
  };
}

/** Two ranks of one world in this process, each as if in its own process (TCP between them). */
async function pair(mapped: [boolean, boolean]): Promise<[Communicator, Communicator, () => void]> {
  const server = StoreServer.listen("127.0.0.1", 0);
  const store = { hostname: "127.0.0.1", port: server.port };
  const comms = await Promise.all(
    [0, 1].map((rank) =>
      Communicator.create({
        rank,
        world: 2,
        store,
        timeoutMs: 10000,
        hostShm: mapped[rank],
      })
    ),
  );
  return [comms[0], comms[1], () => {
    for (const c of comms) c.close();
    server.close();
  }];
}

for (const n of [2, 3]) {
  Deno.test(`mapping: every op matches the reference over mapped links, ${n} ranks`, async () => {
    const c = resolveDistConfig({
      "nproc-per-node": String(n),
      "dist-timeout": "30s",
      "master-port": String(freeLocalPort()),
    }, {});
    const res = await runWorkers(c, OPS, [SIZES], {
      gpus: [],
      forceTcp: true,
      hostShm: true,
    });
    assert.ok(res.ok, JSON.stringify(res.ranks));
    for (const r of res.ranks) assert.deepEqual(r.result, []);
  });
}

Deno.test("mapping: a rank that never opens the link makes the others fail in time, naming it", async () => {
  const c = resolveDistConfig({
    "nproc-per-node": "3",
    "dist-timeout": "1s",
    "master-port": String(freeLocalPort()),
  }, {});
  const t0 = performance.now();
  const res = await runWorkers(c, MODES, ["hang", "2", "2500"], {
    gpus: [],
    log: false,
    forceTcp: true,
    hostShm: true,
  });
  const took = performance.now() - t0;
  assert.equal(res.ok, false);
  for (const r of res.ranks.slice(0, 2)) {
    assert.equal(r.ok, false);
    assert.match(r.error!, /rank 2/);
    assert.match(r.error!, /died, hung, or never called the collective/);
  }
  assert.ok(took < 6000, `took ${took} ms`);
  assert.deepEqual(leftovers(), []);
});

Deno.test("mapping: a full slot sends through the socket; messages stay in order", async () => {
  const [a, b, close] = await pair([true, true]);
  try {
    const [la, lb] = await Promise.all([a.link("0,1", 1), b.link("0,1", 0)]) as TcpLink[];
    assert.ok(la.mapped && lb.mapped, "a link between two ranks on this host is mapped");
    assert.deepEqual(leftovers(), [], "the file's name is removed once both sides mapped it");
    // More messages than slots, sent before the peer reads any: the first
    // MAPPING_DEPTH go through the mapping, the rest through the socket.
    const count = MAPPING_DEPTH + 3, floats = 100_000;
    const frame = (i: number) => dataFrame(i, floats);
    const src = Array.from({ length: count }, (_, i) => {
      const off = a.arena.alloc(floats * 4);
      a.arena.f32(off, floats).forEach((_, j, arr) => arr[j] = i * 1000 + (j % 997));
      return off;
    });
    for (let i = 0; i < count; i++) la.send(frame(i), src[i]);
    assert.equal(la.mappedSends, MAPPING_DEPTH);
    await la.flush();
    for (let i = 0; i < count; i++) {
      const at = await lb.recv(frame(i));
      const got = b.arena.f32(at, floats);
      const bad = got.findIndex((x, j) => x !== i * 1000 + (j % 997));
      assert.equal(bad, -1, `message ${i}: value ${bad} differs`);
      lb.release();
    }
  } finally {
    close();
  }
  assert.deepEqual(leftovers(), []);
});

Deno.test("mapping: an eager receive takes messages from their slots, in order with the socket's", async () => {
  const [a, b, close] = await pair([true, true]);
  try {
    const [la, lb] = await Promise.all([a.link("0,1", 1), b.link("0,1", 0)]) as TcpLink[];
    const floats = 100_000;
    const frame = (i: number) => dataFrame(i, floats);
    const src = (i: number) => {
      const off = a.arena.alloc(floats * 4);
      a.arena.f32(off, floats).forEach((_, j, arr) => arr[j] = i * 1000 + (j % 997));
      return off;
    };
    const check = (i: number, at: number) => {
      const got = b.arena.f32(at, floats);
      const bad = got.findIndex((x, j) => x !== i * 1000 + (j % 997));
      assert.equal(bad, -1, `message ${i}: value ${bad} differs`);
      lb.release();
    };
    // Slots first, then the socket (the slots are full): no event-loop turn
    // between the sends and the eager receives, so the first MAPPING_DEPTH come
    // from their slots before the reader sees their headers, and the rest from
    // the socket once the reader has passed over those headers.
    const count = MAPPING_DEPTH + 3;
    for (let i = 0; i < count; i++) la.send(frame(i), src(i));
    for (let i = 0; i < count; i++) check(i, await lb.recv(frame(i), true));
    assert.equal(lb.slotReceives, MAPPING_DEPTH);
    await la.flush();
    // Then one the reader saw first (taken from its queue, not its slot), and one
    // not sent yet when the receiver looks: it waits on the socket as before.
    la.send(frame(count), src(count));
    await la.flush();
    await new Promise((r) => setTimeout(r, 20));
    check(count, await lb.recv(frame(count), true));
    assert.equal(lb.slotReceives, MAPPING_DEPTH);
    const later = lb.recv(frame(count + 1), true);
    la.send(frame(count + 1), src(count + 1));
    check(count + 1, await later);
    // A message taken from its slot at once (no event-loop turn since its send).
    la.send(frame(count + 2), src(count + 2));
    check(count + 2, await lb.recv(frame(count + 2), true));
    assert.equal(lb.slotReceives, MAPPING_DEPTH + 1);
    // A later message in the slot the wanted one would use: the wanted one went
    // through the socket (every slot was full when it was sent), so the receive
    // leaves the slot alone and takes it from the socket.
    let next = count + 3;
    const first = next;
    for (let i = 0; i < MAPPING_DEPTH + 1; i++) la.send(frame(next), src(next++));
    check(first, await lb.recv(frame(first), true)); // frees the first slot
    la.send(frame(next), src(next++)); // into that slot, ahead of its turn
    for (let i = first + 1; i < next; i++) check(i, await lb.recv(frame(i), true));
    // (the last one came from its slot or the reader's queue, whichever got there first)
    assert.ok(lb.slotReceives >= MAPPING_DEPTH + 1 + MAPPING_DEPTH, `${lb.slotReceives}`);
    // A mismatch taken from a slot is still an error.
    await la.flush();
    la.send({ ...frame(next), seq: 999 }, src(next));
    await assert.rejects(lb.recv(frame(next), true), /collective mismatch/);
  } finally {
    close();
  }
  assert.deepEqual(leftovers(), []);
});

for (const refuse of [0, 1]) {
  Deno.test(`mapping: rank ${refuse} refusing gives plain TCP on both sides`, async () => {
    const [a, b, close] = await pair(refuse === 0 ? [false, true] : [true, false]);
    try {
      const [la, lb] = await Promise.all([a.link("0,1", 1), b.link("0,1", 0)]) as TcpLink[];
      assert.ok(!la.mapped && !lb.mapped);
      const xs = [a, b].map((c) => {
        const g = c.worldGroup();
        const x = g.alloc(300_001);
        x.forEach((_, i, arr) => arr[i] = c.rank + i % 5);
        return { g, x };
      });
      await Promise.all(xs.map(({ g, x }) => g.allReduce(x)));
      for (const { x } of xs) assert.equal(x.findIndex((v, i) => v !== 1 + 2 * (i % 5)), -1);
    } finally {
      close();
    }
    assert.deepEqual(leftovers(), []);
  });
}

Deno.test("mapping: a taken name, a missing file, another token or size are refused", () => {
  const path = `/dev/shm/webgpu-megatron-${Deno.pid}-test`;
  const token = crypto.getRandomValues(new Uint8Array(TOKEN_BYTES));
  const made = PairMapping.create(path, token, 65536, 2);
  try {
    assert.throws(() => PairMapping.create(path, token, 65536, 2), /cannot create/);
    const other = token.map((x) => x ^ 1);
    assert.throws(() => PairMapping.open(path, other, 65536, 2), /token differs/);
    assert.throws(() => PairMapping.open(path, token, 65536, 4), /has \d+ bytes, not \d+/);
    assert.throws(() => PairMapping.open(`${path}-none`, token, 65536, 2), /cannot open/);
    const ok = PairMapping.open(path, token, 65536, 2);
    ok.unmap();
    ok.unmap(); // idempotent
  } finally {
    made.unmap(); // removes the name too
  }
  assert.deepEqual(leftovers(), []);
});

Deno.test("mapping: the files a killed rank left are removed by its pid, and no one else's", async () => {
  // Pids no process here has (above Linux's default pid_max of 4,194,304).
  const dead = 4_999_991, other = 4_999_992;
  const left = [`${MAPPING_FILE_PREFIX}${dead}-a1`, `${MAPPING_FILE_PREFIX}${dead}-b2`];
  const kept = [`${MAPPING_FILE_PREFIX}${other}-c3`, `${MAPPING_FILE_PREFIX}${dead}0-d4`];
  for (const p of [...left, ...kept]) Deno.writeFileSync(p, new Uint8Array(8));
  try {
    assert.deepEqual((await removeMappingFilesOf([dead])).sort(), left.sort());
    for (const p of left) assert.throws(() => Deno.statSync(p), Deno.errors.NotFound);
    for (const p of kept) assert.ok(Deno.statSync(p).isFile, p);
  } finally {
    for (const p of [...left, ...kept]) {
      try {
        Deno.removeSync(p);
      } catch { /* removed */ }
    }
  }
});
