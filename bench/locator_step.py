"""Seconds per locator training step (forward, backward, AdamW) with contiguous and channels_last tensors.

    python bench/locator_step.py [--size 96] [--batch 16] [--threads 1] [--repeats 5]

Each task's network (LocatorSettings' architecture and decoder; sagittal volumes of `depth` slices, axial
slices with their context) on random inputs; the two memory formats alternate per repeat. Prints JSON: the
median step per task and format, and contiguous / channels_last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch

from spinegrade.localization.model import build_net
from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.targets import TASKS

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def step_seconds(task, settings: LocatorSettings, batch: int, memory_format: torch.memory_format) -> float:
    """Median of 4 timed steps after 2 warm-up steps."""
    net = build_net(task, settings).to(memory_format=memory_format)
    channels = settings.depth if task.volume else settings.context
    x = torch.rand(batch, channels, settings.size, settings.size).contiguous(memory_format=memory_format)
    optimizer = torch.optim.AdamW(net.parameters())
    times = []
    for i in range(6):
        start = time.perf_counter()
        heatmaps, slices = net(x)
        loss = heatmaps.square().mean() + (slices.square().mean() if slices is not None else 0.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--size", type=int, default=96, help="Input side (the CPU defaults' 96).")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = replace(LocatorSettings(), size=args.size, batch_size=args.batch)
    seconds: dict[str, dict[str, list[float]]] = {t.slug: {f: [] for f in FORMATS} for t in TASKS}
    for repeat in range(args.repeats):
        order = list(FORMATS.items()) if repeat % 2 == 0 else list(reversed(FORMATS.items()))
        for task in TASKS:
            for name, memory_format in order:
                seconds[task.slug][name].append(step_seconds(task, settings, args.batch, memory_format))
    medians = {t: {f: round(statistics.median(v), 4) for f, v in by.items()} for t, by in seconds.items()}
    print(
        json.dumps(
            {
                "size": args.size,
                "batch": args.batch,
                "threads": args.threads,
                "repeats": args.repeats,
                "median_step_s": medians,
                "contiguous_over_channels_last": {
                    t: round(m["contiguous"] / m["channels_last"], 2) for t, m in medians.items()
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
