#!/usr/bin/env bash
# Runs the pinned Deno (package.json) with a WebGPU adapter available, doing the
# one-time setup a fresh machine needs and saying so:
#  - installs Deno from npm (node_modules/.bin/deno) when it is missing;
#  - installs Mesa's software Vulkan driver (lavapipe) when Deno finds no GPU
#    adapter and apt-get is available.
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
marker="$root/node_modules/.webgpu-adapter-ok"
if [ ! -f "$marker" ]; then
  if "$deno" run -A --quiet cli/info.ts --backend deno >/dev/null 2>&1; then
    touch "$marker"
  elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: no WebGPU adapter found; installing Mesa's software Vulkan driver (mesa-vulkan-drivers)..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libegl1 libgl1-mesa-dri >&2
    if "$deno" run -A --quiet cli/info.ts --backend deno >/dev/null 2>&1; then
      touch "$marker"
      echo "setup: software WebGPU adapter ready (lavapipe)." >&2
    fi
  else
    echo "setup: no WebGPU adapter found. Install a Vulkan driver (without a GPU: sudo apt-get install mesa-vulkan-drivers)." >&2
  fi
fi
exec "$deno" "$@"
