/**
 * Where this process sits in the job: world size, its ranks, the rendezvous
 * address and the timeout, from command-line flags (`--nproc-per-node`,
 * `--nnodes`, `--node-rank`, `--master-addr`, `--master-port`, `--devices`,
 * `--dist-timeout`, `--launcher`, `--rdzv-id`, `--host-shm`; torchrun's `_` spellings such
 * as `--nproc_per_node` too) or from the environment that torchrun, Slurm or
 * Open MPI set.
 *
 * Two facts decided here keep jobs apart and the store private:
 * - **Run id** ({@link DistConfig.runId}): `--rdzv-id`, else torchrun's
 *   `TORCHELASTIC_RUN_ID`, else Slurm's `SLURM_JOB_ID` (with the step), else
 *   Open MPI's job id; the `procs` launcher draws a random one for a one-node
 *   job that has none. The store refuses a rank of another run, naming both.
 * - **Where the store listens** ({@link DistConfig.storeHost}): 127.0.0.1 when
 *   every rank is on this host, `--master-addr` only for multi-node jobs. Under
 *   torchrun's static rendezvous its agent already serves a store on
 *   `MASTER_PORT`, so ours takes `MASTER_PORT + 1` (an explicit `--master-port`
 *   wins).
 * @module
 */

/**
 * A refused distributed flag or launcher variable (a bad value, a missing
 * address, a rank past the world): the command line's fault, not a bug.
 */
export class DistConfigError extends Error {
  /**
   * An error naming the flag or variable; `launchedAs`, where an outside
   * launcher (torchrun, Slurm, Open MPI) started this process as one of
   * several, its ranks there, so that one process per host says it.
   */
  constructor(
    message: string,
    readonly launchedAs?: { rank: number; localRank: number },
  ) {
    super(message);
    this.name = "DistConfigError";
  }
}

/** Everything the launcher needs to know about this process's place in the job. */
export interface DistConfig {
  /** Total number of ranks. */
  world: number;
  /** Global rank of this process's first Worker. */
  rankBase: number;
  /**
   * Ranks this process starts, all on this host: as its own Workers (the
   * default launcher) or as child processes (`--launcher procs`, each of which
   * then reads 1 here). 1 where torchrun, Slurm or Open MPI started this
   * process for one rank (torchrun's count of ranks on the host,
   * `LOCAL_WORLD_SIZE`, is read only to check it against `WORLD_SIZE` and
   * `LOCAL_RANK`, to count {@link nodes} and to see whether the whole job is on
   * this host).
   */
  localWorld: number;
  /**
   * Rank on this host of the first rank started here (torchrun's `LOCAL_RANK`,
   * Slurm's `SLURM_LOCALID`, Open MPI's `OMPI_COMM_WORLD_LOCAL_RANK`; 0 under the
   * launcher's own flags): the GPU index it starts from.
   */
  localRankBase: number;
  /** Rendezvous host (rank 0's node). */
  masterAddr: string;
  /** Rendezvous port. */
  masterPort: number;
  /**
   * Whether {@link masterPort} was asked for (`--master-port`, `MASTER_PORT`)
   * rather than the default: a one-node `--launcher procs` job picks a free
   * port otherwise, so that two such jobs can run at once.
   */
  portAsked?: boolean;
  /**
   * Where the rendezvous store listens and where ranks reach it: 127.0.0.1
   * when every rank of the job is on this host, else {@link masterAddr}.
   */
  storeHost: string;
  /**
   * The job's identity at rendezvous (see the module notes); undefined when
   * nothing names the job. Peers of another run are refused.
   */
  runId?: string;
  /** Where {@link runId} came from (`--rdzv-id`, `TORCHELASTIC_RUN_ID`, …). */
  runIdSource?: string;
  /** Longest wait on a peer before failing (ms). */
  distTimeoutMs: number;
  /** The `--devices` mapping, if given. */
  devices?: string;
  /** Where the values came from. */
  source: "flags" | "torchrun" | "slurm" | "openmpi" | "single";
  /**
   * Nodes (hosts) in the job where the launch says: `--nnodes`, Slurm's node
   * count, or the world over the launcher's local world size (torchrun's
   * `LOCAL_WORLD_SIZE`, Open MPI's `OMPI_COMM_WORLD_LOCAL_SIZE`); undefined
   * where it does not.
   */
  nodes?: number;
  /**
   * How this node runs its ranks: as Workers of this process (default), or as
   * one OS process each (`--launcher procs`, see collectives/procs.ts).
   */
  launcher?: Launcher;
  /**
   * Whether TCP links between processes on one host carry large payloads
   * through shared memory (`--host-shm on|off`, or the
   * {@link HOST_SHM_VARIABLE} variable; default on; see collectives/mapping.ts).
   */
  hostShm?: boolean;
}

/** How long a rank waits for a peer before failing when nothing says (`--dist-timeout`, 300 s). */
export const DEFAULT_DIST_TIMEOUT_MS = 300_000;

/** How a launch's world size and ranks per host are set, in each {@link DistConfig} source's words. */
const FLAG_WORDS = { world: "--nproc-per-node × --nnodes", localRanks: "--nproc-per-node" };
const SOURCE_WORDS: Record<DistConfig["source"], { world: string; localRanks: string }> = {
  flags: FLAG_WORDS,
  single: FLAG_WORDS,
  torchrun: { world: "torchrun's WORLD_SIZE", localRanks: "torchrun's --nproc_per_node" },
  slurm: { world: "Slurm's SLURM_NTASKS", localRanks: "srun's -n or --ntasks-per-node" },
  openmpi: { world: "Open MPI's OMPI_COMM_WORLD_SIZE", localRanks: "mpirun's -np" },
};

/**
 * What sets the number of ranks on a host, for messages: `--nproc-per-node`,
 * or the option of the launcher that started the process.
 */
export function localRanksOption(source: DistConfig["source"]): string {
  return SOURCE_WORDS[source].localRanks;
}

/**
 * Where a {@link DistConfig}'s world size was read, for messages: the layout
 * flags, or the variable of the launcher that started the process.
 */
export function worldSizeOrigin(source: DistConfig["source"]): string {
  return SOURCE_WORDS[source].world;
}

/** The variable that carries `--host-shm` to rank processes (`on` or `off`). */
export const HOST_SHM_VARIABLE = "WEBGPU_MEGATRON_HOST_SHM";

/** Reads `--host-shm`'s value (`on` or `off`; undefined when not given). */
export function parseHostShm(value: string | undefined, from = "--host-shm"): boolean | undefined {
  if (value === undefined || value === "") return undefined;
  if (value !== "on" && value !== "off") {
    throw new DistConfigError(`${from} must be on or off, got "${value}"`);
  }
  return value === "on";
}

/** How a node runs its local ranks. */
export type Launcher = "workers" | "procs";

/** `--launcher`'s value (default workers); throws a {@link DistConfigError} for any other. */
export function parseLauncher(value: string | undefined): Launcher {
  const launcher = value ?? "workers";
  if (launcher !== "workers" && launcher !== "procs") {
    throw new DistConfigError(`--launcher must be workers or procs, got "${launcher}"`);
  }
  return launcher;
}

/** Flags this module understands (anything else is left for the program). */
export const DIST_FLAGS = [
  "nproc-per-node",
  "nnodes",
  "node-rank",
  "master-addr",
  "master-port",
  "devices",
  "dist-timeout",
  "launcher",
  "rdzv-id",
  "host-shm",
] as const;

/** Splits `args` into the distributed flags (by name, values as strings) and the rest. */
export function splitDistArgs(args: string[]): { flags: Record<string, string>; rest: string[] } {
  const flags: Record<string, string> = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const m = /^--([a-z][a-z0-9_-]*)(?:=(.*))?$/.exec(a);
    const given = m?.[1]?.replace(/_/g, "-");
    // Megatron's --distributed-timeout-minutes N is --dist-timeout Nm.
    const minutes = given === "distributed-timeout-minutes";
    const name = minutes ? "dist-timeout" : given;
    if (m && (DIST_FLAGS as readonly string[]).includes(name!)) {
      let v = m[2];
      if (v === undefined) {
        v = args[++i];
        if (v === undefined) throw new DistConfigError(`--${given} needs a value`);
      }
      flags[name!] = minutes ? `${v}m` : v;
    } else rest.push(a);
  }
  return { flags, rest };
}

/** A fresh random run id (16 hex digits) for a job that has none. */
export function randomRunId(): string {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** The shortest duration {@link parseDuration} takes: a timeout of 0 would fail every wait. */
export const MIN_DURATION_MS = 1;

/** The milliseconds of a duration written "30" (seconds), "30s", "500ms" or "2m"; null if not one. */
export function durationMs(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) return null;
  const v = Number(m[1]);
  return m[2] === "ms" ? v : m[2] === "m" ? v * 60000 : v * 1000;
}

/** Parses a duration ({@link durationMs}) of at least {@link MIN_DURATION_MS}. */
export function parseDuration(s: string): number {
  const ms = durationMs(s);
  if (ms === null) throw new DistConfigError(`bad duration "${s}": use e.g. 30, 30s, 500ms or 2m`);
  if (ms < MIN_DURATION_MS) {
    throw new DistConfigError(`bad duration "${s}": it must be at least ${MIN_DURATION_MS} ms`);
  }
  return ms;
}

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new DistConfigError(`${name} must be an integer >= ${min}, got "${v}"`);
  }
  return n;
}

/**
 * Refuses layout flags (`--nproc-per-node`, `--nnodes`, `--node-rank`, here
 * `nnodes` nodes) in a process that an outside launcher started as one of
 * several: torchrun, Slurm or Open MPI would start the whole job in each of
 * its processes, and they would train side by side without a word. One
 * launcher process per node (`srun` with a task per node and `--nnodes` their
 * number) is a layout the flags describe, and passes.
 */
function refuseLayoutUnderLauncher(env: Record<string, string | undefined>, nnodes: number): void {
  const count = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : 1);
  const rankOf = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : 0);
  const launchers: [string, string, number, string | undefined, string | undefined][] = [
    [
      "torchrun",
      "WORLD_SIZE",
      env.RANK !== undefined ? count(env.WORLD_SIZE) : 1,
      env.RANK,
      env.LOCAL_RANK,
    ],
    [
      "Slurm",
      "SLURM_NTASKS",
      env.SLURM_PROCID !== undefined ? count(env.SLURM_NTASKS) : 1,
      env.SLURM_PROCID,
      env.SLURM_LOCALID,
    ],
    [
      "Open MPI",
      "OMPI_COMM_WORLD_SIZE",
      count(env.OMPI_COMM_WORLD_SIZE),
      env.OMPI_COMM_WORLD_RANK,
      env.OMPI_COMM_WORLD_LOCAL_RANK,
    ],
  ];
  for (const [name, variable, world, rank, localRank] of launchers) {
    if (world > 1 && world !== nnodes) {
      throw new DistConfigError(
        `${name} started this process as one of ${world} (${variable}=${world}), and ` +
          `--nproc-per-node, --nnodes and --node-rank would start a whole job of ${nnodes} ` +
          `node${nnodes === 1 ? "" : "s"} in each: leave them out (${name}'s variables give ` +
          `each process its rank), or start one process per node with --nnodes ${world}`,
        { rank: rankOf(rank), localRank: rankOf(localRank) },
      );
    }
  }
}

/** The first host of a Slurm node list such as `gpu[03-06,09],cpu1` (here `gpu03`). */
export function firstSlurmHost(list: string): string {
  const m = /^([^,[]+)(?:\[([^\]]+)\])?/.exec(list.trim());
  if (!m) return list;
  if (!m[2]) return m[1];
  const first = m[2].split(",")[0].split("-")[0];
  return m[1] + first;
}

/** Checks a run id: 1–200 printable characters without spaces. */
export function checkRunId(id: string, from: string): string {
  if (!/^[\x21-\x7e]{1,200}$/.test(id)) {
    throw new DistConfigError(
      `${from} must be 1 to 200 printable characters without spaces, got "${id}"`,
    );
  }
  return id;
}

/**
 * How many ranks this node runs, where the launch says: the launcher's own
 * flags (or a single rank) give all of this node's ranks to this process;
 * torchrun, Slurm and Open MPI start one process per rank and may not say.
 */
export function nodeRankCount(cfg: DistConfig): number | undefined {
  return cfg.source === "flags" || cfg.source === "single" ? cfg.localWorld : undefined;
}

/**
 * Resolves the job layout: explicit flags win; otherwise torchrun's, Slurm's or
 * Open MPI's variables (one rank per process); otherwise a single rank.
 */
export function resolveDistConfig(
  flags: Record<string, string>,
  env: Record<string, string | undefined>,
): DistConfig {
  const timeout = flags["dist-timeout"] ?? env.DIST_TIMEOUT;
  const distTimeoutMs = timeout ? parseDuration(timeout) : DEFAULT_DIST_TIMEOUT_MS;
  const devices = flags["devices"];
  let port = int("--master-port", flags["master-port"] ?? env.MASTER_PORT, 1) ?? 29500;
  if (port > 65535) throw new DistConfigError(`--master-port must be at most 65535, got ${port}`);
  const addr = flags["master-addr"] ?? env.MASTER_ADDR;
  const launcher = parseLauncher(flags["launcher"]);
  const flagId = flags["rdzv-id"] !== undefined
    ? checkRunId(flags["rdzv-id"], "--rdzv-id")
    : undefined;
  const id = (runId: string | undefined, runIdSource: string) =>
    flagId !== undefined
      ? { runId: flagId, runIdSource: "--rdzv-id" }
      : runId
      ? { runId: checkRunId(runId, runIdSource), runIdSource }
      : {};
  const hostShm = flags["host-shm"] !== undefined
    ? parseHostShm(flags["host-shm"])
    : parseHostShm(env[HOST_SHM_VARIABLE], HOST_SHM_VARIABLE);
  const common = {
    distTimeoutMs,
    devices,
    launcher,
    portAsked: (flags["master-port"] ?? env.MASTER_PORT) !== undefined,
    ...(hostShm === undefined ? {} : { hostShm }),
  };
  const nproc = int("--nproc-per-node", flags["nproc-per-node"], 1);
  const nnodes = int("--nnodes", flags["nnodes"], 1);
  const nodeRank = int("--node-rank", flags["node-rank"], 0);
  if (nproc !== undefined || nnodes !== undefined || nodeRank !== undefined) {
    const np = nproc ?? 1, nn = nnodes ?? 1, nr = nodeRank ?? 0;
    if (nr >= nn) throw new DistConfigError(`--node-rank ${nr} must be below --nnodes ${nn}`);
    refuseLayoutUnderLauncher(env, nn);
    if (nn > 1 && !addr) {
      throw new DistConfigError(
        "--nnodes > 1 needs --master-addr (the host of node 0) or MASTER_ADDR",
      );
    }
    const masterAddr = addr ?? "127.0.0.1";
    return {
      ...common,
      ...id(undefined, ""),
      world: np * nn,
      rankBase: nr * np,
      localWorld: np,
      localRankBase: 0,
      masterAddr,
      masterPort: port,
      storeHost: nn === 1 ? "127.0.0.1" : masterAddr,
      source: "flags",
      nodes: nn,
    };
  }
  const one = (
    source: DistConfig["source"],
    rank: number | undefined,
    world: number | undefined,
    local: number | undefined,
    singleHost: boolean,
    runId: string | undefined,
    runIdSource: string,
    nodes: number | undefined,
  ): DistConfig | null => {
    if (rank === undefined || world === undefined) return null;
    if (rank >= world) {
      throw new DistConfigError(`${source}: rank ${rank} is not below world size ${world}`);
    }
    const masterAddr = addr ?? "127.0.0.1";
    return {
      ...common,
      ...id(runId, runIdSource),
      world,
      rankBase: rank,
      localWorld: 1,
      localRankBase: local ?? 0,
      masterAddr,
      masterPort: port,
      storeHost: singleHost ? "127.0.0.1" : masterAddr,
      source,
      ...(nodes === undefined ? {} : { nodes }),
    };
  };
  /** `world / localSize` when the local size divides the world, else undefined. */
  const nodesOf = (world: number | undefined, localSize: string | undefined) => {
    const local = Number(localSize);
    return world !== undefined && Number.isInteger(local) && local > 0 && world % local === 0
      ? world / local
      : undefined;
  };
  const torchWorld = int("WORLD_SIZE", env.WORLD_SIZE, 1);
  // torchrun's static rendezvous (TORCHELASTIC_USE_AGENT_STORE=True): its agent
  // already serves a c10d store on MASTER_PORT; ours takes the next port.
  if (
    env.TORCHELASTIC_USE_AGENT_STORE === "True" && flags["master-port"] === undefined &&
    env.RANK !== undefined
  ) {
    if (port >= 65535) {
      throw new DistConfigError(
        `torchrun's agent store holds MASTER_PORT ${port} and ours needs the next port; ` +
          `choose a lower --master_port for torchrun, or pass --master-port to the program`,
      );
    }
    port += 1;
  }
  // torchrun sets both, and its LOCAL_* within them; one without the other is a half-set
  // environment (a run that would silently train alone, or wait for ranks that never come).
  const torchRank = int("RANK", env.RANK, 0);
  // (Under Slurm or Open MPI a script may export RANK alone for its own use: theirs decide.)
  const otherLauncher = env.SLURM_PROCID !== undefined || env.OMPI_COMM_WORLD_RANK !== undefined;
  if ((torchRank === undefined) !== (torchWorld === undefined) && !otherLauncher) {
    const [set, unset] = torchRank === undefined ? ["WORLD_SIZE", "RANK"] : ["RANK", "WORLD_SIZE"];
    throw new DistConfigError(
      `${set} is set but ${unset} is not: a rank started as torchrun starts it needs both ` +
        `(unset ${set} for a single-process run)`,
    );
  }
  const localRank = int("LOCAL_RANK", env.LOCAL_RANK, 0);
  // (Read only for a torchrun rank: another launcher's job may carry a stray one.)
  const ranksOnHost = torchWorld === undefined
    ? undefined
    : int("LOCAL_WORLD_SIZE", env.LOCAL_WORLD_SIZE, 1);
  if (torchWorld !== undefined) {
    if (ranksOnHost !== undefined && ranksOnHost > torchWorld) {
      throw new DistConfigError(
        `LOCAL_WORLD_SIZE ${ranksOnHost} is above WORLD_SIZE ${torchWorld}: a node cannot hold ` +
          "more ranks than the job",
      );
    }
    if (localRank !== undefined && ranksOnHost !== undefined && localRank >= ranksOnHost) {
      throw new DistConfigError(
        `LOCAL_RANK ${localRank} is not below LOCAL_WORLD_SIZE ${ranksOnHost}`,
      );
    }
  }
  const torchRunId = env.TORCHELASTIC_RUN_ID === "none" ? undefined : env.TORCHELASTIC_RUN_ID;
  const torch = one(
    "torchrun",
    torchRank,
    torchWorld,
    localRank,
    ranksOnHost !== undefined && ranksOnHost === torchWorld,
    torchRunId || undefined,
    "TORCHELASTIC_RUN_ID",
    nodesOf(torchWorld, env.LOCAL_WORLD_SIZE),
  );
  if (torch) return torch;
  const slurmNodes = env.SLURM_STEP_NUM_NODES ?? env.SLURM_NNODES ?? env.SLURM_JOB_NUM_NODES;
  const slurm = one(
    "slurm",
    int("SLURM_PROCID", env.SLURM_PROCID, 0),
    int("SLURM_NTASKS", env.SLURM_NTASKS, 1),
    int("SLURM_LOCALID", env.SLURM_LOCALID, 0),
    slurmNodes === "1",
    env.SLURM_JOB_ID
      ? env.SLURM_JOB_ID + (env.SLURM_STEP_ID ? `.${env.SLURM_STEP_ID}` : "")
      : undefined,
    "SLURM_JOB_ID",
    slurmNodes !== undefined && /^\d+$/.test(slurmNodes) ? Number(slurmNodes) : undefined,
  );
  if (slurm) {
    if (!addr) {
      const list = env.SLURM_STEP_NODELIST ?? env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST;
      if (!list && slurm.world > 1 && slurmNodes !== "1") {
        throw new DistConfigError("Slurm: set MASTER_ADDR (no node list found)");
      }
      if (list) {
        slurm.masterAddr = firstSlurmHost(list);
        if (slurmNodes !== "1") slurm.storeHost = slurm.masterAddr;
      }
    }
    return slurm;
  }
  const ompiWorld = int("OMPI_COMM_WORLD_SIZE", env.OMPI_COMM_WORLD_SIZE, 1);
  const ompiOneHost = env.OMPI_COMM_WORLD_LOCAL_SIZE !== undefined &&
    Number(env.OMPI_COMM_WORLD_LOCAL_SIZE) === ompiWorld;
  const ompi = one(
    "openmpi",
    int("OMPI_COMM_WORLD_RANK", env.OMPI_COMM_WORLD_RANK, 0),
    ompiWorld,
    int("OMPI_COMM_WORLD_LOCAL_RANK", env.OMPI_COMM_WORLD_LOCAL_RANK, 0),
    ompiOneHost,
    env.OMPI_MCA_ess_base_jobid,
    "OMPI_MCA_ess_base_jobid",
    nodesOf(ompiWorld, env.OMPI_COMM_WORLD_LOCAL_SIZE),
  );
  if (ompi) {
    if (!addr && ompi.world > 1 && !ompiOneHost) {
      throw new DistConfigError(
        "Open MPI: set MASTER_ADDR (e.g. mpirun -x MASTER_ADDR=host-of-rank-0)",
      );
    }
    return ompi;
  }
  return {
    ...common,
    ...id(undefined, ""),
    world: 1,
    rankBase: 0,
    localWorld: 1,
    localRankBase: 0,
    masterAddr: addr ?? "127.0.0.1",
    masterPort: port,
    storeHost: "127.0.0.1",
    source: "single",
    nodes: 1,
  };
}

/**
 * The layout of `world` ranks that all run as Workers of this process (no
 * rendezvous store, shared-memory links): for tools and tests that start their
 * own ranks rather than reading flags or a launcher's environment. Its
 * collectives give up after `distTimeoutMs`, 60 s by default: shorter than a
 * launched job's {@link DEFAULT_DIST_TIMEOUT_MS}, as every rank here starts at
 * once in one process, with no peer to wait for on another node.
 */
export function localDistConfig(world: number, distTimeoutMs = 60000): DistConfig {
  return {
    world,
    rankBase: 0,
    localWorld: world,
    localRankBase: 0,
    masterAddr: "127.0.0.1",
    masterPort: 0,
    storeHost: "127.0.0.1",
    distTimeoutMs,
    source: "single",
    nodes: 1,
  };
}
