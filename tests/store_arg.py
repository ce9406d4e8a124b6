"""A :class:`Storage` on a command line: how the tests hand the store under test (any kind, with
its settings) to the publisher and lock-holder processes they start."""

from __future__ import annotations

import base64
import pickle

from models.artifacts.storage import Storage


def to_arg(storage: Storage) -> str:
    return base64.b64encode(pickle.dumps(storage)).decode()


def from_arg(arg: str) -> Storage:
    storage = pickle.loads(base64.b64decode(arg))
    assert isinstance(storage, Storage)
    return storage
