#!/usr/bin/env bash
# Runs the pinned Deno (package.json) with the WebGPU adapters this project
# supports, doing the one-time setup a fresh machine needs and saying so:
#  - installs Deno from npm (node_modules/.bin/deno) when it is missing; npm owns
#    node_modules (deno.json has "nodeModulesDir": "none": Deno keeps its npm
#    packages in its own cache and never rewrites node_modules);
#  - checks which adapter each backend gets. Deno's WebGPU must get a Vulkan
#    (Metal, DX12) adapter: wgpu's OpenGL fallback, which it takes on a machine
#    with Mesa's EGL but no Vulkan driver, is refused (core/gpu.ts; too slow for
#    barrier-heavy kernels). Then, or when a backend finds nothing, it installs
#    Mesa's software drivers with apt-get as root (mesa-vulkan-drivers: lavapipe,
#    for Deno's WebGPU; EGL/GL for Dawn) and checks again;
#  - fetches the npm packages Deno needs into its cache (dynamic imports too);
#  - prints one line naming the adapter each backend got.
# The check reruns when the Vulkan drivers installed change, or when this script
# is run without arguments (setup only).
# Usage: bash scripts/deno.sh [deno arguments]   (e.g. task train --help)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deno="$root/node_modules/.bin/deno"
want="$(node -p "require('./package.json').optionalDependencies.deno")"
have=""
[ -x "$deno" ] && have="$("$deno" --version 2>/dev/null | head -n1 | awk '{print $2}')" || true
if [ "$have" != "$want" ]; then
  echo "setup: installing Deno $want from npm (one time)..." >&2
  npm install --no-audit --no-fund --loglevel=error >&2
fi
# Deno's WebGPU warns on every start without a private runtime directory.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR:-/nonexistent}" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/webgpu-megatron-xdg-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi

limited() { if command -v timeout >/dev/null 2>&1; then timeout 120 "$@"; else "$@"; fi; }
# One JSON line from `deno task info --json` (its permission set, -P=info): {"backend","name",…} or {"backend","error"}.
probe() {
  limited "$deno" run --quiet -P=info cli/info.ts --json --backend "$1" 2>/dev/null | tail -n1 || true
}
field() { # field JSON name|error|gl: what the probe found
  node -e '
    let r = {}; try { r = JSON.parse(process.argv[1]); } catch {}
    const f = process.argv[2];
    if (f === "gl") console.log(/OpenGL fallback \((.*?)\), which is refused/.exec(r.error ?? "")?.[1] ?? "");
    else console.log(f === "name" ? (r.name ?? "") : (r.error ?? (r.name ? "" : "no answer")).split("\n")[0]);
  ' "$1" "$2"
}
install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; fi
  fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; }; then
    echo "setup: running apt-get install -y $* as root${sudo:+ (sudo)} (one time)..." >&2
    $sudo apt-get update -qq >&2 &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 ||
      echo "setup: apt-get install $* failed." >&2
  else
    echo "setup: please install $* (needs root and apt-get), then run: bash scripts/deno.sh" >&2
  fi
}
# What the adapter check depends on: the Deno version and the Vulkan drivers installed.
fingerprint() {
  echo "deno $want"
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d 2>/dev/null || true
}
marker="$root/.cache/webgpu-adapters-ok"
if [ $# = 0 ] || [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$(fingerprint)" ]; then
  rm -f "$marker"
  ok=1
  # Deno keeps its npm packages in its own cache; fetch them now, including those
  # imported dynamically, so no later command prints "Download …" lines.
  echo "setup: fetching the npm packages Deno needs into its cache (one time)..." >&2
  limited "$deno" cache --quiet mod.ts cli/ >&2 || echo "setup: deno cache failed." >&2
  d="$(probe deno)"
  if [ -n "$(field "$d" error)" ]; then
    gl="$(field "$d" gl)"
    if [ -n "$gl" ]; then
      echo "setup: Deno's WebGPU found only wgpu's OpenGL fallback ($gl), too slow for this project; it needs Vulkan: adding Mesa's software Vulkan driver (lavapipe)." >&2
    else
      echo "setup: Deno's WebGPU finds no adapter ($(field "$d" error)); adding Mesa's software Vulkan driver (lavapipe)." >&2
    fi
    install mesa-vulkan-drivers
    d="$(probe deno)"
  fi
  if [ -n "$(field "$d" error)" ]; then
    ok=0
    gl="$(field "$d" gl)"
    if [ -n "$gl" ]; then
      deno_says="none (only wgpu's OpenGL fallback, refused: $gl)"
    else
      deno_says="none ($(field "$d" error))"
    fi
  else
    case "$(uname -s)" in Darwin) api=Metal ;; MINGW* | MSYS* | CYGWIN*) api=DX12 ;; *) api=Vulkan ;; esac
    deno_says="$(field "$d" name) on $api"
  fi
  w="$(probe dawn)"
  if [ -n "$(field "$w" error)" ]; then
    echo "setup: Dawn finds no adapter; adding Mesa's EGL/GL drivers (llvmpipe)." >&2
    install libegl1 libgl1-mesa-dri
    w="$(probe dawn)"
  fi
  if [ -n "$(field "$w" error)" ]; then
    ok=0
    dawn_says="none ($(field "$w" error))"
  else
    dawn_says="$(field "$w" name)"
  fi
  echo "setup: WebGPU adapters: Deno's WebGPU → $deno_says; Dawn → $dawn_says" >&2
  if [ "$ok" = 1 ]; then
    mkdir -p "$(dirname "$marker")" && fingerprint >"$marker"
  fi
fi
[ $# = 0 ] && exit 0
exec "$deno" "$@"
