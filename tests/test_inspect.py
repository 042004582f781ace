"""`spinegrade inspect`: the report on the real CSVs, on a tiny phantom with images, and the exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import typer
from typer.testing import CliRunner

from spinegrade import vocab
from spinegrade.data import tables
from spinegrade.data.inspect import inspect_command, inspect_dataset

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024"
needs_real = pytest.mark.skipif(
    not (REAL / "train.csv").is_file(), reason=f"real RSNA CSVs not found at {REAL}"
)


def _cli(*args: str):
    app = typer.Typer()
    app.command()(inspect_command)
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def real_report() -> dict:
    return inspect_dataset(REAL, progress=False)


@needs_real
def test_real_csv_side(real_report: dict) -> None:
    report = real_report
    assert report["splits"] == ["train", "test"]
    assert report["studies"] == {"train": 1975, "test": 1}
    assert report["images"] == {
        "train": "no train_images/ folder: CSV side only",
        "test": "no test_images/ folder: CSV side only",
    }
    assert report["slices_per_series"] == {} and report["image_sizes"] == {}
    assert sum(report["series_per_type"]["train"].values()) == 6294
    assert set(report["series_per_type"]["train"]) == set(vocab.SERIES_TYPES)
    assert report["series_per_type"]["test"] == dict.fromkeys(vocab.SERIES_TYPES, 1)
    assert report["labels"] == {
        "studies": 1975,
        "labelled": 48_803,
        "blank": 572,
        "severity": {"Normal/Mild": 37_754, "Moderate": 7_960, "Severe": 3_089},
    }
    assert report["coordinates"] == {"points": 48_692, "studies": 1974, "series": 6291}
    assert report["sample_submission"] == {"rows": 25, "studies": 1}


@needs_real
def test_real_class_counts_and_problems(real_report: dict) -> None:
    counts = real_report["class_counts"]
    wide = tables.read_train_labels(REAL / "train.csv")
    for condition, level in vocab.TARGETS:
        expected = wide[f"{condition}_{level}"].value_counts().to_dict()
        got = {s: n for s, n in counts[condition][level].items() if n}
        assert got == expected, (condition, level)
    problems = real_report["problems"]
    assert json.loads(json.dumps(problems)) == problems
    assert sum(real_report["problem_counts"].values()) == len(problems)
    kinds = {p["kind"] for p in problems}
    assert {"blank_label", "several_series_of_type", "images_absent", "label_without_coordinate"} <= kinds
    assert "submission_study_mismatch" not in kinds


@needs_real
def test_cli_json(real_report: dict) -> None:
    result = _cli(REAL, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == real_report


def test_cli_exit_2_on_fatal_error(tmp_path: Path) -> None:
    header = "study_id," + ",".join(vocab.LABEL_COLUMNS)
    (tmp_path / "train.csv").write_text(f"{header}\n1,{','.join(['Sever'] * 25)}\n")
    result = _cli(tmp_path)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    # Descriptions are read first: the missing file is the first fatal error.
    assert "train_series_descriptions.csv not found" in result.stderr
    (tmp_path / "train_series_descriptions.csv").write_text(
        "study_id,series_id,series_description\n1,2,Axial T2\n"
    )
    (tmp_path / "train_label_coordinates.csv").write_text(",".join(tables.COORDINATE_COLUMNS) + "\n")
    result = _cli(tmp_path)
    assert result.exit_code == 2
    assert "train.csv line 2, column 'spinal_canal_stenosis_l1_l2': unknown severity 'Sever'" in result.stderr
    result = _cli(tmp_path / "nowhere")
    assert result.exit_code == 2 and "is not a folder" in result.stderr


# --------------------------------------------------------------------------------- a phantom with images


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spinegrade.phantom import write_phantom

    out = tmp_path_factory.mktemp("phantom")
    write_phantom(
        out, studies=2, seed=3, size=64, test_studies=1, workers=1, progress=False, header_descriptions=True
    )
    return out


def _files_on_disk(phantom: Path, split: str) -> dict[str, list[int]]:
    """Series type (from the DICOM header) -> .dcm files per series folder, counted on disk."""
    per_type: dict[str, list[int]] = {}
    for folder in sorted((phantom / f"{split}_images").glob("*/*")):
        files = sorted(folder.glob("*.dcm"))
        kind = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesDescription
        per_type.setdefault(kind, []).append(len(files))
    return per_type


def test_phantom_images(phantom: Path) -> None:
    report = inspect_dataset(phantom, progress=False)
    # The phantom imitates the real CSV quirks (blank labels...) but its images match its CSVs.
    csv_quirks = {"blank_label", "label_without_coordinate", "coordinate_without_label"}
    assert set(report["problem_counts"]) <= csv_quirks, report["problems"]
    # Its angled axial blocks are a protocol, as a real one's would be: notes, apart from the problems.
    blocks = sum(q["series_with_several_stacks"] for q in report["series_quirks"].values())
    assert report["note_counts"]["several_stacks"] == blocks >= 1
    assert all(n["note"] for n in report["notes"]) and not any(p["note"] for p in report["problems"])
    assert all(
        n["message"].startswith(f"study {n['study_id']} series {n['series_id']}: ") for n in report["notes"]
    )
    assert report["studies"] == {"train": 2, "test": 1}
    for split, studies in report["studies"].items():
        on_disk = _files_on_disk(phantom, split)
        assert report["series_per_type"][split] == {k: len(n) for k, n in on_disk.items()}
        assert report["slices_per_series"][split] == {
            k: {"series": len(n), "min": min(n), "median": float(np.median(n)), "max": max(n)}
            for k, n in sorted(on_disk.items())
        }
        assert report["image_sizes"][split] == {"64x64": sum(map(sum, on_disk.values()))}
        assert report["images"][split] == f"{3 * studies} series folders scanned"
    assert report["labels"]["labelled"] + report["labels"]["blank"] == 2 * len(vocab.TARGETS)
    assert json.loads(json.dumps(report)) == report


def test_phantom_header_problems(phantom: Path, tmp_path: Path) -> None:
    data = shutil.copytree(phantom, tmp_path / "data")
    coordinates = pd.read_csv(data / tables.COORDINATES)
    coordinates.loc[0, "instance_number"] = 9999
    coordinates.loc[1, "x"] = 64.5
    coordinates.to_csv(data / tables.COORDINATES, index=False)
    descriptions = pd.read_csv(data / "test_series_descriptions.csv")
    descriptions.loc[0, "series_description"] = "Coronal STIR"
    descriptions.to_csv(data / "test_series_descriptions.csv", index=False)
    (data / "test_images/123/456").mkdir(parents=True)
    report = inspect_dataset(data, progress=False)
    by_kind = {p["kind"]: p for p in report["problems"]}
    assert by_kind["instance_not_found"]["study_id"] == coordinates.at[0, "study_id"]
    assert "instance 9999" in by_kind["instance_not_found"]["message"]
    assert by_kind["point_outside_image"]["series_id"] == coordinates.at[1, "series_id"]
    assert "x=64.5" in by_kind["point_outside_image"]["message"]
    mismatch = by_kind["series_description_mismatch"]
    assert (
        mismatch["series_id"] == descriptions.at[0, "series_id"] and "'Coronal STIR'" in mismatch["message"]
    )
    assert by_kind["undescribed_image_folder"]["file"] == "test_images/123/456"
    assert {"unknown_series_description", "missing_series_type"} <= set(by_kind)
    assert report["problem_counts"]["instance_not_found"] == 1
    assert report["problem_counts"]["point_outside_image"] == 1
    result = _cli(data)
    assert result.exit_code == 0, result.output
    for shown in (
        "64x64",
        "instance_not_found",
        "series per type",
        f"{report['labels']['labelled']} labelled",
    ):
        assert shown in result.stdout
