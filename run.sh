#!/usr/bin/env bash
# One-step set-up and run: creates .venv on first use, installs jaxseg into it, then runs a job.
#   ./run.sh test            the test suite (what CI runs)
#   ./run.sh train [ARGS]    python -m jaxseg.train --config configs/unet.py [ARGS]
#   ./run.sh python ...      any command inside the environment
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo "run.sh: setting up $VENV (first run only)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[test]'
  touch "$VENV/.installed"
fi

job=${1:-test}
shift || true
case "$job" in
  test) exec "$VENV/bin/python" -m pytest -n 2 -m "not slow" "$@" ;;
  train) exec "$VENV/bin/python" -m jaxseg.train --config configs/unet.py "$@" ;;
  python) exec "$VENV/bin/python" "$@" ;;
  *) echo "usage: ./run.sh test|train|python [ARGS]" >&2; exit 2 ;;
esac
