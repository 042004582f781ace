"""`spinegrade merge`: join the partial submissions of `predict --shard i/n` into one, every row once.

Each part is read and validated as a submission (evaluation.submission); a row id in two parts, a study
with fewer than its 25 rows, or (with the sample submission) a sample row that no part has or a row the
sample does not ask for, is a DataError naming the row and the file(s).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from spinegrade.errors import DataError
from spinegrade.evaluation.submission import SUBMISSION_COLUMNS, read_submission
from spinegrade.fileio import write_csv_atomic
from spinegrade.vocab import TARGETS


def merge_submissions(
    parts: Sequence[str | os.PathLike], out: str | os.PathLike, sample: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Concatenate the part CSVs (in the sample's row order when given, else part by part), check that
    every row is there once, write `out` atomically and return the merged frame."""
    if not parts:
        raise DataError("no partial submission to merge; pass the CSVs that `predict --shard` wrote")
    frames = []
    for path in parts:
        frame = read_submission(path)
        frames.append(frame.assign(file=str(path)))
    merged = pd.concat(frames, ignore_index=True)
    repeated = merged[merged["row_id"].duplicated(keep=False)]
    if len(repeated):
        row_id = repeated["row_id"].iloc[0]
        files = " and ".join(repeated.loc[repeated["row_id"] == row_id, "file"])
        raise DataError(f"row_id {row_id!r} is in {files}: shards must not overlap (same --shard twice?)")
    counts = merged.groupby("study_id")["row_id"].size()
    short = counts[counts < len(TARGETS)]
    if len(short):
        study = int(short.index[0])
        rows = merged[merged["study_id"] == study]
        have = set(zip(rows["condition"], rows["level"], strict=True))
        missing = next(f"{c}_{lv}" for c, lv in TARGETS if (c, lv) not in have)
        raise DataError(
            f"study {study} ({rows['file'].iloc[0]}) has {len(rows)} of {len(TARGETS)} rows; "
            f"{study}_{missing} is missing"
        )
    if sample is not None:
        wanted = read_submission(sample)["row_id"]
        absent = wanted[~wanted.isin(merged["row_id"])]
        if len(absent):
            raise DataError(
                f"{sample} row {absent.iloc[0]!r} (and {len(absent) - 1} more) is in no part: "
                "a shard is missing"
            )
        extra = merged.loc[~merged["row_id"].isin(wanted), ["row_id", "file"]]
        if len(extra):
            raise DataError(f"{extra['file'].iloc[0]} row {extra['row_id'].iloc[0]!r} is not in {sample}")
        merged = merged.set_index("row_id").loc[wanted].reset_index()
    result = merged[list(SUBMISSION_COLUMNS)]
    write_csv_atomic(result, Path(out))
    return result
