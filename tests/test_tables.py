"""The CSV layer: facts of the real competition files, and one test per kind of bad input."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest

from spinegrade import vocab
from spinegrade.data import tables
from spinegrade.errors import DataError

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024"
needs_real = pytest.mark.skipif(
    not (REAL / "train.csv").is_file(), reason=f"real RSNA CSVs not found at {REAL}"
)


# ------------------------------------------------------------------------------------- the real files


@pytest.fixture(scope="module")
def real() -> tables.RsnaData:
    return tables.load_rsna(REAL)


@needs_real
def test_real_train_labels(real: tables.RsnaData) -> None:
    labels = real.labels
    assert len(labels) == 1975 and labels["study_id"].is_unique
    assert list(labels.columns) == ["study_id", *vocab.LABEL_COLUMNS]
    assert labels["study_id"].dtype == "int64"
    assert int(labels[list(vocab.LABEL_COLUMNS)].isna().sum().sum()) == 572
    long = tables.labels_long(labels)
    assert len(long) == 48_803
    assert long["severity"].dtype == "int8"
    counts = long["severity"].value_counts().to_dict()
    assert counts == {0: 37_754, 1: 7_960, 2: 3_089}


@needs_real
def test_real_coordinates_fast_and_complete() -> None:
    start = time.perf_counter()
    coordinates = tables.read_label_coordinates(REAL / tables.COORDINATES)
    assert time.perf_counter() - start < 2.0
    assert len(coordinates) == 48_692
    assert list(coordinates.columns) == list(tables.COORDINATE_COLUMNS)
    assert coordinates["study_id"].nunique() == 1974
    assert coordinates.groupby(["study_id", "series_id"]).ngroups == 6291
    assert set(coordinates["condition"]) == set(vocab.CONDITIONS)
    assert set(coordinates["level"]) == set(vocab.LEVELS)
    assert coordinates[["x", "y"]].notna().all().all()


@needs_real
def test_real_descriptions_and_submission() -> None:
    train = tables.read_series_descriptions(REAL / "train_series_descriptions.csv")
    assert len(train) == 6294 and set(train["series_description"]) == set(vocab.SERIES_TYPES)
    test = tables.read_series_descriptions(REAL / "test_series_descriptions.csv")
    assert len(test) == 3 and set(test["study_id"]) == {44036939}
    assert sorted(test["series_description"]) == sorted(vocab.SERIES_TYPES)
    submission = tables.read_sample_submission(REAL / tables.SAMPLE_SUBMISSION)
    assert len(submission) == 25
    parsed = [vocab.parse_row_id(r) for r in submission["row_id"]]
    assert {s for s, _, _ in parsed} == {44036939}
    assert {(c, lv) for _, c, lv in parsed} == set(vocab.TARGETS)


@needs_real
def test_real_join(real: tables.RsnaData) -> None:
    long = tables.labels_long(real.labels)
    joined = tables.join_labels(long, real.coordinates, real.descriptions)
    assert list(joined.columns) == list(tables.JOINED_COLUMNS)
    labelled = set(long[["study_id", "condition", "level"]].itertuples(index=False, name=None))
    pointed = set(real.coordinates[["study_id", "condition", "level"]].itertuples(index=False, name=None))
    assert len(joined) == len(labelled & pointed)
    assert joined["series_description"].notna().all()
    # The severity travels with its target: compare with the wide table cell by cell on a sample.
    wide = real.labels.set_index("study_id")
    for row in joined.sample(200, random_state=0).itertuples():
        cell = wide.at[row.study_id, f"{row.condition}_{row.level}"]
        assert vocab.SEVERITY_LABELS[row.severity] == cell


def _kind(data: tables.RsnaData, kind: str) -> list:
    return [p for p in data.problems if p.kind == kind]


@needs_real
def test_real_problems(real: tables.RsnaData) -> None:
    assert not real.has_images and len(_kind(real, "images_absent")) == 1
    # Blank labels: one problem per study with a blank cell, naming exactly the 572 blank cells.
    blank = real.labels.set_index("study_id")[list(vocab.LABEL_COLUMNS)].isna()
    blank_problems = _kind(real, "blank_label")
    assert {p.study_id for p in blank_problems} == set(blank.index[blank.any(axis=1)])
    named = sum(len(re.findall(r"\b[a-z_]+_l\d_[ls]\d\b", p.message)) for p in blank_problems)
    assert named == int(blank.to_numpy().sum()) == 572
    # Points on a series type that does not show their condition.
    drawn = real.coordinates.merge(real.descriptions, on=["study_id", "series_id"])
    odd = drawn[drawn["condition"].map(vocab.CONDITION_SERIES) != drawn["series_description"]]
    assert {(p.study_id, p.series_id) for p in _kind(real, "unexpected_series_type")} == set(
        zip(odd["study_id"], odd["series_id"], strict=True)
    )
    # Several series of one type.
    per_type = real.descriptions.groupby(["study_id", "series_description"]).size()
    assert len(_kind(real, "several_series_of_type")) == int((per_type > 1).sum()) > 0
    # Labels without a point: the one study without coordinates is among them.
    no_points = set(real.labels["study_id"]) - set(real.coordinates["study_id"])
    assert len(no_points) == 1
    assert no_points <= {p.study_id for p in _kind(real, "label_without_coordinate")}
    assert _kind(real, "coordinate_without_label")
    assert real.study_ids() == sorted(real.labels["study_id"])


@needs_real
def test_real_test_split() -> None:
    test = tables.load_rsna(REAL, "test")
    assert test.labels is None and test.coordinates is None
    assert test.study_ids() == [44036939]
    assert test.series_folder(44036939, 3481971518) == REAL / "test_images/44036939/3481971518"


# ------------------------------------------------------------------------------- small synthetic data

_TYPES = {0: "Sagittal T2/STIR", 1: "Sagittal T1", 2: "Axial T2"}


def _frames() -> dict[str, pd.DataFrame]:
    """A valid two-study dataset: every target labelled 'Normal/Mild' and pointed on its own series type."""
    studies = (100, 200)
    labels = pd.DataFrame({"study_id": studies, **dict.fromkeys(vocab.LABEL_COLUMNS, "Normal/Mild")})
    series = {(s, t): s * 10 + i for s in studies for i, t in enumerate(_TYPES.values())}
    descriptions = pd.DataFrame(
        [(s, sid, t) for (s, t), sid in series.items()], columns=list(tables.DESCRIPTION_COLUMNS)
    )
    coordinates = pd.DataFrame(
        [
            (
                s,
                series[s, vocab.CONDITION_SERIES[c]],
                3,
                vocab.condition_display(c),
                vocab.level_display(lv),
                10.5,
                20.25,
            )
            for s in studies
            for c, lv in vocab.TARGETS
        ],
        columns=list(tables.COORDINATE_COLUMNS),
    )
    return {
        "train.csv": labels,
        tables.COORDINATES: coordinates,
        "train_series_descriptions.csv": descriptions,
    }


def _write(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    for name, frame in frames.items():
        frame.to_csv(folder / name, index=False)
    return folder


def _raises(call, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_valid_synthetic_dataset_has_no_problems_but_absent_images(tmp_path: Path) -> None:
    data = tables.load_rsna(_write(tmp_path, _frames()))
    assert [p.kind for p in data.problems] == ["images_absent"]
    assert data.study_ids() == [100, 200]
    joined = tables.join_labels(tables.labels_long(data.labels), data.coordinates, data.descriptions)
    assert len(joined) == 50
    assert (joined["series_description"] == joined["condition"].map(vocab.CONDITION_SERIES)).all()


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("")
    _raises(lambda: tables.read_train_labels(tmp_path / "train.csv"), "train.csv is empty")
    (tmp_path / "train.csv").write_text("study_id," + ",".join(vocab.LABEL_COLUMNS) + "\n")
    _raises(lambda: tables.read_train_labels(tmp_path / "train.csv"), "train.csv has a header but no rows")
    _raises(lambda: tables.read_train_labels(tmp_path / "absent.csv"), "absent.csv not found")


def test_missing_column(tmp_path: Path) -> None:
    frames = _frames()
    frames[tables.COORDINATES] = frames[tables.COORDINATES].drop(columns="x")
    _write(tmp_path, frames)
    _raises(
        lambda: tables.read_label_coordinates(tmp_path / tables.COORDINATES),
        "train_label_coordinates.csv line 1: missing column 'x'",
    )


def test_unknown_severity(tmp_path: Path) -> None:
    frames = _frames()
    frames["train.csv"].loc[1, "spinal_canal_stenosis_l1_l2"] = "Sever"
    _write(tmp_path, frames)
    message = _raises(lambda: tables.read_train_labels(tmp_path / "train.csv"))
    assert message == (
        "train.csv line 3, column 'spinal_canal_stenosis_l1_l2': unknown severity 'Sever'; "
        "expected one of Normal/Mild, Moderate, Severe"
    )


def test_unknown_condition_and_level(tmp_path: Path) -> None:
    frames = _frames()
    frames[tables.COORDINATES].loc[6, "condition"] = "Spinal Stenosis"
    _write(tmp_path, frames)
    _raises(
        lambda: tables.read_label_coordinates(tmp_path / tables.COORDINATES),
        "train_label_coordinates.csv line 8, column 'condition'",
        "'Spinal Stenosis'",
    )
    frames = _frames()
    frames[tables.COORDINATES].loc[40, "level"] = "L6/S1"
    _write(tmp_path, frames)
    _raises(
        lambda: tables.read_label_coordinates(tmp_path / tables.COORDINATES),
        "line 42, column 'level'",
        "'L6/S1'",
    )


def test_duplicate_study(tmp_path: Path) -> None:
    frames = _frames()
    frames["train.csv"].loc[1, "study_id"] = 100
    _write(tmp_path, frames)
    _raises(
        lambda: tables.read_train_labels(tmp_path / "train.csv"),
        "train.csv line 3, column 'study_id'",
        "repeats line 2",
    )


def test_duplicate_target_point(tmp_path: Path) -> None:
    frames = _frames()
    coordinates = frames[tables.COORDINATES]
    frames[tables.COORDINATES] = pd.concat([coordinates, coordinates.iloc[[4]]], ignore_index=True)
    _write(tmp_path, frames)
    _raises(
        lambda: tables.read_label_coordinates(tmp_path / tables.COORDINATES),
        "train_label_coordinates.csv line 52, columns 'study_id', 'condition', 'level'",
        "repeats line 6",
    )


def test_duplicate_series_description(tmp_path: Path) -> None:
    frames = _frames()
    descriptions = frames["train_series_descriptions.csv"]
    frames["train_series_descriptions.csv"] = pd.concat([descriptions, descriptions.iloc[[0]]])
    _write(tmp_path, frames)
    _raises(
        lambda: tables.read_series_descriptions(tmp_path / "train_series_descriptions.csv"),
        "train_series_descriptions.csv line 8, columns 'study_id', 'series_id'",
        "repeats line 2",
    )


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("series_id", "12a", "'12a' is not a whole number"),
        ("instance_number", "3.5", "'3.5' is not a whole number"),
        ("x", "abc", "'abc' is not a finite number"),
        ("y", "", "blank cell"),
    ],
)
def test_non_numeric_cells(tmp_path: Path, column: str, value: str, fragment: str) -> None:
    frames = _frames()
    coordinates = frames[tables.COORDINATES].astype(str)
    coordinates.loc[9, column] = value
    frames[tables.COORDINATES] = coordinates
    _write(tmp_path, frames)
    _raises(
        lambda: tables.read_label_coordinates(tmp_path / tables.COORDINATES),
        f"train_label_coordinates.csv line 11, column '{column}'",
        fragment,
    )


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    header = "study_id,series_id,series_description\n"
    (tmp_path / "d.csv").write_text(header + "1,2,Axial T2\n\n\n1,x,Sagittal T1\n\n")
    _raises(lambda: tables.read_series_descriptions(tmp_path / "d.csv"), "d.csv line 5, column 'series_id'")
    (tmp_path / "d.csv").write_text(header + "1,2,Axial T2\n\n1,3,Sagittal T1\n\n")
    assert len(tables.read_series_descriptions(tmp_path / "d.csv")) == 2


def test_point_on_undescribed_series(tmp_path: Path) -> None:
    frames = _frames()
    frames[tables.COORDINATES].loc[30, "series_id"] = 999
    _write(tmp_path, frames)
    _raises(
        lambda: tables.load_rsna(tmp_path),
        "train_label_coordinates.csv line 32, column 'series_id'",
        "series 999 of study 200 is not in train_series_descriptions.csv",
    )


def test_bad_row_id(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text(
        "row_id,normal_mild,moderate,severe\n"
        "1_spinal_canal_stenosis_l1_l2,0.2,0.3,0.5\n"
        "1_spinal_canal_stenosis_l9_l2,0.2,0.3,0.5\n"
    )
    _raises(
        lambda: tables.read_sample_submission(tmp_path / "s.csv"),
        "s.csv line 3, column 'row_id'",
        "does not end with a level",
    )


def test_quirks_become_problems(tmp_path: Path) -> None:
    frames = _frames()
    labels, coordinates, descriptions = frames.values()
    labels.loc[0, ["spinal_canal_stenosis_l1_l2", "spinal_canal_stenosis_l2_l3"]] = (
        None  # blank, 2 points left
    )
    frames[tables.COORDINATES] = coordinates = coordinates[
        ~((coordinates["study_id"] == 200) & (coordinates["condition"] == "Left Subarticular Stenosis"))
    ]
    right_foramina = coordinates["condition"] == "Right Neural Foraminal Narrowing"
    coordinates.loc[right_foramina & (coordinates["study_id"] == 200), "series_id"] = 2000
    extra = pd.DataFrame(
        [(200, 2003, "Axial T2"), (200, 2004, "Coronal STIR")], columns=list(tables.DESCRIPTION_COLUMNS)
    )
    frames["train_series_descriptions.csv"] = pd.concat([descriptions, extra], ignore_index=True)
    (tmp_path / "train_images/100/1000").mkdir(parents=True)
    (tmp_path / "train_images/100/4242").mkdir()
    data = tables.load_rsna(_write(tmp_path, frames))
    assert data.has_images
    by_kind = {}
    for p in data.problems:
        by_kind.setdefault(p.kind, []).append(p)
    assert sorted(by_kind) == [
        "blank_label",
        "coordinate_without_label",
        "label_without_coordinate",
        "missing_image_folder",
        "several_series_of_type",
        "undescribed_image_folder",
        "unexpected_series_type",
        "unknown_series_description",
    ]
    (blank,) = by_kind["blank_label"]
    assert blank.study_id == 100 and "2 blank labels" in blank.message
    (pointless,) = by_kind["coordinate_without_label"]
    assert pointless.study_id == 100 and "spinal_canal_stenosis_l1_l2" in pointless.message
    (unpointed,) = by_kind["label_without_coordinate"]
    assert unpointed.study_id == 200 and "5 labelled target(s)" in unpointed.message
    # Right foramina of study 200 moved onto its Sagittal T2/STIR series 2000.
    (odd,) = by_kind["unexpected_series_type"]
    assert (odd.study_id, odd.series_id) == (200, 2000) and "expected Sagittal T1" in odd.message
    (several,) = by_kind["several_series_of_type"]
    assert several.study_id == 200 and "2 Axial T2 series" in several.message
    (unknown,) = by_kind["unknown_series_description"]
    assert unknown.series_id == 2004 and "line 9" in unknown.message
    (undescribed,) = by_kind["undescribed_image_folder"]
    assert (undescribed.study_id, undescribed.series_id) == (100, 4242)
    assert {p.series_id for p in by_kind["missing_image_folder"]} == {
        1001,
        1002,
        2000,
        2001,
        2002,
        2003,
        2004,
    }
    assert all(p.to_dict()["kind"] == p.kind for p in data.problems)
