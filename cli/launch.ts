/**
 * Launches a worker module on this process's ranks, one Web Worker per local rank:
 *
 *   deno run -A cli/launch.ts [--nproc-per-node N] [--nnodes M --node-rank I]
 *     [--master-addr HOST] [--master-port PORT] [--devices LIST] [--dist-timeout 30s]
 *     WORKER_MODULE [ARGS...]
 *
 * Without flags, rank and world come from torchrun's, Slurm's or Open MPI's
 * environment variables. The module exports `default(ctx: WorkerContext)`.
 * Exits 0 when every rank succeeded, 1 otherwise, 2 for a bad command line.
 * @module
 */

import { splitDistArgs } from "../collectives/env.ts";
import { launch } from "../collectives/launch.ts";
import { handled, oneLine } from "./errors.ts";
import { UsageError } from "./flags.ts";
import { distConfig } from "./dist.ts";

/** Runs `deno task launch` with `args`; returns the exit code (or exits with the ranks'). */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    let split;
    try {
      split = splitDistArgs(args);
    } catch (e) {
      throw new UsageError(oneLine((e as Error).message));
    }
    const cfg = distConfig(split.flags);
    const rest = split.rest;
    if (rest.length === 0 || rest[0].startsWith("-")) {
      throw new UsageError("usage: cli/launch.ts [distributed flags] WORKER_MODULE [ARGS...]");
    }
    const url = new URL(rest[0], `file://${Deno.cwd()}/`);
    if (url.protocol === "file:") {
      try {
        await Deno.stat(url);
      } catch {
        throw new UsageError(`worker module ${rest[0]} does not exist`);
      }
    }
    return await launch(cfg, url, rest.slice(1));
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
