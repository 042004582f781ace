"""Benchmark of `spinegrade predict` at real study sizes: seconds per study and per stage, torch vs ONNX.

Standalone: writes a phantom (STUDIES test studies of SIZE px images; by default none when the real study
is there, as writing it is most of the setup), an untrained efficientnet_b0
classifier run (k=5, the CPU-default crops) and the untrained locators (LocatorSettings defaults: the
three whole-series locators and the sagittal refiners),
exports them as a bundle with ONNX graphs, and, when ../shared/data/rsna2024-real-study exists, lays out
COPIES copies of the real study (RLE DICOM, 540 x 384 sagittal and 384 x 384 axial, 17/17/54 slices) as
test studies. Untrained weights cost the time of trained ones (the locator puts points anywhere, so some
crops are not cut: `targets_graded_by_model_median` says how many were).

Per source and configuration (medians over the studies after one warm-up study, in one process per
runtime and thread count): seconds per stage (read, locate, crop, classify) and in all, the CPU seconds
of the process per study (what a study costs on a core of its own: on a shared machine wall time also
counts waiting), and the peak resident memory of that process. Levers measured one at a time: the RLE
decoder (pydicom's numpy plugin vs pylibjpeg-rle; every later figure uses the faster), channels_last
(torch), ONNX Runtime, 1 vs 2 intra-op threads (`--threads`; more threads: the real study, plain
configuration only), and reading ahead in a worker process (steady-state wall seconds per study of the
grading loop, workers 0 vs 1, ONNX Runtime, 1 thread; the real study, else the phantom).
Prints one JSON object, with the 1-minute load average before and after (the machine may be shared), the
fastest configuration on the real study and whether it meets the target (TARGET_SECONDS per study).
Run: .venv/bin/python bench/predict.py [--studies N] [--size 384] [--copies 5] [--threads 1 2]
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
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from spinegrade.crops.extract import DEFAULT_CROP_MM, DEFAULT_K, DEFAULT_SIZE
from spinegrade.prediction.results import STAGES, PredictionWarning

# torch and the models are imported inside the functions: the reader processes import this file (spawn).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ARCH = "efficientnet_b0"
SEED = 0
REAL_STUDY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsna2024-real-study"
TARGET_SECONDS = 0.5


def build(root: Path, studies: int, size: int) -> tuple[Path | None, Path]:
    """(phantom or None when `studies` is 0, bundle) under root: untrained models with the CPU-default
    settings, ONNX graphs included."""
    import torch

    from spinegrade.bundle.export import export_bundle
    from spinegrade.localization.model import LocatorSettings, build_net
    from spinegrade.localization.train import model_info, task_settings, tasks_to_train
    from spinegrade.localization.train import save_model as save_locator
    from spinegrade.models.classifier import create_model
    from spinegrade.phantom import write_phantom
    from spinegrade.training.checkpoint import save_model

    torch.manual_seed(SEED)
    data = root / "phantom" if studies else None
    if data is not None:
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
    for task in tasks_to_train(defaults):  # the sagittal refiners too when the defaults refine
        settings = task_settings(task, defaults)
        save_locator(locator, task, build_net(task, settings), model_info(task, settings, 0))
    return data, export_bundle([run], locator, root / "bundle")


def real_copies(root: Path, copies: int) -> Path | None:
    """A test split of `copies` copies of the real study (symlinked, each under its own study id)."""
    if not REAL_STUDY.is_dir():
        return None
    data = root / "real"
    (data / "test_images").mkdir(parents=True)
    described = pd.read_csv(REAL_STUDY / "train_series_descriptions.csv")
    (study,) = described["study_id"].unique()
    frames = []
    for i in range(copies):
        study_id = int(study) * 10 + i
        (data / "test_images" / str(study_id)).symlink_to(REAL_STUDY / "train_images" / str(study))
        frames.append(described.assign(study_id=study_id))
    pd.concat(frames).to_csv(data / "test_series_descriptions.csv", index=False)
    return data


def _load(bundle: Path, runtime: str, threads: int, channels_last: bool = False):
    import torch

    from spinegrade.bundle.manifest import open_bundle
    from spinegrade.localization.locate import load_locator
    from spinegrade.prediction.grade import Ensemble
    from spinegrade.prediction.onnx_models import with_onnx_runtime

    opened = open_bundle(bundle)
    ensemble = Ensemble.load(opened.runs)
    locator = load_locator(opened.locator)
    if channels_last:
        for run in ensemble.runs:
            run.model.to(memory_format=torch.channels_last)
        for model in locator.models.values():
            model.net.to(memory_format=torch.channels_last)
    if runtime == "onnx":
        ensemble, locator = with_onnx_runtime(ensemble, locator, opened.onnx_dir, threads)
    return ensemble, locator


def stage_pass(data: Path, ensemble, locator) -> list[dict]:
    """Grade every study in this process; per study: seconds per stage and the targets the model graded."""
    from spinegrade.localization.locate import locate_study
    from spinegrade.prediction.grading import grade_study
    from spinegrade.prediction.priors import load_priors
    from spinegrade.prediction.studies import discover_studies, read_study

    priors, _ = load_priors(ensemble, data)
    out = []
    for plan in discover_studies(data):
        cpu, clock = time.process_time(), time.perf_counter()
        images = read_study(plan)
        images.seconds, read_cpu = time.perf_counter() - clock, time.process_time() - cpu
        result = grade_study(images, lambda s: locate_study(s, locator), ensemble, priors)
        graded = int((result.grades["source"] == "model").sum())
        total = time.process_time() - cpu
        out.append(
            {
                **result.seconds,
                "cpu": total,
                "cpu_read": read_cpu,
                "cpu_grade": total - read_cpu,
                "graded": graded,
            }
        )
    return out


def summary(rows: list[dict]) -> dict:
    warm = rows[1:] or rows
    medians = {s: statistics.median(r[s] for r in warm) for s in STAGES}
    return {
        "seconds_per_study_median": statistics.median(sum(r[s] for s in STAGES) for r in warm),
        "cpu_seconds_per_study_median": statistics.median(r["cpu"] for r in warm),
        "cpu_seconds_median": {k: statistics.median(r[f"cpu_{k}"] for r in warm) for k in ("read", "grade")},
        "stage_seconds_median": medians,
        "targets_graded_by_model_median": statistics.median(r["graded"] for r in warm),
    }


def loop_wall(data: Path, ensemble, locator, workers: int, details: Path) -> float:
    """Steady-state wall seconds per study of predict's grading loop (after the first study)."""
    from spinegrade.localization.locate import locate_study
    from spinegrade.prediction.predict import grade_studies
    from spinegrade.prediction.priors import load_priors
    from spinegrade.prediction.studies import discover_studies

    priors, _ = load_priors(ensemble, data)
    plans = discover_studies(data)
    details.mkdir(parents=True, exist_ok=True)
    stamps = []
    for _ in grade_studies(
        plans,
        lambda s: locate_study(s, locator),
        ensemble,
        priors,
        details,
        "bench",
        workers=workers,
        progress=False,
    ):
        stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def use_rle_plugin(name: str) -> None:
    """Make pydicom decode RLE with plugin `name` only ('pydicom': numpy; 'pylibjpeg': pylibjpeg-rle)."""
    from pydicom.pixels.decoders import RLELosslessDecoder

    for other in [p for p in RLELosslessDecoder.available_plugins if p != name]:
        RLELosslessDecoder.remove_plugin(other)


def measure(runtime: str, sources: dict[str, str], bundle: str, threads: int, tmp: str) -> dict:
    """Every configuration of one runtime at `threads` threads on every source, in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore", PredictionWarning)
    bundle_path = Path(bundle)
    report: dict = {}
    ensemble, locator = _load(bundle_path, runtime, threads)
    if runtime == "torch" and threads == 1 and "real" in sources:
        report["rle_default_plugin"] = summary(stage_pass(Path(sources["real"]), ensemble, locator))
    use_rle_plugin("pylibjpeg")
    for name, source in sources.items():
        if threads > 1 and name != "real":  # more threads: the real study, the plain configuration only
            continue
        data = Path(source)
        report[name] = summary(stage_pass(data, ensemble, locator))
        if threads > 1:
            continue
        if runtime == "torch":
            tuned = _load(bundle_path, runtime, threads, channels_last=True)
            report[f"{name}_channels_last"] = summary(stage_pass(data, *tuned))
        elif name == "real" or "real" not in sources:
            report[f"{name}_readahead_wall_seconds_per_study"] = {
                f"workers_{w}": loop_wall(data, ensemble, locator, w, Path(tmp) / f"{name}{w}")
                for w in (0, 1)
            }
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def best_real(results: dict) -> tuple[str, float] | None:
    """The fastest configuration on the real study copies (median wall seconds per study) and its time."""
    times = {}
    for config, report in results.items():
        for name, value in report.items():
            if name.startswith("real") and isinstance(value, dict):
                if "seconds_per_study_median" in value:
                    times[f"{config}/{name}"] = value["seconds_per_study_median"]
                elif "workers_1" in value:
                    times[f"{config}/{name}/workers_1"] = value["workers_1"]
    return min(times.items(), key=lambda item: item[1]) if times else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--studies", type=int, help="phantom test studies (default: 0 beside the real study, else 2)"
    )
    parser.add_argument("--size", type=int, default=384, help="phantom image size (real series: 384-640)")
    parser.add_argument("--copies", type=int, default=5, help="copies of the real study")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch / ONNX Runtime threads to measure"
    )
    args = parser.parse_args()
    from spinegrade.localization.settings import LocatorSettings

    load_before = os.getloadavg()
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clock = time.perf_counter()
        real = real_copies(root, args.copies + 1)
        if args.studies is None:
            args.studies = 0 if real is not None else 2
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            data, bundle = pool.submit(build, root, args.studies and args.studies + 1, args.size).result()
        setup = time.perf_counter() - clock
        sources = {"phantom": str(data)} if data is not None else {}
        if real is not None:
            sources["real"] = str(real)
        results = {}
        for runtime in ("torch", "onnx"):
            for threads in args.threads:
                with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    results[f"{runtime}_threads_{threads}"] = pool.submit(
                        measure, runtime, sources, str(bundle), threads, tmp
                    ).result()
    locator = LocatorSettings()
    best = best_real(results)
    report = {
        "what": "spinegrade predict, seconds per study (read + locate + crop + classify), untrained weights",
        "device": "cpu",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "phantom": f"{args.studies} studies (+1 warm-up) of {args.size} px" if args.studies else None,
        "real": f"{args.copies} copies (+1 warm-up) of study 4646740" if real is not None else None,
        "classifier": f"{ARCH}, k={DEFAULT_K}, {DEFAULT_SIZE} px crops",
        "locator": f"{locator.arch}, {locator.size} px, depth {locator.depth}",
        **results,
        "target_seconds_per_study": TARGET_SECONDS,
        "real_fastest_configuration": best[0] if best else None,
        "real_fastest_seconds_per_study": best[1] if best else None,
        "target_met": None if best is None else best[1] <= TARGET_SECONDS,
        "setup_seconds": setup,
        "total_seconds": time.perf_counter() - clock,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
