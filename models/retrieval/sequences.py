"""Engagement sequences as the two-tower reads them: left-padded rows of item indices, the
leave-one-out split of the S3-Rec protocol, and batching helpers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sequences:
    """Left-padded item sequences (users, max_len + 1): a training row's positions predict the
    next item; an evaluation row holds the input history in the first max_len columns and the
    held-out item in the last."""

    rows: torch.Tensor

    @property
    def histories(self) -> torch.Tensor:
        return self.rows[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.rows[:, -1]


@dataclass(frozen=True)
class LeaveOneOut:
    train: Sequences
    validation: Sequences
    test: Sequences


def leave_one_out(sequences: list[list[int]], max_len: int) -> LeaveOneOut:
    """Left-padded rows of ``max_len + 1`` items: train = all but the last two items (a user with
    fewer than three items trains on all of them and is not evaluated); validation = history up
    to the second-to-last item, which is the target; test = the whole sequence, the last item the
    target."""
    width = max_len + 1

    def row(items: list[int]) -> list[int]:
        items = items[-width:]
        return [0] * (width - len(items)) + items

    evaluated = [s for s in sequences if len(s) >= 3]
    train = [row(s[:-2] if len(s) >= 3 else s) for s in sequences]
    return LeaveOneOut(
        Sequences(torch.tensor(train, dtype=torch.long)),
        Sequences(torch.tensor([row(s[:-1]) for s in evaluated], dtype=torch.long)),
        Sequences(torch.tensor([row(s) for s in evaluated], dtype=torch.long)),
    )


def trim_padding(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` without the leading columns that are padding in every row (positions are counted
    from the right, so the towers see the same thing)."""
    width = int((rows > 0).sum(1).max()) if len(rows) else 0
    return rows[:, rows.shape[1] - max(width, 1) :]


def length_buckets(lengths: torch.Tensor, batch_size: int, generator: torch.Generator, chunk: int = 50) -> list:
    """Row indices in batches of similar lengths, in random order: rows are shuffled, sorted by
    length within chunks of ``chunk`` batches, cut into batches, and the batches shuffled. Short
    histories then train in short (trimmed) batches instead of padded to the longest."""
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for start in range(0, len(order), chunk * batch_size):
        part = order[start : start + chunk * batch_size]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
