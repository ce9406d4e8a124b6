"""Module modes that must come back: evaluation inside training loops."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block and back in the mode it had after it (also when
    the block raises): evaluation in the middle of training leaves training on."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
