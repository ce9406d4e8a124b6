"""The driver's own compute threads: torch, faiss and BLAS on the driver (training, evaluation,
gates), set once per process from ``spark.driver_threads``.

Spark tasks get their threads from the cores Spark gave them (``udfs.task_resources``); the
driver's computations had none, so torch used every core, oversubscribing a machine it shares
with Spark's executors (local mode) or other jobs — OpenMP threads that wait for a busy core spin.
"""

from __future__ import annotations

import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def use_driver_threads(threads: int) -> int:
    """Cap this process's torch/faiss/BLAS threads at ``threads`` (0: leave them, all cores):
    libraries already loaded are told now, the others read the environment when they load (the
    jobs import torch and faiss lazily, after the session). Returns the cap (0 = none)."""
    if threads <= 0:
        return 0
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if (torch := sys.modules.get("torch")) is not None:
        torch.set_num_threads(threads)
    if (faiss := sys.modules.get("faiss")) is not None:
        faiss.omp_set_num_threads(threads)
    return threads
