"""moon_rec: an open implementation of MOON multimodal item representations.

Importing the package makes OpenMP's idle threads sleep instead of spin
(``OMP_WAIT_POLICY=PASSIVE``, unless the environment names a policy) when torch and faiss
are not loaded yet: on shared cores, spinning threads slow a small model's training many
times over (see :mod:`moon_rec.runtime` and ``benchmarks/cpu_contention.py``).
"""

from moon_rec import runtime as _runtime

__version__ = "0.1.0"

_runtime.configure_cpu(quiet=True)
