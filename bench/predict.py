"""Benchmark of `spinegrade predict`: seconds per study end to end (read + locate + crop + classify).

Standalone: writes a phantom (STUDIES test studies, SIZE px images: the phantom's default), an untrained
locator (LocatorSettings defaults: resnet10t, 128 px, 16 slices) and an untrained efficientnet_b0
classifier run (k=5, 64 px crops: the CPU defaults) into a temporary folder. Untrained weights cost the
same time as trained ones, but the untrained locator puts points anywhere, so some axial points are not
found and their crops are not cut (the JSON says how many targets the model graded).

Reported (medians over the studies, after one warm-up study): seconds per stage and in all, each stage's
share, the peak resident memory of the process (getrusage) and the peak Python/numpy allocation while one
study is graded (tracemalloc, in a second pass: tracing slows pydicom down), and the wall time per study
of the whole `predict` with --workers 0 and 1 (model loading and, for 1, the reader process's start
included). Prints one JSON object.
Run: .venv/bin/python bench/predict.py [--studies 8] [--size 160] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
import tracemalloc
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from spinegrade.crops.extract import DEFAULT_CROP_MM, DEFAULT_K, DEFAULT_SIZE
from spinegrade.prediction.grading import grade_study
from spinegrade.prediction.predict import predict
from spinegrade.prediction.priors import load_priors
from spinegrade.prediction.results import STAGES, PredictionWarning
from spinegrade.prediction.studies import discover_studies, read_study

# torch, the models and the locator are imported inside the functions: the --workers 1 reader process
# imports this file (multiprocessing's spawn), and should pay what it pays under `spinegrade predict`.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ARCH = "efficientnet_b0"
SEED = 0


def build(root: Path, studies: int, size: int) -> tuple[Path, Path, Path]:
    """(phantom, classifier run, locator) under root, untrained models with the CPU-default settings."""
    import torch

    from spinegrade.data.phantom import write_phantom
    from spinegrade.localization.model import LocatorSettings, build_net
    from spinegrade.localization.targets import TASKS
    from spinegrade.localization.train import model_info
    from spinegrade.localization.train import save_model as save_locator
    from spinegrade.models.classifier import create_model
    from spinegrade.training.checkpoint import save_model

    torch.manual_seed(SEED)
    data = root / "phantom"
    write_phantom(data, 2, SEED, size=size, test_studies=studies, workers=os.cpu_count(), progress=False)
    run = root / "cls"
    run.mkdir()
    settings = {"conditioning": "film", "mean": 0.3, "std": 0.2}
    model = create_model(ARCH, in_chans=DEFAULT_K, **settings)
    info = {
        "arch": ARCH,
        "in_chans": DEFAULT_K,
        "k": DEFAULT_K,
        "size": DEFAULT_SIZE,
        "crop_mm": DEFAULT_CROP_MM,
    }
    save_model(run, "best", model, {**info, "model": settings, "untrained": True})
    locator = root / "locator"
    locator.mkdir()
    defaults = LocatorSettings()
    for task in TASKS:
        save_locator(locator, task, build_net(task, defaults), model_info(task, defaults, 0))
    return data, run, locator


def stage_pass(data: Path, run: Path, locator_dir: Path, trace: bool) -> list[dict]:
    """Grade every study in the calling process; per study: seconds per stage, CPU seconds, the peak
    resident memory of the process so far and (trace=True) the peak traced allocation."""
    from spinegrade.localization.locate import load_locator, locate_study
    from spinegrade.prediction.grade import Ensemble

    ensemble = Ensemble.load([run])
    locator = load_locator(locator_dir)
    priors, _ = load_priors(ensemble, data)
    out = []
    for plan in discover_studies(data):
        cpu, clock = time.process_time(), time.perf_counter()
        if trace:
            tracemalloc.start()
        images = read_study(plan)
        images.seconds = time.perf_counter() - clock
        result = grade_study(images, lambda s: locate_study(s, locator), ensemble, priors)
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
        graded = int((result.grades["source"] == "model").sum())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.append(
            {
                **result.seconds,
                "cpu": time.process_time() - cpu,
                "rss_mb": rss,
                "peak_mb": peak / 2**20,
                "graded": graded,
            }
        )
    return out


def traced_read_peak(data: Path) -> list[float]:
    """Peak traced allocation (MB) while each study is read."""
    peaks = []
    for plan in discover_studies(data):
        tracemalloc.start()
        read_study(plan)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--size", type=int, default=160, help="phantom image size (its default: 160)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (predict's default: 1)")
    args = parser.parse_args()
    import torch

    from spinegrade.localization.model import LocatorSettings

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", PredictionWarning)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clock = time.perf_counter()
        # Built in another process, so that this one's peak memory is prediction's alone.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            data, run, locator = pool.submit(build, root, args.studies + 1, args.size).result()
        setup = time.perf_counter() - clock
        rows = stage_pass(data, run, locator, trace=False)
        cold, warm = rows[0], rows[1:]
        traced = stage_pass(data, run, locator, trace=True)[1:]
        read_peaks = traced_read_peak(data)[1:]
        wall = {}
        for workers in (0, 1):
            clock = time.perf_counter()
            predict(
                data,
                [run],
                locator,
                root / f"sub{workers}.csv",
                workers=workers,
                threads=args.threads,
                progress=False,
            )
            wall[f"workers_{workers}"] = (time.perf_counter() - clock) / (args.studies + 1)
    total = [sum(r[s] for s in STAGES) for r in warm]
    medians = {s: statistics.median(r[s] for r in warm) for s in STAGES}
    report = {
        "what": "spinegrade predict, seconds per study end to end (read + locate + crop + classify)",
        "untrained_weights": True,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "studies": len(warm),
        "image_size": args.size,
        "classifier": f"{ARCH}, k={DEFAULT_K}, {DEFAULT_SIZE} px crops",
        "locator": f"{LocatorSettings().arch}, {LocatorSettings().size} px, depth {LocatorSettings().depth}",
        "targets_graded_by_model_median": statistics.median(r["graded"] for r in warm),
        "seconds_per_study_median": statistics.median(total),
        "seconds_per_study_max": max(total),
        "cpu_seconds_per_study_median": statistics.median(r["cpu"] for r in warm),
        "stage_seconds_median": medians,
        "stage_share": {s: medians[s] / sum(medians.values()) for s in STAGES},
        "first_study_seconds": sum(cold[s] for s in STAGES),
        "peak_rss_mb_after_imports": rss_imports,
        "peak_rss_mb_after_first_study": cold["rss_mb"],
        "peak_rss_mb_after_last_study": rows[-1]["rss_mb"],
        "peak_traced_mb_grading_median": statistics.median(r["peak_mb"] for r in traced),
        "peak_traced_mb_reading_median": statistics.median(read_peaks),
        "predict_wall_seconds_per_study": wall,
        "setup_seconds": setup,
        "target_seconds_per_study": 3.0,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
