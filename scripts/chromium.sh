#!/usr/bin/env bash
# Finds a Chromium for the browser test (tests/browser/browser_test.ts) and prints its
# path; on first use, where none is installed and apt-get is available as root
# (or with sudo), installs Debian's `chromium` package, saying so, the way
# scripts/deno.sh installs Mesa's drivers. Exits 1, with what to install, when
# it cannot find or install one. CHROMIUM=/path/to/chrome picks one.
# Usage: bash scripts/chromium.sh
set -uo pipefail
find_chromium() {
  if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then
    echo "$CHROMIUM"
    return 0
  fi
  local c
  for c in chromium chromium-browser google-chrome-stable google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}
if find_chromium; then exit 0; fi
sudo=""
[ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo="sudo -n"
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; }; then
  echo "setup: no Chromium found; running apt-get install -y chromium as root${sudo:+ (sudo)} for the browser test (one time, ~100 MB)..." >&2
  $sudo apt-get update -qq >&2 &&
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2 ||
    echo "setup: apt-get install chromium failed." >&2
  if find_chromium; then exit 0; fi
fi
echo "setup: no Chromium: install Debian's chromium package (apt-get install chromium) or set CHROMIUM=/path/to/chrome" >&2
exit 1
