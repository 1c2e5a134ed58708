/**
 * Under real torchrun (issue #11, 6): `python3 -m torch.distributed.run
 * --nproc_per_node 2 --no_python deno run … cli/train.ts --tp 2` trains with
 * the same losses as `--launcher procs`. torchrun's static rendezvous serves
 * its own store on MASTER_PORT (`TORCHELASTIC_USE_AGENT_STORE=True`), so ours
 * takes MASTER_PORT + 1. The ranks watch torchrun's agent: when it is killed
 * (SIGKILL), they exit.
 *
 * Needs Debian's PyTorch (`apt-get install -y python3-torch
 * libopenblas0-pthread`); skipped, saying so, when `/usr/bin/python3 -c
 * "import torch"` fails. torch 1.13 on Python 3.11 needs `--redirects 1 --tee 1`
 * for its own argument bug.
 */

import assert from "node:assert/strict";
import { freeLocalPort } from "../collectives/tcp.ts";
import { jsonlLosses, makeRunDir, PYTHON, TINY_MODEL_FLAGS, torchMissing } from "./cli_helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const dec = new TextDecoder();

const missing = torchMissing();
if (missing) {
  console.warn(
    `torchrun_test: SKIPPED: no PyTorch for ${PYTHON} (${missing}); ` +
      `install it with: apt-get install -y python3-torch libopenblas0-pthread`,
  );
}

const tiny = (dir: string, iters: number) => [
  ...TINY_MODEL_FLAGS,
  "--train-iters",
  String(iters),
  "--eval-iters",
  "1",
  "--eval-interval",
  "100000",
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
  "20s",
];

/**
 * A port `p` with `p` and `p + 1` both free, below Linux's ephemeral range
 * (32768–60999 by default): torchrun's agent hosts its store on MASTER_PORT and
 * ours goes on the next port. An OS-picked port lies inside that range, where
 * any outgoing connection (the agent's own clients among them) may take `p + 1`
 * before our store binds it: "port … is already in use" (seen once in CI).
 */
function freePortPair(): number {
  const bindable = (port: number) => {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return true;
    } catch {
      return false;
    }
  };
  for (;;) {
    const p = 20000 + Math.floor(Math.random() * 12000);
    if (bindable(p) && bindable(p + 1)) return p;
  }
}

/**
 * torchrun (2 ranks) of `cli/train.ts` with `program`'s flags, from the
 * repository, its agent's store on a free port pair: its exit code and output.
 */
async function runTorchrun(dir: string, program: string[]): Promise<{ code: number; out: string }> {
  // The agent binds MASTER_PORT itself; ours goes on the next port: keep both free.
  const tr = await new Deno.Command(PYTHON, {
    args: torchrun(freePortPair(), program),
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: tr.code, out: dec.decode(tr.stdout) + dec.decode(tr.stderr) };
}

function torchrun(masterPort: number, program: string[]): string[] {
  return [
    "-m",
    "torch.distributed.run",
    "--nproc_per_node",
    "2",
    "--redirects",
    "1",
    "--tee",
    "1",
    "--master_port",
    String(masterPort),
    "--no_python",
    Deno.execPath(),
    "run",
    "-A",
    `${ROOT}cli/train.ts`,
    ...program,
  ];
}

Deno.test({
  name:
    `torchrun --nproc_per_node 2 (its agent's store on MASTER_PORT): the procs launcher's losses${
      missing ? " [SKIPPED: no PyTorch]" : ""
    }`,
  ignore: missing !== null,
  timeout: 80_000,
  fn: async () => {
    const dir = await makeRunDir();
    const env = { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" };
    const procs = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}cli/train.ts`,
        ...tiny(dir, 3),
        "--nproc-per-node",
        "2",
        "--launcher",
        "procs",
        "--master-port",
        String(freeLocalPort()),
        "--log-json",
        `${dir}/p.jsonl`,
      ],
      cwd: ROOT,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(procs.code, 0, dec.decode(procs.stderr));
    const t0 = performance.now();
    const tr = await runTorchrun(dir, [...tiny(dir, 3), "--log-json", `${dir}/t.jsonl`]);
    const ms = performance.now() - t0;
    assert.equal(tr.code, 0, tr.out);
    const p = jsonlLosses(await Deno.readTextFile(`${dir}/p.jsonl`));
    assert.equal(p.length, 3);
    assert.deepEqual(jsonlLosses(await Deno.readTextFile(`${dir}/t.jsonl`)), p);
    console.log(
      `torchrun: 3 steps, losses ${p.map((x) => x.toFixed(6)).join(", ")} in ${Math.round(ms)} ms`,
    );
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: `torchrun with train's own layout flags: refused once on the node, not by every rank${
    missing ? " [SKIPPED: no PyTorch]" : ""
  }`,
  ignore: missing !== null,
  timeout: 80_000,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      const { code, out } = await runTorchrun(dir, [...tiny(dir, 3), "--nproc-per-node", "2"]);
      assert.notEqual(code, 0, out);
      // Each rank printed it (the layout is checked before a rank's errors are reported).
      const said = out.match(/error: torchrun started this process as one of 2 \(WORLD_SIZE=2\)/g);
      assert.equal(said?.length, 1, out);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Every process below `pid`, from /proc. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      parent.set(Number(e.name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch { /* exited meanwhile */ }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) if (pp === p) out.push(c), walk(c);
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

Deno.test({
  name: `torchrun's agent killed (SIGKILL) mid-run: its ranks exit${
    missing ? " [SKIPPED: no PyTorch]" : ""
  }`,
  ignore: missing !== null,
  timeout: 80_000,
  fn: async () => {
    const dir = await makeRunDir();
    const agent = new Deno.Command(PYTHON, {
      args: torchrun(freePortPair(), tiny(dir, 3000)),
      cwd: ROOT,
      env: { XDG_RUNTIME_DIR: `${dir}/xdg`, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let text = "";
    let seen: () => void = () => {};
    const started = new Promise<void>((r) => (seen = r));
    const read = (s: ReadableStream<Uint8Array>) =>
      (async () => {
        for await (const b of s) {
          text += dec.decode(b);
          if (/iteration\s+3\//.test(text)) seen();
        }
      })();
    const reading = Promise.all([read(agent.stdout), read(agent.stderr)]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ok = await Promise.race([
      started.then(() => true),
      agent.status.then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 50000))),
    ]);
    clearTimeout(timer);
    const ranks = descendants(agent.pid);
    try {
      agent.kill("SIGKILL");
    } catch { /* gone */ }
    const t0 = performance.now();
    await agent.status;
    while (ranks.some(alive) && performance.now() - t0 < 20000) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const goneMs = performance.now() - t0;
    const left = ranks.filter(alive);
    for (const p of left) {
      try {
        Deno.kill(p, "SIGKILL");
      } catch { /* gone */ }
    }
    await reading;
    assert.ok(ok, `the run did not reach iteration 3:\n${text}`);
    assert.ok(ranks.length >= 2, `expected the 2 ranks under the agent, found ${ranks}`);
    assert.deepEqual(left, [], `ranks still alive ${goneMs} ms after the agent died`);
    console.log(
      `torchrun agent SIGKILL: ranks ${ranks.join(", ")} gone in ${Math.round(goneMs)} ms`,
    );
    await Deno.remove(dir, { recursive: true });
  },
});
