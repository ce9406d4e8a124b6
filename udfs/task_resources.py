"""What Spark gave the running task: its GPU (if any) and its CPU cores, for model UDFs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from pyspark import TaskContext

from models.artifacts.registry import ArtifactRef


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


def model_folder(model: str | ArtifactRef) -> str:
    """The local folder to load ``model`` from: a published version is fetched into this node's
    cache first (once, verified; see ``Storage.fetch``), a plain path is used as it is."""
    return str(model.local()) if isinstance(model, ArtifactRef) else model


T = TypeVar("T")
_models: dict[tuple, object] = {}
_lock = threading.Lock()


def worker_model(key: tuple, build: Callable[[torch.device], T]) -> T:
    """The model for ``key`` on this task's device, built by ``build(device)`` once per Python
    worker and kept while it lives; on CPU, torch uses the cores Spark gave the task."""
    device = task_device()
    if device.type == "cpu":
        torch.set_num_threads(task_threads())
    full = (*key, str(device))
    with _lock:
        if full not in _models:
            _models[full] = build(device)
        return _models[full]  # type: ignore[return-value]
