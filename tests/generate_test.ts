/**
 * Generation with the key-value cache: cached logits of new positions equal a
 * full recompute of the prefix (prefill, single steps, chunks, a batch of two),
 * greedy generation with the cache gives the same tokens as without it (also
 * past the position table, where the window slides), the cache refuses bad
 * positions, and `deno task generate` streams the same text from a checkpoint
 * and from a Hugging Face directory.
 */

import { deepStrictEqual, match, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { tidy } from "../core/tensor.ts";
import { TokenIds } from "../core/token_ids.ts";
import { ByteTokenizer } from "../data/byte_tokenizer.ts";
import { DataRng } from "../data/rng.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import { createBertTokenizer } from "../data/wordpiece_tokenizer.ts";
import { gptCheckpointInfo, paramsToHost, saveCheckpoint } from "../models/checkpoint/mod.ts";
import { generate, type GenerateOptions } from "../models/generate.ts";
import { Gpt, type GptConfig } from "../models/gpt.ts";
import { writeHfGpt2 } from "../models/hf/mod.ts";
import { TextStream } from "../cli/generate.ts";
import { showControls } from "../cli/text_stream.ts";
import { assertClose, gpuTest, prng, randomArray, testDevice } from "./helpers.ts";
import { permissionArgs, runCli } from "./cli_helpers.ts";
import { tempDir } from "./temp_dir.ts";

const dev = await testDevice();

const cfg: GptConfig = {
  vocabSize: 37,
  numLayers: 2,
  hiddenSize: 16,
  numHeads: 4,
  maxPositions: 32,
  hiddenDropout: 0.1,
  attentionDropout: 0.1,
};

/** A GPT with weights large enough that its logits are well separated (layer norms left as built). */
function model(c: GptConfig, seed: number): Gpt {
  const m = Gpt.serial(dev, c, seed);
  m.namedParams().forEach(([name, p], i) => {
    if (!name.includes("ln")) p.tensor.write(randomArray(p.tensor.size, seed + i));
  });
  return m;
}

function tokens(n: number, seed: number, vocab: number): number[] {
  const r = prng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

/** Full-recompute logits `[B, T, V]` of `ids` (B rows of equal length). */
async function fullLogits(m: Gpt, ids: number[][]): Promise<Float32Array> {
  return await tidy(dev, async () => {
    const x = TokenIds.fromHost(dev, ids.flat(), [ids.length, ids[0].length]);
    return await (await dev.noGrad(() => m.logits(x))).read();
  });
}

/** Cached logits `[B, n, V]` of `ids` written at `start`. */
async function cachedLogits(
  m: Gpt,
  cache: ReturnType<Gpt["createCache"]>,
  ids: number[][],
  start: number,
  lastOnly = false,
): Promise<Float32Array> {
  return await tidy(dev, async () => {
    const x = TokenIds.fromHost(dev, ids.flat(), [ids.length, ids[0].length]);
    return await (await m.forwardCached(x, cache, start, { lastOnly })).read();
  });
}

/** Rows `[from, to)` of every batch entry of `[B, T, V]` logits. */
function rows(l: Float32Array, B: number, T: number, V: number, from: number, to: number) {
  const out: number[] = [];
  for (let b = 0; b < B; b++) out.push(...l.subarray((b * T + from) * V, (b * T + to) * V));
  return out;
}

Deno.test("cached logits equal a full recompute of the prefix", gpuTest, async () => {
  // The cached path computes attention with the unfused ops; so does the full
  // recompute here, so the two agree to the last rounding (fused = unfused to
  // float rounding is tests/attention_fused_test.ts's).
  const m = model({ ...cfg, fusedAttention: false }, 3);
  m.train(false);
  const V = m.paddedVocab;
  const B = 2;
  const seqs = [tokens(24, 1, cfg.vocabSize), tokens(24, 2, cfg.vocabSize)];
  const cache = m.createCache(B);
  // prefill 5, then a chunk of 3 (queries at the end of a longer key range), then single steps
  const steps: [number, number][] = [[0, 5], [5, 8]];
  for (let t = 8; t < 24; t++) steps.push([t, t + 1]);
  for (const [s, e] of steps) {
    const got = await cachedLogits(m, cache, seqs.map((q) => q.slice(s, e)), s);
    const want = await fullLogits(m, seqs.map((q) => q.slice(0, e)));
    assertClose(got, rows(want, B, e, V, s, e), {
      rtol: 1e-5,
      atol: 1e-6,
      what: `logits of positions [${s}, ${e})`,
    });
    deepStrictEqual(cache.length, e);
  }
  // lastOnly returns the last new position; rewinding overwrites
  const last = await cachedLogits(m, cache, seqs.map((q) => q.slice(10, 14)), 10, true);
  const want = await fullLogits(m, seqs.map((q) => q.slice(0, 14)));
  assertClose(last, rows(want, B, 14, V, 13, 14), { rtol: 1e-5, atol: 1e-6, what: "lastOnly" });
  deepStrictEqual(cache.length, 14);
  // a wrong batch, a gap and positions past the capacity are refused
  await tidy(dev, async () => {
    const x1 = TokenIds.fromHost(dev, [1], [1, 1]);
    await rejects(() => m.forwardCached(x1, cache, 14), /batch 1 but the cache holds 2/);
    const x = TokenIds.fromHost(dev, [1, 2], [2, 1]);
    await rejects(() => m.forwardCached(x, cache, 20), /start position 20 must be in \[0, 14\]/);
    const full = m.createCache(B, 32);
    await cachedLogits(m, full, [tokens(32, 4, 37), tokens(32, 5, 37)], 0);
    await rejects(
      () => m.forwardCached(x, full, 32),
      /positions \[32, 33\) exceed the cache capacity 32/,
    );
    full.dispose();
  });
  throws(() => m.createCache(1, 33), /exceeds the position table \(32\)/);
  cache.dispose();
  m.dispose();
});

async function collect(m: Gpt, prompt: number[], opts: GenerateOptions): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generate(m, prompt, opts)) out.push(t);
  return out;
}

Deno.test(
  "greedy generation: the KV cache gives the same tokens as recomputing",
  gpuTest,
  async () => {
    for (const [c, n] of [[cfg, 24], [{ ...cfg, maxPositions: 12 }, 30]] as const) {
      const m = model(c, 8);
      const prompt = tokens(5, 9, c.vocabSize);
      const opts = { maxNewTokens: n, temperature: 0, uniform: Math.random };
      const t0 = performance.now();
      const cached = await collect(m, prompt, opts);
      const t1 = performance.now();
      const full = await collect(m, prompt, { ...opts, cache: false });
      const t2 = performance.now();
      deepStrictEqual(cached, full);
      deepStrictEqual(cached.length, n);
      deepStrictEqual(new Set(cached).size > 3, true, `degenerate output ${cached}`);
      deepStrictEqual(m.training, true, "training mode restored");
      console.log(
        `window ${c.maxPositions}, ${n} tokens: cached ${((t1 - t0) / n).toFixed(1)} ms/token, ` +
          `recomputed ${((t2 - t1) / n).toFixed(1)} ms/token`,
      );
      m.dispose();
    }
  },
);

Deno.test("sampling with the cache is reproducible and matches no-cache", gpuTest, async () => {
  const m = model(cfg, 11);
  const r1 = prng(5), r2 = prng(5);
  const prompt = tokens(4, 2, cfg.vocabSize);
  const opts = { maxNewTokens: 12, temperature: 0.8, topK: 10, topP: 0.95 };
  const a = await collect(m, prompt, { ...opts, uniform: r1 });
  const b = await collect(m, prompt, { ...opts, uniform: r2, cache: false });
  deepStrictEqual(a, b);
  const stop = await collect(m, prompt, { ...opts, uniform: prng(5), stopToken: a[3] });
  deepStrictEqual(stop, a.slice(0, a.indexOf(a[3]) + 1));
  m.dispose();
});

Deno.test("a byte-level sample's control characters are shown, not obeyed, on a terminal", () => {
  deepStrictEqual(
    showControls("a\x00b\x07c\x08d\x1b[2Je\rf\r\ng\th\ni\x7fj\x9bk é"),
    "a\u2400b\u2407c\u2408d\u241b[2Je\u240df\r\ng\th\ni\u2421j\ufffdk é",
  );
});

Deno.test("TextStream holds back incomplete UTF-8 sequences", () => {
  const s = new TextStream(new ByteTokenizer());
  const bytes = [...new TextEncoder().encode("aé€b")];
  deepStrictEqual(bytes.map((b) => s.push(b)).join("|"), "a||é|||€|b");
  deepStrictEqual(s.push(0xe2) + s.flush(), "\uFFFD");
});

Deno.test("TextStream: WordPiece pieces keep the spaces between words, GPT-2 pieces their order", async () => {
  const wp = await createBertTokenizer();
  const ids = Array.from(wp.encode("the whales swam past"));
  const s = new TextStream(wp);
  deepStrictEqual(ids.map((id) => s.push(id)).join("") + s.flush(), wp.decode(ids));
  deepStrictEqual(wp.decode(ids), "the whales swam past");
  // After a prompt the first word gets its space.
  const after = new TextStream(wp, wp.encode("call me"));
  deepStrictEqual(
    Array.from(wp.encode("ishmael")).map((id) => after.push(id)).join(""),
    " ishmael",
  );
  const gpt2 = await createTokenizer("gpt2");
  const g = new TextStream(gpt2);
  const text = "Hello 🙂 world, naïve café";
  deepStrictEqual(Array.from(gpt2.encode(text)).map((id) => g.push(id)).join("") + g.flush(), text);
});

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissionArgs("cli/generate.ts"),
      "--unstable-webgpu",
      new URL("../cli/generate.ts", import.meta.url).pathname,
      ...args,
    ],
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
  }).output();
  const d = new TextDecoder();
  return { code: o.code, out: d.decode(o.stdout), err: d.decode(o.stderr) };
}

Deno.test("generate CLI: greedy text from a checkpoint and from HF agree", gpuTest, async () => {
  const c: GptConfig = {
    vocabSize: 256,
    numLayers: 2,
    hiddenSize: 16,
    numHeads: 2,
    maxPositions: 24,
  };
  const m = model(c, 21);
  await using temp = await tempDir();
  const dir = temp.path;
  const ck = join(dir, "ck");
  await saveCheckpoint(ck, { iteration: 3, params: m.namedParams(), ...gptCheckpointInfo(c) });
  const hf = join(dir, "hf");
  const w = await paramsToHost(m.namedParams());
  await writeHfGpt2(hf, c, (n) => w.get(n));
  const promptText = "Hi ";
  const tok = new ByteTokenizer();
  const ids = await collect(m, Array.from(tok.encode(promptText)), {
    maxNewTokens: 30,
    temperature: 0,
    uniform: Math.random,
  });
  // Exactly the prompt and the sampled text: no line break added on a pipe.
  const expected = promptText + tok.decode(ids);
  const common = ["--prompt", promptText, "--max-new-tokens", "30", "--temperature", "0"];
  const a = await cli(["--load", ck, ...common]);
  deepStrictEqual(a.code, 0, a.err);
  deepStrictEqual(a.out, expected);
  match(a.err, /generated 30 tokens/);
  const b = await cli(["--init-from-hf", hf, "--tokenizer", "byte", ...common]);
  deepStrictEqual(b.code, 0, b.err);
  deepStrictEqual(b.out, expected);
  // Tensor parallel: the model split over 2 ranks streams the same text.
  const t = await cli(["--load", ck, "--tensor-model-parallel-size", "2", ...common]);
  deepStrictEqual(t.code, 0, t.err);
  deepStrictEqual(t.out, expected);
  match(t.err, /generated 30 tokens .*\| tensor parallel 2/);
  console.log(a.err.trim());
  // A pipe gets a byte-level model's bytes as sampled, not text with U+FFFD for bytes that
  // are not UTF-8 (a near-uniform sample draws many).
  const rng = new DataRng(3);
  const sampled = await collect(m, Array.from(tok.encode(promptText)), {
    maxNewTokens: 200,
    temperature: 1e9,
    uniform: () => rng.nextFloat(),
  });
  const raw = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissionArgs("cli/generate.ts"),
      new URL("../cli/generate.ts", import.meta.url).pathname,
      "--load",
      ck,
      "--prompt",
      promptText,
      "--max-new-tokens",
      "200",
      "--temperature",
      "1e9",
      "--top-p",
      "1",
      "--seed",
      "3",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  deepStrictEqual(raw.code, 0, new TextDecoder().decode(raw.stderr));
  deepStrictEqual(
    Array.from(raw.stdout),
    [...new TextEncoder().encode(promptText), ...sampled],
  );

  const u = await cli(["--prompt", "x"]);
  deepStrictEqual(u.code, 2);
  match(u.err, /exactly one of --load DIR and --init-from-hf DIR/);
  const p = await cli(["--load", ck]);
  match(p.err, /--prompt TEXT is required/);
  const n = await cli(["--load", join(dir, "none"), "--prompt", "x"]);
  deepStrictEqual(n.code, 1);
  match(n.err, /no checkpoint/);
  const h = await cli(["--help"]);
  match(h.out, /--max-new-tokens/);
  m.dispose();
});

/**
 * Writes to `dir` a GPT-2-vocabulary model whose every logit is the final bias times a row of
 * wte, with <|endoftext|>'s row the largest: greedy decoding picks it at once.
 */
async function writeEndOfTextModel(dir: string): Promise<void> {
  const c: GptConfig = {
    vocabSize: 50257,
    numLayers: 1,
    hiddenSize: 8,
    numHeads: 2,
    maxPositions: 8,
  };
  const m = model(c, 5);
  const w = await paramsToHost(m.namedParams());
  m.dispose();
  const h = c.hiddenSize;
  const wte = w.get("wte.weight")!;
  const rows = Float32Array.from(wte.data);
  rows.fill(10, 50256 * h, 50257 * h);
  const changed = new Map([
    ["ln_f.weight", { shape: [h], data: new Float32Array(h) }],
    ["ln_f.bias", { shape: [h], data: new Float32Array(h).fill(1) }],
    ["wte.weight", { shape: wte.shape, data: rows }],
  ]);
  await writeHfGpt2(dir, c, (n) => changed.get(n) ?? w.get(n));
}

Deno.test(
  "generate CLI: a GPT-2 stops at <|endoftext|> and does not print it",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const hf = join(temp.path, "hf");
    await writeEndOfTextModel(hf);
    const common = ["--init-from-hf", hf, "--prompt", "Hi", "--temperature", "0"];
    const r = await cli([...common, "--max-new-tokens", "5"]);
    deepStrictEqual(r.code, 0, r.err);
    deepStrictEqual(r.out, "Hi", "the prompt alone: the stop token ends the text unprinted");
    match(r.err, /generated 1 token /);
    const on = await cli([...common, "--max-new-tokens", "2", "--ignore-eos"]);
    deepStrictEqual(on.out, "Hi<|endoftext|><|endoftext|>", "--ignore-eos samples it as text");
    // A second --prompt or model is refused, not silently taken for the first.
    const twice = await cli([...common, "--prompt", "b"]);
    deepStrictEqual(twice.code, 2, twice.err);
    match(twice.err, /generate continues one prompt/);
  },
);

Deno.test(
  "train's closing sample stops at <|endoftext|> and does not print it, as generate does",
  gpuTest,
  async () => {
    await using temp = await tempDir();
    const hf = join(temp.path, "hf");
    await writeEndOfTextModel(hf);
    const r = await runCli(
      "cli/train.ts",
      [
        "--init-from-hf",
        hf,
        "--seq-length",
        "8",
        "--micro-batch-size",
        "1",
        "--train-iters",
        "1",
        "--eval-iters",
        "0",
        "--lr",
        "1e-9",
        "--prompt",
        "Hi",
        "--temperature",
        "0",
        "--sample-tokens",
        "5",
      ],
      undefined,
      { timeoutMs: 240_000 },
    );
    deepStrictEqual(r.code, 0, r.stderr);
    match(r.stdout, /sample \(temperature 0, top-p [0-9.]+\):\nHi\n/);
    deepStrictEqual(r.stdout.includes("<|endoftext|>"), false, r.stdout);
  },
);

Deno.test(
  "a generator dropped unfinished frees its key-value cache when collected",
  gpuTest,
  async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        new URL("./generate_dropped_script.ts", import.meta.url).pathname,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    deepStrictEqual(out.code, 0, err);
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    // 20 caches were held while their generators were suspended, and none after collection.
    if (!(r.held > r.before)) throw new Error(`no cache was held: ${JSON.stringify(r)}`);
    deepStrictEqual(r.after, r.before, JSON.stringify(r));
  },
);
