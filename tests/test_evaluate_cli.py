"""`spinegrade evaluate` through a local typer app: a good run, and every kind of bad input (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from spinegrade.evaluation import report as report_module
from spinegrade.evaluation.commands import evaluate_command
from spinegrade.evaluation.report import FIGURES
from spinegrade.evaluation.score import score_submission
from spinegrade.vocab import LABEL_COLUMNS, SEVERITIES, SEVERITY_LABELS, TARGETS, make_row_id

app = typer.Typer()
app.command()(evaluate_command)
STUDIES = (101, 202, 303)


@pytest.fixture(autouse=True)
def cheap_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures themselves are tested in test_report; here they would only cost seconds."""

    def write(report: dict, rows: object, folder: Path) -> None:
        for name in FIGURES:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n")

    monkeypatch.setattr(report_module, "write_figures", write)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """train.csv-format labels (one blank cell) and the matching submission's lines (header first)."""
    rng = np.random.default_rng(0)
    labels = pd.DataFrame(
        np.asarray(SEVERITY_LABELS, dtype=object)[rng.choice(3, size=(len(STUDIES), len(TARGETS)))],
        columns=list(LABEL_COLUMNS),
    )
    labels.iloc[1, 3] = np.nan
    labels.insert(0, "study_id", STUDIES)
    labels_csv = tmp_path / "train.csv"
    labels.to_csv(labels_csv, index=False)
    probs = rng.dirichlet([2, 1, 1], size=len(STUDIES) * len(TARGETS))
    rows = [make_row_id(s, c, lv) for s in STUDIES for c, lv in TARGETS]
    lines = [",".join(["row_id", *SEVERITIES])] + [
        f"{r},{p[0]:.17g},{p[1]:.17g},{p[2]:.17g}" for r, p in zip(rows, probs, strict=True)
    ]
    return labels_csv, tmp_path / "submission.csv", lines


def invoke(labels: Path, pred: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["--labels", str(labels), "--pred", str(pred), "--out", str(out), *extra])


def flat(text: str) -> str:
    return " ".join(text.split())


def test_good_run_prints_the_score_and_writes_the_report(files, tmp_path: Path) -> None:
    labels, pred, lines = files
    pred.write_text("\n".join(lines) + "\n")
    result = invoke(labels, pred, tmp_path / "report")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    expected = score_submission(pd.read_csv(labels), pd.read_csv(pred))
    assert report["score"] == pytest.approx(expected["score"])
    assert f"{expected['score']:.4f}" in result.output and "any_severe_spinal" in result.output
    assert report["counts"]["scored_rows"] == len(STUDIES) * len(TARGETS) - 1
    assert report["counts"]["unscored_rows"] == 1


def test_allow_missing_fills_with_training_priors_only(files, tmp_path: Path) -> None:
    labels, pred, lines = files
    pred.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    refused = invoke(labels, pred, tmp_path / "refused")
    assert refused.exit_code == 2
    assert "no prediction for 1 of 74 labelled target(s)" in flat(refused.output)
    assert lines[5].split(",")[0] in refused.output and not (tmp_path / "refused").exists()
    no_priors = invoke(labels, pred, tmp_path / "no_priors", "--allow-missing")
    assert no_priors.exit_code == 2 and "pass --priors with the training studies' train.csv" in flat(
        no_priors.output
    )
    leaking = invoke(labels, pred, tmp_path / "leak", "--allow-missing", "--priors", str(labels))
    assert leaking.exit_code == 2 and "holds 3 of the scored studies" in flat(leaking.output)

    training = pd.read_csv(labels).assign(study_id=[7, 8, 9])  # other studies' labels
    training.iloc[:, 1:] = "Severe"
    training_csv = tmp_path / "training.csv"
    training.to_csv(training_csv, index=False)
    result = invoke(labels, pred, tmp_path / "report", "--allow-missing", "--priors", str(training_csv))
    assert result.exit_code == 0, result.output
    assert "filled with the training priors" in flat(result.output)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["counts"]["filled_rows"] == 1
    filled = pd.read_csv(pred).drop_duplicates()
    row = lines[5].split(",")[0]
    # 3 x Severe + 0.5 smoothing per class, times the weights 1/2/4: (0.5, 1, 14) / 15.5
    expected = dict(zip(SEVERITIES, np.array([0.5, 1.0, 14.0]) / 15.5, strict=True))
    fill = pd.DataFrame([{"row_id": row, **expected}])
    want = score_submission(pd.read_csv(labels), pd.concat([filled, fill], ignore_index=True))
    assert report["score"] == pytest.approx(want["score"])

    runs = tmp_path / "runs" / "fold0"
    runs.mkdir(parents=True)
    records = [{"condition": c, "level": lv, **expected} for c, lv in TARGETS]
    (runs / "best.json").write_text(json.dumps({"priors": records}))
    from_runs = invoke(labels, pred, tmp_path / "report2", "--allow-missing", "--priors", str(runs.parent))
    assert from_runs.exit_code == 0, from_runs.output
    assert json.loads((tmp_path / "report2" / "report.json").read_text())["score"] == pytest.approx(
        want["score"]
    )


def test_unknown_study_is_ignored_with_a_warning(files, tmp_path: Path) -> None:
    labels, pred, lines = files
    pred.write_text("\n".join([*lines, "999_spinal_canal_stenosis_l1_l2,0.5,0.3,0.2"]) + "\n")
    result = invoke(labels, pred, tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "ignored 1 row(s) of 1 study id(s) that are not in the labels (999)" in flat(result.output)


def replace_cell(lines: list[str], line: int, column: int, value: str) -> list[str]:
    """Set a cell of the CSV line numbered `line` (header = 1)."""
    out = list(lines)
    cells = out[line - 1].split(",")
    cells[column] = value
    out[line - 1] = ",".join(cells)
    return out


BAD_SUBMISSIONS = {
    "missing column": (
        lambda ls: [",".join(x.split(",")[:3]) for x in ls],
        "line 1: missing column(s) 'severe'",
    ),
    "non-numeric": (
        lambda ls: replace_cell(ls, 7, 2, "abc"),
        "line 7, column 'moderate': 'abc' is not a finite number",
    ),
    "blank value": (
        lambda ls: replace_cell(ls, 4, 3, ""),
        "line 4, column 'severe': a blank cell is not a finite",
    ),
    "negative": (lambda ls: replace_cell(ls, 9, 1, "-0.2"), "line 9, column 'normal_mild': -0.2 is negative"),
    "infinite": (
        lambda ls: replace_cell(ls, 3, 3, "inf"),
        "line 3, column 'severe': inf is not a finite number",
    ),
    "duplicate row_id": (
        lambda ls: [*ls, ls[1]],
        "line 77: row_id '101_spinal_canal_stenosis_l1_l2' repeats line 2",
    ),
    "malformed row_id": (
        lambda ls: replace_cell(ls, 5, 0, "101_spinal_canal_stenosis_l9_l10"),
        "line 5: row_id '101_spinal_canal_stenosis_l9_l10' does not end with a level",
    ),
    "bad study id": (
        lambda ls: replace_cell(ls, 6, 0, "abc_spinal_canal_stenosis_l1_l2"),
        "line 6: row_id 'abc_spinal_canal_stenosis_l1_l2' does not start with a numeric study id",
    ),
    "empty file": (lambda ls: [], "is empty; expected a header line"),
    "header only": (lambda ls: ls[:1], "has a header but no prediction rows"),
}


@pytest.mark.parametrize("case", list(BAD_SUBMISSIONS))
def test_bad_submission_exits_2_with_a_message_and_writes_nothing(case: str, files, tmp_path: Path) -> None:
    labels, pred, lines = files
    change, message = BAD_SUBMISSIONS[case]
    pred.write_text("\n".join(change(lines)))
    out = tmp_path / "report"
    result = invoke(labels, pred, out)
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert text.startswith("error:") and str(pred) in text and message in text, text
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".report*"))


def test_missing_files_and_bad_labels_exit_2(files, tmp_path: Path) -> None:
    labels, pred, lines = files
    pred.write_text("\n".join(lines))
    result = invoke(labels, tmp_path / "nope.csv", tmp_path / "report")
    assert result.exit_code == 2 and "nope.csv not found" in flat(result.output)
    labels.write_text("study_id,foo\n1,2\n")
    result = invoke(labels, pred, tmp_path / "report")
    assert result.exit_code == 2 and "train.csv line 1: missing column" in flat(result.output)
    assert "Traceback" not in result.output and not (tmp_path / "report").exists()
