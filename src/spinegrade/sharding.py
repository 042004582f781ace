"""Split a list of studies across machines: `--shard i/n` takes every n-th item from the i-th (0-based).

Any scheduler can run the n shards (a SLURM array passes $SLURM_ARRAY_TASK_ID as i); the order of the
studies is fixed by the data, so the shards are disjoint and together hold every study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from spinegrade.errors import DataError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int


def parse_shard(text: str | None) -> Shard | None:
    """'i/n' -> Shard(i, n); None or '' -> None. DataError for anything else."""
    if not text:
        return None
    index, slash, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = None
    if not slash or shard is None or not 0 <= shard.index < shard.count:
        raise DataError(f"--shard {text!r}: give i/n with 0 <= i < n, e.g. 0/4 for the first of four")
    return shard


def shard_items(items: Sequence[T], shard: Shard | None) -> list[T]:
    """The items of `shard` (all of them for None), in their order."""
    if shard is None:
        return list(items)
    return [item for i, item in enumerate(items) if i % shard.count == shard.index]
