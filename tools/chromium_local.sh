#!/usr/bin/env bash
# Debian's headless Chromium and its chromedriver, for the browser test of the `spk serve` web page
# (tests/test_web_page.py) and for trying the page by hand.
#
#   tools/chromium_local.sh install   install Debian's chromium and chromium-driver if missing (root and
#                                     apt-get needed for that), then print the two paths
#   tools/chromium_local.sh status    print the paths and versions (exit 0), or say what is missing (exit 3)
#
# The packages are installed with --no-install-recommends (no fonts/extras the test does not need).
# Output on success, one line each, for scripts:  chromium=/usr/bin/chromium  chromedriver=/usr/bin/chromedriver
#
# Exit codes: 0 ok, 1 failure (the message says which step), 2 not root where installing needs root,
# 3 (status only) not installed.
set -euo pipefail

packages=(chromium chromium-driver)

log() { echo "[chromium_local] $*" >&2; }
die() { local code=$1; shift; log "error: $*"; exit "$code"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# shellcheck source=tools/apt_install.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh"

browser() { command -v chromium 2>/dev/null || true; }
driver() { command -v chromedriver 2>/dev/null || true; }

installed() { [ -n "$(browser)" ] && [ -n "$(driver)" ]; }

print_paths() {
  echo "chromium=$(browser)"
  echo "chromedriver=$(driver)"
}

install_packages() {
  install_debian_packages "chromium/chromedriver (on PATH as 'chromium' and 'chromedriver') are" install \
    installed "${packages[@]}"
}

status() {
  if installed; then
    print_paths
    log "$("$(browser)" --version 2>/dev/null || echo 'chromium: version unknown'); $("$(driver)" --version 2>/dev/null | head -1)"
  else
    [ -n "$(browser)" ] || log "chromium is not installed"
    [ -n "$(driver)" ] || log "chromedriver is not installed (Debian package chromium-driver)"
    log "install both with: sudo $0 install"
    return 3
  fi
}

case "${1:-}" in
  install) install_packages; print_paths ;;
  status) status ;;
  *) echo "usage: $0 install|status" >&2; exit 1 ;;
esac
