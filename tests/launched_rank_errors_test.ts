/**
 * Rank processes that torchrun (or SLURM, OpenMPI) starts each parse the same
 * command line: a mistake in it, or a missing data file, is printed once per
 * node, by the node's first rank, and every rank exits with the command's own
 * code (2 for the command line, 1 for the data). Until the twenty-ninth
 * session every rank printed it: eight copies of a multi-line refusal on an
 * eight-GPU node. Two processes with torchrun's variables stand in for
 * torchrun; the errors come before the ranks meet.
 */

import { match, strictEqual } from "node:assert/strict";
import { listHostGpus, onlineCpuCount } from "../collectives/devices.ts";
import { freeLocalPort } from "../collectives/tcp.ts";
import { launchedRank, makeRunDir, TINY_RUN_FLAGS, torchrunStyleRanks } from "./cli_helpers.ts";

/** Both ranks of a 2-rank job with torchrun's variables, run with `args`. */
const ranks = (dir: string, args: string[]) => torchrunStyleRanks(dir, args, { timeoutMs: 60_000 });

/** Open MPI's variables for rank `rank` of `size`, all on this host, the rendezvous on `port`. */
function openMpiEnv(rank: number, size: number, port: string): Record<string, string> {
  return {
    OMPI_COMM_WORLD_RANK: String(rank),
    OMPI_COMM_WORLD_SIZE: String(size),
    OMPI_COMM_WORLD_LOCAL_RANK: String(rank),
    OMPI_COMM_WORLD_LOCAL_SIZE: String(size),
    MASTER_PORT: port,
  };
}

Deno.test({
  name: "torchrun's ranks: a bad command line or missing data is printed by the first rank only",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await makeRunDir();
    try {
      const data = ["--data-path", `${dir}/data.txt`];
      // Two refused flags: the multi-line refusal.
      const [r0, r1] = await ranks(dir, [
        ...TINY_RUN_FLAGS,
        ...data,
        "--tp",
        "2",
        "--swiglu",
        "--num-experts",
        "8",
      ]);
      strictEqual(r0.code, 2, r0.stderr);
      strictEqual(r1.code, 2, r1.stderr);
      strictEqual(
        r0.stderr.trim(),
        [
          "error: 2 flags are refused (--help lists the flags):",
          "  • --swiglu: the MLP is GPT-2's GeLU MLP here",
          "  • --num-experts 8: mixture of experts is not implemented here: each layer has one " +
          "dense GeLU MLP",
        ].join("\n"),
      );
      strictEqual(r1.stderr, "");
      // One bad value.
      const [b0, b1] = await ranks(dir, [...TINY_RUN_FLAGS, ...data, "--train-iters", "0"]);
      strictEqual(b0.code, 2, b0.stderr);
      strictEqual(b1.code, 2, b1.stderr);
      strictEqual(b0.stderr.trim(), "error: --train-iters must be ≥ 1, got 0");
      strictEqual(b1.stderr, "");
      // A data path that does not exist: exit 1, printed once.
      const [d0, d1] = await ranks(dir, [
        ...TINY_RUN_FLAGS,
        "--data-path",
        `${dir}/none.txt`,
      ]);
      strictEqual(d0.code, 1, d0.stderr);
      strictEqual(d1.code, 1, d1.stderr);
      strictEqual(
        d0.stderr.trim(),
        `error: data path ${JSON.stringify(`${dir}/none.txt`)} does not exist (--data-path)`,
      );
      strictEqual(d1.stderr, "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a launcher that stops the job at the first failed rank (mpirun) still lets the first rank say why",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // Open MPI's mpirun kills every rank once one exits with an error: rank 2 of `mpirun -np 3 …
    // --tp 2` exited at once, saying nothing (its node's first rank speaks), and the first rank
    // was killed before its line was out in 2 of 14 runs. Here rank 1 starts first and rank 0
    // 1 s later, and rank 0 is killed as soon as rank 1 exits, as mpirun would.
    const dir = await makeRunDir();
    try {
      const port = String(freeLocalPort());
      const start = (rank: number) =>
        launchedRank(
          dir,
          openMpiEnv(rank, 2, port),
          [...TINY_RUN_FLAGS, "--train-iters", "0"],
          60_000,
        )
          .spawn();
      const rank1 = start(1);
      await new Promise((r) => setTimeout(r, 1000));
      const rank0 = start(0);
      const r1 = await rank1.output();
      try {
        rank0.kill("SIGKILL");
      } catch { /* exited already */ }
      const r0 = await rank0.output();
      strictEqual(r1.code, 2);
      match(new TextDecoder().decode(r0.stderr), /error: --train-iters must be ≥ 1, got 0/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "ranks an outside launcher starts are counted on their host: the crowded-cores warning",
  // With a GPU the ranks take one each (a count past them is refused), and no warning is due.
  ignore: listHostGpus().length > 0,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // Each process of `mpirun -np 4` (or `srun -n 4`) runs one rank: the warning that more ranks
    // than cores share a software adapter counted 1 and never came (--launcher procs said it).
    const cores = onlineCpuCount() ?? navigator.hardwareConcurrency;
    const dir = await makeRunDir();
    try {
      const env = openMpiEnv(0, cores + 2, String(freeLocalPort()));
      const args = [...TINY_RUN_FLAGS, "--train-iters", "1", "--dist-timeout", "1s"];
      const out = await launchedRank(dir, env, args, 60_000).output();
      // The other ranks never come: the rendezvous gives up after --dist-timeout.
      strictEqual(out.code, 1);
      match(
        new TextDecoder().decode(out.stderr),
        new RegExp(
          `warning: ${
            cores + 2
          } ranks on this node share its default adapter .* \\(mpirun's -np\\)`,
        ),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
