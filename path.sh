# Source this from a recipe folder: puts the toolkit on PATH/PYTHONPATH and activates
# the project virtualenv (.venv at the top of the checkout) when there is one.
SPK_ROOT="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
export SPK_ROOT
if [ -f "$SPK_ROOT/.venv/bin/activate" ] && [ "${VIRTUAL_ENV:-}" != "$SPK_ROOT/.venv" ]; then
  # shellcheck disable=SC1091
  . "$SPK_ROOT/.venv/bin/activate"
fi
export PYTHONPATH="$SPK_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SPK_ROOT/steps:$PATH"
export LC_ALL=C
export PYTHONUNBUFFERED=1
