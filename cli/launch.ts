/**
 * Launches a worker module on this process's ranks, one Web Worker per local rank:
 *
 *   deno run -A cli/launch.ts [--nproc-per-node N] [--nnodes M --node-rank I]
 *     [--master-addr HOST] [--master-port PORT] [--devices LIST] [--dist-timeout 30s]
 *     WORKER_MODULE [ARGS...]
 *
 * Without flags, rank and world come from torchrun's, Slurm's or Open MPI's
 * environment variables. The module exports `default(ctx: WorkerContext)`.
 * `--help` (or `-h`) before the module prints the flags; after it, it is the module's.
 * Exits 0 when every rank succeeded, 1 otherwise, 2 for a bad command line.
 * @module
 */

import { pathToFileURL } from "node:url";
import { splitDistArgs } from "../collectives/env.ts";
import { launch } from "../collectives/launch.ts";
import { oneLine } from "../core/files.ts";
import { handled } from "./errors.ts";
import { type FlagSpec, helpText, UsageError } from "./flags.ts";
import { DIST_FLAG_SPECS, distConfig } from "./dist.ts";

const USAGE = "usage: deno task launch [distributed flags] WORKER_MODULE [ARGS...]\n\n" +
  "Runs WORKER_MODULE (a file path or URL exporting default(ctx: WorkerContext)) on this\n" +
  "node's ranks, one Web Worker per GPU, or one process each with --launcher procs. Without\n" +
  "flags, rank and world come from torchrun's, Slurm's or Open MPI's environment variables\n" +
  "(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT …). ARGS go to the module.";

/** The distributed flags `launch` takes (as `train` does), for `--help`. */
export const LAUNCH_HELP_FLAGS: Record<string, FlagSpec> = {
  ...DIST_FLAG_SPECS,
  "nproc-per-node": { ...DIST_FLAG_SPECS["nproc-per-node"], group: "Job" },
};

/** Runs `deno task launch` with `args`; returns the exit code (or exits with the ranks'). */
export function main(args: string[]): Promise<number> {
  return handled(args, async () => {
    let split;
    try {
      split = splitDistArgs(args);
    } catch (e) {
      throw new UsageError(oneLine((e as Error).message));
    }
    const rest = split.rest;
    if (rest[0] === "--help" || rest[0] === "-h") {
      console.log(helpText(USAGE, LAUNCH_HELP_FLAGS));
      return 0;
    }
    if (rest.length === 0 || rest[0] === "" || rest[0].startsWith("-")) {
      const what = rest.length === 0
        ? "no WORKER_MODULE"
        : rest[0] === ""
        ? "an empty WORKER_MODULE"
        : `unknown flag ${rest[0]}`;
      throw new UsageError(
        `${what}: usage: deno task launch [distributed flags] WORKER_MODULE [ARGS...] ` +
          "(--help lists the flags)",
      );
    }
    const cfg = distConfig(split.flags);
    const url = new URL(rest[0], pathToFileURL(`${Deno.cwd()}/`));
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
