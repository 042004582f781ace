"""`spinegrade demo`: the whole pipeline on a phantom, from DICOM to a scored submission, in one command.

phantom -> inspect -> prepare -> train (vgg16, densenet121, efficientnet_b0 x none, class weights, SMOTE)
-> evaluate each on its validation fold -> train the locators -> predict the test studies -> score them
-> one comparison table. Every stage writes its usual files under OUT, so each can be looked at or rerun
with its own command; rerunning the demo resumes what is already done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

ARCHS = ("vgg16", "densenet121", "efficientnet_b0")
IMBALANCES = ("none", "class-weights", "smote")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults fit 15 minutes on 2 CPU cores, QUICK 3 minutes.

    Crops of 32 px keep VGG16 (the slowest family on a CPU) to about a minute per run; the phantom's lesions
    are still resolved at that size (48 mm windows: 1.5 mm per pixel).
    """

    studies: int = 50
    test_studies: int = 5
    image_px: int = 128
    crop_px: int = 32
    epochs: int = 4
    head_epochs: int = 3
    batch_size: int = 32
    archs: tuple[str, ...] = ARCHS
    imbalances: tuple[str, ...] = IMBALANCES
    locator_px: int = 96
    locator_epochs: int = 6
    locator_samples: int = 256
    seed: int = 0


QUICK = DemoSettings(
    studies=30,
    test_studies=3,
    image_px=96,
    epochs=3,
    head_epochs=1,
    imbalances=("class-weights",),
    locator_px=64,
    locator_epochs=6,
    locator_samples=128,
)


@contextmanager
def _stage(console: Console, timings: dict[str, float], name: str) -> Iterator[None]:
    console.rule(f"[bold]{name}")
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    console.print(f"[dim]{name}: {timings[name]:.1f} s[/dim]")


def run_demo(out: Path, settings: DemoSettings, console: Console | None = None) -> dict[str, Any]:
    """Run every stage under `out`; returns (and writes to out/demo.json) the figures and paths."""
    from spinegrade.crops.prepare import prepare
    from spinegrade.data.inspect import inspect_dataset, print_report
    from spinegrade.data.phantom import write_phantom
    from spinegrade.evaluation.evaluate import evaluate_submission
    from spinegrade.localization.settings import LocatorSettings
    from spinegrade.localization.train import train_locator
    from spinegrade.prediction.predict import predict
    from spinegrade.training.imbalance import parse_imbalance
    from spinegrade.training.runs import TrainConfig
    from spinegrade.training.train import train
    from spinegrade.viewer import write_views

    console = console or Console(width=None if Console().is_terminal else 120)
    out = Path(out)
    data, cache, classifiers, locator = out / "data", out / "cache", out / "classifiers", out / "locator"
    timings: dict[str, float] = {}

    with _stage(console, timings, "phantom"):
        write_phantom(
            data, settings.studies, settings.seed, size=settings.image_px, test_studies=settings.test_studies
        )
    with _stage(console, timings, "inspect"):
        print_report(inspect_dataset(data, progress=False))
    with _stage(console, timings, "prepare"):
        prepare(data, cache, size=settings.crop_px, seed=settings.seed)
    with _stage(console, timings, "train classifiers"):
        config = TrainConfig(
            epochs=settings.epochs,
            head_epochs=settings.head_epochs,
            batch_size=settings.batch_size,
            seed=settings.seed,
        )
        comparison = train(
            cache,
            classifiers,
            config,
            archs=settings.archs,
            imbalances=[parse_imbalance(m) for m in settings.imbalances],
            folds=[config.fold],
            resume=True,
            console=console,
        )
    runs = {
        f"{r.arch}__{r.imbalance}": classifiers / f"{r.arch}__{r.imbalance}" for r in comparison.itertuples()
    }
    if len(runs) == 1:
        runs = {next(iter(runs)): classifiers}
    with _stage(console, timings, "evaluate validation folds"):
        # A labelled target without a point has no crop and so no validation prediction: filled with priors.
        for name, run in runs.items():
            evaluate_submission(
                data / "train.csv",
                run / "val_predictions.csv",
                out=out / "reports" / name,
                allow_missing=True,
            )
    with _stage(console, timings, "train locators"):
        locator_metrics = train_locator(
            data,
            locator,
            LocatorSettings(
                size=settings.locator_px,
                epochs=settings.locator_epochs,
                samples_per_epoch=settings.locator_samples,
                seed=settings.seed,
            ),
        )
    best = comparison.sort_values("score").iloc[0]
    best_run = runs[f"{best.arch}__{best.imbalance}"]
    with _stage(console, timings, "predict test studies"):
        predicted = predict(data, [best_run], locator, out / "submission.csv", details=out / "studies")
        truth = data / "phantom_truth"  # the study pages come before scoring: the report links to them
        pages = write_views(
            predicted.details, labels=truth / "test.csv", coords=truth / "test_label_coordinates.csv"
        )
    with _stage(console, timings, "score test predictions"):
        test_report = evaluate_submission(
            data / "phantom_truth" / "test.csv", predicted.submission, out=out / "reports" / "test"
        )

    test_prior = prior_score(data / "train.csv", data / "phantom_truth" / "test.csv")
    result = {
        "settings": asdict(settings),
        "timings_s": timings,
        "comparison": comparison.to_dict(orient="records"),
        "best_run": str(best_run),
        "test_score": {
            k: test_report[k] for k in ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal")
        },
        "test_prior_score": test_prior,
        "localization": locator_metrics,
        "paths": {
            "data": str(data),
            "cache": str(cache),
            "classifiers": str(classifiers),
            "comparison": str(classifiers / "comparison.md"),
            "locator": str(locator),
            "submission": str(predicted.submission),
            "reports": str(out / "reports"),
            "study pages": str(pages),
        },
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    _print_summary(console, comparison, result)
    return result


def prior_score(train_labels: Path, test_labels: Path) -> float:
    """Challenge score on `test_labels` of the weight-optimal per-level prior of `train_labels`: the bar
    a model has to clear."""
    from spinegrade.data.tables import labels_long, read_train_labels
    from spinegrade.evaluation.priors import level_priors
    from spinegrade.evaluation.score import challenge_score

    priors = level_priors(labels_long(read_train_labels(train_labels)), weighted=True)
    truth = labels_long(read_train_labels(test_labels))
    return challenge_score(truth.merge(priors, on=["condition", "level"]))["score"]


def _print_summary(console: Console, comparison: Any, result: dict[str, Any]) -> None:
    table = Table(title="spinegrade demo: validation fold 0 (challenge score, lower is better)")
    columns = {
        "arch": "arch",
        "imbalance": "imbalance",
        "score": "score",
        "prior_score": "prior",
        "accuracy": "acc",
        "macro_f1": "macro F1",
        "auc_normal_mild": "AUC N/M",
        "auc_moderate": "AUC mod",
        "auc_severe": "AUC sev",
    }
    for i, header in enumerate(columns.values()):
        table.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
    for row in comparison.sort_values("score").itertuples():
        table.add_row(
            *(getattr(row, c) if i < 2 else f"{getattr(row, c):.3f}" for i, c in enumerate(columns))
        )
    console.print(table)
    test = result["test_score"]
    console.print(
        f"test studies ({result['best_run']}): challenge score {test['score']:.3f} "
        f"(spinal {test['spinal']:.3f}, foraminal {test['foraminal']:.3f}, "
        f"subarticular {test['subarticular']:.3f}, any severe spinal {test['any_severe_spinal']:.3f}); "
        f"per-level prior {result['test_prior_score']:.3f}",
        highlight=False,
    )
    loc = result["localization"]["overall"]
    console.print(
        f"localisation (validation studies): median {loc['median_mm']:.1f} mm, p90 {loc['p90_mm']:.1f} mm, "
        f"{100 * loc['within_5mm_share']:.0f}% within 5 mm, mean slice error {loc['mean_slice_error']:.2f}",
        highlight=False,
    )
    for name, path in result["paths"].items():
        console.print(f"  {name:<12} {path}", highlight=False)
    console.print(f"total {sum(result['timings_s'].values()):.0f} s", highlight=False)
    console.print(f"open {result['paths']['study pages']} to look at the test studies", highlight=False)


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes."),
    studies: int | None = typer.Option(None, "--studies", help="Training studies of the phantom."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run (about 3 minutes on 2 CPU cores)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantom, the folds and the training."),
) -> None:
    """Run the whole pipeline on a phantom and print one comparison table (architecture x imbalance).

    Writes a phantom dataset, crops, classifier runs (vgg16, densenet121, efficientnet_b0 with no
    imbalance handling, class weights and SMOTE), their validation reports, the locators, a submission
    for the phantom's test studies and its score. About 15 minutes on 2 CPU cores; --quick about 3.

    Example: spinegrade demo --out demo_out --quick
    """
    settings = QUICK if quick else DemoSettings()
    settings = replace(settings, seed=seed, **({"studies": studies} if studies else {}))
    run_demo(out, settings)
