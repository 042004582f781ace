"""write_phantom: a whole synthetic dataset in the Kaggle RSNA 2024 layout, resumable and deterministic.

Studies are rendered in a process pool, each into a temporary folder that is renamed into place when
complete, so an interrupted run resumes by skipping the study folders that exist. The CSVs are rebuilt from
the (cheap) study specs and written atomically at the end, with the oracle's predictions
(oracle_submission.csv, both splits); OUT/phantom.json records the config and the floor and prior scores.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Final, TypedDict

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from spinegrade import __version__
from spinegrade.errors import DataError
from spinegrade.phantom.floor import (
    ORACLE_FILE,
    SUBMISSION_COLUMNS,
    floor_score,
    label_frame,
    oracle_submission,
    prior_score,
)
from spinegrade.phantom.settings import (
    DEFAULT_AXIAL_BLOCKS,
    DEFAULT_SIZE,
    PHANTOM_FORMAT,
    PHANTOM_VERSION,
    SIZE_RANGE,
)
from spinegrade.phantom.study import PhantomStudy, make_study
from spinegrade.vocab import CONDITIONS, LEVELS, make_row_id

CONFIG_FILE: Final = "phantom.json"
TRUTH_DIR: Final = "phantom_truth"
TMP_DIR: Final = ".phantom_tmp"
STUDY_ID_RANGE: Final = (1_000_000, 4_294_967_295)  # 7 to 10 digits, like the real ids
# Everything write_phantom owns in OUT; --overwrite removes these and nothing else.
OWNED: Final = (
    "train_images",
    "test_images",
    TRUTH_DIR,
    "train.csv",
    "train_label_coordinates.csv",
    "train_series_descriptions.csv",
    "test_series_descriptions.csv",
    "sample_submission.csv",
    ORACLE_FILE,
    CONFIG_FILE,
    TMP_DIR,
)
COORDINATE_COLUMNS: Final = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
DESCRIPTION_COLUMNS: Final = ("study_id", "series_id", "series_description")


@dataclass(frozen=True)
class PhantomSummary:
    """What write_phantom did."""

    out: Path
    train_studies: int
    test_studies: int
    rendered: int  # studies rendered by this call
    reused: int  # complete studies found from an interrupted run with the same config
    files: int  # DICOM files written by this call
    seconds: float
    floor: float  # challenge score of the oracle (oracle_submission.csv) on the train split
    prior: float  # challenge score of the weight-optimal per-level prior on the train split (in-sample)
    test_floor: float | None  # the oracle's score on the test split's truth (None without test studies)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "out": str(self.out)}


class _Scores(TypedDict):
    """The oracle's and the prior's scores, as PhantomSummary and the config file hold them."""

    floor: float
    prior: float
    test_floor: float | None


def write_phantom(
    out: Path | str,
    studies: int,
    seed: int,
    *,
    size: int | None = DEFAULT_SIZE,
    test_studies: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    axial_blocks: float = DEFAULT_AXIAL_BLOCKS,
    header_descriptions: bool = False,
) -> PhantomSummary:
    """Write `studies` train and `test_studies` (default max(1, studies // 10)) test studies into `out`.

    `size` None draws real image sizes per series (320-640 px); a number makes every image size x size,
    for fast tests and demos. `axial_blocks` is the share of studies whose axial T2 is angled blocks, one
    per disc, instead of one stack. `header_descriptions` writes each series' type into its DICOM
    SeriesDescription, which the Kaggle files leave empty (for code that reads DICOMs without the CSVs).

    `out` must be empty, missing, or a phantom with the same config (then the run resumes); anything else
    needs `overwrite`, which removes only the files a phantom owns. `workers` defaults to all CPU cores.
    """
    start = time.perf_counter()
    out = Path(out)
    n_test = max(1, studies // 10) if test_studies is None else test_studies
    workers = (os.cpu_count() or 1) if workers is None else workers
    _check_arguments(studies, seed, size, n_test, workers, axial_blocks)
    config = {
        "format": PHANTOM_FORMAT,
        "phantom_version": PHANTOM_VERSION,
        "spinegrade_version": __version__,
        "seed": seed,
        "studies": studies,
        "test_studies": n_test,
        "size": size,
        "axial_blocks": axial_blocks,
        "header_descriptions": header_descriptions,
    }
    _prepare(out, config, overwrite)

    specs = phantom_studies(
        studies,
        seed,
        size=size,
        test_studies=n_test,
        axial_blocks=axial_blocks,
        header_descriptions=header_descriptions,
    )
    todo = [s for s in specs if not _study_dir(out, s).is_dir()]
    files = _render(out, specs, todo, workers, progress)
    scores = _write_tables(out, specs)
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)
    _write_json(out / CONFIG_FILE, {**config, "complete": True, **scores})
    return PhantomSummary(
        out=out,
        train_studies=studies,
        test_studies=n_test,
        rendered=len(todo),
        reused=len(specs) - len(todo),
        files=files,
        seconds=round(time.perf_counter() - start, 3),
        **scores,
    )


def phantom_studies(
    studies: int,
    seed: int,
    *,
    size: int | None,
    test_studies: int,
    axial_blocks: float = DEFAULT_AXIAL_BLOCKS,
    header_descriptions: bool = False,
) -> list[PhantomStudy]:
    """The specs (labels, anatomy, geometry, ids; no pixels) of every study write_phantom writes.

    Train studies come first, then test studies; this is how tests and tools get at the ground truth.
    """
    uid_entropy = f"{PHANTOM_FORMAT}/{PHANTOM_VERSION}/{seed}/{size}/{axial_blocks}"
    ids = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))).choice(
        STUDY_ID_RANGE[1] - STUDY_ID_RANGE[0], studies + test_studies, replace=False
    )
    return [
        make_study(
            seed,
            i,
            int(study_id) + STUDY_ID_RANGE[0],
            "train" if i < studies else "test",
            size,
            uid_entropy,
            axial_blocks,
            header_descriptions,
        )
        for i, study_id in enumerate(ids)
    ]


def _check_arguments(
    studies: int, seed: int, size: int | None, test_studies: int, workers: int, axial_blocks: float
) -> None:
    if studies < 1:
        raise DataError(f"--studies must be at least 1, got {studies}")
    if seed < 0:
        raise DataError(f"--seed must be a non-negative integer, got {seed}")
    if size is not None and not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise DataError(f"--size must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]} pixels, got {size}")
    if test_studies < 0:
        raise DataError(f"--test-studies must be 0 or more, got {test_studies}")
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    if not 0.0 <= axial_blocks <= 1.0:
        raise DataError(f"--axial-blocks must be a share between 0 and 1, got {axial_blocks}")


def _read_config(path: Path) -> dict | None:
    """The config recorded in phantom.json, or None when there is none or it is unreadable."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and recorded.get("format") == PHANTOM_FORMAT else None


def _prepare(out: Path, config: dict, overwrite: bool) -> None:
    """Make `out` ready: refuse foreign or differently configured content unless `overwrite`."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()):
        recorded = _read_config(out / CONFIG_FILE)
        if recorded is None or any(recorded.get(k) != v for k, v in config.items()):
            if not overwrite:
                if recorded is None:
                    reason = f"is not a phantom (no readable {CONFIG_FILE})"
                else:
                    diff = {k: recorded.get(k) for k, v in config.items() if recorded.get(k) != v}
                    reason = f"holds a phantom with another config (there: {diff})"
                raise DataError(
                    f"{out} is not empty and {reason}; choose an empty folder or pass --overwrite"
                )
            for name in OWNED:
                path = out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)  # half-written studies of an interrupted run
    _write_json(out / CONFIG_FILE, {**config, "complete": False})


def _study_dir(out: Path, study: PhantomStudy) -> Path:
    return out / f"{study.split}_images" / str(study.study_id)


def _render(
    out: Path, specs: list[PhantomStudy], todo: list[PhantomStudy], workers: int, progress: bool
) -> int:
    """Render the studies in `todo` (in a process pool when workers > 1); returns the files written."""
    columns = (TextColumn("phantom"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    files = 0
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("studies", total=len(specs), completed=len(specs) - len(todo))
        if workers == 1 or len(todo) < 2:
            for study in todo:
                files += _write_study(out, study)
                bar.advance(task)
            return files
        # spawn, not fork: the parent may hold torch/OpenMP threads that a fork would copy half-way.
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_write_study, out, study) for study in todo]
            try:
                for future in as_completed(futures):
                    files += future.result()
                    bar.advance(task)
            except BaseException:
                pool.shutdown(cancel_futures=True)  # fail (or stop on Ctrl-C) now, not after the queue
                raise
    return files


def _write_study(out: Path, study: PhantomStudy) -> int:
    """Render one study into a temporary folder, then move it into place; returns the files written."""
    tmp = out / TMP_DIR / str(study.study_id)
    shutil.rmtree(tmp, ignore_errors=True)
    files = study.write_images(tmp)
    final = _study_dir(out, study)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return files


def _write_tables(out: Path, specs: list[PhantomStudy]) -> _Scores:
    """All CSVs: the train split's labels, the test split's truth (apart), descriptions, submission, and
    the oracle's predictions; returns the floor and prior scores."""
    train = sorted((s for s in specs if s.split == "train"), key=lambda s: s.study_id)
    test = sorted((s for s in specs if s.split == "test"), key=lambda s: s.study_id)
    train_labels, test_labels = label_frame(train), label_frame(test)
    _write_csv(train_labels, out / "train.csv")
    _write_csv(_coordinates(train), out / "train_label_coordinates.csv")
    _write_csv(_descriptions(train), out / "train_series_descriptions.csv")
    _write_csv(_descriptions(test), out / "test_series_descriptions.csv")
    rows = [
        (make_row_id(s.study_id, c, lv), 1 / 3, 1 / 3, 1 / 3)
        for s in test
        for c in sorted(CONDITIONS)
        for lv in LEVELS
    ]
    _write_csv(pd.DataFrame(rows, columns=list(SUBMISSION_COLUMNS)), out / "sample_submission.csv")
    (out / TRUTH_DIR).mkdir(exist_ok=True)
    _write_csv(test_labels, out / TRUTH_DIR / "test.csv")
    _write_csv(_coordinates(test, every_point=True), out / TRUTH_DIR / "test_label_coordinates.csv")
    oracle = oracle_submission([*train, *test])
    _write_csv(oracle, out / ORACLE_FILE)
    return {
        "floor": round(floor_score(train_labels, oracle), 4),
        "prior": round(prior_score(train_labels, train_labels), 4),
        "test_floor": round(floor_score(test_labels, oracle), 4) if test else None,
    }


def _coordinates(studies: Iterable[PhantomStudy], every_point: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame(
        [r for s in studies for r in s.coordinate_rows(every_point)], columns=list(COORDINATE_COLUMNS)
    )
    # The real file's order: study, series, instance, then condition and level.
    return frame.sort_values(list(COORDINATE_COLUMNS[:5]), kind="stable", ignore_index=True)


def _descriptions(studies: Iterable[PhantomStudy]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [r for s in studies for r in s.description_rows()], columns=list(DESCRIPTION_COLUMNS)
    )
    return frame.sort_values(["study_id", "series_id"], ignore_index=True)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV under a temporary name in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
