"""Grade whole studies end to end: read -> locate -> crop -> classify -> submission.csv.

One study is in memory at a time (plus the few being read ahead by `workers` processes), so memory does
not grow with the number of studies. Whatever cannot be graded from images - a missing or unreadable
series type, a point the locator did not find, a study that fails altogether - gets the per-level prior
probabilities, a warning and a line in the closing summary; the other studies go on. Each study also gets
OUT/studies/<study_id>.json (points, grades, problems); with `resume` a study whose JSON was written by the
same models is taken from it instead of being graded again. A second stage (evaluation.stacking, given or
stored as stacking.json with the runs) grades each study's rows together, then a calibration
(evaluation.calibration, given, or stored as calibration.json with the runs when no stacking is applied: a
stacking refits each group's temperature itself) is applied to the submission's rows; the per-study JSONs keep
the ensemble's own probabilities. <OUT stem>.ensemble.json beside OUT records the models, their weights,
the averaging space and the calibration.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade import __version__
from spinegrade.data.tables import SAMPLE_SUBMISSION, read_sample_submission
from spinegrade.errors import DataError
from spinegrade.evaluation.calibration import Calibration, find_calibration
from spinegrade.evaluation.stacking import Stacking, find_stacking
from spinegrade.fileio import write_atomic, write_csv_atomic
from spinegrade.prediction.grade import Ensemble
from spinegrade.prediction.grading import Locate, grade_study
from spinegrade.prediction.priors import load_priors
from spinegrade.prediction.readahead import read_studies
from spinegrade.prediction.results import (
    FALLBACK_KINDS,
    STAGES,
    PredictionSummary,
    PredictionWarning,
    StudyResult,
)
from spinegrade.prediction.studies import StudyPlan, discover_studies
from spinegrade.prediction.submission import align_with_sample, submission_frame
from spinegrade.runtime import torch_threads
from spinegrade.sharding import Shard, shard_items

RUNTIMES = ("torch", "onnx")


def fingerprint(ensemble: Ensemble, locator_dir: Path, tta: bool, runtime: str = "torch") -> str:
    """Identifies the grading models (files, sizes, modification times) and the runtime: --resume reuses
    only their work."""
    files = [run.path / name for run in ensemble.runs for name in ("best.safetensors", "best.json")]
    files += sorted(p for p in locator_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    settings = [__version__, f"tta={tta}", *([f"runtime={runtime}"] if runtime != "torch" else [])]
    combine = json.dumps({k: v for k, v in ensemble.describe().items() if k != "members"})
    weights = ",".join(f"{w:.6g}" for w in ensemble.weights)
    text = "\n".join([*settings, combine, weights, *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensemble_record(out: Path) -> Path:
    """Where predict records the ensemble and calibration behind the submission `out`."""
    return out.with_name(f"{out.stem}.ensemble.json")


def _resumed(path: Path, key: str) -> StudyResult | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return StudyResult.from_json(data) if data.get("fingerprint") == key else None


# ------------------------------------------------------------------------------------------ orchestration


def predict(
    data_dir: str | os.PathLike,
    runs: Sequence[str | os.PathLike],
    locator_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    details: str | os.PathLike | None = None,
    figures: bool = False,
    workers: int = 0,
    device: str = "cpu",
    batch_size: int = 64,
    tta: bool | None = None,
    threads: int = 1,
    resume: bool = False,
    progress: bool = True,
    runtime: str = "torch",
    onnx_dir: str | os.PathLike | None = None,
    shard: Shard | None = None,
    calibration: str | os.PathLike | None = None,
    space: str | None = None,
    stacking: str | os.PathLike | None = None,
    run_weights: Sequence[float] | None = None,
) -> PredictionSummary:
    """Grade every test study of DATA_DIR and write the submission CSV `out` (see the module doc).

    details (default: OUT's folder/studies) gets one JSON per study and, with `figures`, an overlay PNG
    per series. threads: torch's CPU threads while predicting (0: torch's default). One is the default:
    the models see one small batch per study, so more threads cost more in contention than they gain
    (measured: docs/results.md#inference); `workers` can read ahead instead.
    runtime "onnx" runs the networks with ONNX Runtime (a bundle's graphs in `onnx_dir`, else exported on
    loading). shard (i, n): grade only every n-th study from the i-th (0-based), for `spinegrade merge`.
    stacking: a second stage's JSON (default: stacking.json in a --runs folder, if any); calibration: a
    calibration JSON (default: calibration.json in a --runs folder, if any, when no stacking); space
    (probability or logit) and run_weights override an ensemble.json of the runs.
    tta: average each crop's left-right mirror in (None: when every run was trained on mirrors, measured
    better: docs/results.md#classifier-levers-at-150-studies).
    Raises DataError for unusable inputs (no runs, no locator, a bad CSV); never for one study.
    """
    from spinegrade.localization.locate import load_locator, locate_study

    data_dir, out, locator_dir = Path(data_dir), Path(out), Path(locator_dir)
    details_dir = Path(details) if details is not None else out.parent / "studies"
    sample_path = data_dir / SAMPLE_SUBMISSION
    sample = read_sample_submission(sample_path) if sample_path.is_file() else None
    plans, problems = align_with_sample(discover_studies(data_dir, images), sample)
    if shard is not None:
        plans = shard_items(plans, shard)
        wanted = {p.study_id for p in plans}
        problems = [p for p in problems if p.study_id in wanted]
        if sample is not None:
            sample = sample[sample["row_id"].str.partition("_")[0].astype(int).isin(wanted)]
    if runtime not in RUNTIMES:
        raise DataError(f"runtime {runtime!r} unknown; use one of {', '.join(RUNTIMES)}")
    if runtime == "onnx" and device != "cpu":
        raise DataError(f"--runtime onnx runs on the CPU; drop --device {device} or use --runtime torch")
    ensemble = Ensemble.load(
        runs, device=device, batch_size=batch_size, tta=tta, space=space, weights=run_weights
    )
    stacking_path = Path(stacking) if stacking is not None else find_stacking(runs)
    stacker = Stacking.load(stacking_path) if stacking_path is not None else None
    if calibration is not None:
        calibration_path: Path | None = Path(calibration)
    else:
        calibration_path = find_calibration(runs) if stacker is None else None
    calibrator = Calibration.load(calibration_path) if calibration_path is not None else None
    locator = load_locator(locator_dir, device=device)
    if runtime == "onnx":
        from spinegrade.prediction.onnx_models import with_onnx_runtime

        ensemble, locator = with_onnx_runtime(
            ensemble, locator, Path(onnx_dir) if onnx_dir else None, threads
        )
    priors, prior_source = load_priors(ensemble, data_dir)
    key = fingerprint(ensemble, locator_dir, ensemble.tta, runtime)
    details_dir.mkdir(parents=True, exist_ok=True)

    results: dict[int, StudyResult] = {}
    if resume:
        for plan in plans:
            done = _resumed(details_dir / f"{plan.study_id}.json", key)
            if done is not None:
                results[plan.study_id] = done
    todo = [p for p in plans if p.study_id not in results]
    with torch_threads(threads):
        for result in grade_studies(
            todo,
            lambda series_by_type: locate_study(series_by_type, locator),
            ensemble,
            priors,
            details_dir,
            key,
            workers=workers,
            figures=figures,
            progress=progress,
        ):
            results[result.study_id] = result

    ordered = [results[p.study_id] for p in plans]
    rows = submission_frame(ordered, sample)
    if stacker is not None:
        rows = stacker.apply(rows)
    if calibrator is not None:
        rows = calibrator.apply(rows)
    write_csv_atomic(rows, out)
    record = {
        **ensemble.describe(),
        "stacking": None if stacker is None else str(stacking_path),
        "calibration": None if calibrator is None else str(calibration_path),
    }
    write_atomic(ensemble_record(out), json.dumps(record, indent=1) + "\n")
    fresh = [results[p.study_id] for p in todo]
    seconds = {
        stage: float(np.mean([r.seconds.get(stage, 0.0) for r in fresh])) if fresh else 0.0
        for stage in STAGES
    }
    return PredictionSummary(
        out,
        details_dir,
        len(plans),
        prior_source,
        seconds,
        problems + [p for r in ordered for p in r.problems],
        resumed=len(plans) - len(todo),
        calibration="none" if calibrator is None else str(calibration_path),
        stacking="none" if stacker is None else str(stacking_path),
    )


def grade_studies(
    plans: Sequence[StudyPlan],
    locate: Locate,
    ensemble: Ensemble,
    priors: pd.DataFrame,
    details_dir: Path,
    key: str,
    *,
    workers: int = 0,
    figures: bool = False,
    progress: bool = True,
) -> Iterator[StudyResult]:
    """Read and grade studies one by one (progress bar), writing each one's JSON (and figures) as it is
    done and warning (PredictionWarning) about every target graded with priors."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from spinegrade.prediction.overlay import write_overlays

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("grading studies", total=len(plans))
        crop_settings = [spec.settings() for spec in ensemble.specs]
        for plan, study in zip(plans, read_studies(plans, workers), strict=True):
            result = grade_study(study, locate, ensemble, priors)
            result.folders = {folder.name: str(folder.resolve()) for _, folder in plan.series}
            result.crops = crop_settings
            if figures:
                clock = time.perf_counter()
                write_overlays(study, result, details_dir / "figures")
                result.seconds["figures"] = time.perf_counter() - clock
            del study  # one study's images in memory at a time
            text = json.dumps(result.to_json(key), indent=1) + "\n"
            write_atomic(details_dir / f"{result.study_id}.json", text)
            for p in result.problems:
                if p.kind in FALLBACK_KINDS:
                    warnings.warn(p.message, PredictionWarning, stacklevel=2)
            bar.update(task, advance=1, description=f"graded study {result.study_id}")
            yield result
