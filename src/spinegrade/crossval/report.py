"""The cv report: every named out-of-fold submission scored on the same studies, with bootstrap intervals.

`build_report` takes a mapping name -> submission (row_id + 3 probabilities), so further OOF variants
(calibrated predictions, other ensembles) are added as more entries; every entry is scored on the studies
all entries predict, so their scores compare on the same rows; `differences` are paired bootstrap
intervals of two entries' score difference on those rows (the same resamples for both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from spinegrade.evaluation.bootstrap import bootstrap_difference, bootstrap_interval
from spinegrade.evaluation.score import SCORE_PARTS, join_submission
from spinegrade.vocab import SEVERITIES


def _studies(submission: pd.DataFrame) -> set[int]:
    return {int(r.partition("_")[0]) for r in submission["row_id"]}


def _common(
    labels_wide: pd.DataFrame, submissions: Mapping[str, pd.DataFrame]
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The labels and submissions cut to the studies every submission has."""
    common = set.intersection(*(_studies(s) for s in submissions.values()))
    cut = {
        name: s.loc[s["row_id"].str.partition("_")[0].astype("int64").isin(common), ["row_id", *SEVERITIES]]
        for name, s in submissions.items()
    }
    return labels_wide[labels_wide["study_id"].isin(common)], cut


def score_entries(
    labels_wide: pd.DataFrame, submissions: Mapping[str, pd.DataFrame], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """name -> {"n_studies", "score" | part: {"value", "low", "high"}} on the studies every submission has."""
    labels, cut = _common(labels_wide, submissions)
    n = int(labels["study_id"].nunique())
    return {
        name: {"n_studies": n, **bootstrap_interval(join_submission(labels, s).frame, n=n_boot, seed=seed)}
        for name, s in cut.items()
    }


def build_report(
    labels_wide: pd.DataFrame,
    submissions: Mapping[str, pd.DataFrame],
    localization: Mapping[str, Mapping[str, float]],
    *,
    gaps: Mapping[str, tuple[str, str]] = {},
    differences: Mapping[str, tuple[str, str]] = {},
    extra: Mapping[str, Any] = {},
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """report.json's content: scores of every submission, the named gaps (name -> (worse, better) entry
    names: the difference of their scores), the named differences (the same, as {"value", "low", "high"}:
    paired 95% bootstrap intervals), the localisation errors and `extra` (settings, plan...)."""
    scores = score_entries(labels_wide, submissions, n_boot=n_boot, seed=seed)
    gap = {name: scores[a]["score"]["value"] - scores[b]["score"]["value"] for name, (a, b) in gaps.items()}
    labels, cut = _common(labels_wide, submissions)
    paired = {}
    for name, (a, b) in differences.items():
        d = bootstrap_difference(labels, cut[a], cut[b], n=n_boot, seed=seed)
        paired[name] = {"value": d["score"], "low": d["low"], "high": d["high"], "parts": d["parts"]}
    return {
        **extra,
        "scores": scores,
        "gaps": gap,
        "differences": paired,
        "localization": dict(localization),
    }


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
    if report.get("differences"):
        lines += ["", "Paired differences (negative: the first is better; 95% bootstrap interval):", ""]
        for name, d in report["differences"].items():
            parts = "; ".join(
                f"{p} {v['value']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
                for p, v in d.get("parts", {}).items()
            )
            lines.append(
                f"- {name}: {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                + (f" ({parts})" if parts else "")
            )
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
