"""Submissions (row_id, normal_mild, moderate, severe): read a CSV and validate any submission frame.

Errors are DataErrors naming the file and line (as an editor shows it: header = line 1), or the row of an
in-memory frame, and say what to fix. Same convention as spinegrade.data.tables: a frame read from a file
keeps its data rows' index (line = index + 2) and records the file in `frame.attrs["file"]`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.errors import DataError
from spinegrade.vocab import SEVERITIES, TARGETS, parse_row_id

SUBMISSION_COLUMNS = ("row_id", *SEVERITIES)
PARSED_COLUMNS = ("row_id", "study_id", "condition", "level", *SEVERITIES)
_TARGET_OF_SUFFIX = {f"{c}_{lv}": (c, lv) for c, lv in TARGETS}
_EXAMPLE = "44036939_spinal_canal_stenosis_l1_l2"


def _source(frame: pd.DataFrame) -> str:
    return frame.attrs.get("file", "submission")


def _where(frame: pd.DataFrame, index: int) -> str:
    """'sub.csv line 7' for a frame read from a file, 'submission row 5' for one built in memory."""
    if "file" in frame.attrs:
        return f"{frame.attrs['file']} line {int(index) + 2}"
    return f"submission row {index}"


def _show(value: object) -> str:
    """A cell as the user wrote it: 'abc', -0.2, inf or 'a blank cell'."""
    if pd.isna(value):
        return "a blank cell"
    return repr(value.item() if isinstance(value, np.generic) else value)


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a submission CSV; returns validate_submission's frame (see there)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path} not found; pass a submission CSV with columns {','.join(SUBMISSION_COLUMNS)}"
        )
    try:
        frame = pd.read_csv(path, dtype={"row_id": str}, skip_blank_lines=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"{path} is empty; expected a header line ({','.join(SUBMISSION_COLUMNS)}) "
            "and one line per target"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV file: {exc}") from exc
    frame.columns = frame.columns.str.strip()
    frame = frame.loc[frame.notna().any(axis=1)]  # blank lines: dropped, their line numbers kept
    frame.attrs["file"] = str(path)
    return validate_submission(frame)


def _parse_row_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """Row ids -> DataFrame[row_id (stripped), study_id, condition, level]; DataError at the first bad one.

    Vectorised with numpy.strings (numpy >= 2.2): split at the first '_', check the study id is 1-18 ASCII
    digits, and look the few distinct suffixes up in vocab.TARGETS.
    """
    present = frame["row_id"].notna().to_numpy()
    text = np.strings.strip(frame["row_id"].to_numpy(dtype=str))
    study, _, suffix = np.strings.partition(text, "_")
    digits = np.strings.str_len(np.strings.strip(study, "0123456789")) == 0
    digits &= (np.strings.str_len(study) > 0) & (np.strings.str_len(study) <= 18)
    codes, suffixes = pd.factorize(suffix)
    targets = [_TARGET_OF_SUFFIX.get(s, (None, None)) for s in suffixes]
    condition = np.array([c for c, _ in targets], dtype=object)[codes]
    ok = present & digits & pd.notna(condition)
    if not ok.all():
        i = frame.index[~ok][0]
        value = frame.at[i, "row_id"]
        try:
            parse_row_id(value)
            reason = f"row_id {value!r} is not '<study_id>_<condition>_<level>' with an ASCII-digit study id"
        except ValueError as exc:
            reason = "blank row_id" if pd.isna(value) else str(exc)
        raise DataError(
            f"{_where(frame, i)}: {reason}; row ids look like {_EXAMPLE!r} "
            f"({int((~ok).sum())} malformed row id(s) in all)"
        )
    return pd.DataFrame(
        {
            "row_id": text.astype(object),
            "study_id": study.astype(np.int64),
            "condition": condition,
            "level": np.array([lv for _, lv in targets], dtype=object)[codes],
        },
        index=frame.index,
    )


def _probabilities(frame: pd.DataFrame, column: str) -> pd.Series:
    """A probability column as float64; DataError at the first cell that is not a finite number >= 0."""
    values = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    finite = np.isfinite(values.to_numpy())
    bad = ~finite | (np.nan_to_num(values.to_numpy()) < 0)
    if bad.any():
        i = frame.index[bad][0]
        raw = frame.at[i, column]
        what = f"{_show(raw)} is not a finite number" if not finite[bad][0] else f"{_show(raw)} is negative"
        raise DataError(
            f"{_where(frame, i)}, column '{column}': {what}; probabilities must be finite numbers >= 0 "
            f"({int(bad.sum())} bad cell(s) in this column)"
        )
    return values


def validate_submission(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a submission frame and parse its row ids.

    Requires the columns row_id, normal_mild, moderate, severe, at least one row, well-formed unique row ids
    and finite non-negative probabilities (rows need not sum to 1: scoring renormalises them, with a
    warning). Returns DataFrame[row_id, study_id, condition, level, normal_mild, moderate, severe] with the
    input's index and attrs.
    """
    missing = [c for c in SUBMISSION_COLUMNS if c not in frame.columns]
    if missing:
        where = f"{_source(frame)} line 1" if "file" in frame.attrs else _source(frame)
        raise DataError(
            f"{where}: missing column(s) {', '.join(repr(c) for c in missing)}; the header must name "
            f"{','.join(SUBMISSION_COLUMNS)} (found: {','.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise DataError(f"{_source(frame)} has a header but no prediction rows")
    parsed = _parse_row_ids(frame)
    for column in SEVERITIES:
        parsed[column] = _probabilities(frame, column)
    repeat = parsed["row_id"].duplicated().to_numpy()
    if repeat.any():
        i = parsed.index[repeat][0]
        first = parsed.index[(parsed["row_id"] == parsed.at[i, "row_id"]).to_numpy()][0]
        first_at = f"line {int(first) + 2}" if "file" in frame.attrs else f"row {first}"
        raise DataError(
            f"{_where(frame, i)}: row_id {parsed.at[i, 'row_id']!r} repeats {first_at}; keep one row per "
            f"target ({int(repeat.sum())} repeated row id(s) in all)"
        )
    parsed.attrs.update(frame.attrs)
    return parsed
