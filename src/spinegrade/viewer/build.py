"""Write the study pages and the index for a folder of `predict`'s per-study JSON (`spinegrade view`).

Each study is read again from the folders its JSON records (or from --images), one study in memory at a
time; a study whose page cannot be made is listed in the index with the reason and the others go on. With
`resume`, a page written after its JSON (and the label files) is kept: its summary for the index is read
back from the page's head.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

from spinegrade.errors import DataError
from spinegrade.fileio import write_atomic
from spinegrade.prediction.results import StudyResult
from spinegrade.prediction.studies import StudyPlan, read_study
from spinegrade.viewer.index import index_page
from spinegrade.viewer.page import DISPLAY_SIDE, SUMMARY_ID, PageSummary, study_page
from spinegrade.viewer.truth import Truth

DETAILS: str = "studies"  # predict's default folder for the per-study JSON, beside submission.csv
VIEW: str = "view"  # the pages' default folder, inside the JSON folder


class ViewWarning(UserWarning):
    """A study's page could not be written (listed in the index with the reason)."""


def details_folder(pred_dir: str | os.PathLike) -> Path:
    """The folder of per-study JSON: PRED_DIR itself when it holds <study_id>.json, else PRED_DIR/studies."""
    pred_dir = Path(pred_dir)
    for folder in (pred_dir, pred_dir / DETAILS):
        if folder.is_dir() and any(p.stem.isdigit() for p in folder.glob("*.json")):
            return folder
    raise DataError(
        f"{pred_dir} holds no per-study <study_id>.json (nor does {pred_dir / DETAILS}); "
        "pass the folder `spinegrade predict` wrote them to (--details, default: beside the submission)"
    )


def load_result(path: Path) -> StudyResult:
    """One per-study JSON written by predict; DataError naming the file when it is not one."""
    try:
        return StudyResult.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a study written by `spinegrade predict` ({exc})") from exc


def study_plan(result: StudyResult, images: Path | None = None) -> StudyPlan:
    """Where to read the study's graded series again: `images`/<study_id>/<series_id> when given, else the
    folders predict recorded."""
    series = []
    for kind, ids in result.series.items():
        for series_id in map(str, ids):
            folder = images / str(result.study_id) / series_id if images else result.folders.get(series_id)
            if folder is None:
                raise DataError(
                    f"study {result.study_id}: no folder recorded for series {series_id} (graded by an older "
                    "spinegrade); pass the image folder with --images"
                )
            series.append((kind, Path(folder)))
    return StudyPlan(result.study_id, tuple(series))


def reusable_page(page: Path, sources: list[Path]) -> PageSummary | None:
    """The summary carried by `page` when it was written after every one of `sources`, else None."""
    if not page.is_file() or any(page.stat().st_mtime_ns < s.stat().st_mtime_ns for s in sources):
        return None
    with page.open(encoding="utf-8") as f:
        head = f.read(16384)
    found = re.search(rf'<script type="application/json" id="{SUMMARY_ID}">(.*?)</script>', head, re.S)
    try:
        return PageSummary.from_dict(json.loads(found.group(1))) if found else None
    except (ValueError, TypeError, KeyError):
        return None


def write_views(
    pred_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    labels: str | os.PathLike | None = None,
    coords: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    max_side: int = DISPLAY_SIDE,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Write OUT/<study_id>.html for every study graded in PRED_DIR and OUT/index.html; returns the index.

    OUT defaults to <JSON folder>/view. `labels` (train.csv format) and `coords` (train_label_coordinates
    format) add the true grades, the radiologists' points and the losses. `resume` keeps the pages newer
    than their JSON and the label files (an interrupted run goes on where it stopped; same options assumed).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    details = details_folder(pred_dir)
    out = Path(out) if out is not None else details / VIEW
    out.mkdir(parents=True, exist_ok=True)
    if coords is not None and labels is None:
        raise DataError("--coords needs --labels (the points are shown with the true grades)")
    truth = Truth.read(labels, coords) if labels is not None else None
    files = sorted((p for p in details.glob("*.json") if p.stem.isdigit()), key=lambda p: int(p.stem))
    pages: list[PageSummary] = []
    failed: dict[int, str] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("writing study pages", total=len(files))
        sources = [Path(f) for f in (labels, coords) if f is not None]
        for path in files:
            kept = reusable_page(out / f"{path.stem}.html", [path, *sources]) if resume else None
            if kept is not None:
                pages.append(kept)
                bar.update(task, advance=1, description=f"kept the page of study {path.stem}")
                continue
            try:
                result = load_result(path)
                study = read_study(study_plan(result, Path(images) if images is not None else None))
                html, summary = study_page(result, study, truth, max_side=max_side)
                del study  # one study's images in memory at a time
                write_atomic(out / summary.page, html)
                pages.append(summary)
            except Exception as exc:  # one study's odd data must not stop the others' pages
                failed[int(path.stem)] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"{path}: no page written: {exc}", ViewWarning, stacklevel=2)
            bar.update(task, advance=1, description=f"page of study {path.stem}")
    index = out / "index.html"
    write_atomic(index, index_page(pages, failed))
    return index
