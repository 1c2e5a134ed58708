/**
 * Rendezvous: a small TCP key-value store hosted by rank 0's node at
 * MASTER_ADDR:MASTER_PORT (the role of PyTorch's TCPStore). Ranks publish their
 * listening addresses in it and wait for each other's, with a timeout that
 * names the ranks that never arrived.
 *
 * Every client opens with a hello carrying its run id (the job's identity,
 * see collectives/env.ts) and its rank. The store belongs to one run: a rank
 * of another run is refused with both ids named, and so is a second claimant
 * of a rank already joined, so two jobs started on one port cannot pair their
 * ranks. There is no authentication: the run id names a job, it is not a
 * secret, so a store reachable from other hosts belongs on a trusted network.
 *
 * The hello and its answer also carry {@link WIRE_PROTOCOL}: nodes running
 * versions of this program that would misread each other stop at rendezvous,
 * naming both versions, instead of failing later in a way that blames the
 * data or the flags.
 * @module
 */

import { CollectiveError } from "./frame.ts";
import { describeRun, readJson, writeJson } from "./tcp.ts";

/**
 * The version of what the nodes of a job exchange and compare: the rendezvous,
 * the links' frames, the collectives' algorithms, and the checks the command
 * line runs over them (flags, data fingerprints). Bump it with any change that
 * a node of the previous version would misread. Nodes that send none predate
 * it. 2: the data check hashes every token (cli/same_data.ts; before, nodes
 * compared a sample of each stream, so an older node would report different
 * data). 3: the ranks check that `--save` is one directory and that `--load`
 * gives one iteration (cli/same_checkpoint.ts), collectives a node of 2 does not
 * make.
 */
export const WIRE_PROTOCOL = 3;

/**
 * How long a client waits for the answer to its hello. The store answers at
 * once (it does no other work); a service that reads the hello and says
 * nothing (an HTTP server waiting for a line) is not the store, and the
 * client stops instead of waiting out the dist timeout.
 */
export const HELLO_ANSWER_MS = 10_000;

/** How a version is named in a refusal: its number, or that it predates them. */
function describeProtocol(p: unknown): string {
  return typeof p === "number" ? `wire protocol ${p}` : "no wire protocol: an older version";
}

interface Request {
  op: "hello" | "set" | "get" | "add";
  key?: string;
  /** hello: the client's run id ("" when the job has none). */
  run?: string;
  /** hello: the client's rank. */
  rank?: number;
  /** hello: the number of ranks the client's job has (the node started with). */
  world?: number;
  /** hello: the client's {@link WIRE_PROTOCOL} (absent from versions before it). */
  protocol?: number;
  value?: string;
  delta?: number;
  timeoutMs?: number;
}

interface Reply {
  ok: boolean;
  value?: string;
  error?: string;
  /** The answer to a hello: the store's {@link WIRE_PROTOCOL} (absent from versions before it). */
  protocol?: number;
}

/**
 * The store gave up on the job (a node started for another world size): every
 * rank's wait fails with it, naming why, instead of timing out.
 */
export class RendezvousFailed extends CollectiveError {
  /** The failure, `why` being the store's reason. */
  constructor(why: string) {
    super(`rendezvous failed: ${why}`);
    this.name = "RendezvousFailed";
  }
}

/** The store server. */
export class StoreServer {
  #data = new Map<string, string>();
  /** Waiters per key: called with the value, or null when the rendezvous failed. */
  #waiters = new Map<string, Set<(v: string | null) => void>>();
  /** Why the rendezvous cannot complete (a node started for another world size), or null. */
  #failed: string | null = null;
  #conns = new Set<Deno.Conn>();
  /** Ranks joined so far and the address each came from. */
  #joined = new Map<number, string>();
  /** Refusals so far (see {@link StoreServer.listen}'s `onRefuse`). */
  readonly refused: string[] = [];

  private constructor(
    readonly listener: Deno.TcpListener,
    readonly runId: string,
    readonly onRefuse?: (why: string) => void,
    readonly world?: number,
  ) {
    this.#acceptLoop();
  }

  /**
   * Hosts the store of run `runId` ("" or undefined: a job without id) on
   * `hostname:port`; a clear error if the port is taken or the address is not
   * local. `onRefuse` hears of every client refused (another run, a rank twice,
   * a rank of another `world` size: that one also fails every rank's wait, at
   * once, since the rendezvous cannot complete).
   */
  static listen(
    hostname: string,
    port: number,
    runId?: string,
    onRefuse?: (why: string) => void,
    world?: number,
  ): StoreServer {
    try {
      return new StoreServer(Deno.listen({ hostname, port }), runId ?? "", onRefuse, world);
    } catch (e) {
      const err = e as Error;
      const why = err instanceof Deno.errors.AddrInUse
        ? `port ${port} is already in use (another run still alive? choose another --master-port)`
        : err instanceof Deno.errors.AddrNotAvailable
        ? `${hostname} is not an address of this host (check --master-addr on node 0)`
        : err.message;
      throw new CollectiveError(`cannot host the rendezvous store on ${hostname}:${port}: ${why}`);
    }
  }

  /** The bound port. */
  get port(): number {
    return (this.listener.addr as Deno.NetAddr).port;
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.listener.accept();
      } catch {
        return;
      }
      this.#conns.add(conn);
      this.#serve(conn).catch(() => {}).finally(() => {
        this.#conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const hello = await readJson(conn) as Request | null;
    if (!hello) return;
    const refusal = this.#admit(hello, conn);
    await writeJson(
      conn,
      refusal
        ? { ok: false, error: refusal, protocol: WIRE_PROTOCOL }
        : { ok: true, value: this.runId, protocol: WIRE_PROTOCOL },
    );
    if (refusal) return;
    const rank = hello.rank!;
    const from = conn.remoteAddr as Deno.NetAddr;
    const where = `${from.hostname}:${from.port}`;
    try {
      for (;;) {
        const req = await readJson(conn) as Request | null;
        if (!req) return;
        await writeJson(conn, await this.#handle(req));
      }
    } finally {
      if (this.#joined.get(rank) === where) this.#joined.delete(rank);
    }
  }

  /** Why the client of `hello` is refused, or null to admit it. */
  #admit(hello: Request, conn: Deno.Conn): string | null {
    const from = conn.remoteAddr as Deno.NetAddr;
    const where = `${from.hostname}:${from.port}`;
    let why: string | null = null;
    if (hello.op !== "hello" || !Number.isInteger(hello.rank)) {
      why = `a client at ${where} did not introduce itself (not this program's store protocol)`;
    } else if ((hello.run ?? "") !== this.runId) {
      why = `the store at ${this.#address()} belongs to ${describeRun(this.runId)}; ` +
        `rank ${hello.rank} of ${describeRun(hello.run)} (from ${where}) refused: two jobs on ` +
        `one --master-port? Give each job its own port, or the same --rdzv-id on all its nodes`;
    } else if (hello.protocol !== WIRE_PROTOCOL) {
      why = `rank ${hello.rank} (from ${where}) runs another version of this program ` +
        `(${describeProtocol(hello.protocol)}), node 0 runs ${describeProtocol(WIRE_PROTOCOL)}: ` +
        `run the same version on every node`;
      // A job's rank of another version stops the job; a client outside any job is only refused.
      if (hello.rank! >= 0) this.#fail(why);
    } else if (
      this.world !== undefined && hello.world !== undefined && hello.world !== this.world
    ) {
      why = `rank ${hello.rank} (from ${where}) was started for a job of ${hello.world} ranks, ` +
        `node 0 for ${this.world}: start every node with the same --nnodes and ` +
        `--nproc-per-node`;
      this.#fail(why);
    } else if (hello.rank! >= 0 && this.#joined.has(hello.rank!)) {
      why = `rank ${hello.rank} of ${describeRun(this.runId)} joined twice (first from ` +
        `${this.#joined.get(hello.rank!)}, again from ${where}): two jobs on one --master-port ` +
        `without run ids? Give each job its own port or --rdzv-id`;
    }
    if (why) {
      this.refused.push(why);
      this.onRefuse?.(why);
    } else if (hello.rank! >= 0) this.#joined.set(hello.rank!, where);
    return why;
  }

  #address(): string {
    const a = this.listener.addr as Deno.NetAddr;
    return `${a.hostname}:${a.port}`;
  }

  /** Fails every wait, now and later, with `why`. */
  #fail(why: string): void {
    this.#failed ??= why;
    for (const ws of this.#waiters.values()) for (const w of ws) w(null);
    this.#waiters.clear();
  }

  #set(key: string, value: string): void {
    this.#data.set(key, value);
    const ws = this.#waiters.get(key);
    if (ws) {
      this.#waiters.delete(key);
      for (const w of ws) w(value);
    }
  }

  #handle(req: Request): Promise<Reply> | Reply {
    const key = req.key ?? "";
    if (req.op === "set") {
      this.#set(key, req.value ?? "");
      return { ok: true };
    }
    if (req.op === "add") {
      const v = Number(this.#data.get(key) ?? "0") + (req.delta ?? 1);
      this.#set(key, String(v));
      return { ok: true, value: String(v) };
    }
    if (req.op !== "get") return { ok: false, error: `unknown request "${req.op}"` };
    const have = this.#data.get(key);
    if (have !== undefined) return { ok: true, value: have };
    if (this.#failed) return { ok: false, error: this.#failed };
    return new Promise<Reply>((resolve) => {
      let set = this.#waiters.get(key);
      if (!set) this.#waiters.set(key, set = new Set());
      const w = (v: string | null) => {
        clearTimeout(timer);
        resolve(v === null ? { ok: false, error: this.#failed! } : { ok: true, value: v });
      };
      const timer = setTimeout(() => {
        set!.delete(w);
        resolve({ ok: false, error: "timeout" });
      }, req.timeoutMs ?? 30000);
      set.add(w);
    });
  }

  /** Stops serving. */
  close(): void {
    try {
      this.listener.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    for (const ws of this.#waiters.values()) for (const w of ws) w("");
  }
}

/** A client of the store. Requests are serialised on one connection. */
export class StoreClient {
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(readonly conn: Deno.TcpConn, readonly address: string) {}

  /**
   * Connects to the store at `hostname:port` as `rank` of run `runId` ("" or
   * undefined: a job without id), retrying until `timeoutMs` (node 0 may start
   * later); the error says which address could not be reached, or why the
   * store refused this rank (another run, or the rank already joined).
   */
  static async connect(
    hostname: string,
    port: number,
    timeoutMs: number,
    who: { rank: number; runId?: string; world?: number } = { rank: -1 },
  ): Promise<StoreClient> {
    const deadline = performance.now() + timeoutMs;
    let last = "";
    for (;;) {
      let conn: Deno.TcpConn | null = null;
      try {
        conn = await Deno.connect({ hostname, port });
        conn.setNoDelay(true);
      } catch (e) {
        last = (e as Error).message;
        if (e instanceof TypeError || /lookup|resolve|name/i.test(last)) {
          throw new CollectiveError(
            `cannot resolve the master address "${hostname}" (--master-addr / MASTER_ADDR): ${last}`,
          );
        }
      }
      if (conn) {
        const client = new StoreClient(conn, `${hostname}:${port}`);
        const r = await client.#hello(who, deadline);
        if (r === "ok") return client;
        client.close();
        if (r !== "retry") {
          throw new CollectiveError(`rendezvous refused: ${r}`);
        }
        last = "the connection closed before the store answered";
      }
      if (performance.now() >= deadline) {
        throw new CollectiveError(
          `could not reach the rendezvous store at ${hostname}:${port} within ${timeoutMs} ms ` +
            `(wrong --master-addr/--master-port, or node 0 not started?): ${last}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Introduces this client; "ok", "retry" (the connection closed before an
   * answer: a store going down or not yet serving), or the refusal.
   */
  async #hello(
    who: { rank: number; runId?: string; world?: number },
    deadline: number,
  ): Promise<string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const reply = await Promise.race([
        (async () => {
          // An undefined world (a client outside a job) is left out of the JSON.
          await writeJson(
            this.conn,
            {
              op: "hello",
              rank: who.rank,
              run: who.runId ?? "",
              world: who.world,
              protocol: WIRE_PROTOCOL,
            } satisfies Request,
          );
          return await readJson(this.conn) as Reply | null;
        })(),
        new Promise<"late">((r) => {
          const left = Math.max(1000, deadline - performance.now());
          timer = setTimeout(() => r("late"), Math.min(HELLO_ANSWER_MS, left));
        }),
      ]);
      if (reply === "late") {
        return `the service at ${this.address} did not answer the rendezvous hello within ` +
          `${HELLO_ANSWER_MS / 1000} s (is something else listening on --master-port?)`;
      }
      if (!reply) return "retry";
      if (reply.ok && reply.protocol !== WIRE_PROTOCOL) {
        return `the rendezvous store at ${this.address} (node 0) runs another version of this ` +
          `program (${describeProtocol(reply.protocol)}), this node runs ` +
          `${describeProtocol(WIRE_PROTOCOL)}: run the same version on every node`;
      }
      if (reply.ok) return "ok";
      return reply.error ?? "refused by the rendezvous store";
    } catch (e) {
      if (e instanceof SyntaxError || /oversized/.test((e as Error).message)) {
        return `the service at ${this.address} is not this program's rendezvous store ` +
          `(is something else listening on --master-port?)`;
      }
      return "retry";
    } finally {
      clearTimeout(timer);
    }
  }

  /** The local address this client reached the store from (what peers can dial). */
  get localHostname(): string {
    return (this.conn.localAddr as Deno.NetAddr).hostname;
  }

  #request(req: Request): Promise<Reply> {
    const run = this.#queue.then(async () => {
      await writeJson(this.conn, req);
      const r = await readJson(this.conn) as Reply | null;
      if (!r) throw new CollectiveError(`the rendezvous store at ${this.address} went away`);
      return r;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Sets `key` to `value`. */
  async set(key: string, value: string): Promise<void> {
    await this.#request({ op: "set", key, value });
  }

  /** Adds `delta` to the number at `key` and returns the new value. */
  async add(key: string, delta = 1): Promise<number> {
    return Number((await this.#request({ op: "add", key, delta })).value);
  }

  /** Waits until `key` exists and returns its value; throws after `timeoutMs`. */
  async get(key: string, timeoutMs: number): Promise<string> {
    const r = await this.#request({ op: "get", key, timeoutMs });
    if (!r.ok && r.error !== "timeout") throw new RendezvousFailed(r.error ?? "no reason given");
    if (!r.ok) throw new CollectiveError(`timed out after ${timeoutMs} ms waiting for "${key}"`);
    return r.value!;
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}
