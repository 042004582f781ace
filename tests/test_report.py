"""The report folder: files and keys, figures are PNGs, and all-or-nothing writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.errors import DataError
from spinegrade.evaluation import report as report_module
from spinegrade.evaluation.report import FIGURES, build_report, write_report
from spinegrade.evaluation.score import SCORE_PARTS, ScoredRows, score_rows, scored_rows
from spinegrade.vocab import SEVERITIES, TARGETS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_rows(seed: int) -> ScoredRows:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        [(s, c, lv) for s in range(6) for c, lv in TARGETS], columns=["study_id", "condition", "level"]
    )
    frame["severity"] = rng.choice(3, size=len(frame), p=[0.6, 0.25, 0.15])
    frame[list(SEVERITIES)] = rng.dirichlet([2, 1, 1], size=len(frame))
    return scored_rows(frame)


def make_report(rows: ScoredRows, note: str = "a warning") -> dict:
    counts = {"submission_rows": len(rows)}
    return build_report(
        rows, score_rows(rows), counts=counts, warnings=[note], inputs={"labels": "l", "pred": "p"}
    )


@pytest.fixture(scope="module")
def case() -> tuple[ScoredRows, dict]:
    rows = make_rows(0)
    return rows, make_report(rows)


@pytest.fixture(scope="module")
def written(case: tuple[ScoredRows, dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    rows, report = case
    out = tmp_path_factory.mktemp("reports") / "report"
    assert write_report(report, rows, out) == out
    return out, report


def test_report_files_and_json_keys(written: tuple[Path, dict]) -> None:
    out, _ = written
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "report.md", "report.html", *FIGURES]
    )
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    loaded = json.loads((out / "report.json").read_text())
    scores = score_rows(make_rows(0))  # the rows of the `case` fixture
    for key in ("score", *SCORE_PARTS):
        assert loaded[key] == pytest.approx(scores[key])
    assert {"counts", "warnings", "metrics", "level_losses", "inputs", "eps"} <= set(loaded)
    assert set(loaded["metrics"]) == {"overall", "by_group", "by_level"}
    assert len(loaded["level_losses"]) == len(TARGETS)
    assert loaded["counts"]["scored_rows"] == 6 * len(TARGETS) and loaded["counts"]["submission_rows"] == 150
    assert loaded["warnings"] == ["a warning"]
    assert not list(out.parent.glob(".report.*")), "temporary folders left behind"


def test_report_markdown_has_the_tables(written: tuple[Path, dict]) -> None:
    out, report = written
    markdown = (out / "report.md").read_text()
    assert f"| score | {report['score']:.4f} |" in markdown
    assert "| Spinal Canal Stenosis |" in markdown and "| L1/L2 | L2/L3 |" in markdown
    assert "- a warning" in markdown
    for name in FIGURES:
        assert f"]({name})" in markdown


def test_report_html_has_the_tables_figures_and_costliest_studies(written: tuple[Path, dict]) -> None:
    out, report = written
    html = (out / "report.html").read_text()
    assert f"<td>{report['score']:.4f}</td>" in html and "Spinal Canal Stenosis" in html
    for name in FIGURES:
        assert f'<img src="{name}"' in html
    assert "<li>a warning</li>" in html and "http" not in html  # nothing fetched from the network
    worst = report["study_losses"][0]
    assert worst["weighted_log_loss"] == max(r["weighted_log_loss"] for r in report["study_losses"])
    assert f"<tr><td>{worst['study_id']}</td>" in html  # no page given: listed without a link


def test_study_losses_are_each_studys_weighted_log_loss(case: tuple[ScoredRows, dict]) -> None:
    rows, report = case
    by_study = {r["study_id"]: r["weighted_log_loss"] for r in report["study_losses"]}
    for study in np.unique(rows.study_id):
        mine = rows.study_id == study
        expected = (rows.weight[mine] * rows.nll[mine]).sum() / rows.weight[mine].sum()
        assert by_study[int(study)] == pytest.approx(expected)


def test_report_html_links_the_study_pages_that_exist(case: tuple[ScoredRows, dict], tmp_path: Path) -> None:
    rows, report = case
    views = tmp_path / "pred" / "view"
    views.mkdir(parents=True)
    (views / "3.html").write_text("<p>study 3</p>")
    out = write_report(report, rows, tmp_path / "report", views=views)
    html = (out / "report.html").read_text()
    assert '<a href="../pred/view/3.html">3</a>' in html
    assert (out / "../pred/view/3.html").is_file()
    assert html.count("<a href=") == 2  # the one page and the index beside it; the others have none
    assert '<a href="../pred/view/index.html">all study pages</a>' in html


def cheap_figures(report: dict, rows: ScoredRows, folder: Path) -> None:
    """Stands in for the matplotlib figures where a test is about the folder, not the pictures."""
    for name in FIGURES:
        (folder / name).write_bytes(PNG_MAGIC)


def test_existing_report_is_replaced_only_on_success(
    case: tuple[ScoredRows, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "write_figures", cheap_figures)
    rows, report = case
    out = tmp_path / "rep"
    write_report({**report, "warnings": ["first"]}, rows, out)
    write_report({**report, "warnings": ["second"]}, rows, out)
    assert json.loads((out / "report.json").read_text())["warnings"] == ["second"]

    def broken(report: dict, rows: ScoredRows, folder: Path) -> None:
        (folder / "roc_curves.png").write_bytes(b"half")
        raise RuntimeError("figure failed")

    monkeypatch.setattr(report_module, "write_figures", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(report, rows, out)
    assert json.loads((out / "report.json").read_text())["warnings"] == ["second"]
    assert (out / "roc_curves.png").read_bytes() == PNG_MAGIC
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(report, rows, tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"], "nothing half-written next to the report"


def test_report_path_that_is_a_file_is_refused(case: tuple[ScoredRows, dict], tmp_path: Path) -> None:
    rows, report = case
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(DataError, match="exists and is not a folder"):
        write_report(report, rows, target)
    assert target.read_text() == "not a folder"
