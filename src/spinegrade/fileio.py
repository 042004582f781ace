"""Files written all or nothing: a temporary name in the same folder, then a rename into place."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file under a temporary name in the same folder, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """CSV without the index, written to a temporary name beside `path`, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, frame.to_csv(index=False))
