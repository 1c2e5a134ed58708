/** Unit tests of the collectives building blocks that need no peers. */

import assert from "node:assert/strict";
import { Arena } from "../collectives/arena.ts";
import {
  assignDevices,
  cpuListCount,
  driPrimeFor,
  type HostGpu,
  onlineCpuCount,
  sharedAdapterWarning,
} from "../collectives/devices.ts";
import {
  firstSlurmHost,
  HOST_SHM_VARIABLE,
  parseDuration,
  resolveDistConfig,
  splitDistArgs,
} from "../collectives/env.ts";
import { decodeHeader, encodeHeader, type Frame } from "../collectives/frame.ts";
import { parallelLayout } from "../collectives/layout.ts";
import { chunkRange } from "../collectives/ring.ts";
import { HalfSummer } from "../collectives/half_sum.ts";
import { halfCodec } from "../models/parallel/half_codec.ts";
import type { HalfFormat } from "../core/half.ts";

Deno.test("wasm SIMD kernels match a plain JS reference on odd sizes (exact)", () => {
  const arena = Arena.create();
  for (const n of [0, 1, 3, 15, 16, 17, 63, 64, 65, 1001]) {
    const a = arena.alloc(n * 4 + 4), b = arena.alloc(n * 4 + 4), c = arena.alloc(n * 4 + 4);
    const d = arena.alloc(n * 4 + 4);
    const fa = arena.f32(a, n + 1), fb = arena.f32(b, n + 1), fc = arena.f32(c, n + 1);
    const fd = arena.f32(d, n + 1);
    for (let i = 0; i <= n; i++) {
      fa[i] = (i % 9) - 4.5;
      fb[i] = (i * 5 % 7) - 3;
    }
    fc.fill(-99);
    fd.fill(-99);
    arena.reducer.add2(c, d, a, b, n, 0.25);
    for (let i = 0; i < n; i++) {
      assert.equal(fc[i], Math.fround((fa[i] + fb[i]) * 0.25));
      assert.equal(fd[i], fc[i]);
    }
    assert.equal(fc[n], -99, "no write past the end");
    arena.reducer.max(c, a, b, n);
    for (let i = 0; i < n; i++) assert.equal(fc[i], Math.max(fa[i], fb[i]));
    arena.reducer.add(a, a, b, n, 1);
    for (let i = 0; i < n; i++) assert.equal(fa[i], Math.fround((i % 9) - 4.5 + fb[i]));
  }
});

/** Whether 16-bit `b` is a NaN in `format`. */
const isNaN16 = (b: number, format: HalfFormat) =>
  format === "bf16"
    ? (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0
    : (b & 0x7c00) === 0x7c00 && (b & 0x3ff) !== 0;

for (const format of ["bf16", "fp16"] as HalfFormat[]) {
  Deno.test(`${format} sums in wasm SIMD give the JavaScript codec's bits (NaN, inf, subnormals, ties, tails, unaligned)`, () => {
    const arena = Arena.create();
    const simd = halfCodec(format);
    const js = { ...simd, simd: undefined }; // the same format summed in JavaScript
    const chosen = format === "bf16"
      ? [0x7f80, 0xff80, 0x7fc1, 0x3f81, 0x0001]
      : [0x7c00, 0xfc00, 0x7e01, 0x0001, 0x3c01, 0x7bff, 0x8400];
    let x = 2463534242;
    const bits = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 16;
    for (const n of [1, 7, 8, 9, 1000, 16387]) {
      // three source vectors at 2-byte (not 16-byte) aligned offsets: random bit patterns
      // (every class of value: NaN, ±inf, subnormals, ties, overflow) and a few chosen ones
      const srcs = [0, 1, 2].map(() => arena.alloc(2 * n + 2) + 2);
      for (const o of srcs) {
        const v = new Uint16Array(arena.buffer, o, n);
        for (let i = 0; i < n; i++) v[i] = bits();
        v.set(chosen.slice(0, n));
      }
      for (const k of [1, 2, 3]) {
        for (const scale of [1, 1 / 3]) {
          const got = arena.alloc(2 * n), want = arena.alloc(2 * n), got2 = arena.alloc(2 * n);
          new HalfSummer(arena, simd).sumInto([got, got2], srcs.slice(0, k), n, scale);
          new HalfSummer(arena, js).sumInto([want], srcs.slice(0, k), n, scale);
          const w = new Uint16Array(arena.buffer, want, n);
          for (const [o, what] of [[got, "first"], [got2, "second"]] as const) {
            const g = new Uint16Array(arena.buffer, o, n);
            for (let i = 0; i < n; i++) {
              // a NaN's payload is the hardware's choice (WebAssembly leaves it open)
              if (g[i] !== w[i] && !(isNaN16(g[i], format) && isNaN16(w[i], format))) {
                assert.fail(
                  `${what}: ${k} sources, n ${n}, scale ${scale}, [${i}]: ${g[i]} vs ${w[i]}`,
                );
              }
            }
          }
        }
      }
    }
  });
}

Deno.test("arena regions are found again by key; abort records the first failure", () => {
  const arena = Arena.create();
  let inits = 0;
  const a = arena.region("x", 100, () => inits++);
  assert.equal(arena.region("x", 100, () => inits++), a);
  assert.notEqual(arena.region("y", 100), a);
  assert.equal(inits, 1);
  assert.equal(arena.aborted(), null);
  arena.abort(3, "boom");
  arena.abort(4, "later");
  assert.deepEqual(arena.aborted(), { rank: 3, message: "boom" });
  const big = arena.alloc(8 << 20);
  assert.ok(arena.buffer.byteLength >= big + (8 << 20));
});

Deno.test("chunkRange splits evenly, including sizes smaller than n", () => {
  for (const [count, n] of [[0, 3], [1, 4], [2, 4], [7, 3], [13, 4], [100, 7]]) {
    let next = 0;
    for (let i = 0; i < n; i++) {
      const [s, len] = chunkRange(count, n, i);
      assert.equal(s, next);
      assert.ok(len === Math.floor(count / n) || len === Math.ceil(count / n));
      next += len;
    }
    assert.equal(next, count);
  }
});

Deno.test("frame headers round-trip, including counts above 2^32", () => {
  const f: Frame = {
    kind: 1,
    op: "reduceScatter(avg)",
    seq: 12345,
    count: 2 ** 33 + 7,
    elemBytes: 4,
    extra: 3,
    stage: 5,
    sub: 99,
    bytes: 1 << 20,
  };
  const h = new Int32Array(8);
  encodeHeader(h, f);
  assert.deepEqual(decodeHeader(h), f);
});

Deno.test("TP groups are consecutive ranks, DP groups the same position across them", () => {
  const l = parallelLayout(8, 2);
  assert.deepEqual(l.tpGroups, [[0, 1], [2, 3], [4, 5], [6, 7]]);
  assert.deepEqual(l.dpGroups, [[0, 2, 4, 6], [1, 3, 5, 7]]);
  assert.deepEqual(parallelLayout(4, 4).dpGroups, [[0], [1], [2], [3]]);
  assert.throws(() => parallelLayout(6, 4), /must divide/);
});

Deno.test("rank, world and nodes come from flags, torchrun, Slurm or Open MPI", () => {
  const { flags, rest } = splitDistArgs([
    "--nproc-per-node=2",
    "--nnodes",
    "3",
    "--node-rank",
    "1",
    "--master-addr",
    "10.0.0.1",
    "--dist-timeout",
    "500ms",
    "train",
    "--lr",
    "1",
  ]);
  assert.deepEqual(rest, ["train", "--lr", "1"]);
  const c = resolveDistConfig(flags, { RANK: "5" });
  assert.equal(c.source, "flags");
  assert.deepEqual([c.world, c.rankBase, c.localWorld, c.masterAddr, c.masterPort], [
    6,
    2,
    2,
    "10.0.0.1",
    29500,
  ]);
  assert.equal(c.distTimeoutMs, 500);
  assert.equal(c.nodes, 3);
  const t = resolveDistConfig({}, {
    RANK: "3",
    WORLD_SIZE: "4",
    LOCAL_RANK: "1",
    MASTER_ADDR: "h0",
    MASTER_PORT: "1234",
  });
  assert.deepEqual([t.source, t.world, t.rankBase, t.localWorld, t.localRankBase, t.masterPort], [
    "torchrun",
    4,
    3,
    1,
    1,
    1234,
  ]);
  assert.equal(t.nodes, undefined, "torchrun without LOCAL_WORLD_SIZE does not say");
  const t2 = resolveDistConfig({}, { RANK: "3", WORLD_SIZE: "4", LOCAL_WORLD_SIZE: "2" });
  assert.equal(t2.nodes, 2);
  const s = resolveDistConfig({}, {
    SLURM_PROCID: "2",
    SLURM_NTASKS: "8",
    SLURM_LOCALID: "2",
    SLURM_JOB_NODELIST: "gpu[03-06,09],cpu1",
    SLURM_NNODES: "4",
  });
  assert.equal(s.nodes, 4);
  assert.deepEqual([s.source, s.rankBase, s.world, s.masterAddr], ["slurm", 2, 8, "gpu03"]);
  const o = resolveDistConfig({}, {
    OMPI_COMM_WORLD_RANK: "1",
    OMPI_COMM_WORLD_SIZE: "2",
    OMPI_COMM_WORLD_LOCAL_RANK: "1",
    MASTER_ADDR: "m",
  });
  assert.deepEqual([o.source, o.rankBase, o.world, o.localRankBase], ["openmpi", 1, 2, 1]);
  assert.equal(o.nodes, undefined);
  assert.throws(
    () => resolveDistConfig({}, { OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "2" }),
    /MASTER_ADDR/,
  );
  assert.throws(() => resolveDistConfig({ "node-rank": "2", nnodes: "2" }, {}), /below/);
  // Half-set torchrun variables: refused, not a silent single-process run or a wait.
  assert.throws(() => resolveDistConfig({}, { RANK: "1" }), /RANK is set but WORLD_SIZE is not/);
  // ... but a Slurm script's own RANK beside Slurm's variables is Slurm's job.
  const slurmRank = resolveDistConfig({}, {
    RANK: "1",
    SLURM_PROCID: "1",
    SLURM_NTASKS: "2",
    MASTER_ADDR: "h0",
  });
  assert.deepEqual([slurmRank.source, slurmRank.rankBase], ["slurm", 1]);
  assert.throws(
    () => resolveDistConfig({}, { WORLD_SIZE: "2" }),
    /WORLD_SIZE is set but RANK is not/,
  );
  assert.throws(
    () => resolveDistConfig({}, { RANK: "0", WORLD_SIZE: "2", LOCAL_WORLD_SIZE: "4" }),
    /LOCAL_WORLD_SIZE 4 is above WORLD_SIZE 2/,
  );
  assert.throws(
    () =>
      resolveDistConfig({}, { RANK: "1", WORLD_SIZE: "4", LOCAL_RANK: "3", LOCAL_WORLD_SIZE: "2" }),
    /LOCAL_RANK 3 is not below LOCAL_WORLD_SIZE 2/,
  );
  assert.equal(resolveDistConfig({}, {}).source, "single");
  assert.equal(resolveDistConfig({}, {}).nodes, 1);
  assert.equal(firstSlurmHost("node7"), "node7");
  assert.equal(parseDuration("2m"), 120000);
  assert.equal(parseDuration("30"), 30000);
  for (const zero of ["0", "0s", "0.0001s", "0ms"]) {
    assert.throws(() => parseDuration(zero), /must be at least 1 ms/, zero);
  }
  // --host-shm: a flag, or the variable the procs launcher sets for its ranks
  assert.equal(resolveDistConfig({}, {}).hostShm, undefined);
  assert.equal(resolveDistConfig(splitDistArgs(["--host-shm", "off"]).flags, {}).hostShm, false);
  assert.equal(resolveDistConfig({}, { [HOST_SHM_VARIABLE]: "on" }).hostShm, true);
  assert.equal(
    resolveDistConfig({ "host-shm": "on" }, { [HOST_SHM_VARIABLE]: "off" }).hostShm,
    true,
  );
  assert.throws(() => resolveDistConfig({ "host-shm": "yes" }, {}), /--host-shm must be on or off/);
});

Deno.test("layout flags in one of several processes a launcher started are refused", () => {
  // torchrun --nproc_per_node 2 … train --nproc-per-node 2: each process ran the whole job.
  assert.throws(
    () => resolveDistConfig({ "nproc-per-node": "2" }, { RANK: "1", WORLD_SIZE: "2" }),
    /torchrun started this process as one of 2 \(WORLD_SIZE=2\), and --nproc-per-node, --nnodes and --node-rank would start a whole job of 1 node in each/,
  );
  assert.throws(
    () => resolveDistConfig({ "nproc-per-node": "4" }, { SLURM_PROCID: "0", SLURM_NTASKS: "2" }),
    /Slurm started this process as one of 2 \(SLURM_NTASKS=2\)/,
  );
  assert.throws(
    () => resolveDistConfig({ "nnodes": "1" }, { OMPI_COMM_WORLD_SIZE: "3" }),
    /Open MPI started this process as one of 3/,
  );
  // One launcher process per node, the nodes counted by --nnodes: a layout the flags describe.
  const slurm = resolveDistConfig(
    { "nproc-per-node": "4", "nnodes": "2", "node-rank": "1", "master-addr": "h0" },
    { SLURM_PROCID: "1", SLURM_NTASKS: "2" },
  );
  assert.deepEqual([slurm.source, slurm.world, slurm.rankBase], ["flags", 8, 4]);
  // A launcher of one process (torchrun --nproc_per_node 1 on one node) leaves the flags theirs.
  assert.equal(
    resolveDistConfig({ "nproc-per-node": "2" }, { RANK: "0", WORLD_SIZE: "1" }).world,
    2,
  );
});

Deno.test("the host's online CPUs are counted from the kernel's list, whatever a rank is bound to", () => {
  // Under `mpirun -np 2` on 2 cores each rank is bound to one (navigator.hardwareConcurrency 1),
  // and the crowded-cores warning fired for 2 ranks on 2 cores.
  assert.equal(cpuListCount("0-1\n"), 2);
  assert.equal(cpuListCount("0-3,6,8-9"), 7);
  assert.equal(cpuListCount("5"), 1);
  assert.equal(cpuListCount("0-x"), undefined);
  assert.equal(onlineCpuCount("/nonexistent/cpu/online"), undefined);
});

Deno.test("more ranks than CPU cores on a host without a GPU are warned about, once", () => {
  assert.match(
    sharedAdapterWarning(64, 0, 2) ?? "",
    /^warning: 64 ranks on this node share its default adapter \(no GPU found in \/sys\/class\/drm\) and its 2 CPU cores/,
  );
  assert.equal(sharedAdapterWarning(2, 0, 2), null, "a rank a core");
  assert.equal(sharedAdapterWarning(8, 1, 2), null, "a GPU found: train refuses instead");
  assert.equal(sharedAdapterWarning(8, 0, 2, "name:llvmpipe"), null, "--devices chosen");
});

Deno.test("device mapping: one GPU per local rank, --devices overrides, single GPU shares", () => {
  const gpus: HostGpu[] = [{ pci: "0000:41:00.0" }, { pci: "0000:01:00.0" }].sort((a, b) =>
    a.pci.localeCompare(b.pci)
  );
  const auto = assignDevices(4, 0, undefined, gpus);
  assert.deepEqual(auto.map((a) => a.driPrime), [
    "pci-0000_01_00_0!",
    "pci-0000_41_00_0!",
    "pci-0000_01_00_0!",
    "pci-0000_41_00_0!",
  ]);
  const explicit = assignDevices(2, 0, "1,0", gpus);
  assert.deepEqual(explicit.map((a) => a.pci), ["0000:41:00.0", "0000:01:00.0"]);
  const byName = assignDevices(2, 0, "name:RTX A,name:RTX B", gpus);
  assert.deepEqual(byName.map((a) => a.dawnOptions), [["adapter=RTX A"], ["adapter=RTX B"]]);
  const local1 = assignDevices(1, 1, "pci:0000:01:00.0,0000:41:00.0", gpus);
  assert.equal(local1[0].pci, "0000:41:00.0");
  assert.equal(local1[0].localRank, 1);
  const single = assignDevices(2, 0, undefined, [{ pci: "0000:00:02.0" }]);
  assert.ok(single.every((a) => a.index === null && a.driPrime === undefined));
  assert.throws(() => assignDevices(2, 0, "0,5", gpus), /GPU 5 does not exist/);
  assert.throws(() => assignDevices(3, 0, "0,1", gpus), /lists 2 devices/);
  // More entries than the node's ranks, where the launch says how many: refused.
  assert.throws(
    () => assignDevices(2, 0, "0,1,0", gpus, 2),
    /lists 3 devices but this node runs 2 ranks/,
  );
  // A torchrun process (one rank, the node's count unknown) reads its own entry.
  assert.equal(assignDevices(1, 0, "1,0,1", gpus)[0].pci, "0000:41:00.0");
  assert.equal(assignDevices(2, 0, "0", gpus, 2).length, 2);
  assert.equal(driPrimeFor("0000:0a:00.1"), "pci-0000_0a_00_1!");
});
