/**
 * Token streams (data/token_stream.ts): a `.bin` read from disk a window at a
 * time gives the ids the whole file gives, to the samplers, the split, the
 * fingerprint and the entropy; a file changed or removed under a run is named;
 * ids past the vocabulary are found in any piece; and a corpus of more than
 * 2^32 tokens (nanoGPT's OpenWebText `train.bin` holds 9B) draws windows
 * across all of it, where the sampler's bound stopped at 2^32 before.
 */

import assert from "node:assert/strict";
import { encodeTokenBin, openTokenBin, readTokenBin, writeTokenBin } from "../data/token_bin.ts";
import { loadTokens } from "../data/corpus.ts";
import { createTokenizer } from "../data/tokenizer.ts";
import {
  forEachPiece,
  MemoryTokenStream,
  TokenBinStream,
  type TokenStream,
} from "../data/token_stream.ts";
import { evalBatches, GptBatchSampler } from "../data/gpt_batches.ts";
import { blendedEvalBatches, BlendedGptBatchSampler } from "../data/blended_gpt_batches.ts";
import { splitStream } from "../data/split.ts";
import { blendUnigramEntropy, unigramEntropy } from "../data/stats.ts";
import { DataRng } from "../data/rng.ts";
import { DataError } from "../data/errors.ts";
import { streamFingerprint } from "../cli/same_data.ts";
import { tempDir } from "./temp_dir.ts";
import { prng } from "./helpers.ts";

const EOS = 50256;

/** `n` GPT-2 ids, documents of 1–400 tokens separated by EOS. */
function corpus(n: number, seed: number): Uint32Array {
  const r = prng(seed);
  const ids = new Uint32Array(n);
  for (let i = 0, left = 0; i < n; i++) {
    if (left === 0) {
      left = 1 + Math.floor(r() * 400);
      if (i > 0) {
        ids[i] = EOS;
        continue;
      }
    }
    ids[i] = Math.floor(r() * EOS);
    left--;
  }
  return ids;
}

Deno.test("a .bin stream reads the ids the whole file holds, in windows and parts", async () => {
  await using dir = await tempDir({ prefix: "token_stream_test_" });
  const ids = corpus(50_000, 1);
  const path = `${dir.path}/c.bin`;
  await writeTokenBin(path, ids);
  const stream = await openTokenBin(path, undefined, 50257);
  assert.ok(stream instanceof TokenBinStream);
  assert.equal(stream.length, ids.length);
  assert.deepEqual(Array.from(stream.read(0, ids.length)), Array.from(ids));
  assert.deepEqual(Array.from(stream.read(123, 4567)), Array.from(ids.subarray(123, 4567)));
  assert.equal(stream.read(7, 7).length, 0);
  const part = stream.part(1000, 30_000).part(500, 2000);
  assert.equal(part.length, 1500);
  assert.deepEqual(Array.from(part.read(10, 20)), Array.from(ids.subarray(1510, 1520)));
  assert.throws(() => stream.read(49_990, 50_001), RangeError);
  assert.throws(() => part.read(0, 1501), RangeError);
  assert.throws(() => stream.part(-1, 5), RangeError);
  await Deno.mkdir(`${dir.path}/folder.bin`);
  for (const open of [openTokenBin, readTokenBin]) {
    await assert.rejects(
      () => open(`${dir.path}/folder.bin`, undefined),
      (e) => e instanceof DataError && e.message === `${dir.path}/folder.bin: not a regular file`,
    );
  }
  // loadTokens opens a .bin the same way: nothing read whole.
  const loaded = (await loadTokens(await createTokenizer("gpt2"), path)).ids;
  assert.ok(loaded instanceof TokenBinStream);
  assert.deepEqual(Array.from(loaded.read(0, loaded.length)), Array.from(await readTokenBin(path)));
});

Deno.test("samplers, the split, the fingerprint and the entropy read a .bin stream as the ids", async () => {
  await using dir = await tempDir({ prefix: "token_stream_test_" });
  const ids = corpus(300_000, 2);
  const path = `${dir.path}/c.bin`;
  await writeTokenBin(path, ids);
  const disk = await openTokenBin(path, undefined, 50257);
  const memory = new MemoryTokenStream(ids);
  const options = { batchSize: 4, seqLength: 64, seed: 7 };
  const a = new GptBatchSampler(disk, options), b = new GptBatchSampler(ids, options);
  for (let i = 0; i < 20; i++) assert.deepEqual(a.next(), b.next(), `batch ${i}`);
  assert.deepEqual([...evalBatches(disk, 3, 64, { maxBatches: 5 })], [
    ...evalBatches(ids, 3, 64, { maxBatches: 5 }),
  ]);
  // Cuts at document boundaries, the scan reaching past one block (65,536 ids) too.
  for (const fractions of [{ valid: 0.05, test: 0.01 }, { valid: 0.3, test: 0.2 }]) {
    const s = splitStream(disk, fractions, EOS), m = splitStream(ids, fractions, EOS);
    assert.equal(s.train.length, m.train.length);
    assert.equal(s.val.length, m.val.length);
    assert.equal(s.test, m.test);
    assert.equal(ids[s.train.length - 1], EOS);
    const blend = [s.train, s.val], weights = [0.7, 0.3];
    const x = new BlendedGptBatchSampler(blend, weights, options);
    const y = new BlendedGptBatchSampler([m.train, m.val], weights, options);
    for (let i = 0; i < 10; i++) assert.deepEqual(x.next(), y.next());
    assert.deepEqual(
      blendedEvalBatches(blend, weights, 4, 64, { maxBatches: 3 }),
      blendedEvalBatches([m.train, m.val], weights, 4, 64, { maxBatches: 3 }),
    );
    assert.deepEqual(await streamFingerprint(s.val), await streamFingerprint(m.val));
  }
  assert.deepEqual(await streamFingerprint(disk), await streamFingerprint(ids));
  assert.notDeepEqual(
    await streamFingerprint(disk.part(1, ids.length)),
    await streamFingerprint(ids),
  );
  const h = await blendUnigramEntropy([disk], [1]);
  assert.ok(Math.abs(h - unigramEntropy(ids)) < 1e-9, `${h}`);
  // A blend's mixture, read a piece at a time, equals the mixture counted whole.
  const half = ids.length / 2;
  const mixed = await blendUnigramEntropy([disk.part(0, half), memory.part(half, ids.length)], [
    0.5,
    0.5,
  ]);
  assert.ok(Math.abs(mixed - unigramEntropy(ids)) < 1e-9, `${mixed}`);
});

Deno.test("a document boundary farther than one block from the cut is found, as by brute force", () => {
  // The scan reads 65,536 ids a side at a time: boundaries on either side, near and far.
  let far = 0;
  for (const lengths of [[300_000, 300_000, 100_000], [100_000, 300_000, 300_000]]) {
    const ids = new Uint32Array(lengths.reduce((a, b) => a + b + 1, -1)).fill(5);
    let at = 0;
    for (const len of lengths.slice(0, -1)) ids[(at += len + 1) - 1] = EOS;
    for (const valid of [0.2, 0.35, 0.4, 0.45, 0.5, 0.55]) {
      const n = ids.length, cut = n - Math.round(n * valid);
      const reach = Math.floor(Math.min(cut, n - cut) / 2);
      let want = cut, best = Infinity;
      for (let b = 1; b < n; b++) {
        const d = Math.abs(b - cut);
        if (ids[b - 1] === EOS && d <= reach && d < best) [want, best] = [b, d];
      }
      if (best !== Infinity && best > 65_536) far++;
      const got = splitStream(ids, { valid, test: 0 }, EOS).train.length;
      assert.equal(got, want, `${lengths} valid ${valid}`);
    }
  }
  assert.ok(far >= 2, `${far} cuts moved farther than one block`);
});

Deno.test("an id past the vocabulary is named at its position, in any piece of a .bin", async () => {
  await using dir = await tempDir({ prefix: "token_stream_test_" });
  const ids = new Uint32Array((1 << 22) + 100).fill(3);
  ids[(1 << 22) + 57] = 50300;
  const path = `${dir.path}/bad.bin`;
  await writeTokenBin(path, ids);
  await assert.rejects(
    () => openTokenBin(path, undefined, 50257),
    (e) => e instanceof DataError && /token id 50300 at position 4194361 /.test(e.message),
  );
  // A vocabulary of 65,536 holds every uint16: nothing to scan.
  assert.equal((await openTokenBin(path, undefined, 65536)).length, ids.length);
  await assert.rejects(() => openTokenBin(path, undefined, NaN), RangeError);
  // A named pipe where a Megatron index would be is not one (opening it would block).
  const fifo = await new Deno.Command("mkfifo", { args: [`${dir.path}/bad.idx`] }).output();
  assert.ok(fifo.success);
  assert.equal((await openTokenBin(path, undefined, 65536)).length, ids.length);
});

Deno.test("a .bin written again, replaced or removed during a run is named, not read as other data", async () => {
  await using dir = await tempDir({ prefix: "token_stream_test_" });
  const path = `${dir.path}/c.bin`;
  const opened = async (seed: number) => {
    await writeTokenBin(path, corpus(10_000, seed));
    const stream = await openTokenBin(path, undefined, 50257);
    stream.read(0, 10);
    // A file system's clock ticks in milliseconds: a write in the same tick keeps the time.
    await new Promise((r) => setTimeout(r, 30));
    return stream;
  };
  const refused = (stream: TokenStream, how: string) =>
    assert.throws(
      () => stream.read(0, 10),
      (e) =>
        e instanceof DataError &&
        e.message.startsWith(`${path} changed during the run (${how}): its ids are not the ones`),
    );
  // Written again in place, the same size (the inode kept): only its time tells.
  let stream = await opened(3);
  await Deno.writeFile(path, encodeTokenBin(corpus(10_000, 4)));
  refused(stream, "it was written again");
  // Another file of the same size moved over it.
  stream = await opened(5);
  await writeTokenBin(`${path}.new`, corpus(10_000, 6));
  await Deno.rename(`${path}.new`, path);
  refused(stream, "another file now has its name");
  // Grown by a byte; then a folder, then a named pipe (whose open would block) in its place.
  stream = await opened(7);
  await Deno.writeFile(path, new Uint8Array([1]), { append: true });
  refused(stream, "20000 bytes when the run began, 20001 now");
  await Deno.remove(path);
  await Deno.mkdir(path);
  refused(stream, "it is not a regular file now");
  await Deno.remove(path);
  const fifo = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(fifo.success);
  refused(stream, "it is not a regular file now");
  await Deno.remove(path);
  assert.throws(
    () => stream.read(0, 10),
    (e) => e instanceof DataError && e.message.startsWith(`${path}: cannot read it any more`),
  );
});

/** A stream of `length` ids computed from their position (nothing stored): id = position mod 50,257. */
class PositionStream implements TokenStream {
  constructor(readonly length: number, readonly offset = 0) {}
  read(start: number, end: number): ArrayLike<number> {
    return Array.from({ length: end - start }, (_, j) => (this.offset + start + j) % 50257);
  }
  part(start: number, end: number): TokenStream {
    return new PositionStream(end - start, this.offset + start);
  }
}

Deno.test("a corpus of more than 2^32 tokens draws windows across all of it", async () => {
  // OpenWebText's 9.0B tokens: the sampler's bound of 2^32 stopped it at the first batch.
  const n = 9_035_582_489;
  const sampler = new GptBatchSampler(new PositionStream(n), {
    batchSize: 64,
    seqLength: 8,
    seed: 1234,
  });
  const starts: number[] = [];
  for (let i = 0; i < 20; i++) {
    const b = sampler.next();
    b.starts.forEach((s, r) => {
      assert.equal(b.inputs[r * 8], s % 50257);
      assert.equal(b.targets[r * 8 + 7], (s + 8) % 50257);
    });
    starts.push(...b.starts);
  }
  assert.ok(starts.every((s) => Number.isInteger(s) && s >= 0 && s < n - 8));
  // Spread over the whole corpus: about half the starts lie past 2^32.
  const past = starts.filter((s) => s >= 2 ** 32).length / starts.length;
  assert.ok(past > 0.45 && past < 0.6, `${past}`);
  let pieces = 0;
  await forEachPiece(new PositionStream(10_000_000), () => pieces++);
  assert.equal(pieces, 3);
  await assert.rejects(() => forEachPiece([1, 2], () => {}, 0), RangeError);
  // Validation of such a corpus takes its first windows without listing every start (1.1B here).
  const stream = new PositionStream(n);
  const val = [...evalBatches(stream, 4, 8, { maxBatches: 2 })];
  assert.deepEqual(val.map((b) => b.starts), [[0, 8, 16, 24], [32, 40, 48, 56]]);
  assert.equal(val[1].targets[4 * 8 - 1], 64);
  const blended = blendedEvalBatches([stream, stream.part(0, 100)], [0.5, 0.5], 4, 8, {
    maxBatches: 8,
  });
  assert.deepEqual(blended.map((b) => b.starts).flat().slice(0, 8), [0, 0, 8, 8, 16, 16, 24, 24]);
  // The short corpus's 12 windows start over: its 13th row is its first window again.
  assert.deepEqual(blended.map((b) => b.starts).flat().filter((_, i) => i % 2 === 1).slice(11), [
    88,
    0,
    8,
    16,
    24,
  ]);
});

Deno.test("blendUnigramEntropy refuses weights that do not match the streams, and ids that are not ids", async () => {
  await assert.rejects(() => blendUnigramEntropy([[1, 2], [3]], [1]), /2 streams but 1 weights/);
  await assert.rejects(
    () => blendUnigramEntropy([[1, 1, -1]], [1]),
    /token id -1 at position 2 is not a non-negative 32-bit integer/,
  );
  await assert.rejects(() => blendUnigramEntropy([[0.5]], [1]), RangeError);
});

Deno.test("DataRng.nextInt: bounds up to 2^32 draw as before; larger ones up to 2^53", () => {
  // The values the generator gave before bounds past 2^32 were allowed (resumed runs go on alike).
  const r = new DataRng(1234);
  assert.deepEqual([1000, 3435997410, 2 ** 32, 3, 50257].map((b) => r.nextInt(b)), [
    933,
    2777857285,
    1362201715,
    2,
    46113,
  ]);
  const big = new DataRng(5);
  for (const bound of [2 ** 32 + 1, 9_035_582_481, 2 ** 53]) {
    let high = 0;
    for (let i = 0; i < 4000; i++) {
      const x = big.nextInt(bound);
      assert.ok(Number.isInteger(x) && x >= 0 && x < bound, `${x} of ${bound}`);
      if (x >= bound / 2) high++;
    }
    assert.ok(high > 1800 && high < 2200, `${high} of 4000 in the upper half of ${bound}`);
  }
  assert.throws(() => big.nextInt(2 ** 53 + 2), RangeError);
});
