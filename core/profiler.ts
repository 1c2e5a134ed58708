/**
 * Per-kernel GPU timing for a {@link Device}: attached as `device.profiler`, it
 * counts every dispatch by kernel key and times it, either with the adapter's
 * `timestamp-query` (each dispatch in its own compute pass with timestamp writes,
 * resolved with the batch's submit) or, where the adapter has none, by capturing
 * the dispatches and replaying each one alone with a submit and a wait
 * ({@link DeviceProfiler.replay}). Detached (`device.profiler = null`, the
 * default) it costs nothing: the device checks one field per dispatch.
 * @module
 */

/** How dispatches are timed. */
export type ProfileMode = "timestamp" | "sync";

/** What one kernel (one pipeline key) did while the profiler was attached. */
export interface KernelStat {
  /** The kernel's pipeline key (kernel name and specialization). */
  key: string;
  /** Dispatches recorded. */
  dispatches: number;
  /** Workgroups launched, summed over the dispatches. */
  workgroups: number;
  /** GPU nanoseconds, summed over the timed dispatches. */
  ns: number;
  /** Dispatches that have a time (all of them once {@link DeviceProfiler.collect} returned). */
  timed: number;
}

/** A captured dispatch, or a command recorded outside a compute pass (a copy, a clear). */
type Captured =
  | {
    key: string;
    pipeline: GPUComputePipeline;
    bindGroup: GPUBindGroup;
    workgroups: [number, number, number];
  }
  | { key: string; record: (encoder: GPUCommandEncoder) => void };

/**
 * How many times sync mode replays a dispatch per submit, given the median
 * cost of an empty submit and wait (ms): once where that wait is fine-grained
 * (Dawn: ~0.05 ms), about one per 0.5 ms of it where it is coarse (Deno's
 * WebGPU: ~11 ms, ~23 repeats), at most 32.
 */
export function replayRepeats(overheadMs: number): number {
  return Math.min(32, Math.max(1, Math.ceil(overheadMs / 0.5)));
}

/** Collects per-kernel dispatch counts and GPU time; see the module doc. */
export class DeviceProfiler {
  /** Per-kernel statistics, by key (dispatches only). */
  readonly kernels: Map<string, KernelStat> = new Map();
  /**
   * The same for the commands recorded outside compute passes (copies into
   * stream textures, buffer copies, clears), by `transfer:…` key; `dispatches`
   * counts the commands.
   */
  readonly transfers: Map<string, KernelStat> = new Map();
  #querySet: GPUQuerySet | null = null;
  #capacity = 0;
  #slots: string[] = [];
  #resolved: { read: GPUBuffer; resolve: GPUBuffer; keys: string[] } | null = null;
  #pending: Promise<void>[] = [];
  #captured: Captured[] = [];

  /** A profiler timing with `mode` ("timestamp" needs the device's `timestamp-query`). */
  constructor(readonly mode: ProfileMode) {}

  #stat(key: string, map = this.kernels): KernelStat {
    let s = map.get(key);
    if (!s) map.set(key, s = { key, dispatches: 0, workgroups: 0, ns: 0, timed: 0 });
    return s;
  }

  /** Called by the device for each dispatch it records. */
  count(key: string, workgroups: number): void {
    const s = this.#stat(key);
    s.dispatches++;
    s.workgroups += workgroups;
  }

  /**
   * Timestamp mode: the `timestampWrites` for the pass of the next dispatch
   * (`capacity`: the most dispatches one submit may hold).
   */
  timestampWrites(gpu: GPUDevice, key: string, capacity: number): GPUComputePassTimestampWrites {
    if (!this.#querySet || this.#capacity < capacity) {
      this.#querySet?.destroy();
      this.#capacity = capacity;
      this.#querySet = gpu.createQuerySet({ type: "timestamp", count: 2 * capacity });
    }
    const i = this.#slots.length;
    if (i >= this.#capacity) {
      throw new Error("profiler: more timed dispatches than one submit holds");
    }
    this.#slots.push(key);
    return {
      querySet: this.#querySet,
      beginningOfPassWriteIndex: 2 * i,
      endOfPassWriteIndex: 2 * i + 1,
    };
  }

  /** Timestamp mode: records the resolve of this batch's timestamps into `encoder` (before its submit). */
  resolve(gpu: GPUDevice, encoder: GPUCommandEncoder): void {
    const n = this.#slots.length;
    if (n === 0 || !this.#querySet) return;
    const bytes = 16 * n;
    const resolveBuf = gpu.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const read = gpu.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
    });
    encoder.resolveQuerySet(this.#querySet, 0, 2 * n, resolveBuf, 0);
    encoder.copyBufferToBuffer(resolveBuf, 0, read, 0, bytes);
    this.#resolved = { read, resolve: resolveBuf, keys: this.#slots };
    this.#slots = [];
  }

  /** Timestamp mode: after the submit that holds the resolve, maps the times (no wait here). */
  afterSubmit(): void {
    const r = this.#resolved;
    if (!r) return;
    this.#resolved = null;
    r.resolve.destroy(); // its copy is submitted
    this.#pending.push(
      r.read.mapAsync(GPUMapMode.READ).then(() => {
        const t = new BigUint64Array(r.read.getMappedRange().slice(0));
        r.read.unmap();
        r.read.destroy();
        r.keys.forEach((key, i) => {
          const s = this.#stat(key);
          const d = t[2 * i + 1] - t[2 * i];
          // A zero pair means the implementation wrote no timestamp; count it untimed.
          if (t[2 * i] !== 0n || t[2 * i + 1] !== 0n) {
            s.ns += Number(d > 0n ? d : 0n);
            s.timed++;
          }
        });
      }),
    );
  }

  /** Sync mode: keeps what it takes to replay one dispatch alone. */
  capture(
    key: string,
    pipeline: GPUComputePipeline,
    bindGroup: GPUBindGroup,
    workgroups: [number, number, number],
  ): void {
    this.#captured.push({ key, pipeline, bindGroup, workgroups });
  }

  /**
   * Called by the device for each command it records outside a compute pass (a
   * buffer-to-texture copy, a buffer copy, a clear), under a key of its own
   * (`transfer:…`, in {@link DeviceProfiler.transfers}): counted in both modes,
   * timed in sync mode only, where
   * {@link DeviceProfiler.replay} records it again with `record`
   * (timestamp-query times passes, and these are not in one).
   */
  command(key: string, record: (encoder: GPUCommandEncoder) => void): void {
    this.#stat(key, this.transfers).dispatches++;
    if (this.mode === "sync") this.#captured.push({ key, record });
  }

  /** Timestamp mode: waits until every submitted batch's timestamps are read. */
  async collect(): Promise<void> {
    const p = this.#pending;
    this.#pending = [];
    await Promise.all(p);
  }

  /**
   * Nanoseconds taken off each replayed item's time by the last {@link replay}:
   * what timing an item alone cost beyond its share of the whole step replayed
   * in one submit (0 where the parts did not add up to more than the whole).
   */
  excessNs = 0;

  /**
   * Sync mode: replays each captured dispatch, copy or clear alone (one submit,
   * one wait) and takes its wall time minus the median cost of an empty submit and wait. Where
   * that wait is coarse (Deno's WebGPU polls every ~10 ms) a submit holds the
   * dispatch {@link replayRepeats} times and the time is divided among them: a
   * small kernel timed once would mostly round to zero. An item timed alone
   * still carries its own submit's cost beyond an empty one's, so the parts add
   * up to more than the step: the valid items are replayed once more all in one
   * submit (the median of 3), and the excess of the parts over that whole,
   * spread evenly, is taken off each ({@link excessNs}), so that the times add
   * up to the step's GPU time. The replay rewrites the buffers the dispatches
   * wrote: call it after a step whose results are no longer needed. Returns the
   * median overhead of an empty submit and wait in nanoseconds.
   */
  async replay(gpu: GPUDevice): Promise<number> {
    const captured = this.#captured;
    this.#captured = [];
    await gpu.queue.onSubmittedWorkDone();
    const empty: number[] = [];
    for (let i = 0; i < 21; i++) {
      const t0 = performance.now();
      gpu.queue.submit([gpu.createCommandEncoder().finish()]);
      await gpu.queue.onSubmittedWorkDone();
      empty.push(performance.now() - t0);
    }
    empty.sort((a, b) => a - b);
    const overhead = empty[10];
    const reps = replayRepeats(overhead);
    const encode = (enc: GPUCommandEncoder, c: Captured, times: number) => {
      if ("record" in c) {
        for (let i = 0; i < times; i++) c.record(enc);
        return;
      }
      const pass = enc.beginComputePass();
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, c.bindGroup);
      for (let i = 0; i < times; i++) pass.dispatchWorkgroups(...c.workgroups);
      pass.end();
    };
    const timed: { c: Captured; ms: number }[] = [];
    for (const c of captured) {
      const transfer = "record" in c;
      const enc = gpu.createCommandEncoder();
      encode(enc, c, reps);
      // A copy may name a staging buffer the step has destroyed since: its
      // replay is invalid, does nothing, and stays untimed.
      if (transfer) gpu.pushErrorScope("validation");
      const cmd = enc.finish();
      const t0 = performance.now();
      gpu.queue.submit([cmd]);
      await gpu.queue.onSubmittedWorkDone();
      const ms = (performance.now() - t0 - overhead) / reps;
      if (transfer && await gpu.popErrorScope()) continue;
      timed.push({ c, ms });
    }
    let excess = 0;
    if (timed.length > 0) {
      const whole: number[] = [];
      for (let i = 0; i < 3; i++) {
        const enc = gpu.createCommandEncoder();
        for (const { c } of timed) encode(enc, c, 1);
        const cmd = enc.finish();
        const t0 = performance.now();
        gpu.queue.submit([cmd]);
        await gpu.queue.onSubmittedWorkDone();
        whole.push(performance.now() - t0 - overhead);
      }
      whole.sort((a, b) => a - b);
      const parts = timed.reduce((a, t) => a + Math.max(0, t.ms), 0);
      excess = Math.max(0, (parts - whole[1]) / timed.length);
    }
    this.excessNs = excess * 1e6;
    for (const { c, ms } of timed) {
      const s = this.#stat(c.key, "record" in c ? this.transfers : this.kernels);
      s.ns += Math.max(0, ms - excess) * 1e6;
      s.timed++;
    }
    return overhead * 1e6;
  }

  /** Clears the statistics (between steps). */
  reset(): void {
    this.kernels.clear();
    this.transfers.clear();
    this.#captured = [];
  }

  /** Frees the query set. */
  destroy(): void {
    this.#querySet?.destroy();
    this.#querySet = null;
  }
}
