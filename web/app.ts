/// <reference lib="dom" />
/**
 * The page: a form, one Worker per tensor-parallel rank (web/worker.ts), a live
 * loss chart, throughput, streamed samples, stop, and the trained model as
 * Hugging Face GPT-2 files. `globalThis.megatron` holds the run's numbers (the
 * browser test reads them).
 * @module
 */

import { Arena } from "../collectives/arena.ts";
import { showControls } from "../cli/text_stream.ts";
import { checkpointFiles } from "./checkpoint.ts";
import { SAMPLE_DEFAULTS } from "../models/sampling.ts";
import {
  gptConfigOf,
  type RunConfig,
  type RunState,
  type ShardMessage,
  type WorkerEvent,
} from "./protocol.ts";

/** Model sizes on offer (byte tokens). */
const SIZES: Record<
  string,
  Pick<
    RunConfig,
    "numLayers" | "hiddenSize" | "numHeads" | "seqLength" | "batch" | "evalIters" | "sampleTokens"
  >
> = {
  tiny: {
    numLayers: 1,
    hiddenSize: 64,
    numHeads: 4,
    seqLength: 32,
    batch: 4,
    evalIters: 2,
    sampleTokens: 48,
  },
  small: {
    numLayers: 2,
    hiddenSize: 128,
    numHeads: 4,
    seqLength: 64,
    batch: 8,
    evalIters: 4,
    sampleTokens: 120,
  },
  medium: {
    numLayers: 4,
    hiddenSize: 256,
    numHeads: 8,
    seqLength: 128,
    batch: 8,
    evalIters: 4,
    sampleTokens: 160,
  },
};

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const state: RunState = {
  config: null,
  adapter: "",
  params: 0,
  losses: [],
  val: [],
  msPerStep: [],
  scriptAt: performance.now(),
  trainPressedAt: NaN,
  firstStepAt: NaN,
  pageToFirstStep: NaN,
  samples: [],
  done: false,
  stopped: false,
  error: null,
};
(globalThis as unknown as { megatron: RunState }).megatron = state;

/**
 * The rank Workers, kept from one run to the next (rank r of every run is
 * Worker r): each keeps its device, whose pipelines a software adapter would
 * otherwise compile again (~30 s in SwiftShader). A failed run ends them all.
 */
let workers: Worker[] = [];
let stopWord: Int32Array | null = null;
/** The last run's download links (blob URLs), revoked when the next run starts. */
let downloadUrls: string[] = [];
/** The ranks that reported an error in this run. */
let failedRanks = new Set<number>();
/** Ends a failed run's Workers when not every rank reported its error in time. */
let failTimer: ReturnType<typeof setTimeout> | undefined;

function log(line: string): void {
  $("log").textContent += line + "\n";
}

/** How to turn WebGPU on, said after what is missing. */
const HOW_TO_ENABLE = "Chrome and Edge 113+ have it on by default on Windows, macOS and " +
  "ChromeOS; on Linux start Chrome with --enable-unsafe-webgpu --enable-features=Vulkan (or turn " +
  "on chrome://flags/#enable-unsafe-webgpu). Firefox 141+ (Windows) and Safari 26+ have it too. " +
  "WebGPU needs a secure origin: https, or http://localhost / 127.0.0.1.";

/**
 * Why this browser cannot train, or null: no `navigator.gpu`, or (Chrome on
 * Linux without the flags) a `navigator.gpu` that offers no adapter.
 */
async function noWebGpu(): Promise<string | null> {
  if (!isSecureContext) {
    // Plain http from another host: the browser hides WebGPU and SharedArrayBuffer, whatever flags.
    return `This page was opened at ${location.origin}, which is not a secure context, so the ` +
      "browser gives it no WebGPU (nor SharedArrayBuffer). Open it at http://localhost:" +
      `${location.port || 80}/ on the machine that runs deno task serve, or forward the port to ` +
      `this one (ssh -L ${location.port || 80}:localhost:${location.port || 80} HOST) and open ` +
      "http://localhost there.";
  }
  if (!("gpu" in navigator) || !navigator.gpu) {
    return "This browser has no WebGPU (navigator.gpu is undefined), so it cannot train here. " +
      HOW_TO_ENABLE;
  }
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) {
    return "This browser has WebGPU but offers no adapter (requestAdapter() returned null), so " +
      "it cannot train here. " + HOW_TO_ENABLE;
  }
  return null;
}

/** A number field's value, or `fallback` where it is empty or not a number (0 stays 0). */
function numberField(id: string, fallback: number): number {
  const raw = $<HTMLInputElement>(id).value.trim();
  const v = raw === "" ? NaN : Number(raw);
  return Number.isFinite(v) ? v : fallback;
}

function readConfig(): RunConfig {
  const size = SIZES[$<HTMLSelectElement>("size").value] ?? SIZES.small;
  const steps = Math.max(1, Math.floor(numberField("steps", 1)));
  return {
    ...size,
    steps,
    // 0 trains nothing (a frozen-weights check) and is kept: it read as "missing" and ran 3e-3.
    lr: Math.max(0, numberField("lr", 3e-3)),
    tp: Number($<HTMLSelectElement>("tp").value) === 2 ? 2 : 1,
    evalInterval: Math.max(5, Math.round(steps / 10)),
    sampleInterval: Math.max(0, Math.floor(numberField("sampleEvery", 0))),
    prompt: "Call me ",
    dropout: 0.1,
    seed: 1234,
  };
}

// ---- the chart ----
const W = 940, H = 280, PAD = 34;

function drawChart(): void {
  const svg = $("chart");
  const c = state.config;
  if (!c) return;
  const all = [...state.losses, ...state.val.map((v) => v.loss)].filter(Number.isFinite);
  if (all.length === 0) return;
  const lo = Math.max(0, Math.min(...all) - 0.1), hi = Math.max(...all) + 0.1;
  const x = (s: number) => PAD + (W - PAD - 8) * (s / Math.max(1, c.steps));
  const y = (v: number) => 8 + (H - PAD - 8) * (1 - (v - lo) / (hi - lo));
  const line = (pts: [number, number][]) =>
    pts.map(([s, v]) => `${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  // A loss that is not finite is left out of the chart (the run says so in its log).
  const finite = ([, v]: [number, number]) => Number.isFinite(v);
  const train = state.losses.map((v, i) => [i + 1, v] as [number, number]).filter(finite);
  const val = state.val.map((v) => [v.step, v.loss] as [number, number]).filter(finite);
  let ticks = "";
  for (let k = 0; k <= 4; k++) {
    const v = lo + (hi - lo) * k / 4;
    ticks += `<line x1="${PAD}" x2="${W - 8}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/>` +
      `<text x="2" y="${y(v) + 4}" font-size="11" fill="#777">${tickLabel(v)}</text>`;
  }
  ticks +=
    `<text x="${W - 8}" y="${
      H - 6
    }" font-size="11" fill="#777" text-anchor="end">step ${c.steps}</text>` +
    `<text x="${PAD}" y="${H - 6}" font-size="11" fill="#777">0</text>`;
  svg.innerHTML = ticks +
    `<polyline fill="none" stroke="#4a7bd0" stroke-width="1.5" points="${line(train)}"/>` +
    `<polyline fill="none" stroke="#d0542c" stroke-width="2" points="${line(val)}"/>` +
    val.map(([s, v]) => `<circle cx="${x(s)}" cy="${y(v)}" r="3" fill="#d0542c"/>`).join("");
}

/** A loss axis label that fits the margin: 4.25, or 1.7e+17 for a run that diverged. */
function tickLabel(v: number): string {
  return Math.abs(v) < 1000 ? v.toFixed(2) : v.toExponential(1);
}

// ---- a run ----
function setRunning(on: boolean): void {
  $<HTMLButtonElement>("train").disabled = on;
  $<HTMLButtonElement>("stop").disabled = !on;
}

/**
 * Ends the run; `endWorkers` also ends the Workers: after a failure that not
 * every rank reported, where a rank may be stuck in a collective.
 */
function finish(endWorkers: boolean): void {
  clearTimeout(failTimer);
  if (endWorkers) {
    for (const w of workers) w.terminate();
    workers = [];
  }
  setRunning(false);
}

function offerDownloads(config: RunConfig, ranks: ShardMessage[][]): void {
  const files = checkpointFiles(gptConfigOf(config), ranks);
  const p = $("downloads");
  p.textContent = "Download checkpoint (Hugging Face GPT-2; put both files in one folder, then " +
    "deno task eval --init-from-hf FOLDER --data-path data/assets/moby_dick.txt): ";
  for (const [name, bytes] of Object.entries(files)) {
    const a = document.createElement("a");
    a.className = "dl";
    a.download = name;
    const size = bytes.length < 1024
      ? `${bytes.length} bytes`
      : `${(bytes.length / 1024).toFixed(0)} KiB`;
    a.textContent = `${name} (${size})`;
    a.href = URL.createObjectURL(
      new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }),
    );
    downloadUrls.push(a.href);
    p.appendChild(a);
  }
}

function start(config: RunConfig): void {
  Object.assign(state, {
    config,
    losses: [],
    val: [],
    msPerStep: [],
    samples: [],
    trainPressedAt: performance.now(),
    firstStepAt: NaN,
    done: false,
    stopped: false,
    error: null,
  });
  // Nothing of the last run stays on show as if it were this one's, nor in memory.
  for (const url of downloadUrls) URL.revokeObjectURL(url);
  downloadUrls = [];
  failedRanks = new Set();
  $("log").textContent = "";
  $("sample").textContent = "";
  $("sample-at").textContent = "";
  $("downloads").textContent = "";
  $("chart").innerHTML = "";
  for (const id of ["s-step", "s-loss", "s-val", "s-ms", "s-tps", "s-first"]) {
    $(id).textContent = "–";
  }
  $<HTMLProgressElement>("progress").value = 0;
  setRunning(true);
  if (config.tp > 1 && !crossOriginIsolated) {
    // Refused before any Worker runs: the kept ones stay.
    fail(
      "tensor parallelism needs SharedArrayBuffer, which needs a cross-origin-isolated page " +
        "(Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp; " +
        "deno task serve sends both)",
      false,
    );
    return;
  }
  const arena = Arena.create();
  stopWord = new Int32Array(new SharedArrayBuffer(4));
  const shards: ShardMessage[][] = [];
  let finished = 0;
  const kept = Math.min(workers.length, config.tp);
  while (workers.length < config.tp) {
    workers.push(new Worker(new URL("./worker.js", import.meta.url), { type: "module" }));
  }
  for (let rank = 0; rank < config.tp; rank++) {
    const w = workers[rank];
    // A script that cannot load gives an error event with no message.
    w.onerror = (e) =>
      fail(
        `rank ${rank}: ${
          e.message || "could not load worker.js (is deno task serve still running?)"
        }`,
      );
    w.onmessage = (e: MessageEvent<WorkerEvent>) => {
      const m = e.data;
      if (m.type === "done") {
        shards[m.rank] = m.shards;
        state.stopped = m.stopped;
        if (++finished === config.tp) {
          state.done = true;
          log(m.stopped ? `stopped after step ${state.losses.length}` : "done");
          const val = state.val.at(-1)?.loss;
          if (val !== undefined && val > UNIFORM_LOSS + 0.5) {
            log(
              `warning: the validation loss ${val.toFixed(2)} is above a uniform guess over the ` +
                `256 bytes (ln 256 = ${UNIFORM_LOSS.toFixed(2)}): the run diverged; lower the ` +
                `learning rate (${config.lr})`,
            );
          }
          finish(false);
          offerDownloads(config, shards);
        }
      } else onEvent(m);
    };
    w.postMessage({
      type: "init",
      rank,
      config,
      memory: arena.memory,
      corpusUrl: new URL("./data/moby_dick.txt", location.href).href,
      stop: stopWord,
    });
  }
  const fresh = config.tp - kept;
  const how = [
    ...(kept
      ? [`${kept} kept from the last run with ${kept > 1 ? "their devices" : "its device"}`]
      : []),
    ...(fresh ? [`${fresh} started`] : []),
  ];
  log(
    `${config.tp} worker${config.tp > 1 ? "s" : ""} (one per tensor-parallel rank): ${
      how.join(", ")
    }`,
  );
}

/** The loss of a uniform guess over the byte vocabulary, ln 256. */
const UNIFORM_LOSS = Math.log(256);

/**
 * Says why the run failed (the first message) and ends it; with
 * `endWorkers` (default), the Workers too: at once, or for a rank's error
 * after a grace of {@link FAIL_GRACE_MS} unless every rank reports one too (a
 * NaN loss does so on every rank, and no rank is then left in a collective:
 * the Workers are kept, and their compiled pipelines serve the next run).
 */
function fail(message: string, endWorkers = true, rank?: number): void {
  if (rank !== undefined) failedRanks.add(rank);
  const c = state.config;
  if (!state.error) {
    state.error = message;
    console.error(message);
    log(`error: ${message}`);
    if (!endWorkers) return finish(false);
    if (rank === undefined) return finish(true);
    failTimer = setTimeout(() => finish(true), FAIL_GRACE_MS);
  }
  if (rank !== undefined && c && failedRanks.size === c.tp) finish(false);
}

/** How long the other ranks of a failed run get to report their own error. */
const FAIL_GRACE_MS = 3000;

function onEvent(m: WorkerEvent): void {
  const c = state.config!;
  switch (m.type) {
    case "ready":
      state.adapter = m.adapter;
      state.params = m.params;
      if (m.rank === 0) {
        log(
          `rank 0: ${m.adapter} | ${m.params.toLocaleString()} parameters | ready after ` +
            `${(m.msSetup / 1000).toFixed(2)} s (corpus, device, weights)`,
        );
      }
      break;
    case "step": {
      if (state.losses.length === 0) {
        state.firstStepAt = performance.now();
        if (Number.isNaN(state.pageToFirstStep)) state.pageToFirstStep = state.firstStepAt;
        $("s-first").textContent = `${
          ((state.firstStepAt - state.trainPressedAt) / 1000).toFixed(1)
        } s after Train`;
      }
      state.losses.push(m.loss);
      state.msPerStep.push(m.ms);
      const recent = state.msPerStep.slice(Math.max(1, state.msPerStep.length - 20));
      const ms = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : m.ms;
      $("s-step").textContent = `${m.step}/${c.steps}`;
      $("s-loss").textContent = m.loss.toFixed(4);
      $("s-ms").textContent = ms.toFixed(1);
      $("s-tps").textContent = Math.round(m.tokens / (ms / 1000)).toLocaleString();
      $<HTMLProgressElement>("progress").value = m.step / c.steps;
      drawChart();
      break;
    }
    case "val":
      state.val.push({ step: m.step, loss: m.loss });
      $("s-val").textContent = m.loss.toFixed(4);
      drawChart();
      break;
    case "sample-start":
      $("sample-at").textContent =
        `(after step ${m.step}, temperature ${SAMPLE_DEFAULTS.temperature}, top-p ${SAMPLE_DEFAULTS.topP})`;
      // A byte-level model can emit any byte: controls show as their pictures (␀, ␈, …).
      $("sample").textContent = showControls(m.prompt);
      state.samples.push(m.prompt);
      break;
    case "sample-token":
      $("sample").textContent += showControls(m.text);
      state.samples[state.samples.length - 1] += m.text;
      break;
    case "sample-end":
      break;
    case "error":
      fail(`rank ${m.rank}: ${m.message}`, true, m.rank);
      break;
  }
}

async function main(): Promise<void> {
  // Train waits for the adapter check below (a click before it would find no listener).
  $<HTMLButtonElement>("train").disabled = true;
  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    start(readConfig());
  });
  $("stop").addEventListener("click", () => {
    if (stopWord) Atomics.store(stopWord, 0, 1);
    log("stopping after this step …");
  });
  const why = await noWebGpu();
  if (why) {
    const box = $("nogpu");
    box.style.display = "block";
    box.textContent = why;
  } else {
    $<HTMLButtonElement>("train").disabled = false;
  }
  // The check has answered (the browser tests wait for this before they look or press Train).
  $("form").dataset.checked = "yes";
}

main().catch((e) => log(`error: ${e instanceof Error ? e.message : String(e)}`));
