"""Build the crop cache: one 2.5D crop per labelled (study, condition, level) point, with study-level folds.

The folds come from the dataset's fold plan (crops/folds.py), written beside the crops as CACHE/folds.csv
with its hash in meta.json; `points` cuts the same targets at other points (cv's jittered or located
training points) instead of the labelled ones.

Work is done study by study (each series read once, with the same policy as predict: bad slices skipped
and reported, see read_usable_series) in a process pool; every finished study is saved as
CACHE/shards/<study_id>.npz, so an interrupted run picks up where it stopped. index.csv gets an
`instances` column: the instance numbers that fill each crop's k channels, in order. When every study is done
(or has failed: listed in CACHE/failed.csv) the shards are merged into crops.npy + index.csv + meta.json.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import spinegrade
from spinegrade.crops.cache import CROPS_FILE, INDEX_FILE, META_FILE, CropCache, write_cache
from spinegrade.crops.defaults import DEFAULT_FOLDS, DEFAULT_K, DEFAULT_SIZE, NORMALIZE_PERCENTILES
from spinegrade.crops.extract import crop_instances, crops_for_points, resolve_crop_mm
from spinegrade.crops.folds import FOLDS_FILE, fold_plan, plan_summary, write_folds
from spinegrade.crops.views import AXIAL, AXIAL_SERIES, OWN, axial_view_crops, check_views, expand_views
from spinegrade.data.series import Series, read_usable_series
from spinegrade.data.tables import RsnaData, join_labels, labels_long, load_rsna
from spinegrade.errors import DataError
from spinegrade.fileio import write_atomic
from spinegrade.sharding import Shard, shard_items

SHARDS_DIR: Final = "shards"
SETTINGS_FILE: Final = "settings.json"  # in SHARDS_DIR: the crop settings the shards were cut with
FAILED_FILE: Final = "failed.csv"
WARNINGS_FILE: Final = "warnings.csv"  # series quirks worked around while reading (resampled slices...)
# What a shard stores about its rows, to tell whether it still matches the labels.


def default_workers() -> int:
    """Processes used by default: up to 4, never more than the machine's cores."""
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class StudyJob:
    """Everything a worker needs to crop one study (picklable, sent to a worker process)."""

    study_id: int
    rows: pd.DataFrame  # this study's labelled points, in index order
    folders: dict[int, Path]  # series_id -> DICOM folder
    k: int
    size: int
    crop_mm: dict[str, float]
    shard: Path
    axial_ids: tuple[int, ...] = ()  # the study's axial series, where axial views are cut


@dataclass(frozen=True)
class StudyResult:
    """A worker's answer: rows cropped (0 when failed), and (series_id, message) of failures and warnings."""

    study_id: int
    n_rows: int
    failures: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)


def _shard_arrays(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The key columns of `rows` as plain (pickle-free) numpy arrays (slice_index too when given)."""
    where = {"slice_index": rows["slice_index"].to_numpy(np.float64)} if "slice_index" in rows else {}
    if "view" in rows and (rows["view"] != OWN).any():  # own-only shards keep the keys they had before views
        where["view"] = rows["view"].to_numpy(dtype=str)
    return where | {
        "condition": rows["condition"].to_numpy(dtype=str),
        "level": rows["level"].to_numpy(dtype=str),
        "series_id": rows["series_id"].to_numpy(np.int64),
        "instance_number": rows["instance_number"].to_numpy(np.int64),
        "x": rows["x"].to_numpy(np.float64),
        "y": rows["y"].to_numpy(np.float64),
    }


def _shard_done(shard: Path, rows: pd.DataFrame) -> bool:
    """Whether a shard exists, is readable, and was cut for exactly these rows (count and points)."""
    if not shard.is_file():
        return False
    try:
        with np.load(shard, allow_pickle=False) as saved:
            if int(saved["n_rows"]) != len(rows) or "instances" not in saved:
                return False
            expected = _shard_arrays(rows)
            return all(np.array_equal(saved[key], value) for key, value in expected.items())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged: cut it again
        return False


def _crop_study(job: StudyJob) -> StudyResult:
    """Crop every point of one study, reading each series once, and save the study's shard. A point's axial
    view is cut when an axial slice holds it (else its instances stay '' and the merge leaves it out)."""
    crops = np.zeros((len(job.rows), job.k, job.size, job.size), dtype=np.float16)
    instances = np.full(len(job.rows), "", dtype=object)
    failures: list[tuple[int, str]] = []
    quirks: list[tuple[int, str]] = []
    views = job.rows["view"].to_numpy(dtype=str) if "view" in job.rows else np.full(len(job.rows), OWN)
    read: dict[int, tuple[Series | None, str]] = {}

    def series_of(series_id: int) -> tuple[Series | None, str]:
        if series_id not in read:
            read[series_id] = _read_for_crops(job.folders[series_id], series_id, quirks)
        return read[series_id]

    for series_id, at in job.rows.groupby("series_id", sort=False).indices.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                series, why = series_of(int(series_id))
                if series is None:
                    raise DataError(why)
                own, axial = at[views[at] == OWN], at[views[at] == AXIAL]
                rows = job.rows.iloc[own]
                crops[own] = crops_for_points(series, rows, k=job.k, size=job.size, crop_mm=job.crop_mm)
                instances[own] = crop_instances(series, rows, k=job.k)
                if len(axial):
                    axials = [s for s, _ in map(series_of, job.axial_ids) if s is not None]
                    crops[axial], instances[axial] = axial_view_crops(
                        series, axials, job.rows.iloc[axial], k=job.k, size=job.size, crop_mm=job.crop_mm
                    )
            except Exception as e:  # a failing study is reported and skipped, never fatal to the run
                failures.append((int(series_id), f"{type(e).__name__}: {e}"))
        quirks.extend((int(series_id), str(w.message)) for w in caught)
    if failures:
        return StudyResult(job.study_id, 0, failures, quirks)
    tmp = job.shard.with_name(job.shard.name + ".tmp")
    with open(tmp, "wb") as f:
        arrays: dict[str, Any] = {
            "crops": crops,
            "instances": instances.astype(str),
            "n_rows": np.int64(len(job.rows)),
            **_shard_arrays(job.rows),
        }
        np.savez(f, **arrays)
    os.replace(tmp, job.shard)
    return StudyResult(job.study_id, len(job.rows), [], quirks)


def _read_for_crops(folder: Path, series_id: int, quirks: list[tuple[int, str]]) -> tuple[Series | None, str]:
    """(the series in `folder` as every stage reads it, ''), its problems added to `quirks`; (None, why)
    when it cannot be used."""
    if not folder.is_dir():
        return None, f"series folder {folder} is missing"
    series, problems = read_usable_series(folder)
    if series is None:  # the last problem says why
        quirks.extend((series_id, p.message) for p in problems[:-1])
        return None, problems[-1].message
    quirks.extend((series_id, p.message) for p in problems)
    return series, ""


def _claim(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Make `out` ours for these crop settings: refuse a cache cut with other settings unless overwrite."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; --out must be a folder for the crop cache")
    stale = False
    for file in (out / SHARDS_DIR / SETTINGS_FILE, out / META_FILE):
        if not file.is_file():
            continue
        try:
            saved = {"views": [OWN], **json.loads(file.read_text())}  # cut before views: own views only
            recorded: Any = {key: saved.get(key) for key in settings}
        except (json.JSONDecodeError, AttributeError, TypeError):
            recorded = "unreadable settings"
        if recorded != settings and not overwrite:
            raise DataError(
                f"{out} holds crops made with {recorded} (see {file}), but this run asks for {settings}; "
                "use another --out, the same settings, or --overwrite to replace that cache"
            )
        stale = stale or recorded != settings
    if stale:  # overwrite: drop the old cache's files (only those, nothing else in `out`)
        shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
        for name in (META_FILE, CROPS_FILE, INDEX_FILE, FAILED_FILE, WARNINGS_FILE):
            (out / name).unlink(missing_ok=True)
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    write_atomic(out / SHARDS_DIR / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")


def _run(jobs: list[StudyJob], workers: int, on_error: str, console: Console) -> Iterator[StudyResult]:
    """Crop the studies (in a process pool when workers > 1) with a progress bar; yields each result."""
    columns = (TextColumn("cropping"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("studies", total=len(jobs))

        def done(result: StudyResult) -> StudyResult:
            progress.advance(task)
            if result.failures and on_error == "raise":
                series_id, error = result.failures[0]
                raise DataError(f"study {result.study_id}, series {series_id}: {error}")
            return result

        workers = min(workers, len(jobs))
        if workers <= 1:
            for job in jobs:
                yield done(_crop_study(job))
            return
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            for future in as_completed([pool.submit(_crop_study, job) for job in jobs]):
                yield done(future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _write_table(path: Path, records: list[tuple[int, int, str]], message: str) -> pd.DataFrame:
    """Write (study_id, series_id, message) records as CSV, sorted by study (header only when none)."""
    table = pd.DataFrame(records, columns=["study_id", "series_id", message]).astype(
        {"study_id": "int64", "series_id": "int64"}
    )
    table = table.sort_values("study_id", kind="stable").reset_index(drop=True)
    write_atomic(path, table.to_csv(index=False))
    return table


def _merge(out: Path, rows: pd.DataFrame, failed: set[int], meta: dict[str, Any]) -> CropCache:
    """Merge the shards of every study not in `failed` into the cache (rows in `rows` order, with folds),
    leaving out the axial views that no axial slice held (instances '')."""
    index = rows[~rows["study_id"].isin(failed)]
    if index.empty:
        raise DataError(f"no study could be cropped; see {out / FAILED_FILE}")
    studies = index.groupby("study_id", sort=False).size()
    shape = (meta["k"], meta["size"], meta["size"])
    instances = []
    for study_id in studies.index:
        with np.load(out / SHARDS_DIR / f"{study_id}.npz", allow_pickle=False) as saved:
            instances.extend(saved["instances"].tolist())
    cut = np.array(instances, dtype=str) != ""
    index = index.assign(instances=instances)[cut]
    ends = np.cumsum(studies.to_numpy())

    def parts() -> Iterator[np.ndarray]:
        for (study_id, n_rows), end in zip(studies.items(), ends, strict=True):
            shard = out / SHARDS_DIR / f"{study_id}.npz"
            with np.load(shard, allow_pickle=False) as saved:
                crops = saved["crops"]
            if crops.shape != (n_rows, *shape):
                raise DataError(f"{shard} holds crops of shape {crops.shape}; delete it and run again")
            yield crops[cut[end - n_rows : end]]

    meta = {**meta, "n_crops": len(index), "n_studies": len(studies), "n_failed_studies": len(failed)}
    return write_cache(out, parts(), index.reset_index(drop=True), meta)


def crop_plan(
    data: RsnaData,
    *,
    n_folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    folds_file: str | os.PathLike[str] | None = None,
    points: pd.DataFrame | None = None,
    views: Sequence[str] = (OWN,),
) -> tuple[pd.DataFrame, pd.Series]:
    """(the rows to crop, by study, with their `fold` and `view`; the dataset's fold plan) of a train split.

    The plan is assigned from all of train.csv's labels (not only those with a point), as train-locator
    does, so both stages hold out the same studies. `views` adds each sagittal target's axial view
    (crops.views).
    """
    long = labels_long(data.labels)
    rows = join_labels(long, data.coordinates, data.descriptions) if points is None else points
    if rows.empty:
        raise DataError(f"{data.data_dir}: no labelled target has a point in train_label_coordinates.csv")
    folds = fold_plan(long, n_folds=n_folds, seed=seed, folds_file=folds_file)
    rows = expand_views(rows.sort_values("study_id", kind="stable"), views)
    fold = rows["study_id"].map(folds)
    if fold.isna().any():
        study = rows.loc[fold.isna(), "study_id"].iloc[0]
        raise DataError(f"study {study} has points but no labels in train.csv: it has no fold")
    return rows.assign(fold=fold.astype(np.int64)), folds


def prepare(
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    k: int = DEFAULT_K,
    size: int = DEFAULT_SIZE,
    crop_mm: Mapping[str, float] | None = None,
    n_folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    workers: int | None = None,
    on_error: Literal["skip", "raise"] = "skip",
    overwrite: bool = False,
    folds_file: str | os.PathLike[str] | None = None,
    points: pd.DataFrame | None = None,
    views: Sequence[str] = (OWN,),
    console: Console | None = None,
    shard: Shard | None = None,
) -> CropCache | None:
    """Cut (or finish cutting) the crop cache of the train split of `data_dir` into `out`; returns it opened.

    Studies that fail (unreadable or missing series, instance not in its series) are listed in
    out/failed.csv and left out with on_error="skip", or stop the run with on_error="raise".
    `workers` defaults to min(4, CPU cores); 1 crops in this process.
    shard (i, n): crop only every n-th study from the i-th into out/shards/ and return None; shards can
    run at once on several machines sharing `out`, and a final run without shard merges them (resuming).
    `folds_file` reuses a fold plan (else one is assigned from train.csv with n_folds and seed). `points`
    (the labelled rows' columns plus slice_index, with x, y in the series' stored pixel grid) replaces the
    labelled points. `views` ('own', or 'own' and 'axial') adds each sagittal target's crop on the axial
    slice through its point (crops.views; recorded in meta.json, and by training in its runs); the
    function cuts own views unless told, the `prepare` and `cv` commands both (crops.defaults.DEFAULT_VIEWS).
    """
    console = console or Console()
    if on_error not in ("skip", "raise"):
        raise DataError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if size < 1 or k < 1 or k % 2 == 0:
        raise DataError(f"need an odd k >= 1 and size >= 1, got k={k}, size={size}")
    out = Path(out)
    data = load_rsna(data_dir, "train")
    if not data.has_images:
        raise DataError(f"{data.image_dir} is missing: prepare needs the DICOM images next to train.csv")
    views = check_views(views)
    rows, folds = crop_plan(
        data, n_folds=n_folds, seed=seed, folds_file=folds_file, points=points, views=views
    )
    n_folds = int(folds.max()) + 1
    settings = {"k": k, "size": size, "crop_mm": resolve_crop_mm(crop_mm), "normalize": NORMALIZE_PERCENTILES}
    settings["views"] = list(views)
    settings = json.loads(json.dumps(settings))  # as it reads back from JSON (tuples become lists)
    _claim(out, settings, overwrite)

    described = data.descriptions[data.descriptions["series_description"] == AXIAL_SERIES]
    axial_series = described.groupby("study_id")["series_id"].agg(list).to_dict()
    jobs = []
    for study_id, part in shard_items(list(rows.groupby("study_id", sort=True)), shard):
        npz = out / SHARDS_DIR / f"{study_id}.npz"
        if not _shard_done(npz, part):
            axial_ids = tuple(axial_series.get(study_id, ())) if AXIAL in views else ()
            needed = dict.fromkeys([*part["series_id"].astype(int), *axial_ids])
            folders = {i: data.series_folder(study_id, i) for i in needed}
            jobs.append(StudyJob(int(study_id), part, folders, k, size, settings["crop_mm"], npz, axial_ids))
    n_studies = len(shard_items(rows["study_id"].unique(), shard))
    if len(jobs) < n_studies:
        console.print(f"resuming: {n_studies - len(jobs)} of {n_studies} studies already cropped in {out}")
    started = time.perf_counter()
    results = list(_run(jobs, workers or default_workers(), on_error, console))
    seconds = time.perf_counter() - started
    if shard is not None:
        failures = sum(len(r.failures) > 0 for r in results)
        console.print(
            f"shard {shard.index}/{shard.count}: cropped {sum(r.n_rows for r in results)} points of "
            f"{len(results) - failures} studies in {seconds:.1f} s ({failures} failed); run prepare without "
            "--shard to merge the shards into the cache"
        )
        return None

    failed = _write_table(out / FAILED_FILE, [(r.study_id, *f) for r in results for f in r.failures], "error")
    quirks = _write_table(
        out / WARNINGS_FILE, [(r.study_id, *w) for r in results for w in r.warnings], "warning"
    )
    write_folds(out / FOLDS_FILE, folds)
    plan = plan_summary(folds)
    meta = {**settings, "n_folds": n_folds, "seed": seed, "version": spinegrade.__version__}
    meta |= {"data_dir": str(data.data_dir), "folds_sha256": plan["sha256"], "folds_file": FOLDS_FILE}
    meta["points"] = "labelled" if points is None else str(points.attrs.get("kind", "given"))
    cache = _merge(out, rows, set(failed["study_id"]), meta)

    cropped = sum(r.n_rows for r in results)
    rate = f" ({cropped / seconds:.1f} crops/s)" if cropped else ""
    console.print(
        f"cropped {cropped} points of {sum(r.n_rows > 0 for r in results)} studies in {seconds:.1f} s{rate}"
    )
    console.print(
        f"cache {out}: {len(cache.index)} crops of {cache.meta['n_studies']} studies, {n_folds} folds"
    )
    if len(quirks):
        console.print(f"{len(quirks)} series warnings (worked around); see {out / WARNINGS_FILE}")
    if len(failed):
        n_failed = failed["study_id"].nunique()
        console.print(f"[yellow]{n_failed} studies failed and were left out; see {out / FAILED_FILE}:")
        for row in failed.head(10).itertuples():
            console.print(f"  study {row.study_id} series {row.series_id}: {row.error}")
    return cache
