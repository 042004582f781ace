"""Process-wide compute settings shared by training, localisation and prediction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Inside the block torch uses `n` CPU threads (n <= 0: unchanged); the previous number is restored.

    One thread is often faster on a machine whose cores are shared: OpenMP threads spin while waiting.
    """
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
