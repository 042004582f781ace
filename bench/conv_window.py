"""Seconds per classifier training step (forward, backward) with the backbone's convolutions as built by
timm (nn.Conv2d) and as spinegrade builds them (models.convs.WindowConv2d), on the same weights and batch.

    .venv/bin/python bench/conv_window.py [--arch resnet18] [--size 32] [--threads 2] [--repeats 5]

The two alternate per repeat (same machine load); each repeat times 10 steps after 3 warm-up steps. Prints
JSON: the median step per variant, plain / window, and the largest gradient difference between the two.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from spinegrade.models.classifier import create_model


def plain(model: nn.Module) -> nn.Module:
    """The model with every WindowConv2d turned back into timm's nn.Conv2d (the same parameters)."""
    from spinegrade.models.convs import WindowConv2d

    for module in model.modules():
        if type(module) is WindowConv2d:
            module.__class__ = nn.Conv2d
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--k", type=int, default=5, help="Slices per crop.")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    window = create_model(args.arch, in_chans=args.k).to(memory_format=torch.channels_last)
    models = {"window": window, "plain": plain(copy.deepcopy(window))}
    x = torch.rand(args.batch, args.k, args.size, args.size).to(memory_format=torch.channels_last)
    condition = torch.randint(0, 5, (args.batch,))
    level = torch.randint(0, 5, (args.batch,))
    y = torch.randint(0, 3, (args.batch,))

    def step(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout mask for both
        F.cross_entropy(model(x, condition, level), y).backward()

    for model in models.values():
        step(model)
    grad_diff = max(
        (a.grad - b.grad).abs().max().item()  # type: ignore[operator]
        for a, b in zip(models["window"].parameters(), models["plain"].parameters(), strict=True)
    )
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            for _ in range(3):
                step(model)
            start = time.perf_counter()
            for _ in range(10):
                step(model)
            times[name].append((time.perf_counter() - start) / 10)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                "arch": args.arch,
                "size": args.size,
                "batch": args.batch,
                "threads": args.threads,
                "step_s": {name: round(t, 4) for name, t in median.items()},
                "plain_over_window": round(median["plain"] / median["window"], 2),
                "max_grad_diff": grad_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
