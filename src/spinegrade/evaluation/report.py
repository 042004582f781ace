"""The evaluation report: REPORT_DIR/report.json (every number), report.md and report.html (tables; the
HTML page also shows the figures and links each study to its page from `spinegrade view` when there is one)
and PNG figures.

The folder is written under a temporary name next to REPORT_DIR and renamed at the end, so a failure
leaves nothing half-written and an existing REPORT_DIR is replaced only when everything succeeded.
Figures use matplotlib's object API (Figure + Agg canvas), so no global backend is switched.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade import __version__
from spinegrade.errors import DataError
from spinegrade.evaluation.metrics import json_number, metrics_table, subset_metrics
from spinegrade.evaluation.score import EPS, GROUPS, SCORE_PARTS, ScoredRows, level_losses, study_losses
from spinegrade.vocab import CONDITIONS, LEVELS, SEVERITIES, condition_display, level_display

CLASS_NAMES = ("Normal/Mild", "Moderate", "Severe")
FIGURES = {
    "roc_curves.png": "One-vs-rest ROC curves per class, overall and per condition group",
    "confusion_matrix.png": "Confusion matrix (argmax), counts and row-normalised",
    "reliability.png": "Reliability diagram of the top-label confidence (10 bins)",
    "level_losses.png": "Weighted log loss per condition and level",
}


def build_report(
    rows: ScoredRows,
    scores: dict[str, float],
    *,
    counts: dict[str, int] | None = None,
    warnings: Sequence[str] = (),
    inputs: dict[str, str | None] | None = None,
    eps: float = EPS,
) -> dict:
    """Everything the report states, JSON-serialisable: the score and its four parts at the top level, counts,
    warnings, the weighted log loss per condition x level and the per-class metrics (overall, per group,
    per level)."""
    class_counts = np.bincount(rows.severity, minlength=len(SEVERITIES))
    group_counts = np.bincount(rows.group, minlength=len(GROUPS))
    return {
        "score": json_number(scores["score"]),
        **{part: json_number(scores[part]) for part in SCORE_PARTS},
        "counts": {
            **(counts or {}),
            "scored_rows": len(rows),
            "scored_studies": len(np.unique(rows.study_id)),
            "rows_by_group": dict(zip(GROUPS, group_counts.tolist(), strict=True)),
            "rows_by_class": dict(zip(SEVERITIES, class_counts.tolist(), strict=True)),
        },
        "warnings": list(warnings),
        "level_losses": level_losses(rows).to_dict(orient="records"),
        "study_losses": study_losses(rows).to_dict(orient="records"),
        "metrics": subset_metrics(rows),
        "eps": eps,
        "inputs": inputs or {},
        "figures": dict(FIGURES),
        "spinegrade_version": __version__,
    }


# ------------------------------------------------------------------------------------------------ markdown


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _md_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def report_tables(report: dict) -> list[tuple[str, pd.DataFrame]]:
    """The report's tables with their headings, in page order (report.md and report.html show the same)."""
    parts = pd.DataFrame(
        {"part": ["score", *SCORE_PARTS], "value": [report[k] for k in ("score", *SCORE_PARTS)]}
    )
    counts = pd.DataFrame(
        [(k, v) for k, v in report["counts"].items() if not isinstance(v, dict)], columns=["count", "value"]
    )
    losses = pd.DataFrame(report["level_losses"]).pivot(
        index="condition", columns="level", values="weighted_log_loss"
    )
    losses = losses.reindex(index=[c for c in CONDITIONS if c in losses.index], columns=list(LEVELS))
    losses = losses.rename(index=condition_display, columns=level_display).reset_index()
    losses = losses.rename_axis(columns=None)  # no 'level' header row over the table
    losses = losses.astype(object).where(losses.notna(), None)
    overall = report["metrics"]["overall"]
    per_class = pd.DataFrame(
        [
            {"class": name, **values}
            for name, values in zip(CLASS_NAMES, overall["per_class"].values(), strict=True)
        ]
    )
    confusion = pd.DataFrame(overall["confusion_matrix"], columns=[f"pred {c}" for c in CLASS_NAMES])
    confusion.insert(0, "true", CLASS_NAMES)
    return [
        ("Challenge score (weighted log loss, lower is better)", parts),
        ("Counts", counts),
        ("Weighted log loss per condition and level", losses),
        ("Metrics per subset (argmax predictions)", metrics_table(report["metrics"])),
        ("Per class, overall", per_class),
        ("Confusion matrix, overall (rows: true class)", confusion),
    ]


def render_markdown(report: dict) -> str:
    """report.md: the score, counts, warnings, the per-level losses and the per-class metrics as tables."""
    tables = [(f"## {title}", _md_table(frame)) for title, frame in report_tables(report)]
    warnings = [f"- {w}" for w in report["warnings"]] or ["none"]
    notes = [f"- {n}" for n in report["metrics"]["overall"]["notes"]]
    figures = [f"![{text}]({name})" for name, text in report["figures"].items()]
    inputs = report["inputs"]
    return (
        "\n\n".join(
            [
                "# spinegrade evaluation report",
                f"Labels: `{inputs.get('labels', 'n/a')}`; predictions: `{inputs.get('pred', 'n/a')}`",
                *tables[0],
                *tables[1],
                "## Warnings",
                "\n".join(warnings),
                *(part for table in tables[2:5] for part in table),
                *notes,
                *tables[5],
                "## Figures",
                "\n\n".join(figures),
            ]
        )
        + "\n"
    )


_HTML_STYLE = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1f2328}"
    "table{border-collapse:collapse;margin:8px 0 18px}th,td{border:1px solid #d0d7de;padding:4px 8px;"
    "text-align:right}th{background:#f6f8fa}td:first-child{text-align:left}img{max-width:100%}"
    "figure{margin:12px 0 24px}figcaption{color:#57606a}code{background:#f6f8fa;padding:1px 4px}"
)
WORST_STUDIES = 20


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.4f}", border=0)


def render_html(report: dict, study_pages: dict[int, str] | None = None) -> str:
    """report.html: the tables, the figures (PNG files beside it) and the costliest studies, each linked to
    `study_pages[study_id]` (a relative URL of its `spinegrade view` page) when given; the pages' index.html
    is taken to sit beside them."""
    study_pages = study_pages or {}
    index = (
        posixpath.join(posixpath.dirname(next(iter(study_pages.values()))), "index.html")
        if study_pages
        else None
    )
    inputs = report["inputs"]
    sections = [f"<h2>{escape(title)}</h2>{_html_table(frame)}" for title, frame in report_tables(report)]
    warnings = "".join(f"<li>{escape(w)}</li>" for w in report["warnings"]) or "<li>none</li>"
    notes = "".join(f"<p>{escape(n)}</p>" for n in report["metrics"]["overall"]["notes"])
    figures = "".join(
        f'<figure><img src="{escape(name)}" alt="{escape(text)}">'
        f"<figcaption>{escape(text)}</figcaption></figure>"
        for name, text in report["figures"].items()
    )
    worst = []
    for row in report.get("study_losses", [])[:WORST_STUDIES]:
        study = int(row["study_id"])
        page = study_pages.get(study)
        name = f'<a href="{escape(page)}">{study}</a>' if page else str(study)
        worst.append(f"<tr><td>{name}</td><td>{row['n']}</td><td>{row['weighted_log_loss']:.4f}</td></tr>")
    studies = (
        "<h2>Studies with the highest loss</h2>"
        f"<p>Weighted log loss of each study's labelled rows; {len(study_pages)} studies have a page"
        + (f' (<a href="{escape(index)}">all study pages</a>)' if index else "")
        + ".</p>"
        "<table><tr><th>study</th><th>rows</th><th>weighted log loss</th></tr>" + "".join(worst) + "</table>"
    )
    body = "".join(
        [
            "<h1>spinegrade evaluation report</h1>",
            f"<p>Labels: <code>{escape(inputs.get('labels', 'n/a'))}</code>; predictions: "
            f"<code>{escape(inputs.get('pred', 'n/a'))}</code></p>",
            sections[0],
            sections[1],
            f"<h2>Warnings</h2><ul>{warnings}</ul>",
            *sections[2:5],
            notes,
            sections[5],
            studies,
            "<h2>Figures</h2>",
            figures,
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>spinegrade evaluation report</title>"
        f"<style>{_HTML_STYLE}</style></head><body>{body}</body></html>\n"
    )


# ------------------------------------------------------------------------------------------------- figures


def _roc_figure(rows: ScoredRows, path: Path) -> None:
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    subsets = [("All conditions", np.ones(len(rows), dtype=bool))] + [
        (f"{g.capitalize()}", rows.group == i) for i, g in enumerate(GROUPS)
    ]
    fig = Figure(figsize=(16, 4.4), layout="constrained")
    axes = fig.subplots(1, len(subsets), sharey=True)
    for ax, (title, mask) in zip(axes, subsets, strict=True):
        y, p = rows.severity[mask], rows.probs[mask]
        for c, name in enumerate(CLASS_NAMES):
            positive = y == c
            if positive.all() or not positive.any():
                ax.plot([], [], label=f"{name} (AUC n/a: class absent)")
                continue
            fpr, tpr, _ = roc_curve(positive, p[:, c])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positive, p[:, c]):.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
        ax.set(title=f"{title} (n={int(mask.sum())})", xlabel="False positive rate", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("True positive rate")
    fig.suptitle("ROC curves, one class vs the rest")
    fig.savefig(path, dpi=90)


def _confusion_figure(rows: ScoredRows, matrix: list[list[int]], path: Path) -> None:
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, values, title, fmt in (
        (axes[0], counts, "Counts", "{:.0f}"),
        (axes[1], normalised, "Row-normalised (recall on the diagonal)", "{:.2f}"),
    ):
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8)
        for (i, j), v in np.ndenumerate(values):
            color = "white" if v > values.max() / 2 else "black"
            ax.text(j, i, fmt.format(v), ha="center", va="center", color=color)
        ticks = range(len(CLASS_NAMES))
        ax.set(xticks=ticks, yticks=ticks, xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, title=title)
        ax.set(xlabel="Predicted class (argmax)", ylabel="True class")
    fig.suptitle(f"Confusion matrix, all conditions (n={len(rows)})")
    fig.savefig(path, dpi=90)


def _reliability_figure(reliability: dict, ece: float, path: Path) -> None:
    from matplotlib.figure import Figure

    edges = np.asarray(reliability["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    accuracy = np.array([np.nan if a is None else a for a in reliability["accuracy"]])
    confidence = np.array([np.nan if c is None else c for c in reliability["confidence"]])
    fig = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres, np.nan_to_num(accuracy), width=width, edgecolor="black", alpha=0.7, label="accuracy")
    top.plot(confidence, accuracy, "o", color="darkred", label="mean confidence vs accuracy")
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.set(
        title=f"Reliability diagram (top label), ECE = {ece:.4f}", ylabel="Accuracy", xlim=(0, 1), ylim=(0, 1)
    )
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, reliability["count"], width=width, edgecolor="black", color="grey")
    bottom.set(xlabel="Confidence (max probability over Normal/Mild, Moderate, Severe)", ylabel="Rows")
    fig.savefig(path, dpi=90)


def _level_loss_figure(losses: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    table = losses.pivot(index="level", columns="condition", values="weighted_log_loss")
    table = table.reindex(index=list(LEVELS), columns=[c for c in CONDITIONS if c in table.columns])
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(table.columns), 1)
    x = np.arange(len(LEVELS))
    for k, condition in enumerate(table.columns):
        ax.bar(
            x + (k - (len(table.columns) - 1) / 2) * width,
            table[condition],
            width,
            label=condition_display(condition),
        )
    ax.set_xticks(x, [level_display(lv) for lv in LEVELS])
    ax.set(
        title="Weighted log loss per condition and level",
        xlabel="Level",
        ylabel="Weighted log loss (lower is better)",
    )
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)


def write_figures(report: dict, rows: ScoredRows, folder: Path) -> None:
    """The PNG figures listed in FIGURES, into `folder`."""
    overall = report["metrics"]["overall"]
    _roc_figure(rows, folder / "roc_curves.png")
    _confusion_figure(rows, overall["confusion_matrix"], folder / "confusion_matrix.png")
    _reliability_figure(overall["reliability"], overall["ece"], folder / "reliability.png")
    _level_loss_figure(pd.DataFrame(report["level_losses"]), folder / "level_losses.png")


# ------------------------------------------------------------------------------------------------- writing


def study_page_links(
    views: str | os.PathLike | None, out_dir: Path, study_ids: Sequence[int]
) -> dict[int, str]:
    """study_id -> URL of VIEWS/<study_id>.html relative to the report folder, for the pages that exist."""
    if views is None:
        return {}
    views, here = Path(views).resolve(), out_dir.resolve()
    return {
        s: Path(os.path.relpath(views / f"{s}.html", here)).as_posix()
        for s in study_ids
        if (views / f"{s}.html").is_file()
    }


def write_report(
    report: dict, rows: ScoredRows, out_dir: str | os.PathLike, *, views: str | os.PathLike | None = None
) -> Path:
    """Write report.json, report.md, report.html and the figures to `out_dir`, all or nothing; returns
    out_dir. `views`: a folder of study pages (`spinegrade view`) that report.html links to."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} exists and is not a folder; pass a folder for the report (--out)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{tag}")
    staging.mkdir()
    try:
        (staging / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        (staging / "report.md").write_text(render_markdown(report))
        studies = [int(r["study_id"]) for r in report.get("study_losses", [])]
        (staging / "report.html").write_text(render_html(report, study_page_links(views, out_dir, studies)))
        write_figures(report, rows, staging)
        _swap_in(staging, out_dir, out_dir.with_name(f".{out_dir.name}.old-{tag}"))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _swap_in(staging: Path, target: Path, backup: Path) -> None:
    """Rename `staging` to `target`; an existing `target` is moved aside first and deleted only afterwards."""
    if not target.exists():
        os.replace(staging, target)
        return
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup)
