"""--shard i/n for prepare and predict, and spinegrade merge: the shards together are the whole run, and
an overlapping, missing or incomplete part is refused naming the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner
from untrained import write_models

from spinegrade.cli import app
from spinegrade.crops.cache import CropCache
from spinegrade.crops.prepare import prepare
from spinegrade.errors import DataError
from spinegrade.phantom import write_phantom
from spinegrade.prediction.merge import merge_submissions
from spinegrade.runtime import torch_threads
from spinegrade.sharding import Shard, parse_shard, shard_items

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::spinegrade.prediction.results.PredictionWarning")


def test_parse_shard_and_items() -> None:
    assert parse_shard("1/3") == Shard(1, 3) and parse_shard(None) is None
    for bad in ("3/3", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(DataError, match="give i/n"):
            parse_shard(bad)
    items = list(range(7))
    parts = [shard_items(items, Shard(i, 3)) for i in range(3)]
    assert sorted(i for part in parts for i in part) == items and parts[1] == [1, 4]


def test_prepare_in_shards_equals_one_run(tiny_phantom: Path, tmp_path: Path) -> None:
    whole = prepare(tiny_phantom, tmp_path / "whole", size=16, k=3, n_folds=2, workers=1)
    for i in range(2):
        assert (
            prepare(tiny_phantom, tmp_path / "sharded", size=16, k=3, n_folds=2, workers=1, shard=Shard(i, 2))
            is None
        )
    npz = sorted(p.stem for p in (tmp_path / "sharded" / "shards").glob("*.npz"))
    assert len(npz) == whole.index["study_id"].nunique()
    assert not (tmp_path / "sharded" / "crops.npy").exists()  # only the final run merges
    merged = prepare(tiny_phantom, tmp_path / "sharded", size=16, k=3, n_folds=2, workers=1)
    pd.testing.assert_frame_equal(merged.index, whole.index)
    assert np.array_equal(np.asarray(merged.crops), np.asarray(CropCache.open(tmp_path / "whole").crops))


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shard")
    data = root / "data"
    write_phantom(data, 2, 0, size=64, test_studies=3, workers=1, progress=False)
    run, locator = write_models(root)
    models = ["--runs", str(run), "--locator", str(locator)]
    with torch_threads(1):
        for name, extra in (("full", []), ("part0", ["--shard", "0/2"]), ("part1", ["--shard", "1/2"])):
            out = root / name / "submission.csv"
            result = runner.invoke(app, ["predict", str(data), *models, "--out", str(out), *extra])
            assert result.exit_code == 0, result.output
    return {"root": root, "data": data}


def test_predict_shards_merge_into_the_full_submission(graded: dict[str, Path]) -> None:
    root = graded["root"]
    parts = [root / f"part{i}" / "submission.csv" for i in range(2)]
    assert [len(pd.read_csv(p)) for p in parts] == [2 * 25, 25]
    out = root / "merged.csv"
    result = runner.invoke(
        app,
        [
            "merge",
            *map(str, parts),
            "--sample",
            str(graded["data"] / "sample_submission.csv"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(root / "full" / "submission.csv"))


def test_merge_refuses_overlap_gaps_and_short_studies(graded: dict[str, Path], tmp_path: Path) -> None:
    root, sample = graded["root"], graded["data"] / "sample_submission.csv"
    part0, part1 = (root / f"part{i}" / "submission.csv" for i in range(2))
    with pytest.raises(DataError, match=r"is in .*part0.* and .*part0.*: shards must not overlap"):
        merge_submissions([part0, part0], tmp_path / "m.csv")
    with pytest.raises(DataError, match="is in no part: a shard is missing"):
        merge_submissions([part0], tmp_path / "m.csv", sample)
    short = tmp_path / "short.csv"
    pd.read_csv(part1).iloc[:-1].to_csv(short, index=False)
    with pytest.raises(DataError, match=r"has 24 of 25 rows; \d+_\w+ is missing"):
        merge_submissions([part0, short], tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
