"""The install gives one environment where the whole stack imports together."""

from __future__ import annotations

import subprocess
import sys


def test_stack_imports_in_one_process() -> None:
    code = (
        "import torch, torchrec, fbgemm_gpu, feast, faiss, transformers, pyarrow;"
        "assert torch.__version__.startswith('2.13.0'), torch.__version__;"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
