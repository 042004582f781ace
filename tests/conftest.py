"""Shared fixtures: a tiny phantom written once per test session, and the real CSVs when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pretrained look-ups fail at once instead of retrying

REAL_CSV_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsna2024"


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-train + 1-test study phantom at 64 px: read it, never write into it (copy first)."""
    from spinegrade.phantom import write_phantom

    out = tmp_path_factory.mktemp("phantom") / "data"
    write_phantom(out, studies=3, seed=11, size=64, test_studies=1, workers=1, progress=False)
    return out


REAL_STUDY_DIR = REAL_CSV_DIR.parent / "rsna2024-real-study"


@pytest.fixture(scope="session")
def real_study() -> Path:
    """The one real RSNA study of ../shared (RLE files and its CSV rows); skips where a clone has none."""
    if not (REAL_STUDY_DIR / "train_images").is_dir():
        pytest.skip(f"the real study is not at {REAL_STUDY_DIR}")
    return REAL_STUDY_DIR


@pytest.fixture(scope="session")
def real_twins(real_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real study twice, under its id and 4646741 (links to the same files), as a train split: fold plans
    need two studies."""
    import pandas as pd

    data = tmp_path_factory.mktemp("real-twins") / "data"
    (data / "train_images").mkdir(parents=True)
    for name in ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv"):
        table = pd.read_csv(real_study / name)
        pd.concat([table, table.assign(study_id=4646741)]).to_csv(data / name, index=False)
    for study_id in (4646740, 4646741):
        (data / "train_images" / str(study_id)).symlink_to(real_study / "train_images" / "4646740")
    return data
