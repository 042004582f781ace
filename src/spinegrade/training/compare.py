"""Train a grid of architectures x imbalance methods x folds and compare them (comparison.csv / .md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from spinegrade.crops.cache import CropCache
from spinegrade.evaluation.report import _md_table
from spinegrade.fileio import write_atomic
from spinegrade.training.imbalance import Imbalance
from spinegrade.training.runs import TrainConfig, write_csv
from spinegrade.training.train import train_run
from spinegrade.vocab import SEVERITIES

COMPARISON_COLUMNS: Final = (
    "arch",
    "imbalance",
    "folds",
    "score",
    "score_raw",
    "prior_score",
    "accuracy",
    "macro_f1",
    *(f"auc_{s}" for s in SEVERITIES),
    "spinal",
    "foraminal",
    "subarticular",
    "any_severe_spinal",
)
# Printed columns (all of COMPARISON_COLUMNS go to comparison.csv/.md) and their short headers.
TABLE_COLUMNS: Final = {
    "arch": "arch",
    "imbalance": "imbalance",
    "folds": "folds",
    "score": "score",
    "score_raw": "raw",
    "prior_score": "prior",
    "accuracy": "acc",
    "macro_f1": "F1",
    "auc_severe": "AUC sev",
}


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One comparison row from the val_score.json of one or more folds (means over folds)."""
    row: dict[str, Any] = {"arch": results[0]["arch"], "imbalance": results[0]["imbalance"]}
    row["folds"] = ",".join(str(r["fold"]) for r in results)
    for column in COMPARISON_COLUMNS[3:]:
        values = [v for r in results if (v := r.get(column)) is not None]
        row[column] = float(np.mean(values)) if len(values) == len(results) else None
    return row


def comparison_table(frame: pd.DataFrame, title: str) -> Table:
    """A rich table of comparison rows (lower score is better; best score in bold)."""
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(column, justify="left" if column in ("arch", "imbalance", "folds") else "right")
    best = frame["score"].min()
    for row in frame.itertuples(index=False):
        cells = [
            f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else "n/a" if v is None else str(v)
            for v in row
        ]
        if row.score == best:
            cells = [f"[bold]{c}[/bold]" for c in cells]
        table.add_row(*cells)
    return table


def train(
    cache_path: Path,
    out: Path,
    config: TrainConfig,
    *,
    archs: Sequence[str] | None = None,
    imbalances: Sequence[Imbalance] | None = None,
    folds: Sequence[int] | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> pd.DataFrame:
    """Train every architecture x imbalance method x fold; returns one comparison row per combination.

    One combination and one fold train into `out`; several folds into out/fold<i>; several combinations
    into out/<arch>__<imbalance>[/fold<i>], then out/comparison.csv and comparison.md are written.
    """
    console = console or Console(soft_wrap=True)
    cache = CropCache.open(cache_path)
    archs = list(archs or [config.arch])
    methods = [m.name for m in imbalances] if imbalances else [config.imbalance]
    folds = list(folds) if folds is not None else [config.fold]
    grid = len(archs) * len(methods) > 1
    rows = []
    for arch in archs:
        for method in methods:
            combo_dir = out / f"{arch}__{method}" if grid else out
            results = [
                train_run(
                    cache,
                    combo_dir / f"fold{fold}" if len(folds) > 1 else combo_dir,
                    replace(config, arch=arch, imbalance=method, fold=fold),
                    resume=resume,
                    console=console,
                )
                for fold in folds
            ]
            if not all(results):  # a DDP rank other than 0
                continue
            rows.append(summarise(results))
            if len(folds) > 1:
                write_csv(combo_dir / "folds.csv", pd.DataFrame([summarise([r]) for r in results]))
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if rows and grid:
        write_csv(out / "comparison.csv", frame)
        title = "# Classifier comparison (validation challenge score, lower is better)"
        write_atomic(out / "comparison.md", f"{title}\n\n{_md_table(frame)}\n")
    if rows:
        shown = frame[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
        console.print(comparison_table(shown, f"validation fold(s) {','.join(map(str, folds))}"))
    return frame
