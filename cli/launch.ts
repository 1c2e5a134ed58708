/**
 * Launches a worker module on this process's ranks, one Web Worker per local rank:
 *
 *   deno run -A cli/launch.ts [--nproc-per-node N] [--nnodes M --node-rank I]
 *     [--master-addr HOST] [--master-port PORT] [--devices LIST] [--dist-timeout 30s]
 *     WORKER_MODULE [ARGS...]
 *
 * Without flags, rank and world come from torchrun's, Slurm's or Open MPI's
 * environment variables. The module exports `default(ctx: WorkerContext)`.
 * Exits 0 when every rank succeeded, 1 otherwise.
 * @module
 */

import { resolveDistConfig, splitDistArgs } from "../collectives/env.ts";
import { launch } from "../collectives/launch.ts";

if (import.meta.main) {
  let cfg, rest: string[];
  try {
    const split = splitDistArgs(Deno.args);
    rest = split.rest;
    cfg = resolveDistConfig(split.flags, Deno.env.toObject());
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  if (rest.length === 0) {
    console.error("usage: cli/launch.ts [distributed flags] WORKER_MODULE [ARGS...]");
    Deno.exit(2);
  }
  const url = new URL(rest[0], `file://${Deno.cwd()}/`);
  await launch(cfg, url, rest.slice(1));
}
