/**
 * The job layout of a command that launches ranks (`train`, `launch`), from the
 * distributed flags and the launchers' variables, with every refusal turned
 * into a {@link UsageError} naming the flag or variable.
 * @module
 */

import {
  type DistConfig,
  DistConfigError,
  durationMs,
  MIN_DURATION_MS,
  resolveDistConfig,
} from "../collectives/env.ts";
import { oneLine } from "../core/files.ts";
import { emptyValueError, type FlagSpec, UsageError } from "./flags.ts";
import { LaunchedRankError } from "./errors.ts";

/**
 * The distributed flags of a command that launches ranks (`train`, `launch`),
 * as `--help` shows them; `collectives/env.ts` reads their values.
 */
export const DIST_FLAG_SPECS: Record<string, FlagSpec> = {
  "nproc-per-node": { type: "int", min: 1, help: "ranks (Workers, one GPU each) on this node" },
  "nnodes": { type: "int", min: 1, help: "number of nodes (processes) in the job" },
  "node-rank": { type: "int", min: 0, help: "this node's index" },
  "master-addr": { type: "string", help: "host of node 0's rendezvous store (or MASTER_ADDR)" },
  "master-port": {
    type: "int",
    min: 1,
    help:
      "rendezvous port (or MASTER_PORT; default 29500, but a one-node --launcher procs job takes a free one)",
  },
  "devices": {
    type: "string",
    help: "GPU per local rank: indices, PCI addresses or name:SUBSTR, comma-separated",
  },
  "dist-timeout": {
    type: "string",
    help: "wait for a peer this long before failing (e.g. 60s; default 300s); " +
      "Megatron's --distributed-timeout-minutes N is Nm",
  },
  "launcher": {
    type: "string",
    choices: ["workers", "procs"],
    help: "this node's ranks as Workers of one process (default) or one process each",
  },
  "rdzv-id": {
    type: "string",
    help: "the job's id at rendezvous: ranks of another job are refused",
  },
  "host-shm": {
    type: "string",
    choices: ["on", "off"],
    help:
      "links between rank processes on one host carry large payloads through shared memory (/dev/shm; default on) or only through their sockets",
  },
};

/** The job layout from the distributed flags and the environment; bad values are usage errors. */
export function distConfig(flags: Record<string, string>): DistConfig {
  // An empty value is a mistake (`--node-rank "$NODE_RANK"` with the variable unset), never
  // the flag left out: as parseFlags refuses it for every other flag.
  for (const [name, value] of Object.entries(flags)) {
    if (value === "") throw emptyValueError(name, DIST_FLAG_SPECS[name] ?? { type: "string" });
  }
  const env = Deno.env.toObject();
  const timeout = flags["dist-timeout"] ?? env.DIST_TIMEOUT;
  if (timeout !== undefined) {
    const from = flags["dist-timeout"] !== undefined ? "--dist-timeout" : "DIST_TIMEOUT";
    const ms = durationMs(timeout);
    if (ms === null) {
      throw new UsageError(`${from} "${timeout}" is not a duration: use e.g. 30, 30s, 500ms or 2m`);
    }
    if (ms < MIN_DURATION_MS) {
      throw new UsageError(`${from} "${timeout}" must be at least ${MIN_DURATION_MS} ms`);
    }
  }
  try {
    return resolveDistConfig(flags, env);
  } catch (e) {
    // What is refused there is a flag or a launcher's variable; anything else is a bug.
    if (!(e instanceof DistConfigError)) throw e;
    const usage = new UsageError(oneLine(e.message));
    // Every process an outside launcher started meets it alike: the first on each host says it.
    if (e.launchedAs) throw new LaunchedRankError(usage, e.launchedAs.rank, e.launchedAs.localRank);
    throw usage;
  }
}
