"""Benchmark of reading a real study: spinegrade.read_series against bare pydicom, with and without pylibjpeg.

Times per round (all series of the study, seconds), median of RUNS interleaved rounds in one process:
- bare: `[pydicom.dcmread(f).pixel_array for f in series]` for every series (the slices held, as any
  reader holds them), with the installed plugins (pylibjpeg-rle first);
- read_series: spinegrade.read_series of every series folder, same plugins;
- bare_native / read_series_native: the same with pydicom's own RLE decoder forced (the pylibjpeg plugin
  removed from pydicom's RLE decoder for the round), i.e. how the study read before pylibjpeg-rle was used;
- baseline / baseline_native (with --baseline FILE): the read_series of a version of the reader from
  before it became the data/series/ package (one module, e.g.
  `git show 0923a19:src/spinegrade/data/series.py > /tmp/old_series.py`) with the installed plugins
  (before / after in one run: its ratio to bare) and with the native decoder ("today").
Ratios, on wall and on process CPU time (which a busy machine distorts less): read_series / bare (the
reader's overhead; target <= 1.1), read_series_native / read_series and baseline_native / read_series
(the speed-up; target >= 3). Also checks that both decoders give identical pixels. Prints one JSON object
with the 1-minute load average before and after (the machine may be shared).
Run: .venv/bin/python bench/read.py [STUDY_FOLDER] [--baseline FILE]
(default study: ../shared/data/rsna2024-real-study/train_images/4646740 beside the repository).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels.decoders import RLELosslessDecoder

from spinegrade.data.series import read_series

RUNS = 15
DEFAULT_STUDY = (
    Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024-real-study/train_images/4646740"
)
# pydicom's own registration of its RLE plugins, in its order of preference (pylibjpeg first).
_PLUGINS = [
    ("pylibjpeg", ("pydicom.pixels.decoders.pylibjpeg", "_decode_frame")),
    ("pydicom", ("pydicom.pixels.decoders.rle", "_decode_frame")),
]


@contextmanager
def native_rle() -> Iterator[None]:
    """pydicom's own RLE decoder only, for the duration; pydicom's plugins and order are restored after."""
    RLELosslessDecoder.remove_plugin("pylibjpeg")
    try:
        yield
    finally:
        RLELosslessDecoder.remove_plugin("pydicom")
        RLELosslessDecoder.add_plugins(_PLUGINS)


def load_reader(file: Path) -> Callable[[Path], object]:
    """read_series of a one-module version of the reader (spinegrade/data/series.py), loaded from `file`."""
    spec = importlib.util.spec_from_file_location("baseline_series", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.read_series


def main(study: Path, baseline: Path | None = None) -> dict:
    load_before = os.getloadavg()[0]
    folders = sorted(p for p in study.iterdir() if p.is_dir())
    files = {folder: sorted(folder.glob("*.dcm")) for folder in folders}

    def bare() -> None:
        for folder in folders:  # a series' slices are held, as a reader must hold them
            slices = [pydicom.dcmread(f).pixel_array for f in files[folder]]
            del slices

    def reader() -> None:
        for folder in folders:
            read_series(folder)

    def native(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with native_rle():
                fn()

        return run

    cases = {
        "bare": bare,
        "read_series": reader,
        "bare_native": native(bare),
        "read_series_native": native(reader),
    }
    if baseline is not None:
        old_read = load_reader(baseline)

        def old() -> None:
            for folder in folders:
                old_read(folder)

        cases["baseline"] = old
        cases["baseline_native"] = native(old)
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up: imports, file cache
        fn()
    for _ in range(RUNS):
        for name, fn in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    median = {name: statistics.median(t) for name, t in wall.items()}
    median_cpu = {name: statistics.median(t) for name, t in cpu.items()}
    with native_rle():
        slow = [read_series(folder).pixels for folder in folders]
    same = all(np.array_equal(a, read_series(f).pixels) for a, f in zip(slow, folders, strict=True))
    result = {
        "study": str(study),
        "series": len(folders),
        "files": sum(map(len, files.values())),
        "runs": RUNS,
        "rle_plugins": list(RLELosslessDecoder.available_plugins),
        "median_s": {name: round(t, 4) for name, t in median.items()},
        "median_cpu_s": {name: round(t, 4) for name, t in median_cpu.items()},
        "ratio_read_series_to_bare": round(median["read_series"] / median["bare"], 3),
        "ratio_read_series_to_bare_cpu": round(median_cpu["read_series"] / median_cpu["bare"], 3),
        "speedup_vs_native_read_series": round(median["read_series_native"] / median["read_series"], 2),
        "speedup_vs_native_read_series_cpu": round(
            median_cpu["read_series_native"] / median_cpu["read_series"], 2
        ),
        "pixels_equal_native_vs_plugin": same,
    }
    if baseline is not None:
        result["baseline"] = str(baseline)
        for suffix, times in (("", median), ("_cpu", median_cpu)):
            result[f"ratio_baseline_to_bare{suffix}"] = round(times["baseline"] / times["bare"], 3)
            result[f"speedup_vs_baseline_native{suffix}"] = round(
                times["baseline_native"] / times["read_series"], 2
            )
    result["load_average_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", type=Path, default=DEFAULT_STUDY)
    parser.add_argument(
        "--baseline", type=Path, help="a one-module version of the reader (data/series.py) to time as today"
    )
    args = parser.parse_args()
    print(json.dumps(main(args.study, args.baseline), indent=2))
