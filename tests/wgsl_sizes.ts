/**
 * Byte sizes of a WGSL module's `function` and `private` variables, for the
 * test of WGSL's portable limits (8,192 bytes each, summed over what one entry
 * point can reach: WGSL spec §"Limits"). Every function's variables are summed,
 * called or not: an upper bound of what `main` reaches. Sizes follow the spec's
 * SizeOf (a `vec3` is 12 bytes; an array element is rounded up to its
 * alignment).
 *
 * A variable declared without a type takes its initializer's, which this reader
 * works out for the expressions the kernels here use: literals, constructors,
 * names (declarations, parameters, struct fields), indexing, the arithmetic
 * and comparison operators and the component-wise built-ins. Anything else is
 * counted as 16 bytes, the largest value an expression gives in these kernels
 * (a `vec4<f32>`; arrays and matrices come only from constructors, annotations
 * and names, which it follows), so the sums stay upper bounds.
 * @module
 */

/** Bytes of `function` and `private` variables in a WGSL module. */
export interface VariableBytes {
  /** Σ SizeOf over every `var` declared inside a function body. */
  function: number;
  /** Σ SizeOf over every module-scope `var<private>`. */
  private: number;
}

const SCALARS: Record<string, number> = { f32: 4, u32: 4, i32: 4, bool: 4, f16: 2 };
const SHORT: Record<string, string> = { f: "f32", i: "i32", u: "u32", h: "f16" };

/** What an untyped expression is counted as. */
const UNTYPED = "vec4<f32>";

/** Built-ins whose result has the type of their first typed argument. */
const SAME_TYPE_BUILTINS = new Set([
  "abs",
  "ceil",
  "clamp",
  "cos",
  "exp",
  "exp2",
  "floor",
  "fma",
  "fract",
  "inverseSqrt",
  "log",
  "log2",
  "max",
  "min",
  "mix",
  "pow",
  "round",
  "select",
  "sign",
  "sin",
  "sqrt",
  "tanh",
  "trunc",
]); // prettier-ignore

/** Splits `s` at top-level occurrences of `sep` (outside (), [] and a type's <>). */
function splitTop(s: string, sep: string): string[] {
  const out: string[] = [];
  const open: string[] = [];
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "(" || c === "[") open.push(c);
    else if (c === "<" && /(vec[234]|mat[234]x[234]|array|atomic|ptr)$/.test(s.slice(0, i))) {
      open.push(c);
    } else if ((c === ")" && open.at(-1) === "(") || (c === "]" && open.at(-1) === "[")) open.pop();
    else if (c === ">" && open.at(-1) === "<") open.pop();
    else if (open.length === 0 && s.startsWith(sep, i)) {
      out.push(s.slice(start, i));
      start = i + sep.length;
      i += sep.length - 1;
    }
  }
  out.push(s.slice(start));
  return out;
}

/** SizeOf and AlignOf of the WGSL type `t` (scalars, vectors, matrices, fixed arrays). */
function layoutOf(t: string): { size: number; align: number } {
  t = t.trim();
  if (t in SCALARS) return { size: SCALARS[t], align: SCALARS[t] };
  const vec = t.match(/^vec([234])<\s*(\w+)\s*>$/) ?? t.match(/^vec([234])([fiuh])$/);
  if (vec) {
    const s = SCALARS[SHORT[vec[2]] ?? vec[2]];
    if (!s) throw new Error(`wgsl_sizes: unknown vector component type in ${t}`);
    const n = Number(vec[1]);
    return { size: n * s, align: (n === 2 ? 2 : 4) * s };
  }
  const mat = t.match(/^mat([234])x([234])<\s*(\w+)\s*>$/);
  if (mat) {
    const col = layoutOf(`vec${mat[2]}<${mat[3]}>`);
    return { size: Number(mat[1]) * col.align, align: col.align };
  }
  const arr = t.match(/^array<(.+)>$/);
  if (arr) {
    const [el, n] = splitTop(arr[1], ",");
    if (n === undefined) throw new Error(`wgsl_sizes: a runtime-sized ${t} is not a variable's`);
    const e = layoutOf(el);
    return {
      size: Number(n.trim().replace(/[ui]$/, "")) * Math.ceil(e.size / e.align) * e.align,
      align: e.align,
    };
  }
  throw new Error(`wgsl_sizes: cannot size the type ${t}`);
}

/** The element (arrays) or component (vectors) type of `t`, or null. */
function elementOf(t: string): string | null {
  const arr = t.match(/^array<(.+)>$/);
  if (arr) return splitTop(arr[1], ",")[0].trim();
  const vec = t.match(/^vec[234]<\s*(\w+)\s*>$/) ?? t.match(/^vec[234]([fiuh])$/);
  if (vec) return SHORT[vec[1]] ?? vec[1];
  const mat = t.match(/^mat[234]x([234])<\s*(\w+)\s*>$/);
  return mat ? `vec${mat[1]}<${mat[2]}>` : null;
}

/** Names and struct fields declared so far, with their types. */
class Scope {
  /** Struct name → field name → type. */
  readonly structs = new Map<string, Map<string, string>>();
  #types = new Map<string, string | null>();
  #inits = new Map<string, string>();

  /** Declares `name` with its type, or with the initializer that gives it (typed when asked). */
  declare(name: string, type: string | undefined, init: string | undefined): void {
    if (type !== undefined) this.#types.set(name, type.trim());
    else {
      this.#types.delete(name);
      this.#inits.set(name, init ?? "");
    }
  }

  /** The type of the name `name`, or null when unknown. */
  typeOfName(name: string): string | null {
    if (!this.#types.has(name)) {
      const init = this.#inits.get(name);
      if (init === undefined) return null;
      this.#types.set(name, null); // a name declared from itself is not typed
      this.#types.set(name, typeOf(init, this));
    }
    return this.#types.get(name)!;
  }
}

/** `[e, callee, arguments]` when `e` is one call (`f(…)`, `vec4<f32>(…)`), else null. */
function asCall(e: string): [string, string, string] | null {
  const callee = e.match(/^((?:vec[234]|mat[234]x[234]|array)<[^()]*>|\w+)\s*\(/);
  if (!callee || !e.endsWith(")")) return null;
  let depth = 0;
  for (let i = callee[0].length - 1; i < e.length; i++) {
    if (e[i] === "(") depth++;
    else if (e[i] === ")" && --depth === 0) {
      return i === e.length - 1 ? [e, callee[1], e.slice(callee[0].length, -1)] : null;
    }
  }
  return null;
}

/** The type of the expression `e`, or null when this reader cannot tell. */
function typeOf(e: string, scope: Scope): string | null {
  e = e.trim();
  while (e.startsWith("(") && splitTop(e.slice(1), ")").length === 2 && e.endsWith(")")) {
    e = e.slice(1, -1).trim();
  }
  for (const ops of [["||", "&&"], ["==", "!=", "<=", ">=", "<", ">"]]) {
    for (const op of ops) if (splitTop(e, op).length > 1) return "bool";
  }
  for (const op of ["<<", ">>", "+", "-", "*", "/", "%", "&", "|", "^"]) {
    const parts = splitTop(e, op).map((x) => x.trim());
    if (parts.length < 2 || parts.some((x) => x === "") || /[eE]$/.test(parts[0])) continue;
    const types = parts.map((x) => typeOf(x, scope));
    if (types.some((t) => t === null)) return null;
    return types.reduce((a, b) => (layoutOf(b!).size > layoutOf(a!).size ? b : a))!;
  }
  if (e.startsWith("-") || e.startsWith("!") || e.startsWith("~")) return typeOf(e.slice(1), scope);
  if (/^\d+u$|^\d+i$|^\d+$|^0x[0-9a-f]+[ui]?$/i.test(e)) return e.endsWith("i") ? "i32" : "u32";
  if (/^(\d+\.\d*|\.\d+|\d+)(e[+-]?\d+)?f?$/i.test(e)) return "f32";
  if (/^(\d+\.\d*|\.\d+|\d+)(e[+-]?\d+)?h$/i.test(e)) return "f16";
  if (e === "true" || e === "false") return "bool";
  const call = asCall(e);
  if (call) {
    const callee = call[1];
    if (/^(vec[234]|mat[234]x[234]|array)<.+>$|^(f32|u32|i32|f16|bool)$/.test(callee)) {
      return callee;
    }
    if (/^vec[234][fiuh]$/.test(callee)) return callee;
    if (SAME_TYPE_BUILTINS.has(callee)) {
      for (const arg of splitTop(call[2], ",")) {
        const t = typeOf(arg, scope);
        if (t) return t;
      }
    }
    if (callee === "dot") return elementOf(typeOf(splitTop(call[2], ",")[0], scope) ?? "");
    return null;
  }
  const index = e.match(/^(.+)\[([^\[\]]*)\]$/s);
  if (index) {
    const t = typeOf(index[1], scope);
    return t ? elementOf(t) : null;
  }
  const member = e.match(/^(\w+)\.(\w+)$/);
  if (member) {
    const t = scope.typeOfName(member[1]);
    if (!t) return null;
    const field = scope.structs.get(t)?.get(member[2]);
    if (field) return field;
    const comp = elementOf(t);
    return comp && /^[xyzwrgba]+$/.test(member[2])
      ? (member[2].length === 1 ? comp : `vec${member[2].length}<${comp}>`)
      : null;
  }
  return /^\w+$/.test(e) ? scope.typeOfName(e) : null;
}

/** Sums the `function` and `private` variables of the WGSL module `code`. */
export function variableBytes(code: string): VariableBytes {
  const text = code.replace(/\/\/[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "");
  const scope = new Scope();
  for (const m of text.matchAll(/\bstruct\s+(\w+)\s*\{([^}]*)\}/g)) {
    const fields = new Map<string, string>();
    for (const f of splitTop(m[2], ",")) {
      const [name, type] = f.split(":").map((x) => x.trim());
      if (type) fields.set(name.replace(/@\w+(\([^)]*\))?\s*/g, ""), type);
    }
    scope.structs.set(m[1], fields);
  }
  let fn = 0;
  let priv = 0;
  let depth = 0;
  // Declarations in order, brace depth telling module scope from function bodies.
  const token = new RegExp(
    String.raw`[{}]|\bfn\s+\w+\s*\(([^{]*)\)\s*(?:->[^{]*)?(?=\{)|` +
      String.raw`\b(var|let|const)\b(<[^>]*>)?\s+(\w+)\s*(?::\s*([^=;]+?))?\s*(?:=\s*([^;]+))?;`,
    "g",
  );
  for (const m of text.matchAll(token)) {
    if (m[0] === "{") depth++;
    else if (m[0] === "}") depth--;
    else if (m[1] !== undefined) {
      for (const param of splitTop(m[1], ",")) {
        const p = param.replace(/@\w+(\([^)]*\))?\s*/g, "").split(":").map((x) => x.trim());
        if (p[1]) scope.declare(p[0], p[1], undefined);
      }
    } else {
      scope.declare(m[4], m[5], m[6]);
      if (m[2] !== "var") continue;
      const type = scope.typeOfName(m[4]) ?? UNTYPED;
      const space = m[3]?.slice(1, -1).split(",")[0].trim();
      if (depth === 0 && space !== "private") continue; // storage, uniform, workgroup, handles
      if (depth === 0) priv += layoutOf(type).size;
      else fn += layoutOf(type).size;
    }
  }
  return { function: fn, private: priv };
}
