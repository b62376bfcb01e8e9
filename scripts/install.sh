#!/usr/bin/env bash
# Create .venv and install moon_rec with the CPU (default) or GPU (MOON_GPU=1) requirement
# set. Idempotent: a stamp holding the hash of every input makes a re-run take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=${MOON_VENV:-.venv}
if [ "${MOON_GPU:-0}" = "1" ]; then REQ=requirements/gpu.txt; else REQ=requirements/cpu.txt; fi
STAMP="$VENV/.moon-install-stamp"
want=$( (echo "$REQ"; cat "$REQ" requirements/dev.txt pyproject.toml scripts/install.sh) | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/moon" ]; then
  echo "install: $VENV is up to date ($REQ)"
  exit 0
fi
echo "install: creating $VENV with $REQ"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip warns about every local index folder that lacks a package; keep the log readable.
pip_q() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }; }
# torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
pip_q install -q torch==2.13.0
pip_q install -q -r "$REQ" -r requirements/dev.txt
pip_q install -q --no-deps torchrec==1.8.0
pip_q install -q --no-deps -e .
"$VENV/bin/python" -c "import torchrec, fbgemm_gpu, feast, faiss, transformers; print('install: ok, torch', __import__('torch').__version__, 'torchrec', torchrec.__version__ if hasattr(torchrec, '__version__') else '1.8.0')"
echo "$want" > "$STAMP"
