"""What Spark gave the running task: its GPU (if any) and its CPU cores, for model UDFs."""

from __future__ import annotations

import torch
from pyspark import TaskContext


def task_device() -> torch.device:
    """The task's assigned GPU if Spark gave it one; outside Spark, any GPU; else CPU."""
    ctx = TaskContext.get()
    if torch.cuda.is_available():
        if ctx is None:
            return torch.device("cuda:0")
        gpus = ctx.resources().get("gpu")
        if gpus is not None and gpus.addresses:
            return torch.device(f"cuda:{gpus.addresses[0]}")
    return torch.device("cpu")


def task_threads() -> int:
    """torch threads for this task: the cores Spark gave it (all cores outside Spark)."""
    ctx = TaskContext.get()
    return max(1, ctx.cpus()) if ctx is not None else torch.get_num_threads()
