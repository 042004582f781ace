"""The competition's CSV files: strict readers, the label joins and the dataset loader `load_rsna`.

Readers raise DataError naming the file, the line (as an editor shows it: header = line 1) and the column
at fault; quirks of the real data that do not stop the work (blank labels, extra series, labels without a
point...) are collected as Problems by `load_rsna`. Every frame a reader returns keeps the index of its
file's data rows (line = index + 2) and records the file name in `frame.attrs["file"]`, so later checks
can still point at the line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from spinegrade import vocab
from spinegrade.errors import DataError, Problem

TRAIN_LABELS = "train.csv"
COORDINATES = "train_label_coordinates.csv"
SAMPLE_SUBMISSION = "sample_submission.csv"
SPLITS = ("train", "test")

COORDINATE_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
DESCRIPTION_COLUMNS = ("study_id", "series_id", "series_description")
SUBMISSION_COLUMNS = ("row_id", *vocab.SEVERITIES)
LONG_COLUMNS = ("study_id", "condition", "level", "severity")
JOINED_COLUMNS = (
    *LONG_COLUMNS,
    "series_id",
    "instance_number",
    "x",
    "y",
    "series_description",
)
_TARGET_KEY = ["study_id", "condition", "level"]
_SERIES_KEY = ["study_id", "series_id"]


def descriptions_file(split: str) -> str:
    """The series-descriptions file of a split: 'train_series_descriptions.csv' or 'test_...'."""
    return f"{split}_series_descriptions.csv"


# ----------------------------------------------------------------------------------------------- helpers


def _at(frame: pd.DataFrame, index: int, columns: str | Sequence[str]) -> str:
    """'train.csv line 17, column 'x'': where a cell of a frame read by `_read_csv` came from."""
    cols = [columns] if isinstance(columns, str) else list(columns)
    where = (
        f"{frame.attrs['file']} line {index + 2}" if "file" in frame.attrs else f"row {index} of the table"
    )
    names = ", ".join(f"'{c}'" for c in cols)
    return f"{where}, column{'s' if len(cols) > 1 else ''} {names}"


def _show(value: object) -> str:
    return "a blank cell" if pd.isna(value) else repr(value)


def _read_csv(path: str | os.PathLike, columns: Sequence[str], filled: Sequence[str]) -> pd.DataFrame:
    """Read a CSV as stripped text; check the header has `columns` and that `filled` columns have no blanks.

    Blank lines are dropped but keep their place in the index, so line = index + 2 stays true (the RSNA
    files never quote line breaks inside a cell, the one case where this would drift).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; expected the competition's layout (see the RSNA 2024 data page)")
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"{path.name} is empty; expected a header line ({','.join(columns)}) and one line per row"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name} is not a readable CSV file: {exc}") from exc
    frame.columns = frame.columns.str.strip()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path.name} line 1: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)}; the header must name {', '.join(columns)}"
        )
    frame = frame.loc[frame.notna().any(axis=1), list(columns)]
    if frame.empty:
        raise DataError(f"{path.name} has a header but no rows")
    frame = frame.apply(lambda s: s.str.strip())
    frame.attrs["file"] = path.name
    for column in filled:
        blank = frame[column].isna().to_numpy()
        if blank.any():
            raise DataError(
                f"{_at(frame, frame.index[blank][0], column)}: blank cell; every row needs a value"
            )
    return frame


def _whole_numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column of non-negative integers (ids, instance numbers; at most 18 digits) as int64."""
    ok = frame[column].str.fullmatch(r"\d{1,18}", na=False).to_numpy()
    if not ok.all():
        i = frame.index[~ok][0]
        raise DataError(
            f"{_at(frame, i, column)}: {_show(frame.at[i, column])} is not a whole number; "
            "write digits only (no sign, decimal point or exponent)"
        )
    return frame[column].astype("int64")


def _finite_numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column of finite real numbers as float64."""
    values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    ok = np.isfinite(values.to_numpy())
    if not ok.all():
        i = frame.index[~ok][0]
        raise DataError(f"{_at(frame, i, column)}: {_show(frame.at[i, column])} is not a finite number")
    return values


def _vocabulary(frame: pd.DataFrame, column: str, to_key: Callable[[str], str]) -> pd.Series:
    """Map a column through vocab's `condition_key`/`level_key` (either spelling) to snake_case keys."""
    text = frame[column]
    mapping = {}
    for value in text.unique():
        try:
            mapping[value] = to_key(value)
        except KeyError as exc:
            i = text.index[(text == value).to_numpy()][0]
            raise DataError(f"{_at(frame, i, column)}: {exc.args[0]}") from exc
    return text.map(mapping).astype(str)


def _check_unique(frame: pd.DataFrame, keys: list[str], what: str) -> None:
    """Raise on the first row repeating the `keys` of an earlier row, naming both lines."""
    repeat = frame.duplicated(keys).to_numpy()
    if repeat.any():
        i = frame.index[repeat][0]
        same = (frame[keys] == frame.loc[i, keys]).all(axis=1).to_numpy()
        first = frame.index[same][0]
        key = ", ".join(f"{k}={frame.at[i, k]}" for k in keys)
        raise DataError(
            f"{_at(frame, i, keys)}: {what} {key} repeats line {first + 2}; keep one row per {what}"
        )


def _with_source(frame: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    frame.attrs["file"] = source.attrs["file"]
    return frame


# ----------------------------------------------------------------------------------------------- readers


def read_train_labels(path: str | os.PathLike) -> pd.DataFrame:
    """train.csv -> study_id (int64) + the 25 LABEL_COLUMNS holding the severity strings or NaN (blank)."""
    raw = _read_csv(path, ("study_id", *vocab.LABEL_COLUMNS), filled=("study_id",))
    cells = raw[list(vocab.LABEL_COLUMNS)]
    bad = (cells.notna() & ~cells.isin(vocab.SEVERITY_LABELS)).to_numpy()
    if bad.any():
        r, c = np.argwhere(bad)[0]
        column = vocab.LABEL_COLUMNS[c]
        raise DataError(
            f"{_at(raw, raw.index[r], column)}: unknown severity {cells.iat[r, c]!r}; "
            f"expected one of {', '.join(vocab.SEVERITY_LABELS)}"
        )
    labels = cells.copy()
    labels.insert(0, "study_id", _whole_numbers(raw, "study_id"))
    _with_source(labels, raw)
    _check_unique(labels, ["study_id"], "study")
    return labels


def read_label_coordinates(path: str | os.PathLike) -> pd.DataFrame:
    """train_label_coordinates.csv -> study_id, series_id, instance_number, condition, level, x, y.

    Conditions and levels come back as vocab's snake_case keys (either spelling is accepted).

    One point per (study, condition, level): the challenge grades each target once, so a second point for
    the same target is ambiguous and an error (the real file has none).
    """
    raw = _read_csv(path, COORDINATE_COLUMNS, filled=COORDINATE_COLUMNS)
    coordinates = _with_source(
        pd.DataFrame(
            {
                "study_id": _whole_numbers(raw, "study_id"),
                "series_id": _whole_numbers(raw, "series_id"),
                "instance_number": _whole_numbers(raw, "instance_number"),
                "condition": _vocabulary(raw, "condition", vocab.condition_key),
                "level": _vocabulary(raw, "level", vocab.level_key),
                "x": _finite_numbers(raw, "x"),
                "y": _finite_numbers(raw, "y"),
            }
        ),
        raw,
    )
    _check_unique(coordinates, _TARGET_KEY, "target")
    return coordinates


def read_series_descriptions(path: str | os.PathLike) -> pd.DataFrame:
    """<split>_series_descriptions.csv -> study_id, series_id (int64), series_description (text as written).

    Descriptions outside vocab.SERIES_TYPES are kept here and reported as Problems by `load_rsna`.
    """
    raw = _read_csv(path, DESCRIPTION_COLUMNS, filled=DESCRIPTION_COLUMNS)
    descriptions = _with_source(
        pd.DataFrame(
            {
                "study_id": _whole_numbers(raw, "study_id"),
                "series_id": _whole_numbers(raw, "series_id"),
                "series_description": raw["series_description"].astype(str),
            }
        ),
        raw,
    )
    _check_unique(descriptions, _SERIES_KEY, "series")
    return descriptions


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame:
    """sample_submission.csv -> row_id, normal_mild, moderate, severe; every row_id must parse."""
    raw = _read_csv(path, SUBMISSION_COLUMNS, filled=SUBMISSION_COLUMNS)
    for i, row_id in raw["row_id"].items():
        try:
            vocab.parse_row_id(row_id)
        except ValueError as exc:
            raise DataError(f"{_at(raw, i, 'row_id')}: {exc}") from exc
    submission = raw[["row_id"]].astype(str)
    for column in vocab.SEVERITIES:
        submission[column] = _finite_numbers(raw, column)
    _with_source(submission, raw)
    _check_unique(submission, ["row_id"], "row_id")
    return submission


# ------------------------------------------------------------------------------------------------- joins


def labels_long(wide: pd.DataFrame) -> pd.DataFrame:
    """Wide train.csv labels -> one row per labelled target: study_id, condition, level, severity (int8 0..2).

    Blank cells are dropped; rows come study by study in vocab.TARGETS order.
    """
    cells = wide[list(vocab.LABEL_COLUMNS)].to_numpy(dtype=object)
    filled = pd.notna(cells).ravel()
    codes = pd.Series(cells.ravel()[filled]).map({s: i for i, s in enumerate(vocab.SEVERITY_LABELS)})
    if codes.isna().any():
        raise DataError(
            f"labels hold unknown severity {cells.ravel()[filled][codes.isna().to_numpy()][0]!r}; "
            f"expected one of {', '.join(vocab.SEVERITY_LABELS)}"
        )
    n = len(wide)
    conditions, levels = (np.array(values) for values in zip(*vocab.TARGETS, strict=True))
    return pd.DataFrame(
        {
            "study_id": np.repeat(wide["study_id"].to_numpy(dtype="int64"), len(vocab.TARGETS))[filled],
            "condition": np.tile(conditions, n)[filled],
            "level": np.tile(levels, n)[filled],
            "severity": codes.to_numpy(dtype="int8"),
        }
    )


def check_series_described(coordinates: pd.DataFrame, descriptions: pd.DataFrame) -> None:
    """Raise if a coordinate sits on a series the descriptions do not list (its images could not be found)."""
    described = pd.MultiIndex.from_frame(descriptions[_SERIES_KEY])
    unknown = ~pd.MultiIndex.from_frame(coordinates[_SERIES_KEY]).isin(described)
    if unknown.any():
        i = coordinates.index[unknown][0]
        source = descriptions.attrs.get("file", "the series descriptions")
        raise DataError(
            f"{_at(coordinates, i, 'series_id')}: series {coordinates.at[i, 'series_id']} of study "
            f"{coordinates.at[i, 'study_id']} is not in {source}; add it there or remove its coordinates"
        )


def join_labels(long: pd.DataFrame, coordinates: pd.DataFrame, descriptions: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled target that has a point: severity, where it was drawn, on which series type."""
    check_series_described(coordinates, descriptions)
    joined = long.merge(coordinates, on=_TARGET_KEY, how="inner", validate="one_to_one").merge(
        descriptions, on=_SERIES_KEY, how="left", validate="many_to_one"
    )
    return joined[list(JOINED_COLUMNS)]


# -------------------------------------------------------------------------------------------- the loader


@dataclass
class RsnaData:
    """One split of a dataset in the RSNA layout, validated; `problems` lists its non-fatal quirks."""

    data_dir: Path
    split: Literal["train", "test"]
    labels: pd.DataFrame | None
    coordinates: pd.DataFrame | None
    descriptions: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    has_images: bool = False

    @property
    def image_dir(self) -> Path:
        return self.data_dir / f"{self.split}_images"

    def series_folder(self, study_id: int, series_id: int) -> Path:
        """Where the DICOM files of one series live: <split>_images/<study_id>/<series_id>."""
        return self.image_dir / str(int(study_id)) / str(int(series_id))

    def study_ids(self) -> list[int]:
        """Every study of the split (described or labelled), ascending."""
        ids = set(self.descriptions["study_id"].tolist())
        if self.labels is not None:
            ids.update(self.labels["study_id"].tolist())
        return sorted(ids)


def load_rsna(data_dir: str | os.PathLike, split: Literal["train", "test"] = "train") -> RsnaData:
    """Read and cross-check one split's CSVs (and list its image folders when present).

    Fatal inconsistencies raise DataError; quirks go to `RsnaData.problems`. Works on the CSVs alone: then
    `has_images` is False and an 'images_absent' problem says so.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder; pass the folder holding train.csv and the images")
    descriptions = read_series_descriptions(data_dir / descriptions_file(split))
    data = RsnaData(data_dir, split, None, None, descriptions)
    data.problems.extend(_description_problems(descriptions))
    if split == "train":
        data.labels = read_train_labels(data_dir / TRAIN_LABELS)
        data.coordinates = read_label_coordinates(data_dir / COORDINATES)
        check_series_described(data.coordinates, descriptions)
        data.problems.extend(_label_problems(data.labels, data.coordinates, descriptions))
    data.has_images = data.image_dir.is_dir()
    if data.has_images:
        data.problems.extend(_image_problems(data.image_dir, descriptions))
    else:
        data.problems.append(
            Problem("images_absent", f"no {split}_images/ folder: CSV side only", file=f"{split}_images")
        )
    return data


# ---------------------------------------------------------------------------------------------- problems


def _grouped_problems(
    frame: pd.DataFrame,
    kind: str,
    file: str,
    describe: Callable[[tuple, pd.DataFrame], str],
    by: Iterable[str] = ("study_id",),
) -> list[Problem]:
    """One Problem per group of `frame` rows; `describe(key, rows)` writes its message."""
    by = list(by)
    return [
        Problem(
            kind,
            describe(key, rows),
            file=file,
            study_id=int(rows["study_id"].iat[0]),
            series_id=int(rows["series_id"].iat[0]) if "series_id" in by else None,
        )
        for key, rows in frame.groupby(by, sort=True)
    ]


def _targets(rows: pd.DataFrame) -> str:
    return ", ".join(rows["condition"] + "_" + rows["level"])


def _description_problems(descriptions: pd.DataFrame) -> list[Problem]:
    """Unknown series types, several series of one type in a study, and studies missing a type."""
    file = descriptions.attrs["file"]
    known = descriptions["series_description"].isin(vocab.SERIES_TYPES)
    problems = [
        Problem(
            "unknown_series_description",
            f"{_at(descriptions, i, 'series_description')}: {row.series_description!r} is not one of "
            f"{', '.join(vocab.SERIES_TYPES)}",
            file=file,
            study_id=int(row.study_id),
            series_id=int(row.series_id),
        )
        for i, row in descriptions[~known].iterrows()
    ]
    typed = descriptions[known]
    count = typed.groupby(["study_id", "series_description"])["series_id"].transform("size")
    problems += _grouped_problems(
        typed[count > 1],
        "several_series_of_type",
        file,
        lambda key, rows: (
            f"study {key[0]} has {len(rows)} {key[1]} series ({', '.join(map(str, rows['series_id']))})"
        ),
        by=("study_id", "series_description"),
    )
    present = pd.crosstab(descriptions["study_id"], descriptions["series_description"])
    present = present.reindex(columns=list(vocab.SERIES_TYPES), fill_value=0)
    lacking = present.eq(0).to_numpy()
    problems += [
        Problem(
            "missing_series_type",
            f"study {study} has no {', '.join(np.array(vocab.SERIES_TYPES)[row])} series",
            file=file,
            study_id=int(study),
        )
        for study, row in zip(present.index, lacking, strict=True)
        if row.any()
    ]
    return problems


def _label_problems(
    labels: pd.DataFrame, coordinates: pd.DataFrame, descriptions: pd.DataFrame
) -> list[Problem]:
    """Blank labels, points on an unexpected series type, labels without a point, points without a label."""
    blank = labels.set_index("study_id")[list(vocab.LABEL_COLUMNS)].isna()
    blank = blank[blank.any(axis=1)]
    problems = [
        Problem(
            "blank_label",
            f"study {study} has {int(row.sum())} blank label{'s' if row.sum() > 1 else ''}: "
            f"{', '.join(row.index[row])}; these targets cannot be trained on or scored",
            file=labels.attrs.get("file", TRAIN_LABELS),
            study_id=int(study),
        )
        for study, row in blank.iterrows()
    ]

    drawn = coordinates.merge(descriptions, on=_SERIES_KEY, how="left")
    expected = drawn["condition"].map(vocab.CONDITION_SERIES)
    odd = drawn[expected.ne(drawn["series_description"]).to_numpy()]
    problems += _grouped_problems(
        odd,
        "unexpected_series_type",
        coordinates.attrs.get("file", COORDINATES),
        lambda key, rows: (
            f"study {key[0]}: {key[2]} at {', '.join(rows['level'])} drawn on series {key[1]} "
            f"({rows['series_description'].iat[0]}); expected {vocab.CONDITION_SERIES[key[2]]}"
        ),
        by=("study_id", "series_id", "condition"),
    )

    both = labels_long(labels).merge(coordinates[_TARGET_KEY], on=_TARGET_KEY, how="outer", indicator=True)
    problems += _grouped_problems(
        both[both["_merge"] == "left_only"],
        "label_without_coordinate",
        labels.attrs.get("file", TRAIN_LABELS),
        lambda key, rows: f"study {key[0]}: {len(rows)} labelled target(s) without a point: {_targets(rows)}",
    )
    problems += _grouped_problems(
        both[both["_merge"] == "right_only"],
        "coordinate_without_label",
        coordinates.attrs.get("file", COORDINATES),
        lambda key, rows: f"study {key[0]}: {len(rows)} point(s) without a label: {_targets(rows)}",
    )
    return problems


def _image_problems(image_dir: Path, descriptions: pd.DataFrame) -> list[Problem]:
    """Image folders nobody describes, and described series whose folder is missing."""
    folders = {
        (study.name, series.name)
        for study in os.scandir(image_dir)
        if study.is_dir()
        for series in os.scandir(study.path)
        if series.is_dir()
    }
    described = set(
        zip(descriptions["study_id"].astype(str), descriptions["series_id"].astype(str), strict=True)
    )
    return [
        Problem(
            "undescribed_image_folder",
            f"{image_dir.name}/{study}/{series} is not in {descriptions.attrs['file']}; it is ignored",
            file=f"{image_dir.name}/{study}/{series}",
            study_id=int(study) if study.isdigit() else None,
            series_id=int(series) if series.isdigit() else None,
        )
        for study, series in sorted(folders - described)
    ] + [
        Problem(
            "missing_image_folder",
            f"{image_dir.name}/{study}/{series} (described in {descriptions.attrs['file']}) does not exist",
            file=f"{image_dir.name}/{study}/{series}",
            study_id=int(study),
            series_id=int(series),
        )
        for study, series in sorted(described - folders)
    ]
