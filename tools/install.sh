#!/usr/bin/env bash
# Install spk into the project virtualenv .venv (created if missing). Idempotent: a second
# run only checks that the install is current. torch==2.13.0 is installed first so that
# the CPU build is used where it is available (an unpinned torch pulls GBs of CUDA packages).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [install] $*" >&2; }

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  log "error: spk needs Python 3.10 or newer ($python is $("$python" --version 2>&1 || echo missing))"
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating the virtualenv .venv"
  "$python" -m venv .venv || {
    log "error: could not create a virtualenv; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
fi

# Reinstall when the package metadata changes: pyproject.toml, and the version it reads from spk/__init__.py.
stamp=.venv/.spk-install-stamp
want="$( { cat pyproject.toml; grep '^__version__' spk/__init__.py; } | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import spk, torch' 2>/dev/null; then
  log "spk is installed and current in .venv"
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  log "installing torch==2.13.0"
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
log "installing spk and its dependencies (editable, with test extras)"
.venv/bin/python -m pip install -q -e ".[test]"
echo "$want" > "$stamp"
log "done: $(.venv/bin/spk --version)"
