/**
 * Reading and writing `.bin` token files: little-endian uint16 ids, no header (nanoGPT's format).
 * @module
 */

import { DataError } from "./errors.ts";

/** Largest vocabulary a uint16 `.bin` file can hold. */
export const MAX_BIN_VOCAB = 65536;

/** Encodes ids as little-endian uint16 bytes; throws if any id does not fit. */
export function encodeTokenBin(ids: ArrayLike<number>): Uint8Array {
  const bytes = new Uint8Array(ids.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id > 0xffff) {
      throw new DataError(`token id ${id} at position ${i} does not fit in uint16`);
    }
    view.setUint16(i * 2, id, true);
  }
  return bytes;
}

/**
 * Decodes little-endian uint16 bytes into ids. `source` names the file in error messages;
 * `vocabSize`, when given, rejects ids outside [0, vocabSize).
 */
export function decodeTokenBin(
  bytes: Uint8Array,
  source = "token data",
  vocabSize?: number,
): Uint32Array {
  if (bytes.length % 2 !== 0) {
    throw new DataError(
      `${source}: ${bytes.length} bytes is an odd length; a .bin file holds little-endian uint16 ids`,
    );
  }
  if (bytes.length === 0) throw new DataError(`${source}: the file is empty`);
  const n = bytes.length / 2;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) ids[i] = view.getUint16(i * 2, true);
  if (vocabSize !== undefined) checkIdsInVocab(ids, vocabSize, source);
  return ids;
}

/** Throws a {@link DataError} naming the first id that is not in [0, vocabSize). */
export function checkIdsInVocab(ids: ArrayLike<number>, vocabSize: number, source: string): void {
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] >= vocabSize) {
      throw new DataError(
        `${source}: token id ${
          ids[i]
        } at position ${i} is not below the vocabulary size ${vocabSize}` +
          " (was it made with a different tokenizer?)",
      );
    }
  }
}

/** Reads a `.bin` token file. */
export async function readTokenBin(path: string, vocabSize?: number): Promise<Uint32Array> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(`${path}: no such file`);
    throw e;
  }
  return decodeTokenBin(bytes, path, vocabSize);
}

/** Writes ids to a `.bin` token file (little-endian uint16). */
export async function writeTokenBin(path: string, ids: ArrayLike<number>): Promise<void> {
  await Deno.writeFile(path, encodeTokenBin(ids));
}
