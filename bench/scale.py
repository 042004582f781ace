"""What the real data costs: each stage's seconds per study and peak memory at real image sizes, the
training input pipelines' rates, and their extrapolation to 1,975 studies x 5 folds on one machine.

Sources: the real study of ../shared/data/rsna2024-real-study (RLE DICOM as Kaggle ships it, laid out
twice under two ids, as a fold plan needs two studies; skipped when absent) and a phantom written at its
default, real sizes (320-640 px; `spinegrade phantom OUT --studies 3`). Each stage runs in a fresh
process (spawn) on one torch thread, so its peak resident memory (ru_maxrss) is its own; the process's
baseline after imports is reported beside it. Stages, per study:
read (every series), inspect, prepare (crops at the labelled points: SIZE px, k=K, reading included),
locator samples (read + every task's samples at LOCATOR_PX px, bytes held per study), locate (untrained
LOCATOR_ARCH networks at LOCATOR_PX px: the compute of trained ones), crop and classify (the labelled
points, an untrained ARCH at SIZE px; cut and classified as predict does). Input pipelines, no model:
crops/s from a memory-mapped crop cache and locator samples/s (augmented) per DataLoader worker.

The extrapolation follows configs/h100-cv.yaml (N_STUDIES, N_FOLDS, CORES cores, one GPU): CPU stages at
the measured single-thread rate over the processes cv gives them, GPU stages at GPU_RATES (a public
benchmark, named in the output: none of this machine's figures is a GPU's), and peak RAM per stage.
Prints one JSON object with the 1-minute load average before and after (the machine may be shared).
Run: .venv/bin/python bench/scale.py [--phantom-studies 3] [--skip-real] [--skip-phantom]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REAL_STUDY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsna2024-real-study"
SEED = 0
# configs/h100-cv.yaml, the setup extrapolated
N_STUDIES, N_FOLDS, CORES, RAM_GB = 1975, 5, 16, 128
SIZE, K, ARCH, EPOCHS, BATCH = 128, 5, "efficientnet_b3", 20, 64
LOCATOR_PX, LOCATOR_ARCH, LOCATOR_EPOCHS, LOCATOR_BATCH = 256, "resnet10t", 30, 16
# Training throughput on a GPU (samples/s, AMP, channels last), from timm's published benchmark (RTX 3090,
# PyTorch 1.12, CUDA 11.3); an H100 is faster, so hours from these are an upper bound. Scaled to our input
# by pixel count (compute ~ pixels for these CNNs; small inputs use a GPU less well, so the scaling is
# optimistic at 128 px). The locator adds a decoder to the encoder: its figure is the encoder's.
GPU_SOURCE = (
    "huggingface/pytorch-image-models results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv "
    "(train_samples_per_sec; RTX 3090, AMP, channels last)"
)
GPU_RATES = {
    ARCH: {"samples_per_s": 572.18, "img_size": 288, "batch": 128},
    LOCATOR_ARCH: {"samples_per_s": 6318.63, "img_size": 176, "batch": 512},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _child(stage: str, data: str, tmp: str) -> dict[str, Any]:
    """Run one stage in this (fresh) process; its figures, wall seconds and peak RSS."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from spinegrade.data.tables import load_rsna

    rsna = load_rsna(Path(data), "train")
    base = _rss_mb()
    start = time.perf_counter()
    result = STAGES[stage](rsna, Path(data), Path(tmp))
    return {**result, "wall_s": time.perf_counter() - start, "peak_rss_mb": _rss_mb(), "base_rss_mb": base}


def _plans(rsna: Any) -> list:
    from spinegrade.crossval.run import study_plans

    return study_plans(rsna, sorted(rsna.labels["study_id"].astype(int)))


def stage_read(rsna: Any, data: Path, tmp: Path) -> dict[str, Any]:
    from spinegrade.prediction.studies import read_study

    seconds, slices, shapes = [], [], set()
    for plan in _plans(rsna):
        clock = time.perf_counter()
        images = read_study(plan)
        seconds.append(time.perf_counter() - clock)
        for s in images.series_by_id().values():
            slices.append(len(s))
            shapes.add(tuple(int(v) for v in s.pixels.shape[1:]))
    return {"per_study_s": seconds, "slices_per_series": slices, "pixel_shapes": sorted(shapes)}


def stage_inspect(rsna: Any, data: Path, tmp: Path) -> dict[str, Any]:
    from spinegrade.data.inspect import inspect_dataset

    clock = time.perf_counter()
    inspect_dataset(data, progress=False)
    n = len(_plans(rsna))
    return {"per_study_s": [(time.perf_counter() - clock) / n] * n}


def stage_prepare(rsna: Any, data: Path, tmp: Path) -> dict[str, Any]:
    from rich.console import Console

    from spinegrade.crops.prepare import prepare

    clock = time.perf_counter()
    quiet = Console(quiet=True)
    cache = prepare(data, tmp / "cache", k=K, size=SIZE, n_folds=2, workers=1, console=quiet)
    n = len(_plans(rsna))
    return {"per_study_s": [(time.perf_counter() - clock) / n] * n, "crops_per_study": len(cache.index) / n}


def stage_locator_samples(rsna: Any, data: Path, tmp: Path) -> dict[str, Any]:
    from spinegrade.localization.settings import LocatorSettings
    from spinegrade.localization.targets import TASKS
    from spinegrade.localization.train import labelled_rows, task_samples

    settings = LocatorSettings(size=LOCATOR_PX)
    ids = set(rsna.labels["study_id"].astype(int))
    n, tasks = len(ids), {}
    for task in TASKS:
        clock = time.perf_counter()
        samples = task_samples(rsna, task, labelled_rows(rsna, task, ids), settings, [], lambda: None)
        tasks[task.slug] = {
            "seconds_per_study": (time.perf_counter() - clock) / n,
            "samples_per_study": len(samples) / n,
            "bytes_per_study": samples.images.nbytes / n,
            "sample_shape": list(samples.images.shape[1:]),
        }
    total = sum(t["seconds_per_study"] for t in tasks.values())
    return {"per_study_s": [total] * n, "tasks": tasks}


def _untrained(tmp: Path) -> tuple[Path, Path]:
    """An untrained classifier run (ARCH, SIZE px, k=K) and untrained locators (LOCATOR_ARCH, LOCATOR_PX)."""
    import torch

    from spinegrade.crops.extract import DEFAULT_CROP_MM
    from spinegrade.localization.model import build_net
    from spinegrade.localization.settings import LocatorSettings
    from spinegrade.localization.targets import TASKS
    from spinegrade.localization.train import model_info, save_model
    from spinegrade.models.classifier import create_model
    from spinegrade.training.checkpoint import save_model as save_run

    torch.manual_seed(SEED)
    run, locator = tmp / "cls", tmp / "locator"
    run.mkdir(exist_ok=True)
    locator.mkdir(exist_ok=True)
    model_settings = {"conditioning": "film", "mean": 0.3, "std": 0.2}
    info = {"arch": ARCH, "in_chans": K, "k": K, "size": SIZE, "crop_mm": DEFAULT_CROP_MM}
    save_run(run, "best", create_model(ARCH, in_chans=K, **model_settings), {**info, "model": model_settings})
    settings = LocatorSettings(size=LOCATOR_PX, arch=LOCATOR_ARCH)
    for task in TASKS:
        save_model(locator, task, build_net(task, settings), model_info(task, settings, 0))
    return run, locator


def _labelled_points(rsna: Any, study_id: int, series_by_id: dict) -> Any:
    """The study's labelled points in the form a locator returns them (slice index, stored-grid x, y)."""
    import pandas as pd

    from spinegrade.crops.extract import label_to_pixel

    rows = []
    coords = rsna.coordinates[rsna.coordinates["study_id"] == study_id]
    for r in coords.itertuples(index=False):
        series = series_by_id.get(str(r.series_id))
        if series is not None:
            index, x, y = label_to_pixel(series, r.instance_number, r.x, r.y)
            rows.append((r.condition, r.level, str(r.series_id), index, x, y))
    columns = ["condition", "level", "series_id", "slice_index", "x", "y"]
    return pd.DataFrame(rows, columns=columns).drop_duplicates(["condition", "level"])


def stage_grade(rsna: Any, data: Path, tmp: Path) -> dict[str, Any]:
    """locate (untrained locators), then crop + classify at the labelled points (untrained classifier)."""
    from spinegrade.data.tables import labels_long
    from spinegrade.evaluation.priors import level_priors
    from spinegrade.localization.locate import load_locator, locate_study
    from spinegrade.prediction.grade import Ensemble
    from spinegrade.prediction.grading import grade_study
    from spinegrade.prediction.studies import read_study

    run, locator_dir = _untrained(tmp)
    locator, ensemble = load_locator(locator_dir), Ensemble.load([run], batch_size=BATCH)
    priors = level_priors(labels_long(rsna.labels), weighted=True)
    locate_s, crop_s, classify_s, graded = [], [], [], []
    for plan in _plans(rsna):
        images = read_study(plan)
        clock = time.perf_counter()
        locate_study(images.series_by_type, locator)
        locate_s.append(time.perf_counter() - clock)
        points = _labelled_points(rsna, plan.study_id, images.series_by_id())
        result = grade_study(images, lambda _s, p=points: p, ensemble, priors)
        crop_s.append(result.seconds["crop"])
        classify_s.append(result.seconds["classify"])
        graded.append(int((result.grades["source"] == "model").sum()))
    return {"per_study_s": locate_s, "crop_s": crop_s, "classify_s": classify_s, "graded": graded}


STAGES = {
    "read": stage_read,
    "inspect": stage_inspect,
    "prepare": stage_prepare,
    "locator_samples": stage_locator_samples,
    "grade": stage_grade,
}


def run_stage(stage: str, data: Path, tmp: Path) -> dict[str, Any]:
    """`stage` in a fresh spawned process (its own peak memory)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, stage, str(data), str(tmp)).result()


def _rate(loader: Any, batches: int) -> float:
    """Items per second over `batches` batches after one warm-up batch."""
    it = iter(loader)
    next(it)
    n, clock = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        n += len(batch["x"] if isinstance(batch, dict) else batch[0])
    return n / (time.perf_counter() - clock)


def crop_pipeline(tmp: Path, workers: int, n_crops: int = 2048) -> float:
    """Crops/s that the classifier's training loader delivers from a memory-mapped cache (no model)."""
    import numpy as np
    import pandas as pd

    from spinegrade.crops.cache import CropCache, write_cache
    from spinegrade.training.datamodule import CropDataModule, CropDataset, Labels
    from spinegrade.vocab import TARGETS

    path = tmp / "pipeline_cache"
    if not (path / "meta.json").is_file():
        path.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(SEED)
        targets = [TARGETS[i % len(TARGETS)] for i in range(n_crops)]
        index = pd.DataFrame(
            {
                "study_id": np.arange(n_crops) // len(TARGETS),
                "condition": [c for c, _ in targets],
                "level": [lv for _, lv in targets],
                "series_id": 1,
                "instance_number": 1,
                "x": 0.0,
                "y": 0.0,
                "severity": rng.integers(0, 3, n_crops),
                "fold": 1,
            }
        )
        parts = (
            rng.random((256, K, SIZE, SIZE), dtype=np.float32).astype(np.float16)
            for _ in range(n_crops // 256)
        )
        write_cache(path, parts, index, {"k": K, "size": SIZE, "n_folds": 5, "seed": SEED})
    cache = CropCache.open(path)
    rows = np.arange(len(cache.index))
    dataset = CropDataset(cache.crops, rows, Labels.of_rows(cache, rows))
    loader = CropDataModule(dataset, dataset, batch_size=BATCH, workers=workers, seed=SEED).train_dataloader()
    return _rate(loader, batches=n_crops // BATCH - 2)


def locator_pipeline(volume: bool, workers: int, n_batches: int = 12) -> float:
    """Augmented locator samples/s (LocatorDataset, LOCATOR_PX px) from samples held in memory (no model)."""
    import numpy as np
    import torch

    from spinegrade.localization.dataset import LocatorDataset, Samples
    from spinegrade.localization.settings import LocatorSettings
    from spinegrade.localization.targets import TASKS

    task = next(t for t in TASKS if t.volume == volume)
    settings = LocatorSettings(size=LOCATOR_PX)
    channels = settings.depth if volume else settings.context
    n, p = 64, len(task.points)
    rng = np.random.default_rng(SEED)
    samples = Samples(
        images=rng.random((n, channels, LOCATOR_PX, LOCATOR_PX), dtype=np.float32).astype(np.float16),
        points=rng.uniform(20, LOCATOR_PX - 20, (n, p, 2)).astype(np.float32),
        slices=rng.uniform(0, channels - 1, (n, p)).astype(np.float32)
        if volume
        else np.full((n, p), np.nan, np.float32),
    )
    sampler = torch.utils.data.RandomSampler(
        range(n), replacement=True, num_samples=(n_batches + 1) * LOCATOR_BATCH
    )
    loader = torch.utils.data.DataLoader(
        LocatorDataset(samples, task), batch_size=LOCATOR_BATCH, sampler=sampler, num_workers=workers
    )
    return _rate(loader, n_batches)


def pipelines(tmp: Path, workers: list[int]) -> dict[str, Any]:
    """Input pipeline rates by DataLoader worker count (each in a fresh process on one torch thread)."""
    out: dict[str, Any] = {"classifier_crops_per_s": {}, "locator_samples_per_s": {}}
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for w in workers:
            out["classifier_crops_per_s"][w] = pool.submit(crop_pipeline, tmp, w).result()
            out["locator_samples_per_s"][w] = {
                kind: pool.submit(locator_pipeline, kind == "sagittal", w).result()
                for kind in ("sagittal", "axial")
            }
    return out


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Median seconds per study of each stage and its peak memory."""
    out = {}
    for stage, r in raw.items():
        out[stage] = {
            "seconds_per_study": statistics.median(r["per_study_s"]),
            "peak_rss_mb": round(r["peak_rss_mb"]),
            "base_rss_mb": round(r["base_rss_mb"]),
        }
        if stage == "grade":
            out["locate"] = out.pop("grade")
            for part in ("crop", "classify"):
                out[part] = {**out["locate"], "seconds_per_study": statistics.median(r[f"{part}_s"])}
            out["classify"]["targets_graded_median"] = statistics.median(r["graded"])
        for key in ("crops_per_study", "tasks", "pixel_shapes"):
            if key in r:
                out[stage][key] = r[key]
        if stage == "read":
            out[stage]["slices_per_series"] = sorted(r["slices_per_series"])
    return out


def _gpu_rate(arch: str, side: int) -> float:
    g = GPU_RATES[arch]
    return g["samples_per_s"] * (g["img_size"] / side) ** 2


def extrapolate(stages: dict[str, Any], rates: dict[str, Any]) -> dict[str, Any]:
    """Hours and peak RAM per stage of `spinegrade cv --config configs/h100-cv.yaml` on the real data.

    From the source with the highest per-study figures (the real study, else the phantom); cv's
    processes: prepare and reading ahead use CORES processes, locator samples are built in one process
    per fold (the locators' training studies, 4/5 of all), locate and grade run in the main process.
    """
    train_share = (N_FOLDS - 1) / N_FOLDS
    s = {name: stage["seconds_per_study"] for name, stage in stages.items()}
    tasks = stages["locator_samples"]["tasks"]
    crops_per_study = stages["prepare"]["crops_per_study"]
    h = 1 / 3600
    cls_rate = _gpu_rate(ARCH, SIZE)
    loc_rate = _gpu_rate(LOCATOR_ARCH, LOCATOR_PX)
    train_crops = N_STUDIES * train_share * crops_per_study
    val_crops = N_STUDIES / N_FOLDS * crops_per_study
    task_samples = {k: N_STUDIES * train_share * t["samples_per_study"] for k, t in tasks.items()}
    samples_gb = {k: N_STUDIES * train_share * t["bytes_per_study"] / 1e9 for k, t in tasks.items()}
    # what one DataLoader worker delivers (workers=1: batches pass through shared memory, as with more)
    one = 1 if 1 in rates["classifier_crops_per_s"] else 0
    feed_crops = rates["classifier_crops_per_s"][one]
    feed_samples = min(rates["locator_samples_per_s"][one].values())
    per_process_gb = {k: v["peak_rss_mb"] / 1024 for k, v in stages.items()}
    rows = {
        "prepare, labelled points (CORES processes)": {
            "hours": N_STUDIES * s["prepare"] / CORES * h,
            "peak_ram_gb": CORES * per_process_gb["prepare"],
            "how": "prepare s/study x studies / cores; RAM: cores x one process's peak",
        },
        "locator samples (one process per fold)": {
            "hours": N_FOLDS * N_STUDIES * train_share * s["locator_samples"] * h,
            "peak_ram_gb": per_process_gb["locator_samples"] + max(samples_gb.values()),
            "how": "folds x training studies x s/study (reading included); RAM: the largest task's samples",
        },
        "locator training (GPU)": {
            "hours": N_FOLDS * LOCATOR_EPOCHS * sum(task_samples.values()) / loc_rate * h,
            "hours_fed_by_cpu": N_FOLDS
            * LOCATOR_EPOCHS
            * sum(task_samples.values())
            / min(loc_rate, feed_samples * (CORES - 1))
            * h,
            "gpu_samples_per_s": loc_rate,
            "cpu_feed_samples_per_s_per_worker": feed_samples,
            "workers_to_feed_gpu": loc_rate / feed_samples,
            "how": "folds x epochs x samples / GPU rate; fed by CPU: / min(GPU rate, CORES - 1 workers) "
            "(the slower, sagittal, samples' rate)",
        },
        "locate (main process, CPU)": {
            "hours": N_STUDIES * s["locate"] * h,
            "peak_ram_gb": per_process_gb["locate"],
            "how": "studies x s/study on one thread (reading ahead in CORES processes overlaps it)",
        },
        "prepare, located points (CORES processes)": {
            "hours": N_STUDIES * s["prepare"] / CORES * h,
            "peak_ram_gb": CORES * per_process_gb["prepare"],
            "how": "as the labelled crops",
        },
        "classifier training (GPU)": {
            "hours": N_FOLDS * EPOCHS * (train_crops + val_crops) / cls_rate * h,
            "gpu_crops_per_s": cls_rate,
            "cpu_feed_crops_per_s_per_worker": feed_crops,
            "workers_to_feed_gpu": cls_rate / feed_crops,
            "crop_cache_gb": N_STUDIES * crops_per_study * K * SIZE * SIZE * 2 / 1e9,
            "how": "folds x epochs x (training + validation crops) / GPU rate (validation at the training "
            "rate: an upper bound)",
        },
        "grade held-out studies (main process, CPU)": {
            "hours": N_STUDIES * (s["crop"] + 2 * s["classify"]) * h,
            "peak_ram_gb": per_process_gb["locate"],
            "how": "studies x (crop + classify x 2 ensembles: corrected and raw) on one thread",
        },
    }
    return {
        "setup": {
            "studies": N_STUDIES,
            "folds": N_FOLDS,
            "cores": CORES,
            "ram_gb": RAM_GB,
            "classifier": f"{ARCH}, {SIZE} px, k={K}, {EPOCHS} epochs",
            "locator": f"{LOCATOR_ARCH}, {LOCATOR_PX} px, {LOCATOR_EPOCHS} epochs (passes)",
        },
        "gpu_source": GPU_SOURCE,
        "locator_samples_gb_per_task": samples_gb,
        "stages": rows,
        "other_commands": {
            "inspect (one process)": {"hours": N_STUDIES * s["inspect"] * h},
            "read every study (CORES processes)": {"hours": N_STUDIES * s["read"] / CORES * h},
        },
        "total_hours": sum(r["hours"] for r in rows.values()),
        "total_hours_fed_by_cpu": sum(r.get("hours_fed_by_cpu", r["hours"]) for r in rows.values()),
        "fits_ram": all(r.get("peak_ram_gb", 0) < RAM_GB for r in rows.values()),
    }


def real_copies(root: Path, copies: int) -> Path:
    """A train split of `copies` copies of the real study (its images symlinked, each under its own id):
    a fold plan needs two studies at least."""
    import pandas as pd

    data = root / "real"
    (data / "train_images").mkdir(parents=True)
    (study,) = pd.read_csv(REAL_STUDY / "train.csv")["study_id"].unique()
    for i in range(copies):
        (data / "train_images" / str(study * 10 + i)).symlink_to(REAL_STUDY / "train_images" / str(study))
    for name in ("train.csv", "train_series_descriptions.csv", "train_label_coordinates.csv"):
        frame = pd.read_csv(REAL_STUDY / name)
        copied = [frame.assign(study_id=study * 10 + i) for i in range(copies)]
        pd.concat(copied).to_csv(data / name, index=False)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom-studies", type=int, default=3)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-phantom", action="store_true")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers (0 first)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {"load_average_1min_before": load_before, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        sources: dict[str, Path] = {}
        if REAL_STUDY.is_dir() and not args.skip_real:
            sources["real study"] = real_copies(tmp, 2)
        if not args.skip_phantom:
            from spinegrade.data.phantom import write_phantom

            clock = time.perf_counter()
            write_phantom(tmp / "phantom", args.phantom_studies, SEED, workers=1, progress=False)
            result["phantom_write_s"] = time.perf_counter() - clock
            sources["phantom (default sizes)"] = tmp / "phantom"
        measured = {}
        for name, data in sources.items():
            work = tmp / f"work_{name.split()[0]}"
            work.mkdir()
            measured[name] = summarise({stage: run_stage(stage, data, work) for stage in STAGES})
            print(
                json.dumps({name: measured[name]}, default=float), file=sys.stderr
            )  # kept if a later step fails
        result["per_study"] = measured
        result["input_pipelines"] = pipelines(tmp, args.workers)
    basis = "real study" if "real study" in measured else next(iter(measured))
    result["extrapolation_basis"] = basis
    result["extrapolation"] = extrapolate(measured[basis], result["input_pipelines"])
    result["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
