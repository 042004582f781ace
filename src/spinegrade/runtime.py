"""Process-wide compute settings shared by training, localisation and prediction."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch
    from rich.console import Console

# Devices with a fused AdamW kernel in torch: one kernel for every tensor instead of a loop of small ops,
# 3-4x faster steps on CPU (bench/optimizer_step.py, docs/results.md#classifier).
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def adamw(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where every parameter's device has the kernel (the same update, fewer launches)."""
    import torch

    params = list(params)
    fused = bool(params) and all(
        p.device.type in FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


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


@contextmanager
def timed_stage(
    console: Console, timings: dict[str, float], name: str, *, prefix: str = ""
) -> Iterator[None]:
    """A long stage under a rule titled `prefix + name`; its wall seconds go into timings[name], shown."""
    console.rule(f"[bold]{prefix}{name}")
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    console.print(f"[dim]{name}: {timings[name]:.1f} s[/dim]")


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's banners (GPU/TPU available, seed set...) and advice about workers/batch sizes."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            for message in (
                ".*does not have many workers.*",  # workers=0 is the measured best on CPU
                "Checkpoint directory .* exists and is not empty",  # RUN holds the run's other files
                ".*overridden `on_after_batch_transfer`.*",  # augmentation lives there on purpose
                ".*LeafSpec.*",  # deprecations inside Lightning itself
                ".*all_gather is deprecated.*",
            ):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
