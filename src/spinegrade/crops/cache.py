"""The crop cache on disk: crops.npy (float16 (N, k, S, S)) + index.csv (row i <-> crops[i]) + meta.json.

Only numpy/CSV/JSON (no pickle); crops are memory-mapped so a cache larger than RAM can be read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from spinegrade.errors import DataError
from spinegrade.fileio import write_atomic

CROPS_FILE: Final = "crops.npy"
INDEX_FILE: Final = "index.csv"
META_FILE: Final = "meta.json"
INDEX_COLUMNS: Final = (
    "study_id",
    "condition",
    "level",
    "series_id",
    "instance_number",
    "x",
    "y",
    "severity",
    "fold",
)
# Written when present: `instances`, the instance numbers (space separated) that fill a crop's k channels,
# and `view`, the plane a crop was cut in (crops.views; absent: every crop in its condition's own series).
OPTIONAL_INDEX_COLUMNS: Final = ("instances", "view")
_INDEX_DTYPES: Final = {
    "study_id": "int64",
    "series_id": "int64",
    "instance_number": "int64",
    "severity": "int8",
    "instances": "str",
}


@dataclass(frozen=True)
class CropCache:
    """A finished cache: `.crops` (read-only memmap), `.index` (DataFrame), `.meta` (dict)."""

    path: Path
    crops: np.ndarray
    index: pd.DataFrame
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> CropCache:
        """Open and validate a cache folder; DataError names the file at fault and how to fix it."""
        path = Path(path)
        files = {name: path / name for name in (CROPS_FILE, INDEX_FILE, META_FILE)}
        for file in files.values():
            if not file.is_file():
                raise DataError(f"{file} is missing: not a finished crop cache (run `spinegrade prepare`)")
        try:
            meta = json.loads(files[META_FILE].read_text())
        except json.JSONDecodeError as e:
            raise DataError(
                f"{files[META_FILE]} is not valid JSON ({e}); re-run `spinegrade prepare`"
            ) from None
        try:
            crops = np.load(files[CROPS_FILE], mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{files[CROPS_FILE]} is not a readable .npy array ({e})") from None
        index = pd.read_csv(files[INDEX_FILE], dtype=_INDEX_DTYPES)
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise DataError(f"{files[INDEX_FILE]} lacks column(s) {', '.join(missing)}")
        expected = (len(index), meta.get("k"), meta.get("size"), meta.get("size"))
        if crops.dtype != np.float16 or crops.shape != expected:
            raise DataError(
                f"{files[CROPS_FILE]} holds {crops.dtype} {crops.shape}, but {files[INDEX_FILE]} has "
                f"{len(index)} rows and {files[META_FILE]} says k={meta.get('k')}, size={meta.get('size')} "
                f"(expected float16 {expected}); the cache is inconsistent: re-run `spinegrade prepare`"
            )
        return cls(path=path, crops=crops, index=index, meta=meta)


def write_cache(
    path: Path, parts: Iterable[np.ndarray], index: pd.DataFrame, meta: dict[str, Any]
) -> CropCache:
    """Write a cache whose crops arrive in `parts` (in index order), streamed into a memmap, never all in RAM.

    meta.json is removed first and written last, so a cache interrupted while being rewritten is never
    mistaken for a finished one.
    """
    shape = (len(index), int(meta["k"]), int(meta["size"]), int(meta["size"]))
    if shape[0] == 0:
        raise DataError(f"no crops to write into {path}")
    (path / META_FILE).unlink(missing_ok=True)
    tmp = path / (CROPS_FILE + ".tmp")
    crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    start = 0
    for part in parts:
        crops[start : start + len(part)] = part
        start += len(part)
    if start != shape[0]:
        raise DataError(f"{path}: got {start} crops for an index of {shape[0]} rows")
    crops.flush()
    del crops
    os.replace(tmp, path / CROPS_FILE)
    columns = [*INDEX_COLUMNS, *(c for c in OPTIONAL_INDEX_COLUMNS if c in index.columns)]
    write_atomic(path / INDEX_FILE, index.loc[:, columns].to_csv(index=False))
    write_atomic(path / META_FILE, json.dumps(meta, indent=2) + "\n")
    return CropCache.open(path)
