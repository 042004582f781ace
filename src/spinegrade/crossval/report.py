"""The cv report: every named out-of-fold submission scored on the same studies, with bootstrap intervals.

`build_report` takes a mapping name -> submission (row_id + 3 probabilities), so further OOF variants
(calibrated predictions, other ensembles) are added as more entries; every entry is scored on the studies
all entries predict, so their scores compare on the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from spinegrade.evaluation.bootstrap import bootstrap_interval
from spinegrade.evaluation.score import SCORE_PARTS, join_submission
from spinegrade.vocab import SEVERITIES


def _studies(submission: pd.DataFrame) -> set[int]:
    return {int(r.partition("_")[0]) for r in submission["row_id"]}


def score_entries(
    labels_wide: pd.DataFrame, submissions: Mapping[str, pd.DataFrame], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """name -> {"n_studies", "score" | part: {"value", "low", "high"}} on the studies every submission has."""
    common = set.intersection(*(_studies(s) for s in submissions.values()))
    labels = labels_wide[labels_wide["study_id"].isin(common)]
    out = {}
    for name, submission in submissions.items():
        keep = submission["row_id"].str.partition("_")[0].astype("int64").isin(common)
        joined = join_submission(labels, submission.loc[keep, ["row_id", *SEVERITIES]])
        out[name] = {"n_studies": len(common), **bootstrap_interval(joined.frame, n=n_boot, seed=seed)}
    return out


def build_report(
    labels_wide: pd.DataFrame,
    submissions: Mapping[str, pd.DataFrame],
    localization: Mapping[str, Mapping[str, float]],
    *,
    gaps: Mapping[str, tuple[str, str]] = {},
    extra: Mapping[str, Any] = {},
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """report.json's content: scores of every submission, the named gaps (name -> (worse, better) entry
    names: the difference of their scores), the localisation errors and `extra` (settings, plan...)."""
    scores = score_entries(labels_wide, submissions, n_boot=n_boot, seed=seed)
    gap = {name: scores[a]["score"]["value"] - scores[b]["score"]["value"] for name, (a, b) in gaps.items()}
    return {**extra, "scores": scores, "gaps": gap, "localization": dict(localization)}


def _interval(entry: Mapping[str, float]) -> str:
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def render_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the score table (95% bootstrap intervals over studies), the gaps and the localisation."""
    lines = ["# Cross-validated score of the whole pipeline", ""]
    scores = report["scores"]
    n = next(iter(scores.values()))["n_studies"] if scores else 0
    lines += [
        f"Out-of-fold challenge score on {n} studies (lower is better; 95% bootstrap interval over studies).",
        "",
        "| what | score | " + " | ".join(SCORE_PARTS) + " |",
        "|---|---|" + "---|" * len(SCORE_PARTS),
    ]
    for name, entry in scores.items():
        parts = " | ".join(f"{entry[p]['value']:.3f}" for p in SCORE_PARTS)
        lines.append(f"| {name} | {_interval(entry['score'])} | {parts} |")
    if report.get("gaps"):
        lines += ["", *(f"- {name}: {value:+.3f}" for name, value in report["gaps"].items())]
    lines += [
        "",
        "## Localisation (out-of-fold located vs labelled points)",
        "",
        "| series type | points | median mm | p90 mm | within 5 mm | slice exact | within 1 slice |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in report["localization"].items():
        lines.append(
            f"| {name} | {m['n_points']} | {m['median_mm']:.1f} | {m['p90_mm']:.1f} | "
            f"{m['within_5mm_share']:.0%} | {m['exact_slice_share']:.0%} | {m['within_1_slice_share']:.0%} |"
        )
    return "\n".join(lines) + "\n"
