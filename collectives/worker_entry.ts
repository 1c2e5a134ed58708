/**
 * The Worker side of the launcher: receives a {@link WorkerInit}, builds the
 * rank's {@link Communicator} and world group, imports the worker module and
 * runs its `default` (or `main`) export with a {@link WorkerContext}.
 * @module
 */

import { Arena } from "./arena.ts";
import { Communicator } from "./group.ts";
import { wasReported, type WorkerContext, type WorkerInit } from "./launch.ts";

type WorkerMain = (ctx: WorkerContext) => unknown;

const scope = self as unknown as {
  postMessage(m: unknown): void;
  close(): void;
  onmessage: ((e: MessageEvent<WorkerInit>) => void) | null;
};

scope.onmessage = async (e: MessageEvent<WorkerInit>) => {
  scope.onmessage = null;
  const init = e.data;
  let sentAcquired = false;
  const deviceAcquired = () => {
    if (sentAcquired) return;
    sentAcquired = true;
    scope.postMessage({ type: "acquired" });
  };
  let comm: Communicator | null = null;
  let running = false;
  try {
    const mod = await import(init.moduleUrl) as { default?: WorkerMain; main?: WorkerMain };
    const fn = mod.default ?? mod.main;
    if (typeof fn !== "function") {
      throw new Error(`${init.moduleUrl} exports no default or main function`);
    }
    const arena = new Arena(init.memory);
    const ab = arena.aborted();
    if (ab) throw new Error(`not started: ${ab.message}`);
    comm = await Communicator.create({
      rank: init.rank,
      world: init.world,
      localRanks: init.localRanks,
      arena,
      store: init.store,
      timeoutMs: init.timeoutMs,
      runId: init.runId,
      shmAlgorithm: init.shmAlgorithm,
      hostShm: init.hostShm,
    });
    const ctx: WorkerContext = {
      rank: init.rank,
      localRank: init.localRank,
      ranksInProcess: init.localRanks.length,
      world: init.world,
      nodes: init.nodes,
      group: comm.worldGroup(),
      comm,
      device: init.device,
      args: init.args,
      stopWord: init.stopWord,
      deviceAcquired,
    };
    running = true;
    const result = await fn(ctx);
    deviceAcquired();
    scope.postMessage({ type: "done", result });
  } catch (err) {
    deviceAcquired();
    // An error without a message still says what it was (its name and stack).
    const message = (err as Error)?.message || (err as Error)?.stack || String(err) ||
      "an error without a message";
    const name = (err as Error)?.name;
    scope.postMessage({
      type: "error",
      message,
      name,
      beforeRun: !running,
      reported: wasReported(err),
    });
  } finally {
    comm?.close();
  }
  scope.postMessage({ type: "closing" });
  scope.close();
};
