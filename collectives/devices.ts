/**
 * One GPU per local rank. WebGPU cannot enumerate adapters, so every
 * `requestAdapter()` returns the first one; the selection happens outside it:
 * Mesa's Vulkan device-select layer honours `DRI_PRIME=pci-DDDD_BB_DD_F!`
 * (Deno reads the environment at a Worker's first `requestAdapter()`), and
 * Dawn's `adapter=NAME` option matches a substring of the adapter name. This
 * module lists the host's GPUs from sysfs and maps local ranks to them.
 * @module
 */

import { DistConfigError } from "./env.ts";

/** A GPU found on this host. */
export interface HostGpu {
  /** PCI address, `DDDD:BB:DD.F`. */
  pci: string;
  /** PCI vendor id (e.g. 0x10de), if known. */
  vendor?: string;
  /** Kernel driver name, if known. */
  driver?: string;
}

/** What a local rank should use. */
export interface DeviceAssignment {
  /** Local rank on this host. */
  localRank: number;
  /** Index into the host's GPU list, or null for "the default adapter". */
  index: number | null;
  /** PCI address, when selecting by bus. */
  pci?: string;
  /** Value for the `DRI_PRIME` environment variable (Deno/wgpu on Mesa's Vulkan layer). */
  driPrime?: string;
  /** Dawn option (`adapter=NAME`), when selecting by name. */
  dawnOptions?: string[];
  /** Printable summary. */
  label: string;
}

/** Lists GPUs under `/sys/class/drm` (render nodes' PCI devices), sorted by PCI address. */
export function listHostGpus(root = "/sys/class/drm"): HostGpu[] {
  const found = new Map<string, HostGpu>();
  try {
    for (const e of Deno.readDirSync(root)) {
      if (!/^(card\d+|renderD\d+)$/.test(e.name)) continue;
      let target: string;
      try {
        target = Deno.realPathSync(`${root}/${e.name}/device`);
      } catch {
        continue;
      }
      const pci = target.split("/").pop()!;
      if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(pci) || found.has(pci)) continue;
      const read = (f: string) => {
        try {
          return Deno.readTextFileSync(`${target}/${f}`).trim();
        } catch {
          return undefined;
        }
      };
      let driver: string | undefined;
      try {
        driver = Deno.realPathSync(`${target}/driver`).split("/").pop();
      } catch { /* none */ }
      found.set(pci, { pci, vendor: read("vendor"), driver });
    }
  } catch { /* no sysfs */ }
  return [...found.values()].sort((a, b) => a.pci.localeCompare(b.pci));
}

/** `0000:01:00.0` → `pci-0000_01_00_0!` (the `!` exposes only that device). */
export function driPrimeFor(pci: string): string {
  return `pci-${pci.replace(/[:.]/g, "_")}!`;
}

/**
 * Maps local ranks `localRankBase .. localRankBase+count-1` to devices.
 * `spec` (the `--devices` flag) is a comma list with one entry per local rank
 * (or one entry for all): a GPU index into {@link listHostGpus}' order, a PCI
 * address (`pci:0000:01:00.0` or bare), `name:SUBSTRING` for Dawn's adapter
 * option, or `default`. Without a spec: with two or more GPUs, local rank `i`
 * gets GPU `i mod count`; otherwise every rank uses the default adapter.
 * `nodeRanks`, where the launch says how many ranks this node runs, refuses a
 * list with more entries than that (a device no rank would use is a typo).
 */
export function assignDevices(
  count: number,
  localRankBase: number,
  spec: string | undefined,
  gpus: HostGpu[],
  nodeRanks?: number,
): DeviceAssignment[] {
  const entries = spec?.trim() ? spec.split(",").map((s) => s.trim()) : [];
  if (entries.length > 1 && entries.length < localRankBase + count) {
    throw new DistConfigError(
      `--devices lists ${entries.length} devices but local ranks go up to ${
        localRankBase + count - 1
      }`,
    );
  }
  if (nodeRanks !== undefined && entries.length > 1 && entries.length > nodeRanks) {
    throw new DistConfigError(
      `--devices lists ${entries.length} devices but this node runs ${nodeRanks} rank${
        nodeRanks === 1 ? "" : "s"
      } (one entry per local rank, or one for all)`,
    );
  }
  const out: DeviceAssignment[] = [];
  for (let i = 0; i < count; i++) {
    const localRank = localRankBase + i;
    const entry = entries.length === 0 ? undefined : entries[entries.length === 1 ? 0 : localRank];
    out.push(assignOne(localRank, entry, gpus));
  }
  return out;
}

function byPci(localRank: number, pci: string, index: number | null): DeviceAssignment {
  const driPrime = driPrimeFor(pci);
  return {
    localRank,
    index,
    pci,
    driPrime,
    label: `local rank ${localRank}: GPU ${index ?? "?"} at PCI ${pci} (DRI_PRIME=${driPrime})`,
  };
}

function assignOne(localRank: number, entry: string | undefined, gpus: HostGpu[]) {
  if (entry === undefined) {
    if (gpus.length >= 2) {
      const index = localRank % gpus.length;
      return byPci(localRank, gpus[index].pci, index);
    }
    return {
      localRank,
      index: null,
      label: `local rank ${localRank}: default adapter (${gpus.length} GPU${
        gpus.length === 1 ? "" : "s"
      } on this host)`,
    };
  }
  if (entry === "default" || entry === "") {
    return { localRank, index: null, label: `local rank ${localRank}: default adapter` };
  }
  if (entry.startsWith("name:")) {
    const name = entry.slice(5);
    return {
      localRank,
      index: null,
      dawnOptions: [`adapter=${name}`],
      label:
        `local rank ${localRank}: adapter whose name contains "${name}" (Dawn adapter=${name})`,
    };
  }
  const pci = entry.startsWith("pci:") ? entry.slice(4) : entry;
  if (/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(pci)) {
    const idx = gpus.findIndex((g) => g.pci.toLowerCase() === pci.toLowerCase());
    return byPci(localRank, pci.toLowerCase(), idx >= 0 ? idx : null);
  }
  if (/^\d+$/.test(entry)) {
    const index = Number(entry);
    if (index >= gpus.length) {
      throw new DistConfigError(
        `--devices: GPU ${index} does not exist (this host has ${gpus.length}: ${
          gpus.map((g, i) => `${i}=${g.pci}`).join(", ") || "none found in /sys/class/drm"
        })`,
      );
    }
    return byPci(localRank, gpus[index].pci, index);
  }
  throw new DistConfigError(
    `--devices: cannot parse "${entry}" (use an index, a PCI address, name:SUBSTRING or default)`,
  );
}

/** The CPUs of a kernel CPU list such as `0-3,6,8-9` (7), or undefined when it does not parse. */
export function cpuListCount(list: string): number | undefined {
  let n = 0;
  for (const part of list.trim().split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return undefined;
    n += m[2] === undefined ? 1 : Number(m[2]) - Number(m[1]) + 1;
  }
  return n;
}

/**
 * The host's online CPUs (`/sys/devices/system/cpu/online`), whatever this
 * process is bound to, or undefined where it cannot be read. `mpirun` binds
 * each rank to its own cores, so a rank's `navigator.hardwareConcurrency` (1
 * under `mpirun -np 2` on 2 cores) is not what the host's ranks share.
 */
export function onlineCpuCount(path = "/sys/devices/system/cpu/online"): number | undefined {
  try {
    return cpuListCount(Deno.readTextFileSync(path));
  } catch {
    return undefined;
  }
}

/**
 * A warning when `ranks` local ranks will share the default adapter of a host
 * where no GPU was found (`gpus` 0, no `--devices`), more ranks than its
 * `cores` CPU cores: that adapter is then a software one, whose kernels run on
 * those cores, so every step crawls (64 ranks on 2 cores logged no step in
 * 200 s); `ranksOption` is what sets their number. Null otherwise.
 */
export function sharedAdapterWarning(
  ranks: number,
  gpus: number,
  cores: number,
  devices?: string,
  ranksOption = "--nproc-per-node",
): string | null {
  if (ranks <= cores || gpus > 0 || devices?.trim()) return null;
  return `warning: ${ranks} ranks on this node share its default adapter (no GPU found in ` +
    `/sys/class/drm) and its ${cores} CPU core${cores === 1 ? "" : "s"}, which run every ` +
    `rank's kernels on a software adapter: each step takes longer than with at most ${cores} ` +
    `rank${cores === 1 ? "" : "s"} (${ranksOption})`;
}

/** One line per local rank saying which device it will get (library use: no CLI prints it). */
export function describeDevices(
  count: number,
  localRankBase = 0,
  spec?: string,
  gpus: HostGpu[] = listHostGpus(),
): string[] {
  return assignDevices(count, localRankBase, spec, gpus).map((a) => a.label);
}
