"""`spinegrade demo`: the whole pipeline on a phantom, from DICOM to a scored submission, in one command.

phantom -> inspect -> cv (fold plan, crops, per fold: locators and classifier trained on the other folds,
the fold's studies located, cropped and graded: the end-to-end out-of-fold score with its interval, the
oracle-point score, the prior and the phantom's floor when it has one) -> predict the held-out test
studies with every fold's classifier, fold 0's locators and the calibration cv fitted on the OOF
predictions -> score them -> one table. Every stage writes
its usual files under OUT, so each can be looked at or rerun with its own command; rerunning the demo
resumes what is already done.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from spinegrade.runtime import timed_stage

if TYPE_CHECKING:
    from spinegrade.crossval.run import CvSettings

PARTS = ("spinal", "foraminal", "subarticular", "any_severe_spinal")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo, the project's CPU defaults; they fit 15 minutes on 2 CPU cores.

    One family and 3 folds keep cv within the time; crops of 32 px still resolve the phantom's lesions (48 mm
    windows: 1.5 mm per pixel); resnet18, because vgg16 did not learn the noisy-label phantom in the demo's
    time. measured: docs/results.md#demo
    """

    studies: int = 50
    test_studies: int = 20
    image_px: int = 128
    crop_px: int = 32
    # each spinal and foraminal target also graded on the axial slice through its point (crops.views).
    # measured: docs/results.md#second-views
    views: tuple[str, ...] = ("own", "axial")
    folds: int = 3
    graded_folds: tuple[int, ...] | None = None  # the folds cv grades (None: all; every locator is trained)
    epochs: int = 10
    batch_size: int = 32
    archs: tuple[str, ...] = ("resnet18",)
    # classifiers per fold, averaged (crossval.run.CvSettings.seeds): a second seed moved the demo by -0.001
    # and a 400-study point by -0.004, inside, for twice the classifiers' time. measured: docs/results.md#demo
    seeds: int = 1
    imbalance: str = "class-weights"
    train_points: str = "located"
    # 96 px whole-series locators and 64 px refiners: the foramina found better than at 80 / 48 px, and within
    # the demo's 15 minutes since the classifiers' window convolutions. measured: docs/results.md#demo
    locator_px: int = 96
    # The locators' short schedule wants a higher peak lr than LocatorSettings' 2e-3. measured:
    # docs/results.md#demo
    locator_epochs: int = 8
    locator_lr: float = 6e-3
    locator_samples: int | None = None  # None: a pass per epoch (LocatorSettings)
    locator_refine_mm: float = (
        32.0  # the sagittal refiners' window (0: none). measured: docs/results.md#refinement
    )
    locator_refine_px: int = 64  # the refiners' input side
    n_boot: int = 2000
    seed: int = 0
    threads: int = 0  # torch CPU threads in cv's training (0: torch's default, one per core)

    def cv_settings(self) -> CvSettings:
        """The cv run of these sizes (the project's CPU defaults; bench/learning_curve.py runs them too)."""
        from spinegrade.crossval.run import CvSettings
        from spinegrade.localization.settings import LocatorSettings

        return CvSettings(
            n_folds=self.folds,
            folds=self.graded_folds,
            seed=self.seed,
            archs=self.archs,
            seeds=self.seeds,
            imbalance=self.imbalance,
            train_points=(self.train_points,),
            size=self.crop_px,
            views=self.views,
            epochs=self.epochs,
            batch_size=self.batch_size,
            locator=LocatorSettings(
                size=self.locator_px,
                epochs=self.locator_epochs,
                lr=self.locator_lr,
                samples_per_epoch=self.locator_samples,
                refine_mm=self.locator_refine_mm,
                refine_size=self.locator_refine_px,
                seed=self.seed,
            ),
            n_boot=self.n_boot,
            threads=self.threads,
        )


# The demo's sizes with only fold 0 graded: every locator is still trained (the located training points need
# them all) but one classifier instead of three, and no calibration (it needs two graded folds). A look at
# the pipeline, not a measurement (docs/results.md#demo).
QUICK = DemoSettings(graded_folds=(0,))


def run_demo(out: Path, settings: DemoSettings, console: Console | None = None) -> dict[str, Any]:
    """Run every stage under `out`; returns (and writes to out/demo.json) the figures and paths."""
    from spinegrade.crossval.run import PRIOR_ENTRY, cross_validate
    from spinegrade.data.inspect import inspect_dataset, print_report
    from spinegrade.evaluation.calibration import CALIBRATION_FILE
    from spinegrade.evaluation.evaluate import evaluate_submission
    from spinegrade.phantom import write_phantom
    from spinegrade.prediction.predict import predict
    from spinegrade.viewer import write_views

    console = console or Console(width=None if Console().is_terminal else 120)
    out = Path(out)
    data, cv_dir = out / "data", out / "cv"
    timings: dict[str, float] = {}

    with timed_stage(console, timings, "phantom"):
        write_phantom(
            data, settings.studies, settings.seed, size=settings.image_px, test_studies=settings.test_studies
        )
    with timed_stage(console, timings, "inspect"):
        print_report(inspect_dataset(data, progress=False))
    cv_settings = settings.cv_settings()
    with timed_stage(console, timings, "cross-validate (end to end)"):
        report = cross_validate(data, cv_dir, cv_settings, resume=True, console=console)
    graded = settings.graded_folds if settings.graded_folds is not None else range(settings.folds)
    runs = [cv_dir / f"fold{f}" / "classifiers" for f in graded]
    with timed_stage(console, timings, "predict test studies"):
        calibration = cv_dir / CALIBRATION_FILE  # fitted on the OOF predictions; nested, it scored better
        predicted = predict(
            data,
            runs,
            cv_dir / "fold0" / "locator",
            out / "submission.csv",
            details=out / "studies",
            calibration=calibration if calibration.is_file() else None,
        )
        truth = data / "phantom_truth"  # the study pages come before scoring: the report links to them
        pages = write_views(
            predicted.details, labels=truth / "test.csv", coords=truth / "test_label_coordinates.csv"
        )
    with timed_stage(console, timings, "score test predictions"):
        truth = data / "phantom_truth" / "test.csv"
        evaluate_submission(truth, predicted.submission, out=out / "reports" / "test")
        test = held_out_scores(
            data / "train.csv", truth, predicted.submission, settings.n_boot, settings.seed
        )

    rows = {**report["scores"], **test}
    result = {
        "settings": asdict(settings),
        "timings_s": timings,
        "table": rows,
        "headline": report["headline"],
        "beats_prior": beats_prior(rows[report["headline"]], rows[PRIOR_ENTRY]),
        "paired_to_prior": report["differences"][f"{report['headline']} - {PRIOR_ENTRY}"],
        "gaps": report["gaps"],
        "localization": report["localization"],
        "paths": {
            "data": str(data),
            "cv": str(cv_dir),
            "cv_report": str(cv_dir / "report.md"),
            "locator": str(cv_dir / "fold0" / "locator"),
            "submission": str(predicted.submission),
            "reports": str(out / "reports"),
            "study pages": str(pages),
        },
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    _print_summary(console, result)
    return result


def beats_prior(scores: dict[str, Any], prior: dict[str, Any]) -> dict[str, bool]:
    """Per condition group (and any severe spinal, and the score): does `scores` beat the prior's score?"""
    return {part: scores[part]["value"] < prior[part]["value"] for part in ("score", *PARTS)}


def held_out_scores(
    train_labels: Path, test_labels: Path, submission: Path, n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    """The test studies' scores with intervals: the submission's and the training labels' prior's."""
    import pandas as pd

    from spinegrade.data.tables import labels_long, read_train_labels
    from spinegrade.evaluation.bootstrap import bootstrap_interval
    from spinegrade.evaluation.priors import level_priors
    from spinegrade.evaluation.score import join_submission

    truth = read_train_labels(test_labels)
    n = int(truth["study_id"].nunique())
    joined = join_submission(truth, pd.read_csv(submission))
    priors = level_priors(labels_long(read_train_labels(train_labels)), weighted=True)
    prior = labels_long(truth).merge(priors, on=["condition", "level"])
    return {
        "test studies, end to end": {
            "n_studies": n,
            **bootstrap_interval(joined.frame, n=n_boot, seed=seed),
        },
        "test studies, prior": {"n_studies": n, **bootstrap_interval(prior, n=n_boot, seed=seed)},
    }


def _print_summary(console: Console, result: dict[str, Any]) -> None:
    table = Table(
        title="spinegrade demo (challenge score, lower is better; 95% bootstrap interval over studies)"
    )
    for i, header in enumerate(("what", "studies", "score [95% interval]", *PARTS)):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i > 0)
    for name, entry in result["table"].items():
        score = entry["score"]
        table.add_row(
            name,
            str(entry["n_studies"]),
            f"{score['value']:.3f} [{score['low']:.3f}, {score['high']:.3f}]",
            *(f"{entry[p]['value']:.3f}" for p in PARTS),
        )
    console.print(table)
    beaten = [part for part, ok in result["beats_prior"].items() if ok]
    console.print(f"end to end beats the prior on: {', '.join(beaten) or 'nothing'}", highlight=False)
    paired = result["paired_to_prior"]
    parts = "; ".join(
        f"{p} {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" for p, d in paired["parts"].items()
    )
    console.print(
        f"end to end - prior, paired (95%): score {paired['value']:+.3f} "
        f"[{paired['low']:+.3f}, {paired['high']:+.3f}]; {parts}",
        highlight=False,
    )
    for name, gap in result["gaps"].items():
        console.print(f"{name}: {gap:+.3f}", highlight=False)
    loc = result["localization"]["overall"]
    console.print(
        f"localisation (out-of-fold): median {loc['median_mm']:.1f} mm, p90 {loc['p90_mm']:.1f} mm, "
        f"{100 * loc['within_5mm_share']:.0f}% within 5 mm, "
        f"slice exact {100 * loc['exact_slice_share']:.0f}%",
        highlight=False,
    )
    for name, path in result["paths"].items():
        console.print(f"  {name:<12} {path}", highlight=False)
    console.print(f"total {sum(result['timings_s'].values()):.0f} s", highlight=False)
    console.print(f"open {result['paths']['study pages']} to look at the test studies", highlight=False)


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes."),
    studies: int | None = typer.Option(None, "--studies", help="Training studies of the phantom."),
    quick: bool = typer.Option(
        False, "--quick", help="Grade fold 0 only: a look (3/4 of the demo's time), too noisy to measure."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantom, the folds and the training."),
) -> None:
    """Run the whole pipeline on a phantom and print one table: the end-to-end cross-validated score with
    its interval, the oracle-point score, the prior, the floor (when the phantom has one) and the score of
    the held-out test studies.

    Writes a phantom dataset (50 + 20 test studies), a cv run (3 folds, resnet18, 32 px crops; its report in
    OUT/cv/report.md), a submission for the test studies and its report. 9 to 13 minutes on 2 CPU
    cores, by machine; --quick (fold 0's studies graded, one classifier trained instead of three) 3/4 of that.

    Example: spinegrade demo --out demo_out --quick
    """
    settings = QUICK if quick else DemoSettings()
    settings = replace(settings, seed=seed)
    if studies:
        settings = replace(settings, studies=studies)
    run_demo(out, settings)
