"""One study's page: its series as slice scrollers with the points, and a row per target.

Everything comes from what `predict` recorded (StudyResult JSON) plus the study's images read again: the
slices are windowed with the crops' normalisation, and the crops are re-cut from the recorded points and
crop settings by the prediction code itself, so the page shows what the classifier saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from html import escape
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from spinegrade.crops.defaults import NORMALIZE_PERCENTILES
from spinegrade.crops.extract import label_to_pixel
from spinegrade.data.intensity import normalize
from spinegrade.errors import DataError
from spinegrade.prediction.grade import CropSpec, cut_crops
from spinegrade.prediction.overlay import short_condition
from spinegrade.prediction.results import StudyResult
from spinegrade.viewer.encode import image_uri, strip_uri
from spinegrade.viewer.geometry import crossing_lines
from spinegrade.viewer.html import document, json_script
from spinegrade.vocab import (
    CONDITION_SERIES,
    CONDITIONS,
    LEVELS,
    SERIES_TYPES,
    SEVERITIES,
    SEVERITY_LABELS,
    condition_display,
    level_display,
)

if TYPE_CHECKING:
    from spinegrade.data.series import Series
    from spinegrade.prediction.studies import StudyImages
    from spinegrade.viewer.truth import Truth

DISPLAY_SIDE: Final = 320  # slices are shown at most this many pixels on a side (the page stays small)
SUMMARY_ID: Final = "page-summary"  # the <script> holding the page's PageSummary, first in <head>
_POINT_COLUMNS: Final = ["condition", "level", "series_id", "slice_index", "x", "y"]


@dataclass(frozen=True)
class PageSummary:
    """What the index lists of one study."""

    study_id: int
    page: str
    max_severe: float
    max_severe_target: str
    n_prior: int
    loss: float | None
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()  # how the series were acquired (absent from pages written before notes)

    @classmethod
    def from_dict(cls, data: Mapping) -> PageSummary:
        return cls(**{**data, "problems": tuple(data["problems"]), "notes": tuple(data.get("notes", ()))})


def key(condition: str, level: str) -> str:
    return f"{condition}/{level}"


def target_name(condition: str, level: str) -> str:
    return f"{level_display(level)} {short_condition(condition)}"


def study_page(
    result: StudyResult,
    images: StudyImages,
    truth: Truth | None = None,
    *,
    max_side: int = DISPLAY_SIDE,
) -> tuple[str, PageSummary]:
    """The page's HTML and what the index shows of it; `images` is the study read again (read_study)."""
    series_by_id = images.series_by_id()
    grades = result.grades.set_index(["condition", "level"])
    located = _on_series(result.points, series_by_id)
    labelled = _labelled(truth, result.study_id, series_by_id) if truth is not None else _empty_points()
    losses, study_loss = (None, None)
    if truth is not None and truth.has(result.study_id):
        losses, study_loss = truth.losses(result.study_id, result.grades)
    crops, crop_note = _crops(result, located, series_by_id)

    # What predict found and what reading again found: the same messages (they name study and series,
    # not the path read), each once; notes (how the series were acquired) apart from problems.
    found = {(p.kind, p.message, p.note): None for p in [*result.problems, *images.problems]}
    problems = [(kind, message) for kind, message, note in found if not note]
    notes = [(kind, message) for kind, message, note in found if note]
    missing = [sid for ids in result.series.values() for sid in ids if str(sid) not in series_by_id]
    problems += [("not_shown", f"series {sid} was graded but could not be read again") for sid in missing]

    series = _series_payload(images, located, labelled, grades, max_side)
    payload: dict[str, Any] = {"study_id": result.study_id, "series": series}
    severe = grades["severe"].astype(float)
    worst = severe.idxmax()
    summary = PageSummary(
        result.study_id,
        f"{result.study_id}.html",
        float(severe.max()),
        target_name(*worst),
        int((grades["source"] == "prior").sum()),
        study_loss,
        tuple(message for _, message in problems),
        tuple(message for _, message in notes),
    )
    body = "".join(
        [
            _header(result, summary, truth is not None),
            _problems(problems),
            _notes(notes),
            '<h2>Series</h2><p class="legend dim">'
            + "".join(
                f'<span><i class="sw b{i}"></i>located, predicted {escape(label)}</span>'
                for i, label in enumerate(SEVERITY_LABELS)
            )
            + ("<span>○ radiologist's point</span>" if truth is not None else "")
            + "<span>— axial slice (click: show it)</span>"
            + " · wheel, arrow keys or slider change the slice</p>",
            '<div class="viewers">' + "".join(_viewer(s) for s in payload["series"]) + "</div>",
            _targets(result, grades, located, labelled, series_by_id, crops, crop_note, losses),
        ]
    )
    html = document(
        f"study {result.study_id} · spinegrade",
        body,
        scripts=("study.js",),
        data=json_script("study-data", payload),
        head=json_script(SUMMARY_ID, asdict(summary)),
    )
    return html, summary


# ------------------------------------------------------------------------------------------------ points


def _empty_points() -> pd.DataFrame:
    return pd.DataFrame(columns=_POINT_COLUMNS)


def _on_series(points: pd.DataFrame, series_by_id: Mapping[str, Series]) -> pd.DataFrame:
    """The located points that sit on a series read again (series_id as text)."""
    if points.empty:
        return _empty_points()
    points = points.assign(series_id=points["series_id"].astype(str))
    return points[points["series_id"].isin(list(series_by_id))].reset_index(drop=True)


def _labelled(truth: Truth, study_id: int, series_by_id: Mapping[str, Series]) -> pd.DataFrame:
    """The radiologists' points of the study in the stored pixel grid of the series they were drawn on."""
    rows = []
    for r in truth.points_of(study_id).itertuples():
        series = series_by_id.get(str(r.series_id))
        if series is None:
            continue
        try:
            index, x, y = label_to_pixel(series, r.instance_number, r.x, r.y)
        except KeyError:  # an instance the series does not hold: nothing to draw it on
            continue
        rows.append((r.condition, r.level, str(r.series_id), index, x, y))
    return pd.DataFrame(rows, columns=_POINT_COLUMNS)


def _crops(
    result: StudyResult, located: pd.DataFrame, series_by_id: Mapping[str, Series]
) -> tuple[dict[str, str], str]:
    """Per target key, the thumbnail strip of the crop the classifier saw (first crop setting), and a note."""
    if not result.crops:
        return {}, "crop settings not recorded (graded by an older spinegrade): predict again to see crops"
    spec = CropSpec.of_info(result.crops[0])
    note = f"{spec.k} slices × {spec.size} px"
    if len(result.crops) > 1:
        note += f" (the first of {len(result.crops)} crop settings in the ensemble)"
    if located.empty:
        return {}, note
    try:
        cut = cut_crops(series_by_id, located, spec)
    except (DataError, ValueError) as exc:
        return {}, f"{note}; crops could not be cut again: {exc}"
    keys = [key(c, lv) for c, lv in zip(located["condition"], located["level"], strict=True)]
    own = cut.crops[: len(located)]  # each point's crop in its own series (its axial view follows, if any)
    return {k: strip_uri(crop) for k, crop in zip(keys, own, strict=True)}, note


# ------------------------------------------------------------------------------------------------ series


def _series_payload(
    images: StudyImages,
    located: pd.DataFrame,
    labelled: pd.DataFrame,
    grades: pd.DataFrame,
    max_side: int,
) -> list[dict]:
    """What the scrollers draw, per series in SERIES_TYPES order: slices, points, crossing axial lines."""
    order = sorted(images.series_by_type.items(), key=lambda kv: SERIES_TYPES.index(kv[0]))
    axials = images.series_by_type.get("Axial T2", [])
    out = []
    for kind, group in order:
        for series in group:
            volume = normalize(series.pixels, *NORMALIZE_PERCENTILES)
            points = _points_payload(series.series_id, located, labelled, grades)
            slices = [p["slice"] for p in points if p["kind"] == "located"]
            start = max(set(slices), key=slices.count) if slices else len(series) // 2
            rows, cols = series.pixels.shape[1:]
            dy, dx = np.nanmedian(series.pixel_spacing, axis=0)
            aspect = (cols * dx, rows * dy) if np.isfinite([dx, dy]).all() else (cols, rows)
            out.append(
                {
                    "id": series.series_id,
                    "type": kind,
                    "rows": int(rows),
                    "cols": int(cols),
                    "aspect": [round(float(a), 2) for a in aspect],
                    "instances": [int(n) for n in series.instance_numbers],
                    "start": int(start),
                    "slices": [image_uri(s, max_side=max_side) for s in volume],
                    "points": points,
                    "lines": {a.series_id: crossing_lines(series, a) for a in axials}
                    if kind.startswith("Sagittal")
                    else {},
                }
            )
    return out


def _points_payload(
    series_id: str, located: pd.DataFrame, labelled: pd.DataFrame, grades: pd.DataFrame
) -> list[dict]:
    out = []
    for kind, points in (("located", located), ("truth", labelled)):
        for r in points[points["series_id"] == series_id].itertuples():
            probs = grades.loc[(r.condition, r.level), list(SEVERITIES)].to_numpy(np.float64)
            name = target_name(r.condition, r.level)
            if kind == "located":
                grade = int(probs.argmax())
                confidence = getattr(r, "confidence", float("nan"))
                title = (
                    f"located {name}: {SEVERITY_LABELS[grade]} {probs[grade]:.2f}, "
                    f"locator confidence {confidence:.2f}"
                )
            else:
                grade = -1
                title = f"radiologist's point for {name}"
            out.append(
                {
                    "kind": kind,
                    "target": key(r.condition, r.level),
                    "slice": int(r.slice_index),
                    "x": round(float(r.x), 1),
                    "y": round(float(r.y), 1),
                    "grade": grade,
                    "label": name,
                    "title": title,
                }
            )
    return out


def _viewer(series: dict) -> str:
    w, h = series["aspect"]
    return (
        f'<div class="viewer" id="viewer-{escape(series["id"])}" tabindex="0">'
        f'<h3>{escape(series["type"])} <span class="dim">· series {escape(series["id"])} · '
        f"{len(series['slices'])} slices</span></h3>"
        f'<div class="frame" style="aspect-ratio: {w} / {h}"><img alt="a slice">'
        f'<svg viewBox="-0.5 -0.5 {series["cols"]} {series["rows"]}" preserveAspectRatio="none"></svg></div>'
        f'<input type="range" min="0" max="{len(series["slices"]) - 1}" value="{series["start"]}" '
        f'aria-label="slice">'
        '<div class="slice-label"></div></div>'
    )


# ------------------------------------------------------------------------------------------------- parts


def _header(result: StudyResult, summary: PageSummary, labelled: bool) -> str:
    n_model = len(result.grades) - summary.n_prior
    loss = (
        f" · weighted log loss of its labelled targets <b>{summary.loss:.3f}</b>"
        if summary.loss is not None
        else (" · no labels for this study" if labelled else "")
    )
    seconds = sum(result.seconds.values())
    return (
        '<p><a href="index.html">← all studies</a></p>'
        f"<h1>Study {result.study_id}</h1>"
        f'<p class="dim">{n_model} targets graded by the model, {summary.n_prior} with prior probabilities · '
        f"highest severe probability {summary.max_severe:.2f} ({escape(summary.max_severe_target)})"
        f"{loss} · graded in {seconds:.1f} s</p>"
    )


def _problems(problems: list[tuple[str, str]]) -> str:
    if not problems:
        return '<div class="problems none">No problems: every series was read and every target located.</div>'
    return f'<div class="problems"><b>{len(problems)} problem(s)</b>{_items(problems)}</div>'


def _notes(notes: list[tuple[str, str]]) -> str:
    """How the series were acquired (angled blocks...): nothing to fix, shown apart from the problems."""
    if not notes:
        return ""
    title = f"<b>{len(notes)} note(s)</b>: how the series were acquired"
    return f'<div class="notes">{title}{_items(notes)}</div>'


def _items(pairs: list[tuple[str, str]]) -> str:
    items = (f'<li><span class="kind">{escape(kind)}</span>{escape(text)}</li>' for kind, text in pairs)
    return f"<ul>{''.join(items)}</ul>"


def _bars(probs: np.ndarray) -> str:
    return "".join(
        f'<div class="bar" title="{label} {p:.3f}"><b>{p:.2f}</b>'
        f'<i class="b{i}" style="width:{100 * p:.1f}px"></i></div>'
        for i, (label, p) in enumerate(zip(SEVERITY_LABELS, probs, strict=True))
    )


def prior_reason(result: StudyResult, condition: str) -> str:
    """Why a target kept its prior: its series type is missing, or nothing usable was located on it."""
    kind = CONDITION_SERIES[condition]
    if not result.series.get(kind):
        return f"no readable {kind} series"
    failures = [p.message for p in result.problems if p.kind in ("locate_failed", "crop_failed")]
    return "; ".join(failures) or f"the locator found no usable point on the {kind} series"


def _by_key(frame: pd.DataFrame | None) -> dict[str, Any]:
    """Rows of a frame with condition and level columns, by target key."""
    if frame is None:
        return {}
    return {key(r.condition, r.level): r for r in frame.itertuples()}


def _targets(
    result: StudyResult,
    grades: pd.DataFrame,
    located: pd.DataFrame,
    labelled: pd.DataFrame,
    series_by_id: Mapping[str, Series],
    crops: dict[str, str],
    crop_note: str,
    losses: pd.DataFrame | None,
) -> str:
    """The targets table: a row per target (data-target; data-series / data-slice where it has a point)."""
    at, truth_at, loss_at = _by_key(located), _by_key(labelled), _by_key(losses)
    small = bool(result.crops) and CropSpec.of_info(result.crops[0]).size < 64
    head = [
        "Target",
        f"Crop the classifier saw ({escape(crop_note)})",
        "Normal/Mild · Moderate · Severe",
        "Grade",
        "Source",
        "Locator confidence",
    ]
    if losses is not None:
        head += ["True grade", "Loss (weight × −log p)", "Located vs labelled"]
    rows = []
    for condition in CONDITIONS:
        for level in LEVELS:
            k = key(condition, level)
            probs = grades.loc[(condition, level), list(SEVERITIES)].to_numpy(np.float64)
            grade = int(probs.argmax())
            point, mark = at.get(k), truth_at.get(k)
            where = point if point is not None else mark
            attrs = f' data-target="{escape(k)}"'
            if where is not None:
                attrs += f' data-series="{escape(str(where.series_id))}"'
                attrs += f' data-slice="{int(where.slice_index)}"'
            crop = crops.get(k)
            image = (
                f'<img class="crop{" small" if small else ""}" src="{crop}" alt="crop">'
                if crop
                else '<span class="dim">none</span>'
            )
            if grades.loc[(condition, level), "source"] == "model":
                source = "<td>model</td>"
            else:
                why = escape(prior_reason(result, condition))
                source = f'<td class="src-prior">prior<div class="why">{why}</div></td>'
            cells = [
                f"<td><b>{escape(level_display(level))}</b> {escape(condition_display(condition))}</td>",
                f"<td>{image}</td>",
                f'<td class="bars">{_bars(probs)}</td>',
                f'<td class="grade{grade}">{SEVERITY_LABELS[grade]}</td>',
                source,
                f'<td class="num">{_confidence(point)}</td>',
            ]
            if losses is not None:
                cells += _truth_cells(loss_at.get(k), point, mark, series_by_id)
            rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return (
        '<h2>Targets</h2><p class="dim">Click a row to show its point.</p>'
        f'<table class="targets"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _confidence(point: object) -> str:
    value = getattr(point, "confidence", None) if point is not None else None
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def _truth_cells(loss: Any, point: Any, mark: Any, series_by_id: Mapping[str, Series]) -> list[str]:
    if loss is None:
        return ['<td class="dim">unlabelled</td>', "<td></td>", "<td></td>"]
    severity = int(loss.severity)
    distance = ""
    if point is not None and mark is not None:
        a = series_by_id[str(point.series_id)].pixel_to_patient(point.slice_index, point.x, point.y)
        b = series_by_id[str(mark.series_id)].pixel_to_patient(mark.slice_index, mark.x, mark.y)
        mm = float(np.linalg.norm(a - b))
        distance = f"{mm:.1f} mm" if np.isfinite(mm) else "n/a"
    elif mark is None:
        distance = '<span class="dim">no labelled point</span>'
    return [
        f'<td class="grade{severity}">{SEVERITY_LABELS[severity]}</td>',
        f'<td class="num">{loss.loss:.3f}</td>',
        f'<td class="num">{distance}</td>',
    ]
