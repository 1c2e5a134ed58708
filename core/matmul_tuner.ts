/**
 * Matmul autotuning: the first time a run uses a matmul shape, the heuristic
 * tiling serves it and the shape is noted; at the next quiet point (the trainer
 * calls {@link MatmulTuner.tune} after its first step) every noted shape is timed
 * with each candidate tiling of `kernels/matmul.ts`, the fastest is kept and, if
 * the tuner has a {@link TuningStore}, saved for the next run on the same
 * adapter (as Burn/CubeCL and TF.js cache theirs). Candidates add the products in
 * the same order, so the choice changes speed only, never a result.
 *
 * Attach one to a device as `device.matmulTuner` (null by default: the
 * heuristic alone, as before).
 * @module
 */

import {
  f16Variant,
  type MatmulOptions,
  matmulPlanWith,
  type MatmulShape,
  matmulShapeKey,
  type MatmulTiling,
  parseTilingKey,
  tilingCandidates,
  tilingKey,
  type TilingSource,
} from "../kernels/matmul.ts";
import { SOFTWARE_LANES } from "../kernels/kernel.ts";
import type { Device } from "./device.ts";
import { recordPlan } from "./ops/matmul.ts";

/** Saved choices of one adapter: shape key → {@link tuningEntry} (see `kernels/matmul.ts` for the keys). */
export type TuningTable = Record<string, string>;

/**
 * A digest of a kernel's WGSL (32-bit FNV-1a over its UTF-16 code units, hex),
 * or of any text.
 */
export function codeDigest(wgsl: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < wgsl.length; i++) {
    h ^= wgsl.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}

/**
 * What a store keeps for one shape: the chosen tiling's key and a digest of
 * what the choice was made among (`cpu32x8x4w16ta@1a2b3c4d`): the code the
 * chosen tiling generates for the shape, and the keys of the candidates it was
 * timed against. A later version of the project that generates other code for
 * that tiling, or offers other candidates, tunes the shape again (an entry
 * saved without a digest counts as changed). A change to the code of a
 * candidate that was not chosen, alone, goes unseen: the candidates share one
 * generator, so a change to it changes the chosen kernel's code too.
 */
export function tuningEntry(tiling: MatmulTiling, digest: string): string {
  return `${tilingKey(tiling)}@${digest}`;
}

/** The tiling and digest of a {@link tuningEntry} (digest "" for an entry saved without one), or null. */
export function parseTuningEntry(entry: string): { tiling: MatmulTiling; digest: string } | null {
  const at = entry.indexOf("@");
  const tiling = parseTilingKey(at < 0 ? entry : entry.slice(0, at));
  if (!tiling) return null;
  if (at < 0) return { tiling, digest: "" };
  const digest = entry.slice(at + 1);
  return /^[0-9a-f]{8}$/.test(digest) ? { tiling, digest } : null;
}

/**
 * The digest a {@link tuningEntry} of `tiling` for `shape` holds on an adapter
 * described by `opts`; `candidates`: the keys of `shape`'s candidate tilings
 * there, when the caller has them already.
 */
function choiceDigest(
  shape: MatmulShape,
  opts: MatmulOptions,
  tiling: MatmulTiling,
  candidates = tilingCandidates(shape, opts).map(tilingKey),
): string {
  return codeDigest(`${candidates.join(",")}\n${matmulPlanWith(shape, opts, tiling).kernel.code}`);
}

/**
 * The key `shape`'s choice is stored under: its shape key, and where the
 * adapter's options change its kernels' code ({@link f16Variant}: fp16 weights
 * read natively, with or without f16 arithmetic), that too, so that runs with
 * and without `--f16-arithmetic` keep a choice each.
 */
function storeKey(shape: MatmulShape, opts: MatmulOptions): string {
  const variant = f16Variant(shape, opts);
  return matmulShapeKey(shape) + (variant ? `/f16${variant}` : "");
}

/** Where tuned choices persist between runs (a file in the CLI; nothing in a browser). */
export interface TuningStore {
  /** The saved table of `adapter` (empty when none). */
  load(adapter: string): TuningTable;
  /** Adds `table`'s entries to what is saved for `adapter`. */
  save(adapter: string, table: TuningTable): void;
}

/** What tuning one shape found. */
export interface TunedShape {
  /** The shape's key. */
  shape: string;
  /** The chosen tiling's key. */
  chosen: string;
  /** The heuristic's tiling key. */
  heuristic: string;
  /** GFLOP/s of the chosen tiling. */
  gflops: number;
  /** GFLOP/s of the heuristic's tiling. */
  heuristicGflops: number;
  /** Candidates timed (fewer than the shape has when the budget ran out during it). */
  candidates: number;
  /** Candidates close to the best that were timed again, in turns ({@link FINALISTS}). */
  finalists: number;
  /** False when the budget ran out during this shape: its choice is not cached. */
  complete: boolean;
}

/**
 * Most candidates within {@link FINALIST_MARGIN} of the fastest that are timed
 * again, in {@link FINALIST_ROUNDS} rounds taking turns, each keeping its best
 * time. A first pass times each candidate in two back-to-back windows of about
 * 20 ms, and on a shared host one slow stretch can then decide between tilings
 * a few percent apart: on 2026-12-02 the tuner kept a 16×16 block for a
 * 512×352×704 product that ran at 22–24 GFLOP/s when timed again against
 * 26–29 for three other candidates.
 */
export const FINALISTS = 4;

/** How much slower than the fastest (as a ratio) a candidate may time and still be a finalist. */
export const FINALIST_MARGIN = 1.3;

/** Rounds in which the finalists are timed again, taking turns. */
export const FINALIST_ROUNDS = 3;

/**
 * The candidates worth timing again: at most {@link FINALISTS} of the fastest,
 * none slower than {@link FINALIST_MARGIN} times the fastest, fastest first.
 */
export function finalistsOf<T extends { ms: number }>(times: readonly T[]): T[] {
  const fastest = Math.min(...times.map((t) => t.ms));
  return times
    .filter((t) => t.ms <= FINALIST_MARGIN * fastest)
    .sort((a, b) => a.ms - b.ms)
    .slice(0, FINALISTS);
}

/**
 * Matmuls of less work than this (4 MFLOP: a fraction of a millisecond on a
 * CPU adapter) are not worth timing; they keep the heuristic tiling.
 */
export const MIN_TUNED_FLOPS = 4e6;

/**
 * Tuning time a tuner may spend in all, by default: 60 s. On a slow 2-core
 * machine timing every candidate of every shape took 265 s for the reference
 * config with Mesa's shader cache cold (mostly compiling the candidates) and
 * about 40 minutes per rank for GPT-2 small at TP=2 (docs/performance.md, "Tuning has a
 * time budget"); within the budget the largest shapes go first, and the rest
 * are tuned by later runs (choices are cached).
 */
export const DEFAULT_TUNING_BUDGET_MS = 60_000;

/** Options of a {@link MatmulTuner}. */
export interface MatmulTunerOptions {
  /** Shapes of fewer FLOPs keep the heuristic (default {@link MIN_TUNED_FLOPS}). */
  minFlops?: number;
  /** How long each candidate runs per timing, in ms (default 20). */
  targetMs?: number;
  /**
   * Tuning time this tuner may spend over all its {@link MatmulTuner.tune}
   * calls, in ms (default {@link DEFAULT_TUNING_BUDGET_MS}; Infinity: no limit).
   * A shape it could not finish keeps the fastest tiling timed so far for this
   * run, uncached; shapes it did not reach keep the heuristic; later runs tune
   * both.
   */
  budgetMs?: number;
}

/**
 * A tiling's kernel size, for guessing its compile time: the block of C one
 * invocation computes (software; unrolled, so code grows with it) or one
 * workgroup tile (GPU), in vec4s.
 */
export function compileSize(t: MatmulTiling): number {
  return t.software ? t.tm * t.tv : (t.tm * t.tv) / 4;
}

function flopsOf(s: MatmulShape): number {
  return 2 * s.batch * s.M * s.N * s.K;
}

/**
 * The adapter identity tuned choices are stored under: backend and adapter name,
 * and on a CPU adapter with other than {@link SOFTWARE_LANES} SIMD lanes their
 * number (Dawn's OpenGL name for llvmpipe does not say its vector width; caches
 * saved before lanes were known stay valid).
 */
export function adapterKey(device: Device): string {
  const s = device.summary();
  const lanes = device.softwareLanes; // SOFTWARE_LANES on every adapter but wide llvmpipe
  return `${s.backend}: ${s.name}` + (lanes === SOFTWARE_LANES ? "" : `, ${lanes} lanes`);
}

/**
 * The store's table for `device`'s choices: its {@link adapterKey}, marked as
 * holding {@link tuningEntry} values. Versions of the project from before the
 * digests read and write the unmarked table of the same file, so two versions
 * sharing one cache (a checkout of an older commit beside a newer one) keep a
 * table each instead of overwriting each other's choices run after run.
 */
export function tuningTableKey(device: Device): string {
  return `${adapterKey(device)} (with code digests)`;
}

/** Times matmul tilings per shape and remembers the fastest; see the module doc. */
export class MatmulTuner implements TilingSource {
  readonly #chosen = new Map<string, MatmulTiling>();
  /** The code digest each choice loaded from the store was timed with (checked at first use). */
  readonly #loadedDigests = new Map<string, string>();
  readonly #pending = new Map<string, { shape: MatmulShape; opts: MatmulOptions }>();
  /** Shapes the budget left untuned: not noted again in this tuner's life. */
  readonly #deferred = new Set<string>();
  /** Shapes whose chosen tiling was checked against the current candidates. */
  readonly #offered = new Set<string>();
  /** The store's table this tuner reads and adds to ({@link tuningTableKey}). */
  readonly #table: string;
  #spentMs = 0;
  /** The budget ran out in a {@link MatmulTuner.tune} call: shapes met later wait for a later run. */
  #exhausted = false;
  /** Shapes of fewer FLOPs keep the heuristic. */
  readonly minFlops: number;
  /** How long each candidate runs per timing, in ms. */
  readonly targetMs: number;
  /** Tuning time allowed over all {@link MatmulTuner.tune} calls, in ms. */
  readonly budgetMs: number;

  /** A tuner for `device`, starting from what `store` saved for this adapter. */
  constructor(
    readonly device: Device,
    readonly store: TuningStore | null = null,
    opts: MatmulTunerOptions = {},
  ) {
    this.minFlops = opts.minFlops ?? MIN_TUNED_FLOPS;
    this.targetMs = opts.targetMs ?? 20;
    this.budgetMs = opts.budgetMs ?? DEFAULT_TUNING_BUDGET_MS;
    this.#table = tuningTableKey(device);
    for (const [shape, entry] of Object.entries(store?.load(this.#table) ?? {})) {
      const e = parseTuningEntry(entry);
      if (!e) continue;
      this.#chosen.set(shape, e.tiling);
      this.#loadedDigests.set(shape, e.digest);
    }
  }

  /** Why a save to the store failed in the last {@link tune} (its choices still apply to this run), or null. */
  saveError: string | null = null;

  /** Shapes used but not tuned yet. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Tuned choices known (loaded or timed). */
  get size(): number {
    return this.#chosen.size;
  }

  /** Shapes the budget left untuned in this tuner's life (a later run tunes them). */
  get deferred(): number {
    return this.#deferred.size;
  }

  /**
   * The tuned tiling of `shape`, or undefined (then the caller uses the
   * heuristic, and the shape waits for {@link tune}; once a tune call has run
   * out of budget, for a later run, so that {@link pending} stays 0).
   */
  tiling(shape: MatmulShape, opts: MatmulOptions): MatmulTiling | undefined {
    if (flopsOf(shape) < this.minFlops) return undefined;
    const key = storeKey(shape, opts);
    const t = this.#chosen.get(key);
    if (t && this.#stillOffered(key, t, shape, opts)) return t;
    if (this.#exhausted) this.#deferred.add(key);
    else if (!this.#pending.has(key) && !this.#deferred.has(key)) {
      this.#pending.set(key, { shape: { ...shape }, opts });
    }
    return undefined;
  }

  /**
   * Times the candidate tilings of each pending shape, largest shape first, on
   * fresh buffers (zeros), keeps the fastest, saves the finished choices to the
   * store, and says what it found. Stops when the budget
   * ({@link MatmulTunerOptions.budgetMs}) is spent, or `limitMs` in this call
   * (a run's share of it, e.g. for a short run), or when `stop` says so (a
   * signal to the run), checked before each candidate's compile, after a turn
   * of the event loop that lets a signal's listener run (on Dawn's GL backend a
   * compile runs inside `queue.submit`, and a sync can resolve without such a
   * turn); the shapes left wait for a later run. Each shape's choice is saved
   * as soon as it is made. Waits for the device (it syncs), so call it between
   * steps.
   */
  async tune(limitMs = Infinity, stop: () => boolean = () => false): Promise<TunedShape[]> {
    const found: TunedShape[] = [];
    this.saveError = null;
    const start = performance.now();
    const budgetEnd = start + Math.min(this.budgetMs - this.#spentMs, limitMs);
    const over = async () => {
      await new Promise((r) => setTimeout(r, 0));
      return performance.now() >= budgetEnd || stop();
    };
    // What a sync costs with nothing to wait for (Deno's WebGPU polls: ≥ 10 ms),
    // taken off every timing so that it does not drown short kernels.
    const syncMs = this.#pending.size ? await this.#emptySyncMs() : 0;
    const largestFirst = [...this.#pending].sort(([, a], [, b]) =>
      flopsOf(b.shape) - flopsOf(a.shape)
    );
    for (const [key, { shape, opts }] of largestFirst) {
      if (await over()) break;
      const r = await this.#tuneOne(key, shape, opts, syncMs, budgetEnd, over);
      this.#pending.delete(key);
      this.#chosen.set(key, r.tiling);
      if (r.report.complete) {
        this.#save({ [key]: tuningEntry(r.tiling, choiceDigest(shape, opts, r.tiling)) });
      }
      found.push(r.report);
    }
    for (const key of this.#pending.keys()) this.#deferred.add(key);
    this.#pending.clear();
    this.#spentMs += performance.now() - start;
    if (this.#deferred.size || found.some((r) => !r.complete)) this.#exhausted = true;
    return found;
  }

  /**
   * Adds `table` to the store (a failure is kept in {@link saveError} for the
   * rest of the pass, whatever later saves do; the choices still apply).
   */
  #save(table: TuningTable): void {
    if (!this.store) return;
    try {
      this.store.save(this.#table, table);
    } catch (e) {
      this.saveError ??= e instanceof Error ? e.message : String(e);
    }
  }

  /**
   * Whether a loaded or timed choice is still among the candidates for `shape`
   * (a cache written before the candidates changed, e.g. before A could be read
   * through a texture, would otherwise pin a slower tiling), and, for a choice
   * loaded from the store, whether its kernel's code is the one it was timed
   * with ({@link tuningEntry}): checked once per shape; a choice no longer
   * offered, or whose code has changed, is forgotten and the shape tuned again.
   */
  #stillOffered(key: string, t: MatmulTiling, shape: MatmulShape, opts: MatmulOptions): boolean {
    if (this.#offered.has(key)) return true;
    const candidates = tilingCandidates(shape, opts).map(tilingKey);
    const offered = t.software === opts.software && candidates.includes(tilingKey(t));
    const loaded = this.#loadedDigests.get(key);
    if (offered && (loaded === undefined || loaded === choiceDigest(shape, opts, t, candidates))) {
      this.#offered.add(key);
      return true;
    }
    this.#chosen.delete(key);
    this.#loadedDigests.delete(key);
    return false;
  }

  /**
   * Slowest compile seen per unit of {@link compileSize}, ms: a cold compile of
   * a large software block takes 3–11 s on a Zen 5 core, roughly in proportion
   * to its size; a cached one (Mesa's shader cache) milliseconds.
   */
  #compileMsPerUnit = 0;

  #noteCompile(t: MatmulTiling, ms: number): void {
    this.#compileMsPerUnit = Math.max(this.#compileMsPerUnit, ms / compileSize(t));
  }

  /** What compiling `t` is expected to take at most, from the compiles seen so far (0 before any). */
  #expectedCompileMs(t: MatmulTiling): number {
    return this.#compileMsPerUnit * compileSize(t);
  }

  async #emptySyncMs(): Promise<number> {
    await this.device.sync();
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await this.device.sync();
      times.push(performance.now() - t0);
    }
    return times.sort((a, b) => a - b)[2];
  }

  async #tuneOne(
    key: string,
    shape: MatmulShape,
    opts: MatmulOptions,
    syncMs: number,
    budgetEnd: number,
    over: () => Promise<boolean>,
  ) {
    const device = this.device;
    const { batch, M, N, K } = shape;
    const f32 = 4;
    const aBytes = (shape.batchA ? batch : 1) * M * K * f32;
    const bElems = (shape.batchB ? batch : 1) * K * N;
    const bBytes = shape.packedB ? Math.ceil(bElems / 2) * 4 : bElems * f32;
    const cBytes = batch * M * N * f32;
    const epilogue = shape.geluOut || shape.geluGrad ? [cBytes] : []; // D or U
    const sizes = [aBytes, bBytes, ...(shape.bias ? [N * f32] : []), cBytes, ...epilogue];
    const bufs = sizes.map((size) => {
      const buffer = device.pool.acquire(size);
      device.upload(buffer, new Uint8Array(size));
      return { buffer, size };
    });
    try {
      const flops = flopsOf(shape);
      const candidates = tilingCandidates(shape, opts);
      const target = Math.max(this.targetMs, 4 * syncMs); // a sync's jitter stays small
      let best = { tiling: candidates[0], ms: Infinity };
      let heuristicMs = Infinity;
      let timed = 0;
      const times: { tiling: MatmulTiling; ms: number; again: () => Promise<number> }[] = [];
      for (const tiling of candidates) {
        // The heuristic (first) is always timed; the others while the budget lasts
        // and nothing asks to stop, and not one whose compile would likely run past
        // the budget (it is checked between compiles: one cannot be cut short).
        if (timed > 0 && await over()) break;
        if (timed > 0 && performance.now() + this.#expectedCompileMs(tiling) > budgetEnd) continue;
        const plan = matmulPlanWith(shape, opts, tiling);
        const run = async (n: number) => {
          const t0 = performance.now();
          for (let i = 0; i < n; i++) recordPlan(device, plan, bufs);
          await device.sync();
          return Math.max(performance.now() - t0 - syncMs, 0) / n;
        };
        // Compiles: one workgroup, not the whole product (seconds for a large one).
        const c0 = performance.now();
        recordPlan(device, { ...plan, workgroups: [1, 1, 1] }, bufs);
        await device.sync();
        this.#noteCompile(tiling, performance.now() - c0);
        const once = await run(1);
        const reps = Math.max(1, Math.min(256, Math.ceil(target / Math.max(once, 0.02))));
        // A long kernel clearly slower than the best is not timed again.
        const ms = once >= target && once > 1.5 * best.ms
          ? once
          : reps === 1
          ? Math.min(once, await run(1))
          : Math.min(await run(reps), await run(reps));
        timed++;
        if (ms < best.ms) best = { tiling, ms };
        if (tiling === candidates[0]) heuristicMs = ms;
        times.push({ tiling, ms, again: () => run(reps) });
      }
      const finalists = finalistsOf(times);
      if (finalists.length > 1) {
        for (let round = 0; round < FINALIST_ROUNDS && !await over(); round++) {
          for (const f of finalists) f.ms = Math.min(f.ms, await f.again());
        }
        for (const f of finalists) {
          if (f.ms < best.ms) best = { tiling: f.tiling, ms: f.ms };
          if (f.tiling === candidates[0]) heuristicMs = f.ms;
        }
      }
      const gf = (ms: number) => flops / ms / 1e6;
      return {
        tiling: best.tiling,
        report: {
          shape: key,
          chosen: tilingKey(best.tiling),
          heuristic: tilingKey(candidates[0]),
          gflops: gf(best.ms),
          heuristicGflops: gf(heuristicMs),
          candidates: timed,
          finalists: finalists.length > 1 ? finalists.length : 0,
          complete: timed === candidates.length,
        },
      };
    } finally {
      for (const b of bufs) device.pool.release(b.buffer);
    }
  }
}
