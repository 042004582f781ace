"""Milliseconds per AdamW step on CPU: torch's default (a loop over tensors), foreach, and fused (what
`spinegrade.runtime.adamw` picks), for the classifier (resnet18, 5 x 32 px crops) and a locator network.

    python bench/optimizer_step.py [--threads 1] [--repeats 3]

Gradients are random; the variants alternate per repeat. Prints JSON: the median step per model and
variant, and default / fused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from spinegrade.localization.model import build_net
from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.targets import TASKS
from spinegrade.models.classifier import create_model

VARIANTS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_ms(model: torch.nn.Module, options: dict[str, bool]) -> float:
    """Median of 7 timed steps after 3 warm-up steps."""
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, **options)
    times = []
    for i in range(10):
        start = time.perf_counter()
        optimizer.step()
        if i >= 3:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {
        "resnet18 classifier": create_model("resnet18", in_chans=5),
        "sagittal locator": build_net(TASKS[0], LocatorSettings()),
    }
    ms: dict[str, dict[str, list[float]]] = {m: {v: [] for v in VARIANTS} for m in models}
    for repeat in range(args.repeats):
        order = list(VARIANTS.items()) if repeat % 2 == 0 else list(reversed(VARIANTS.items()))
        for name, model in models.items():
            for variant, options in order:
                ms[name][variant].append(step_ms(model, options))
    medians = {m: {v: round(statistics.median(t), 1) for v, t in by.items()} for m, by in ms.items()}
    print(
        json.dumps(
            {
                "threads": args.threads,
                "repeats": args.repeats,
                "median_step_ms": medians,
                "default_over_fused": {m: round(v["default"] / v["fused"], 2) for m, v in medians.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
