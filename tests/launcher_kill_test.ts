/**
 * `--launcher procs`: ranks never outlive their launcher (issue #11, 5).
 *
 * A tiny TP=2 training run is started as a user would, then its launcher is
 * signalled mid-run: SIGKILL (the ranks notice their stdin pipe close and
 * exit), SIGTERM with `--save` (passed on: the ranks finish the step, save and
 * exit 0), SIGINT twice (the second kills them). Each time, every process of
 * the run (the launcher and everything under it, found in /proc before the
 * signal) must be gone within a bound, and the rendezvous port free again.
 *
 * Chaos, for each launcher mode (`procs`, Workers on two loopback nodes,
 * torchrun when PyTorch is installed): a random rank process or launcher is
 * killed (SIGKILL) at a random step, several trials (seed printed; env
 * `CHAOS_SEED` replays one); nothing may survive, every process must be gone
 * within `--dist-timeout` plus 5 s, and the run resumed from the last
 * checkpoint must give the uninterrupted run's losses.
 */

import assert from "node:assert/strict";
import { freeLocalPort } from "../collectives/tcp.ts";
import { SIGNAL_COPY_MS } from "../collectives/signal_copies.ts";
import { makeRunDir, PYTHON, TINY_MODEL_FLAGS, torchMissing } from "./cli_helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** Every process below `pid` (children, grandchildren …), from /proc. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(e.name), ppid);
    } catch { /* exited meanwhile */ }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) {
      if (pp === p) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(pid);
  return out;
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/**
 * Live processes of one run: those whose environment carries `marker` (the
 * run's own `XDG_RUNTIME_DIR=…`, which the launcher passes on to its ranks).
 * Null where /proc cannot be read.
 */
function runProcesses(marker: string): number[] | null {
  const pids: number[] = [];
  try {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        const env = Deno.readTextFileSync(`/proc/${e.name}/environ`).split("\0");
        if (env.includes(marker)) pids.push(Number(e.name));
      } catch { /* gone, or not ours to read */ }
    }
  } catch {
    return null;
  }
  return pids;
}

/**
 * Whether a process of the run (see {@link runProcesses}) listens on `port`
 * (Linux: /proc/net/tcp{,6}, state 0A, matched to the process's socket inodes).
 * Only the run's own listeners count: once the run's processes are gone, the
 * freed port may be taken at once by another test running at the same time (an
 * ephemeral port of its own). Without /proc: a probe `listen` on the port.
 */
function portHeldByRun(port: number, marker: string): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const pids = runProcesses(marker);
  let tables: string[];
  try {
    tables = ["/proc/net/tcp", "/proc/net/tcp6"].map((f) => Deno.readTextFileSync(f));
  } catch {
    tables = [];
  }
  if (pids === null || tables.length === 0) {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return false;
    } catch {
      return true;
    }
  }
  const inodes = new Set<string>();
  for (const table of tables) {
    for (const line of table.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === "0A" && f[1]?.endsWith(hex)) inodes.add(f[9]);
    }
  }
  if (inodes.size === 0) return false;
  for (const pid of pids) {
    try {
      for (const fd of Deno.readDirSync(`/proc/${pid}/fd`)) {
        const target = Deno.readLinkSync(`/proc/${pid}/fd/${fd.name}`);
        const m = /^socket:\[(\d+)\]$/.exec(target);
        if (m && inodes.has(m[1])) return true;
      }
    } catch { /* gone */ }
  }
  return false;
}

interface Run {
  code: number;
  stderr: string;
  /** ms from the (last) signal until no process of the run was left. */
  goneMs: number;
  /** The rank processes seen before the signal. */
  ranks: number[];
}

async function signalMidRun(dir: string, signals: Deno.Signal[], extra: string[]): Promise<Run> {
  const port = freeLocalPort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}cli/train.ts`,
      ...TINY_MODEL_FLAGS,
      "--train-iters",
      "2000",
      "--eval-interval",
      "100000",
      "--eval-iters",
      "1",
      "--sample-tokens",
      "0",
      "--log-interval",
      "1",
      "--data-path",
      `${dir}/data.txt`,
      "--tp",
      "2",
      "--nproc-per-node",
      "2",
      "--launcher",
      "procs",
      "--backend",
      "deno",
      "--master-port",
      String(port),
      "--dist-timeout",
      "20s",
      ...extra,
    ],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const dec = new TextDecoder();
  let stdout = "";
  let stderr = "";
  let seen: () => void = () => {};
  const started = new Promise<void>((r) => (seen = r));
  const readOut = (async () => {
    for await (const b of child.stdout) {
      stdout += dec.decode(b);
      if (/iteration\s+3\//.test(stdout)) seen();
    }
  })();
  const readErr = (async () => {
    for await (const b of child.stderr) stderr += dec.decode(b);
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ok = await Promise.race([
    started.then(() => true),
    child.status.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 40000))),
  ]);
  clearTimeout(timer);
  if (!ok) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await Promise.all([child.status, readOut, readErr]);
    throw new Error(`the run did not reach iteration 3:\n${stdout}\n${stderr}`);
  }
  const ranks = descendants(child.pid);
  assert.equal(ranks.length, 2, `expected 2 rank processes under the launcher, found ${ranks}`);
  let t0 = 0;
  for (const s of signals) {
    // Later than a copy of the first (collectives/signal_copies.ts) would come.
    if (t0) await new Promise((r) => setTimeout(r, SIGNAL_COPY_MS + 150));
    child.kill(s);
    t0 = performance.now();
  }
  const status = await child.status;
  // Ranks hold the launcher's stdout and stderr: both end only when every rank is gone too.
  await Promise.all([readOut, readErr]);
  while ([child.pid, ...ranks].some(alive) && performance.now() - t0 < 30000) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const goneMs = performance.now() - t0;
  const left = [child.pid, ...ranks].filter(alive);
  assert.deepEqual(left, [], `processes still alive: ${left}\n${stderr}`);
  const marker = `XDG_RUNTIME_DIR=${dir}/xdg`;
  const stray = runProcesses(marker) ?? [];
  assert.deepEqual(stray, [], `processes of the run still alive: ${stray}`);
  assert.ok(!portHeldByRun(port, marker), `port ${port} still held by the run`);
  return { code: status.code, stderr, goneMs, ranks };
}

Deno.test({
  name: "launcher SIGKILL: its ranks notice and exit, nothing survives",
  timeout: 80_000,
  fn: async () => {
    const dir = await makeRunDir();
    const r = await signalMidRun(dir, ["SIGKILL"], []);
    assert.equal(r.code, 137);
    assert.match(
      r.stderr,
      /the launcher \(pid \d+\) is gone \((its pipe closed|this process.s parent is now pid \d+)\); exiting/,
    );
    assert.ok(r.goneMs < 10000, `ranks took ${r.goneMs} ms to go`);
    console.log(`SIGKILL: every rank gone ${Math.round(r.goneMs)} ms after the launcher died`);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "launcher SIGTERM (with --save): passed on, the ranks save and exit 0, nothing survives",
  timeout: 80_000,
  fn: async () => {
    const dir = await makeRunDir();
    const r = await signalMidRun(dir, ["SIGTERM"], [
      "--save",
      `${dir}/ck`,
      "--save-interval",
      "100000",
    ]);
    assert.match(r.stderr, /launcher: SIGTERM: passed on to ranks 0, 1/);
    assert.equal(r.code, 0, r.stderr);
    const latest = Number((await Deno.readTextFile(`${dir}/ck/latest`)).trim());
    assert.ok(latest >= 3, `checkpoint at iteration ${latest}`);
    console.log(`SIGTERM: saved iteration ${latest}, all gone in ${Math.round(r.goneMs)} ms`);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "launcher SIGINT twice: the second kills the ranks, nothing survives",
  timeout: 80_000,
  fn: async () => {
    const dir = await makeRunDir();
    const r = await signalMidRun(dir, ["SIGINT", "SIGINT"], [
      "--save",
      `${dir}/ck`,
      "--save-interval",
      "100000",
    ]);
    assert.match(r.stderr, /launcher: SIGINT: passed on/);
    assert.notEqual(r.code, 0);
    assert.ok(r.goneMs < 10000, `ranks took ${r.goneMs} ms to go`);
    console.log(`SIGINT ×2: exit ${r.code}, all gone in ${Math.round(r.goneMs)} ms`);
    await Deno.remove(dir, { recursive: true });
  },
});

// ---------------------------------------------------------------------------
// Chaos: for each launcher mode, kill a random rank or the launcher at a random
// step, several trials. Nothing may survive, every process must be gone within
// --dist-timeout (plus a little for teardown), the last checkpoint must load,
// and a resumed run must continue from it with the uninterrupted run's losses.

const CHAOS_ITERS = 8;
const CHAOS_TIMEOUT_S = 4;

function chaosArgs(dir: string, iters = CHAOS_ITERS): string[] {
  return [
    ...TINY_MODEL_FLAGS,
    "--train-iters",
    String(iters),
    "--lr-warmup-iters",
    "2",
    "--eval-interval",
    "100000",
    "--eval-iters",
    "1",
    "--sample-tokens",
    "0",
    "--log-interval",
    "1",
    "--data-path",
    `${dir}/data.txt`,
    "--tp",
    "2",
    "--backend",
    "deno",
    "--dist-timeout",
    `${CHAOS_TIMEOUT_S}s`,
  ];
}

function jsonLosses(text: string): number[] {
  return text.trim().split("\n").filter((l) => l).map((l) => JSON.parse(l))
    .filter((r) => r.type !== "header").map((r) => r.loss as number);
}

/** A mulberry32 stream: the trials are reproducible from the printed seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Mode {
  name: string;
  /** Starts the job; returns its top-level processes (launchers). */
  start(dir: string, extra: string[]): Deno.ChildProcess[];
  /** What may be killed: the launcher(s) and the rank processes, by label. */
  victims(tops: Deno.ChildProcess[]): { label: string; pid: number }[];
}

function deno(args: string[], dir: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cli/train.ts`, ...args],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

const MODES: Mode[] = [
  {
    name: "procs",
    start: (dir, extra) => [
      deno([
        ...chaosArgs(dir),
        ...extra,
        "--nproc-per-node",
        "2",
        "--launcher",
        "procs",
        "--master-port",
        String(freeLocalPort()),
      ], dir),
    ],
    victims: ([l]) => [
      { label: "launcher", pid: l.pid },
      ...descendants(l.pid).map((pid, i) => ({ label: `rank process ${i}`, pid })),
    ],
  },
  {
    // Workers: one process per node, here two nodes on loopback with one rank each.
    name: "workers (2 nodes)",
    start: (dir, extra) => {
      const port = String(freeLocalPort());
      return [0, 1].map((nr) =>
        deno([
          ...chaosArgs(dir),
          ...extra,
          "--nnodes",
          "2",
          "--node-rank",
          String(nr),
          "--nproc-per-node",
          "1",
          "--master-addr",
          "127.0.0.1",
          "--master-port",
          port,
        ], dir)
      );
    },
    victims: (tops) => tops.map((t, i) => ({ label: `node ${i}`, pid: t.pid })),
  },
  {
    name: "torchrun",
    start: (dir, extra) => [
      new Deno.Command(PYTHON, {
        args: [
          "-m",
          "torch.distributed.run",
          "--nproc_per_node",
          "2",
          "--redirects",
          "1",
          "--tee",
          "1",
          "--monitor_interval",
          "1",
          "--master_port",
          String(freeLocalPort()),
          "--no_python",
          Deno.execPath(),
          "run",
          "-A",
          `${ROOT}cli/train.ts`,
          ...chaosArgs(dir),
          ...extra,
        ],
        cwd: ROOT,
        env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
    ],
    victims: ([a]) => [
      { label: "torchrun agent", pid: a.pid },
      ...descendants(a.pid).map((pid, i) => ({ label: `rank process ${i}`, pid })),
    ],
  },
];

/** Runs `tops` to the end, collecting their output; resolves with it. */
function collect(tops: Deno.ChildProcess[]) {
  let text = "";
  const dec = new TextDecoder();
  const reads = tops.flatMap((t) =>
    [t.stdout, t.stderr].map(async (s) => {
      for await (const b of s) text += dec.decode(b);
    })
  );
  return { text: () => text, done: Promise.all([...tops.map((t) => t.status), ...reads]) };
}

for (const mode of MODES) {
  const noTorch = mode.name === "torchrun" && torchMissing() !== null;
  if (noTorch) {
    console.warn(
      `launcher_kill_test: chaos under torchrun SKIPPED: no PyTorch for ${PYTHON} ` +
        `(apt-get install -y python3-torch libopenblas0-pthread)`,
    );
  }
  Deno.test({
    name:
      `chaos (${mode.name}): a random rank or launcher killed at a random step; nothing survives, ` +
      `all gone within --dist-timeout, the last checkpoint resumes with the same losses` +
      (noTorch ? " [SKIPPED: no PyTorch]" : ""),
    ignore: noTorch,
    timeout: 88_000,
    fn: async () => {
      const seed = Number(Deno.env.get("CHAOS_SEED") ?? Date.now() % 1e9);
      const random = rng(seed);
      const dir = await makeRunDir();
      // The uninterrupted run's losses (Workers in one process; every launcher gives the same).
      const ref = deno([
        ...chaosArgs(dir),
        "--nproc-per-node",
        "2",
        "--log-json",
        `${dir}/ref.jsonl`,
      ], dir);
      const refOut = collect([ref]);
      await refOut.done;
      assert.equal((await ref.status).code, 0, refOut.text());
      const want = jsonLosses(await Deno.readTextFile(`${dir}/ref.jsonl`));
      assert.equal(want.length, CHAOS_ITERS);
      const trials = mode.name === "torchrun" ? 2 : 3;
      const first = Math.floor(random() * 3);
      const report: string[] = [];
      for (let t = 0; t < trials; t++) {
        const ck = `${dir}/ck${t}`;
        const step = 2 + Math.floor(random() * 3);
        const tops = mode.start(dir, ["--save", ck, "--save-interval", "1"]);
        const out = collect(tops);
        const deadline = performance.now() + 40000;
        const reached = () => new RegExp(`iteration\\s+${step}/`).test(out.text());
        while (!reached() && performance.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        const victims = mode.victims(tops);
        const all = [...new Set([...tops.map((p) => p.pid), ...victims.map((v) => v.pid)])];
        // A random victim, rotating so that the trials cover the launcher and the ranks.
        const victim = victims[(first + t) % victims.length];
        if (!reached()) {
          for (const p of all) {
            try {
              Deno.kill(p, "SIGKILL");
            } catch { /* gone */ }
          }
          await out.done;
          throw new Error(`trial ${t}: the run did not reach iteration ${step}:\n${out.text()}`);
        }
        Deno.kill(victim.pid, "SIGKILL");
        const killedRank = mode.name === "procs" && victim.label.startsWith("rank process");
        const t0 = performance.now();
        const bound = (CHAOS_TIMEOUT_S + 5) * 1000;
        while (all.some(alive) && performance.now() - t0 < bound + 10000) {
          await new Promise((r) => setTimeout(r, 25));
        }
        const goneMs = performance.now() - t0;
        const left = all.filter(alive);
        for (const p of left) {
          try {
            Deno.kill(p, "SIGKILL");
          } catch { /* gone */ }
        }
        await out.done;
        assert.deepEqual(
          left,
          [],
          `trial ${t} (seed ${seed}): still alive after killing ${victim.label}`,
        );
        if (killedRank) {
          // The launcher names the rank killed from outside, which could not say so itself.
          assert.match(out.text(), new RegExp(`\\(pid ${victim.pid}\\) was killed by SIGKILL`));
          assert.equal((await tops[0].status).code, 1, out.text());
        }
        assert.ok(
          goneMs < bound,
          `trial ${t} (seed ${seed}): ${goneMs} ms to be gone after killing ${victim.label}`,
        );
        // The last checkpoint loads, and the run resumed from it gives the uninterrupted losses.
        const latest = Number((await Deno.readTextFile(`${ck}/latest`)).trim());
        assert.ok(latest >= 1 && latest <= CHAOS_ITERS, `trial ${t}: latest ${latest}`);
        if (latest < CHAOS_ITERS) {
          const res = deno([
            ...chaosArgs(dir),
            "--nproc-per-node",
            "2",
            "--load",
            ck,
            "--log-json",
            `${dir}/res${t}.jsonl`,
          ], dir);
          const resOut = collect([res]);
          await resOut.done;
          assert.equal((await res.status).code, 0, resOut.text());
          assert.deepEqual(
            jsonLosses(await Deno.readTextFile(`${dir}/res${t}.jsonl`)),
            want.slice(latest),
            `trial ${t} (seed ${seed}): resumed from iteration ${latest}`,
          );
        }
        report.push(
          `killed ${victim.label} at step ${step}: all ${all.length} processes gone in ` +
            `${Math.round(goneMs)} ms, resumed from iteration ${latest}`,
        );
      }
      console.log(`chaos ${mode.name} (seed ${seed}):\n  ${report.join("\n  ")}`);
      await Deno.remove(dir, { recursive: true });
    },
  });
}

Deno.test({
  name:
    "procs: a rank that fails at start-up says why, and its siblings are stopped within seconds",
  timeout: 60_000,
  fn: async () => {
    const dir = await makeRunDir();
    const t0 = performance.now();
    const p = deno([
      ...TINY_MODEL_FLAGS,
      "--train-iters",
      "3",
      "--data-path",
      `${dir}/data.txt`,
      "--nproc-per-node",
      "3",
      "--launcher",
      "procs",
      "--devices",
      "name:llvmpipe,name:no-such-gpu,name:llvmpipe",
      // Before, the siblings waited this out (plus 5 s) for the missing peer.
      "--dist-timeout",
      "120s",
    ], dir);
    const out = collect([p]);
    await out.done;
    const ms = performance.now() - t0;
    assert.equal((await p.status).code, 1, out.text());
    assert.match(out.text(), /rank 1:\nerror: No WebGPU adapter .*no-such-gpu/);
    assert.ok(ms < 40_000, `${Math.round(ms)} ms to stop:\n${out.text()}`);
    await Deno.remove(dir, { recursive: true });
  },
});
