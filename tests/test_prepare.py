"""`prepare` on a tiny phantom: a cache consistent with the labels, resume, failed studies, settings, CLI."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from spinegrade.crops import prepare as prepare_module
from spinegrade.crops.cache import CropCache
from spinegrade.crops.commands import prepare_command
from spinegrade.crops.extract import crops_for_points
from spinegrade.crops.folds import study_folds
from spinegrade.crops.prepare import prepare
from spinegrade.data.series import read_series
from spinegrade.data.tables import join_labels, labels_long, load_rsna
from spinegrade.errors import DataError
from spinegrade.phantom import write_phantom

pytestmark = pytest.mark.slow
SETTINGS = {"k": 3, "size": 16, "n_folds": 3, "seed": 0}
CROP_STUDY = prepare_module._crop_study


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def run(data: Path, out: Path, console: Console | None = None, **kw) -> CropCache:
    return prepare(data, out, **{**SETTINGS, "workers": 1, "console": console or quiet(), **kw})


def count_calls(monkeypatch, fail_after: int | None = None) -> list[int]:
    """Record the studies `prepare` crops; raise (a simulated interruption) after `fail_after` of them."""
    calls: list[int] = []

    def counted(job):
        if fail_after is not None and len(calls) == fail_after:
            raise RuntimeError("simulated interruption")
        calls.append(job.study_id)
        return CROP_STUDY(job)

    monkeypatch.setattr(prepare_module, "_crop_study", counted)
    return calls


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    write_phantom(out, 3, 5, size=64, test_studies=0, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def labels(phantom) -> pd.DataFrame:
    data = load_rsna(phantom)
    return join_labels(labels_long(data.labels), data.coordinates, data.descriptions)


@pytest.fixture(scope="module")
def clean(phantom, tmp_path_factory) -> CropCache:
    return run(phantom, tmp_path_factory.mktemp("clean"))


def test_cache_matches_the_labels(phantom, labels, clean):
    index, crops = clean.index, clean.crops
    assert len(index) == len(labels) == crops.shape[0] == 75
    assert crops.shape[1:] == (3, 16, 16) and crops.dtype == np.float16
    merged = index.merge(
        labels, on=["study_id", "condition", "level"], suffixes=("", "_label"), validate="1:1"
    )
    assert len(merged) == len(labels)
    for column in ("severity", "series_id", "instance_number", "x", "y"):
        assert (merged[column] == merged[f"{column}_label"]).all(), column
    assert index["fold"].equals(index["study_id"].map(study_folds(labels, n_folds=3, seed=0)))
    assert index.groupby("study_id")["fold"].nunique().eq(1).all()
    assert np.isfinite(crops).all() and crops.min() >= 0.0 and crops.max() <= 1.0
    assert clean.meta["k"] == 3 and clean.meta["size"] == 16 and clean.meta["n_folds"] == 3
    # Row i of the cache is the crop of row i's point, as the shared crop function cuts it.
    first = index.iloc[0]
    data = load_rsna(phantom)
    series = read_series(data.series_folder(first.study_id, first.series_id))
    rows = index[(index["study_id"] == first.study_id) & (index["series_id"] == first.series_id)]
    expected = crops_for_points(series, rows, k=3, size=16, crop_mm=clean.meta["crop_mm"])
    assert np.allclose(crops[rows.index.to_numpy()], expected, atol=1e-3)
    # Different points give different crops (not one image copied everywhere).
    assert not np.allclose(crops[0], crops[1], atol=1e-2)


def test_an_interrupted_run_resumes_without_redoing_finished_studies(phantom, clean, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    count_calls(monkeypatch, fail_after=1)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run(phantom, out)
    (shard,) = (out / "shards").glob("*.npz")
    assert not (out / "meta.json").exists()
    mtime = shard.stat().st_mtime_ns

    calls = count_calls(monkeypatch)
    console = quiet()
    cache = run(phantom, out, console=console)
    studies = set(clean.index["study_id"])
    assert sorted(calls) == sorted(studies - {int(shard.stem)})
    assert shard.stat().st_mtime_ns == mtime
    assert "resuming: 1 of 3 studies" in console.file.getvalue()
    assert np.array_equal(cache.crops, clean.crops)
    assert cache.index.equals(clean.index)

    # A damaged shard (e.g. from a full disk) is not trusted: its study is cropped again.
    shard.write_bytes(shard.read_bytes()[:3000])
    calls = count_calls(monkeypatch)
    cache = run(phantom, out)
    assert calls == [int(shard.stem)] and np.array_equal(cache.crops, clean.crops)


def test_failing_studies_are_listed_and_the_others_are_cached(phantom, labels, clean, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    shutil.copytree(phantom, data_dir)
    data = load_rsna(data_dir)
    corrupt = labels.iloc[-1]  # a series whose files are all garbage
    folder = data.series_folder(corrupt.study_id, corrupt.series_id)
    n_files = len(list(folder.iterdir()))
    for file in folder.iterdir():
        file.write_bytes(b"not a dicom file at all" * 10)
    missing = labels.iloc[0]  # a series folder that is not there
    shutil.rmtree(data.series_folder(missing.study_id, missing.series_id))
    assert corrupt.study_id != missing.study_id
    out = tmp_path / "cache"
    console = quiet()
    cache = run(data_dir, out, console=console, workers=2)  # through the process pool
    failed = pd.read_csv(out / "failed.csv")
    assert failed[["study_id", "series_id"]].values.tolist() == sorted(
        [[corrupt.study_id, corrupt.series_id], [missing.study_id, missing.series_id]]
    )
    assert failed.set_index("series_id").loc[missing.series_id, "error"].endswith("is missing")
    assert "2 studies failed" in console.file.getvalue()
    quirks = pd.read_csv(out / "warnings.csv")  # the reader's warnings about the skipped files are kept
    assert len(quirks) == n_files and (quirks["series_id"] == corrupt.series_id).all()
    kept = ~clean.index["study_id"].isin([corrupt.study_id, missing.study_id])
    assert cache.index.equals(clean.index[kept].reset_index(drop=True))
    assert np.array_equal(cache.crops, clean.crops[kept.to_numpy()])
    with pytest.raises(DataError, match=str(missing.study_id)):
        run(data_dir, tmp_path / "strict", on_error="raise")

    # Once the data are repaired, a re-run crops only those studies and completes the cache.
    for row in (corrupt, missing):
        source = load_rsna(phantom).series_folder(row.study_id, row.series_id)
        shutil.copytree(source, data.series_folder(row.study_id, row.series_id), dirs_exist_ok=True)
    calls = count_calls(monkeypatch)
    cache = run(data_dir, out)
    assert sorted(calls) == sorted([corrupt.study_id, missing.study_id])
    assert pd.read_csv(out / "failed.csv").empty
    assert np.array_equal(cache.crops, clean.crops) and cache.index.equals(clean.index)


def test_other_crop_settings_are_refused_unless_overwrite(phantom, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    run(phantom, out, size=8)
    with pytest.raises(DataError, match="--overwrite"):
        run(phantom, out, size=16)
    with pytest.raises(DataError, match="--overwrite"):
        run(phantom, out, size=8, crop_mm={"spinal": 30})
    assert CropCache.open(out).crops.shape[-1] == 8  # the refused runs changed nothing
    cache = run(phantom, out, size=16, overwrite=True)
    assert cache.crops.shape[-1] == 16 and cache.meta["size"] == 16
    # Folds are not crop settings: a new fold count re-uses every shard.
    calls = count_calls(monkeypatch)
    cache = run(phantom, out, size=16, n_folds=2)
    assert calls == [] and sorted(cache.index["fold"].unique()) == [0, 1] and cache.meta["n_folds"] == 2


def test_prepare_command(phantom, tmp_path):
    app = typer.Typer()
    app.command("prepare")(prepare_command)
    app.command("other")(lambda: None)  # two commands, so typer keeps the subcommand name
    out = tmp_path / "cache"
    args = [
        "prepare",
        str(phantom),
        "--out",
        str(out),
        "--k",
        "1",
        "--size",
        "8",
        "--folds",
        "2",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(app, [*args, "--crop-mm", "spinal=30,foraminal=36"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["crop_mm"] == {"spinal": 30.0, "foraminal": 36.0, "subarticular": 48.0}
    assert meta["views"] == ["own", "axial"]  # the command's default: 25 own crops + 15 axial views a study
    cache = CropCache.open(out)
    assert cache.crops.shape == (120, 1, 8, 8) and (cache.index["view"] == "axial").sum() == 45
    own = tmp_path / "own"
    result = CliRunner().invoke(app, [*args[:3], str(own), *args[4:], "--views", "own"])
    assert result.exit_code == 0, result.output
    assert CropCache.open(own).crops.shape == (75, 1, 8, 8)
    result = CliRunner().invoke(app, [*args, "--crop-mm", "spine=30"])
    assert result.exit_code != 0 and isinstance(result.exception, DataError)
