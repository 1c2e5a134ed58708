#!/usr/bin/env bash
# Runs the pinned Deno (package.json) with a WebGPU adapter available, doing the
# one-time setup a fresh machine needs and saying so:
#  - installs Deno from npm (node_modules/.bin/deno) when it is missing;
#  - installs Mesa's software drivers when a backend finds no GPU adapter and
#    apt-get is available (Vulkan/lavapipe for Deno's WebGPU, EGL/GL for Dawn).
# Usage: bash scripts/deno.sh <deno arguments>   (e.g. task train --help)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deno="$root/node_modules/.bin/deno"
want="$(node -p "require('./package.json').devDependencies.deno")"
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
# Both backends need a driver: Deno's WebGPU a Vulkan one (lavapipe without a GPU),
# Dawn (the default) Vulkan on a GPU or Mesa's GL/EGL (llvmpipe) without one.
probe() { "$deno" run -A --quiet cli/info.ts --backend "$1" >/dev/null 2>&1; }
install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing $* (one time)..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    echo "setup: please install $* (needs root and apt-get)." >&2
  fi
}
marker="$root/node_modules/.webgpu-adapter-ok"
if [ ! -f "$marker" ]; then
  ok=1
  if ! probe deno; then
    echo "setup: Deno's WebGPU finds no adapter; adding Mesa's software Vulkan driver (lavapipe)." >&2
    install mesa-vulkan-drivers
    probe deno || { ok=0; echo "setup: still no adapter for --backend deno." >&2; }
  fi
  if ! probe dawn; then
    echo "setup: Dawn finds no adapter; adding Mesa's EGL/GL drivers (llvmpipe)." >&2
    install libegl1 libgl1-mesa-dri
    probe dawn || { ok=0; echo "setup: still no adapter for --backend dawn." >&2; }
  fi
  [ "$ok" = 1 ] && touch "$marker" && echo "setup: WebGPU adapters ready (deno task info lists them)." >&2
fi
exec "$deno" "$@"
