"""`spinegrade inspect`: validate a dataset in the RSNA layout and summarise it (CSV side and image headers).

Works on the phantom and on the real Kaggle download (35 GB: image folders are scanned from their DICOM
headers only, in a thread pool, with a progress bar); with the CSVs alone it reports the CSV side.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import typer

from spinegrade import vocab
from spinegrade.errors import DataError, Problem

if TYPE_CHECKING:
    import pandas as pd

    from spinegrade.data.series import SeriesInfo
    from spinegrade.data.tables import RsnaData

# The files whose presence says a split is there at all (then load_rsna insists on all of its CSVs).
_SPLIT_MARKERS: Final[dict[Literal["train", "test"], tuple[str, ...]]] = {
    "train": ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv", "train_images"),
    "test": ("test_series_descriptions.csv", "test_images"),
}


def inspect_dataset(data_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Validate every split found in `data_dir` and summarise it as a JSON-serialisable dict.

    Keys: data_dir, splits, images (per split: scanned or why not), studies, series_per_type,
    slices_per_series (per split and type: min/median/max), image_sizes ('ROWSxCOLS' -> images),
    series_quirks (per split: series with several stacks, slices set aside, duplicate positions, header
    faults; each also listed in problems),
    labels (labelled/blank counts, per severity), class_counts (condition -> level -> severity -> n),
    coordinates, sample_submission (rows, studies), problem_counts and problems (Problem dicts: something
    was set aside or worked around), note_counts and notes (how series were acquired: angled blocks,
    InstanceNumber against the slice order). Fatal inconsistencies raise DataError.
    """
    from spinegrade.data.tables import SAMPLE_SUBMISSION, load_rsna

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder; pass the folder holding train.csv and train_images/")
    splits = [s for s, names in _SPLIT_MARKERS.items() if any((data_dir / n).exists() for n in names)]
    if not splits:
        raise DataError(
            f"{data_dir} holds no RSNA dataset: none of {', '.join(sum(_SPLIT_MARKERS.values(), ()))} found"
        )
    report: dict[str, Any] = {"data_dir": str(data_dir), "splits": splits}
    for key in ("images", "studies", "series_per_type", "slices_per_series", "image_sizes", "series_quirks"):
        report[key] = {}
    problems: list[Problem] = []
    notes: list[Problem] = []
    test_studies: set[int] | None = None
    for split in splits:
        data = load_rsna(data_dir, split)
        problems += data.problems
        studies = data.study_ids()
        report["studies"][split] = len(studies)
        if split == "test":
            test_studies = set(studies)
        report["series_per_type"][split] = _counts(data.descriptions["series_description"])
        if data.labels is not None and data.coordinates is not None:  # the train split's
            report["labels"], report["class_counts"] = _label_summary(data.labels)
            report["coordinates"] = {
                "points": len(data.coordinates),
                "studies": int(data.coordinates["study_id"].nunique()),
                "series": int(data.coordinates.groupby(["study_id", "series_id"]).ngroups),
            }
        if not data.has_images:
            report["images"][split] = f"no {split}_images/ folder: CSV side only"
            continue
        scanned = _scan(data, progress)
        report["images"][split] = f"{len(scanned)} series folders scanned"
        report["slices_per_series"][split] = _slice_stats(scanned)
        report["image_sizes"][split] = _image_sizes(scanned)
        report["series_quirks"][split] = _series_quirks(scanned)
        problems += _header_problems(data, scanned)
        notes += [n for _, info in scanned for n in info.notes]
    if (data_dir / SAMPLE_SUBMISSION).is_file():
        report["sample_submission"], found = _submission_summary(data_dir / SAMPLE_SUBMISSION, test_studies)
        problems += found
    report["problem_counts"] = _counts(p.kind for p in problems)
    report["problems"] = [p.to_dict() for p in problems]
    report["note_counts"] = _counts(n.kind for n in notes)
    report["notes"] = [n.to_dict() for n in notes]
    return report


def _submission_summary(path: Path, test_studies: set[int] | None) -> tuple[dict[str, int], list[Problem]]:
    """Validate sample_submission.csv; a problem if its studies are not the test split's."""
    from spinegrade.data.tables import read_sample_submission

    submission = read_sample_submission(path)
    studies = {vocab.parse_row_id(r)[0] for r in submission["row_id"]}
    summary = {"rows": len(submission), "studies": len(studies)}
    if test_studies is None or studies == test_studies:
        return summary, []
    message = (
        f"{path.name} covers {len(studies)} studies, the test split {len(test_studies)}: "
        f"{len(studies - test_studies)} only in the submission, {len(test_studies - studies)} only described"
    )
    return summary, [Problem("submission_study_mismatch", message, file=path.name)]


def _counts(values: Iterable[str]) -> dict[str, int]:
    """Occurrences of each value, most common first, as plain ints."""
    return dict(Counter(values).most_common())


def _label_summary(labels: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """Totals per severity (with blanks) and the counts per condition, level and severity."""
    cells = labels[list(vocab.LABEL_COLUMNS)]
    per_column = {column: cells[column].value_counts() for column in vocab.LABEL_COLUMNS}
    class_counts = {
        condition: {
            level: {s: int(per_column[f"{condition}_{level}"].get(s, 0)) for s in vocab.SEVERITY_LABELS}
            for level in vocab.LEVELS
        }
        for condition in vocab.CONDITIONS
    }
    totals = {s: int((cells == s).to_numpy().sum()) for s in vocab.SEVERITY_LABELS}
    summary = {
        "studies": len(labels),
        "labelled": sum(totals.values()),
        "blank": int(cells.isna().to_numpy().sum()),
        "severity": totals,
    }
    return summary, class_counts


def _scan(data: RsnaData, progress: bool) -> list[tuple[Any, SeriesInfo]]:
    """Scan the headers of every described series that has a folder: (descriptions row, SeriesInfo) pairs."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.progress import Progress

    from spinegrade.data.series import scan_series

    jobs = [
        (row, folder)
        for row in data.descriptions.itertuples(index=False)
        if (folder := data.series_folder(row.study_id, row.series_id)).is_dir()
    ]
    scanned = []
    with (
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
        Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task(f"scanning {data.split}_images", total=len(jobs))
        for (row, _), info in zip(jobs, pool.map(scan_series, [folder for _, folder in jobs]), strict=True):
            scanned.append((row, info))
            bar.advance(task)
    return scanned


def _slice_stats(scanned: list[tuple[Any, SeriesInfo]]) -> dict[str, dict[str, float]]:
    """Slices per series by series type: number of series, min, median and max."""
    import numpy as np

    by_type: dict[str, list[int]] = {}
    for row, info in scanned:
        by_type.setdefault(row.series_description, []).append(info.n_slices)
    return {
        kind: {"series": len(n), "min": int(np.min(n)), "median": float(np.median(n)), "max": int(np.max(n))}
        for kind, n in sorted(by_type.items())
    }


def _series_quirks(scanned: list[tuple[Any, SeriesInfo]]) -> dict[str, int]:
    """Counts of what the reader works around: series of several stacks (angled blocks), slices set
    aside (localisers, foreign series, partial geometry, duplicates), duplicate positions, header faults."""
    from spinegrade.data.series import SET_ASIDE_KINDS

    kinds = Counter(p.kind for _, info in scanned for p in info.problems)
    return {
        "series_with_several_stacks": sum(info.n_stacks > 1 for _, info in scanned),
        "slices_set_aside": sum(kinds[k] for k in SET_ASIDE_KINDS),
        "duplicate_positions": kinds["duplicate_position"],
        "header_faults": kinds["header_fault"],
    }


def _image_sizes(scanned: list[tuple[Any, SeriesInfo]]) -> dict[str, int]:
    """Images per size, 'ROWSxCOLS' -> count, most common first."""
    sizes = sum((info.sizes for _, info in scanned), Counter())
    return {f"{r}x{c}": n for (r, c), n in sizes.most_common()}


def _header_problems(data: RsnaData, scanned: list[tuple[Any, SeriesInfo]]) -> list[Problem]:
    """The scan's own problems, headers that disagree with the CSV, and points off their image."""
    import pandas as pd

    file = data.descriptions.attrs["file"]
    problems = [p for _, info in scanned for p in info.problems]
    problems += [
        Problem(
            "series_description_mismatch",
            f"series {row.series_id} of study {row.study_id}: DICOM SeriesDescription {info.description!r} "
            f"but {file} says {row.series_description!r}",
            file=file,
            study_id=int(row.study_id),
            series_id=int(row.series_id),
        )
        for row, info in scanned
        if info.description is not None and info.description != row.series_description
    ]
    if data.coordinates is None or not scanned:
        return problems
    key = ["study_id", "series_id", "instance_number"]
    images = pd.DataFrame(
        [
            (row.study_id, row.series_id, n, info.rows, info.cols)
            for row, info in scanned
            for n in info.instance_numbers
        ],
        columns=[*key, "rows", "cols"],
    ).drop_duplicates(key)
    points = data.coordinates.merge(images[key[:2]].drop_duplicates(), on=key[:2])
    points = points.merge(images, on=key, how="left")
    missing = points["rows"].isna()
    inside = points["x"].between(0, points["cols"] - 1) & points["y"].between(0, points["rows"] - 1)
    file = data.coordinates.attrs["file"]
    for row in points[missing].itertuples():
        problems.append(
            Problem(
                "instance_not_found",
                f"study {row.study_id}: {row.condition}_{row.level} is drawn on instance "
                f"{row.instance_number} of series {row.series_id}, which has no such image",
                file=file,
                study_id=int(row.study_id),
                series_id=int(row.series_id),
            )
        )
    for row in points[~missing & ~inside].itertuples():
        problems.append(
            Problem(
                "point_outside_image",
                f"study {row.study_id}: {row.condition}_{row.level} at x={row.x:.1f}, y={row.y:.1f} lies "
                f"outside its {row.rows:.0f}x{row.cols:.0f} image (instance {row.instance_number})",
                file=file,
                study_id=int(row.study_id),
                series_id=int(row.series_id),
            )
        )
    return problems


def print_report(report: dict[str, Any]) -> None:
    """Print inspect_dataset's report as rich tables on stdout (plain-text cells: no markup from the data)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def table(title: str, text: tuple[str, ...], numbers: tuple[str, ...]) -> Table:
        t = Table(title=Text(title))
        for column in text:  # long words (paths, ids) fold: never cut at 80 columns (a log, a pipe)
            t.add_column(column, overflow="fold")
        for column in numbers:
            t.add_column(column, justify="right")
        return t

    def row(t: Table, *cells: object) -> None:
        t.add_row(*(Text(str(c)) for c in cells))

    console = Console()
    overview = table(f"spinegrade inspect: {report['data_dir']}", ("split", "images"), ("studies",))
    series = table("series per type", ("split", "type"), ("series", "slices min/median/max"))
    for split in report["splits"]:
        row(overview, split, report["images"][split], report["studies"][split])
        slices = report["slices_per_series"].get(split, {})
        for kind, n in report["series_per_type"][split].items():
            s = slices.get(kind)
            row(series, split, kind, n, f"{s['min']}/{s['median']:g}/{s['max']}" if s else "-")
    console.print(overview, series)
    for split, sizes in report["image_sizes"].items():
        console.print(Text(f"{split} images per size (rows x cols): {sizes}"))
    for split, quirks in report["series_quirks"].items():
        console.print(Text(f"{split} series quirks: " + ", ".join(f"{k} {n}" for k, n in quirks.items())))
    if "sample_submission" in report:
        submission = report["sample_submission"]
        console.print(
            Text(f"sample_submission.csv: {submission['rows']} rows, {submission['studies']} studies")
        )
    if "class_counts" in report:
        labels = report["labels"]
        severity = ", ".join(f"{s} {n}" for s, n in labels["severity"].items())
        console.print(
            Text(f"train labels: {labels['labelled']} labelled ({severity}), {labels['blank']} blank")
        )
        classes = table("train labels per target", ("condition", "level"), tuple(labels["severity"]))
        for condition, per_level in report["class_counts"].items():
            for level, counts in per_level.items():
                row(classes, condition, level, *counts.values())
        console.print(classes)
    for key, title in (
        ("note", "notes (how series were acquired, nothing to fix; all of them with --json)"),
        ("problem", "problems (not fatal; all of them with --json)"),
    ):
        found = report[f"{key}s"]
        if not found:
            console.print(f"no {key}s found")
            continue
        listed = table(title, ("kind", "first example"), ("count",))
        for kind, count in report[f"{key}_counts"].items():
            row(listed, kind, next(p["message"] for p in found if p["kind"] == kind), count)
        console.print(listed)


def inspect_command(
    data_dir: Path = typer.Argument(..., help="Folder in the RSNA layout (train.csv, train_images/ ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print the full report as JSON on stdout."),
) -> None:
    """Validate a dataset in the RSNA 2024 layout and summarise it: studies, series, slices, labels, problems.

    Exits 0 when the data is usable (quirks are listed as problems), 2 with the reason when it is not.

    Example: spinegrade inspect ~/data/rsna-2024-lumbar-spine-degenerative-classification
    """
    try:
        report = inspect_dataset(data_dir)
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
