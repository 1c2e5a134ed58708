/**
 * `deno task train`: trains a GPT (or BERT) on a real corpus and shows it
 * learning: Megatron-style log lines, validation loss and perplexity, baselines,
 * and a sample of generated text at the end. With `--nproc-per-node N` (and
 * `--nnodes`), the ranks run as Workers, one device each, split as
 * `--tensor-model-parallel-size` × data parallel.
 *
 * Everything that can be checked before the first step is: the flags, the
 * paths it will write (`--save`, `--log-json`: a real test write), the data
 * path, and the model the run starts from (`--load`, `--init-from-hf`) against
 * the shape flags. A SIGTERM, SIGINT or SIGHUP with `--save` finishes the step,
 * saves and exits 0 (cli/signals.ts). Errors end as one `error: …` line, exit 2
 * for the command line and 1 for the rest (cli/errors.ts).
 * @module
 */

import {
  DistConfigError,
  localRanksOption,
  nodeRankCount,
  splitDistArgs,
  worldSizeOrigin,
} from "../collectives/env.ts";
import { LAUNCHER_PID_ENV } from "../collectives/procs.ts";
import { launch } from "../collectives/launch.ts";
import {
  assignDevices,
  listHostGpus,
  onlineCpuCount,
  sharedAdapterWarning,
} from "../collectives/devices.ts";
import { defaultBackendFor } from "../core/gpu.ts";
import { preferWideVectors } from "../core/simd.ts";
import { sourceHiddenSize } from "./load_model.ts";
import { DataError } from "../data/errors.ts";
import { DATA_PATH_FLAGS, DATA_PATH_FORM, dataSourceOf, looksNumeric } from "./data_source.ts";
import { oneLine } from "../core/files.ts";
import { handled, LaunchedRankError } from "./errors.ts";
import { asksHelp, type FlagValues, helpText, parseFlags, UsageError } from "./flags.ts";
import { checkVocabFiles } from "./megatron_flags.ts";
import { logFileKind } from "./log.ts";
import {
  checkWritableFile,
  ensureWritableDir,
  firstMissingDir,
  removeEmptyDirs,
  sameFile,
} from "./paths.ts";
import { readLatest } from "../models/checkpoint/layout.ts";
import { takeLogLock, takeSaveLock } from "./save_lock.ts";
import { SignalHandler } from "./signals.ts";
import { distConfig } from "./dist.ts";
import { refuseFlagsOfOtherModel, validateTrainFlags } from "./train_config.ts";
import { checkRankCount, ranksSharingHost } from "./limits.ts";
import { TRAIN_FLAGS } from "./train_flags.ts";
import { agreeWithModelSource } from "./model_source.ts";

const USAGE = `Usage: deno task train [flags]

Trains a pre-LN GPT (or BERT with --model bert) on WebGPU. With no flags it
trains a small byte-level GPT on Moby Dick (data/assets/moby_dick.txt) on
one device. Distributed: --nproc-per-node N [--nnodes M --node-rank I
--master-addr HOST] runs N ranks here, split as --tp T × data parallel.

With --save, a first SIGTERM, SIGINT or SIGHUP finishes the current step, saves
a checkpoint and exits 0; a second one exits at once. --exit-interval N and
--exit-duration-in-mins M stop the same way (saved with --save). Exit codes: 0
done, 1 data, checkpoint or runtime error, 2 bad command line, 128+N killed by
signal N.`;

/**
 * The checks of paths and inputs made before any work; returns arguments that
 * carry values taken from the checkpoint to ranks that parse the flags again.
 * Its notes go to `say`.
 */
async function preflight(f: FlagValues, say: (line: string) => void): Promise<string[]> {
  if (f.save) {
    await ensureWritableDir("--save", f.save as string);
    await refuseSavingOverAnotherRun(f.save as string, f.load as string | undefined);
  }
  if (f["log-json"]) {
    const path = f["log-json"] as string;
    await checkWritableFile("--log-json", path);
    if (await logFileKind(path) === "other") {
      throw new UsageError(
        `--log-json ${path} already holds something that is not a JSON log of this program ` +
          "(its first line is no log header), and the run would overwrite it: give a new file, " +
          "or remove that one first",
      );
    }
  }
  for (const flag of DATA_PATH_FLAGS) {
    const source = dataSourceOf(f, flag);
    for (const data of source?.paths ?? []) {
      try {
        await Deno.stat(data);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        const weight = looksNumeric(data)
          ? `; a weight needs a path after it: --${flag} ${DATA_PATH_FORM}`
          : "";
        throw new DataError(
          `data path ${JSON.stringify(data)} does not exist (--${flag}${weight})`,
        );
      }
    }
  }
  const extra = await agreeWithModelSource(f, say);
  refuseFlagsOfOtherModel(f);
  return [...extra, ...await checkVocabFiles(f)];
}

/**
 * Refuses a `--save` directory that holds checkpoints the run does not resume
 * from (`--load` the same directory): it would move their `latest` pointer to
 * its own iterations and overwrite theirs.
 */
async function refuseSavingOverAnotherRun(save: string, load: string | undefined): Promise<void> {
  const latest = await readLatest(save);
  if (latest === null) return;
  if (load !== undefined && await sameFile(save, load)) return;
  throw new UsageError(
    `--save ${save} already holds checkpoints (latest: iteration ${latest}), which this run ` +
      `would overwrite: pass --load ${save} to resume from them, or choose another --save`,
  );
}

/** Runs `deno task train` with `args`; returns the exit code. */
export function main(args: string[]): Promise<number> {
  return handled(args, () => run(args));
}

async function run(args: string[]): Promise<number> {
  // Whatever else the line holds, as parseFlags reads it; before the distributed flags, which
  // read the environment (run by URL without --allow-env, the help still prints).
  if (asksHelp(args)) {
    console.log(helpText(USAGE, TRAIN_FLAGS));
    return 0;
  }
  let split: ReturnType<typeof splitDistArgs>;
  try {
    split = splitDistArgs(args);
  } catch (e) {
    if (e instanceof DistConfigError) throw new UsageError(oneLine(e.message));
    throw e;
  }
  const dist = distConfig(split.flags);
  try {
    const f = parseFlags(split.rest, TRAIN_FLAGS);
    // What preflight creates for --save is removed again, while still empty, if the run fails
    // (a check after preflight, a --load that cannot be read, a rank's error).
    const made = f.save ? await firstMissingDir(f.save as string) : null;
    let code = 1;
    try {
      // What preflight notes is said once per node.
      const say = speaksForNode(dist) ? (line: string) => console.error(line) : () => {};
      code = await checkedRun(f, split, dist, await preflight(f, say));
      return code;
    } finally {
      if (made && code !== 0) await removeEmptyDirs(made);
    }
  } catch (e) {
    // A rank process torchrun, SLURM or OpenMPI started: what every rank finds alike (the
    // command line, the data) is printed once per node, by its first rank.
    if (dist.world > 1 && dist.source !== "flags" && dist.source !== "single") {
      throw new LaunchedRankError(e, dist.rankBase, dist.localRankBase);
    }
    throw e;
  }
}

/** The checks after preflight, then the ranks (see {@link run}). */
async function checkedRun(
  f: FlagValues,
  split: ReturnType<typeof splitDistArgs>,
  dist: ReturnType<typeof distConfig>,
  extra: string[],
): Promise<number> {
  validateTrainFlags(f, dist.world, worldSizeOrigin(dist.source));
  // llvmpipe's vector width for this model, before any adapter (ranks inherit it): --load's
  // shape is in the flags by now (preflight adopted it), --init-from-hf's is in its config.json.
  const hfDir = f["init-from-hf"] as string | undefined;
  const hiddenSize = (hfDir && await sourceHiddenSize({ hfDir })) || f["hidden-size"] as number;
  await preferWideVectors({ hiddenSize });
  const gpus = listHostGpus();
  // The ranks on this host: this process's, or all an outside launcher started here (each of
  // its processes has one).
  const hostRanks = ranksSharingHost(dist.localWorld);
  const ranksOption = localRanksOption(dist.source);
  if (gpus.length > 0 && hostRanks > gpus.length && !split.flags.devices) {
    throw new UsageError(
      `${hostRanks} ranks on this node but only ${gpus.length} GPU(s); ` +
        `use fewer (${ranksOption}), or map ranks explicitly with --devices`,
    );
  }
  // A software adapter's device memory is host memory: a model (or a count of ranks) past it is
  // refused now, not killed for memory after minutes of building (--init-from-hf's shape is in
  // its config.json, read later).
  // Each rank's device (a Worker) takes host memory, GPU or not: a count past it is refused before
  // any starts; the model, on a software adapter, once each rank has its adapter.
  checkRankCount(hostRanks, ranksOption);
  // Workers of this process share its cores; ranks an outside launcher started, the host's (each
  // may be bound to cores of its own).
  const ownRanks = dist.source === "flags" || dist.source === "single";
  const cores = ownRanks
    ? navigator.hardwareConcurrency
    : onlineCpuCount() ?? navigator.hardwareConcurrency;
  const crowded = sharedAdapterWarning(
    hostRanks,
    gpus.length,
    cores,
    split.flags.devices,
    ranksOption,
  );
  if (crowded && speaksForNode(dist)) {
    console.error(crowded);
  }
  if (split.flags.devices !== undefined) {
    try {
      assignDevices(
        dist.localWorld,
        dist.localRankBase,
        split.flags.devices,
        gpus,
        nodeRankCount(dist),
      );
    } catch (e) {
      if (e instanceof DistConfigError) throw new UsageError(oneLine(e.message));
      throw e;
    }
  }
  // The backend a rank opens: under --launcher procs each rank is a process of its own.
  const ranksPerProcess = dist.launcher === "procs" ? 1 : dist.localWorld;
  const backend = (f.backend as string | undefined) ?? defaultBackendFor(ranksPerProcess);
  if (split.flags.devices?.includes("name:") && backend !== "dawn") {
    throw new UsageError(
      `--devices name:… picks an adapter through Dawn's adapter= option; add --backend dawn ` +
        `(this run's backend is ${backend})`,
    );
  }
  // One run at a time per --save directory and per --log-json log: the process that hosts global
  // rank 0 holds their locks (a rank process of our procs launcher leaves them to the launcher).
  const holdsLocks = speaksForJob(dist);
  const releases: (() => void)[] = [];
  try {
    if (holdsLocks && f.save) releases.push(await takeSaveLock(f.save as string));
    if (holdsLocks && f["log-json"]) releases.push(await takeLogLock(f["log-json"] as string));
    // Ranks that parse the flags again get what preflight settled and the backend chosen above.
    const rankArgs = [...extra, ...(f.backend ? [] : ["--backend", backend])];
    return await runRanks(f, split, dist, rankArgs);
  } finally {
    for (const release of releases) release();
  }
}

/**
 * Runs this process's ranks: Workers (or rank processes) through the launcher.
 * A single-rank run trains in a Worker too, so that this main thread, idle,
 * answers a signal at once: training on it, a signal waited for the event
 * loop's I/O to be polled, several steps of a large model later (a GPT-2 small
 * stopped 14 s after its SIGTERM, a GPT-2 medium only at the end of the run).
 */
async function runRanks(
  f: FlagValues,
  split: ReturnType<typeof splitDistArgs>,
  dist: ReturnType<typeof distConfig>,
  rankArgs: string[],
): Promise<number> {
  // Under --launcher procs the launcher passes signals on to the rank processes,
  // whose main threads handle them; otherwise this main thread tells its Workers.
  let signals: SignalHandler | undefined;
  const stopWord = new Int32Array(new SharedArrayBuffer(4));
  if (!(dist.launcher === "procs" && dist.localWorld > 1)) {
    // What happens is printed once per node: by the process of global rank 0 and by each
    // node's first process (a rank process of our procs launcher leaves that to the launcher).
    const print = dist.rankBase === 0 || speaksForNode(dist);
    signals = new SignalHandler({ canSave: !!f.save, print, workers: true, stopWord }).install();
  }
  // Rank 0 prints the error of a failed run itself (cli/train_worker.ts); the launcher prints
  // those before the ranks run (a rendezvous that times out, a store out of reach).
  try {
    return await launch(dist, new URL("./train_worker.ts", import.meta.url), [
      ...split.rest,
      ...rankArgs,
    ], { log: false, stopping: () => signals?.signal != null, stopWord });
  } finally {
    // Its listeners would keep a program that called main() alive after the job.
    signals?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));

/** Whether this process is a rank process our `--launcher procs` started (it runs one rank). */
function startedByOurLauncher(): boolean {
  return !!Deno.env.get(LAUNCHER_PID_ENV);
}

/**
 * Whether this process says what concerns its whole node (a warning printed
 * once per node): the node's first process, unless our launcher started it
 * (the launcher says it).
 */
function speaksForNode(dist: { localRankBase: number }): boolean {
  return dist.localRankBase === 0 && !startedByOurLauncher();
}

/**
 * Whether this process holds what concerns the whole job (the `--save` and
 * `--log-json` locks): the one hosting global rank 0, unless our launcher
 * started it (the launcher holds them).
 */
function speaksForJob(dist: { rankBase: number }): boolean {
  return dist.rankBase === 0 && !startedByOurLauncher();
}
