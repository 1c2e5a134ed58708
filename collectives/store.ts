/**
 * Rendezvous: a small TCP key-value store hosted by rank 0's node at
 * MASTER_ADDR:MASTER_PORT (the role of PyTorch's TCPStore). Ranks publish their
 * listening addresses in it and wait for each other's, with a timeout that
 * names the ranks that never arrived.
 * @module
 */

import { CollectiveError } from "./frame.ts";
import { readJson, writeJson } from "./tcp.ts";

interface Request {
  op: "set" | "get" | "add";
  key: string;
  value?: string;
  delta?: number;
  timeoutMs?: number;
}

interface Reply {
  ok: boolean;
  value?: string;
  error?: string;
}

/** The store server. */
export class StoreServer {
  #data = new Map<string, string>();
  #waiters = new Map<string, Set<(v: string) => void>>();
  #conns = new Set<Deno.Conn>();

  private constructor(readonly listener: Deno.TcpListener) {
    this.#acceptLoop();
  }

  /** Hosts a store on `hostname:port`; a clear error if the port is taken or the address is not local. */
  static listen(hostname: string, port: number): StoreServer {
    try {
      return new StoreServer(Deno.listen({ hostname, port }));
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
    for (;;) {
      const req = await readJson(conn) as Request | null;
      if (!req) return;
      await writeJson(conn, await this.#handle(req));
    }
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
    if (req.op === "set") {
      this.#set(req.key, req.value ?? "");
      return { ok: true };
    }
    if (req.op === "add") {
      const v = Number(this.#data.get(req.key) ?? "0") + (req.delta ?? 1);
      this.#set(req.key, String(v));
      return { ok: true, value: String(v) };
    }
    const have = this.#data.get(req.key);
    if (have !== undefined) return { ok: true, value: have };
    return new Promise<Reply>((resolve) => {
      let set = this.#waiters.get(req.key);
      if (!set) this.#waiters.set(req.key, set = new Set());
      const w = (v: string) => {
        clearTimeout(timer);
        resolve({ ok: true, value: v });
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
   * Connects to the store at `hostname:port`, retrying until `timeoutMs` (node 0
   * may start later); the error says which address could not be reached.
   */
  static async connect(hostname: string, port: number, timeoutMs: number): Promise<StoreClient> {
    const deadline = performance.now() + timeoutMs;
    let last = "";
    for (;;) {
      try {
        const conn = await Deno.connect({ hostname, port });
        conn.setNoDelay(true);
        return new StoreClient(conn, `${hostname}:${port}`);
      } catch (e) {
        last = (e as Error).message;
        if (e instanceof TypeError || /lookup|resolve|name/i.test(last)) {
          throw new CollectiveError(
            `cannot resolve the master address "${hostname}" (--master-addr / MASTER_ADDR): ${last}`,
          );
        }
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
