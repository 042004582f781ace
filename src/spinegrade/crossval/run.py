"""Cross-validate the whole pipeline: per fold, train the locators and classifiers on the other folds,
locate the fold's studies, crop at the located points and grade them - the score a user can expect.

Stages (each one's files under OUT, reused by a resumed run):
  1. plan: OUT/folds.csv, the dataset's fold plan (or --folds-file), read by every later stage;
  2. prepare: OUT/cache, crops at the labelled points (the classifiers' validation and "oracle" crops);
  3. locators: OUT/fold<f>/locator, trained on the other folds (all folds when training points need
     every study's out-of-fold located point);
  4. locate: OUT/fold<f>/points.csv, each validation study located and compared with its labels;
  5. training points: OUT/train_points_<mode>, crops at jittered or located points (crossval.points);
  6. classifiers: OUT/fold<f>/classifiers/<arch>__<points>, trained on the other folds for the recipe's
     epochs and kept at the last (the graded fold chooses nothing), and per --variant (crossval.variants)
     <arch>__<points>__<variant> at the headline points; with --seeds N each also as ...__seed1 to
     ...__seed<N-1>, trained with the next seeds, and graded as one average;
  7. grade: the fold's studies graded end to end from the located points (prediction's grading, priors of
     the training folds for whatever cannot be graded), and at the labelled points (the runs' validation
     predictions), variants whose prior-shift correction is not the identity also without it ("raw"), the
     headline also with side-flip TTA where its runs were trained on mirrors; then the report
     (crossval.report), each variant with its paired difference to the headline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from spinegrade.crops.defaults import DEFAULT_CROP_MM, DEFAULT_FOLDS, DEFAULT_K, DEFAULT_SIZE
from spinegrade.crops.extract import resolve_crop_mm
from spinegrade.crops.folds import FOLDS_FILE, fold_plan, plan_summary, write_folds
from spinegrade.crops.views import AXIAL, OWN, check_views
from spinegrade.crossval.points import POINT_COLUMNS, TRAIN_POINTS, error_summary, located_errors
from spinegrade.crossval.report import build_report, render_markdown
from spinegrade.crossval.variants import check_variant
from spinegrade.data.tables import RsnaData, labels_long, load_rsna
from spinegrade.errors import DataError, Problem
from spinegrade.evaluation.calibration import (
    CALIBRATION_FILE,
    fit_calibration,
    nested_calibrated_oof,
    nested_oof,
)
from spinegrade.evaluation.priors import level_priors
from spinegrade.evaluation.stacking import STACKING_FILE, fit_stacking
from spinegrade.fileio import write_atomic, write_csv_atomic
from spinegrade.localization.settings import LocatorSettings
from spinegrade.prediction.results import StudyResult
from spinegrade.prediction.studies import StudyPlan, series_type
from spinegrade.runtime import timed_stage
from spinegrade.training.loggers import check_logger
from spinegrade.vocab import SEVERITIES

if TYPE_CHECKING:
    from spinegrade.prediction.grading import Locate

SETTINGS_FILE: Final = "cv.json"
PRIOR_ENTRY: Final = "prior (training folds)"
FLOOR_FILE: Final = "oracle_submission.csv"  # a phantom's Bayes floor, beside its train.csv
LOCATED_FILE: Final = "located.csv"
POINTS_FILE: Final = "points.csv"
TTA_KEY: Final = "tta_"  # oof_tta_submission.csv: the headline graded with side-flip TTA


@dataclass(frozen=True)
class CvSettings:
    """What `spinegrade cv` trains and how (saved as OUT/cv.json)."""

    n_folds: int = DEFAULT_FOLDS
    folds: tuple[int, ...] | None = None  # the folds graded (None: all); locators may need all
    seed: int = 0
    archs: tuple[str, ...] = ("efficientnet_b0",)
    # Classifiers per fold and architecture, trained with seeds seed, seed + 1, ... and averaged: one draw of
    # training moves a 150-study score by up to 0.04 (docs/results.md#classifier-levers-at-150-studies).
    seeds: int = 1
    imbalance: str = "class-weights"
    # Where training crops are cut; the first is the headline, several compare them (located measured best:
    # docs/results.md#training-points).
    train_points: tuple[str, ...] = ("located",)
    size: int = DEFAULT_SIZE
    k: int = DEFAULT_K
    # Crop side (mm) per condition group: overrides of crops.defaults.DEFAULT_CROP_MM, resolved to all groups.
    crop_mm: dict[str, float] = field(default_factory=dict)
    # crops.views: each sagittal target's axial view too (docs/results.md#second-views); (OWN,): none
    views: tuple[str, ...] = (OWN, AXIAL)
    epochs: int | None = None  # None: each architecture's recipe
    batch_size: int = 32
    locator: LocatorSettings = field(default_factory=LocatorSettings)
    accelerator: str = "auto"
    devices: str = "auto"
    workers: int = 0  # processes reading studies ahead / cutting crops (0: in this process)
    threads: int = 1  # torch CPU threads
    n_boot: int = 2000
    logger: str = "csv"  # the locators' and classifiers' training curves (training.loggers)
    # name -> TrainConfig overrides (crossval.variants), trained at the headline training points
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_logger(self.logger)
        object.__setattr__(self, "crop_mm", resolve_crop_mm(self.crop_mm))
        object.__setattr__(self, "views", check_views(self.views))
        unknown = [m for m in self.train_points if m not in TRAIN_POINTS]
        if unknown or not self.train_points:
            raise DataError(f"train points {unknown or '(none)'}: use some of {', '.join(TRAIN_POINTS)}")
        if not self.archs:
            raise DataError("cv needs at least one architecture")
        if self.seeds < 1:
            raise DataError(
                f"seeds is the number of classifiers per fold and architecture: at least 1, got {self.seeds}"
            )
        for name, overrides in self.variants.items():
            check_variant(name, overrides)
            if "arch" in overrides and len(self.archs) > 1:
                raise DataError(
                    f"--variant {name} sets arch: that compares two architectures, so give cv one --arch "
                    f"(not {','.join(self.archs)})"
                )


# What a resumed cv may change: which folds it grades, the variants it adds and how it runs. Everything
# else shaped a finished stage (the locators, their points, the crops, the headline classifiers).
RESUMABLE: Final = (
    "folds",
    "variants",
    "seeds",
    "accelerator",
    "devices",
    "workers",
    "threads",
    "n_boot",
    "logger",
)


def check_resumable(saved: dict[str, Any], settings: CvSettings) -> None:
    """DataError naming the settings a resumed cv changed that its finished stages depend on; `saved` is
    cv.json's settings (a setting it does not record, added since, means what it meant then)."""
    now = json.loads(json.dumps(asdict(settings), default=str))
    old = json.loads(json.dumps(saved, default=str))
    old.setdefault("crop_mm", dict(DEFAULT_CROP_MM))  # written before cv had --crop-mm: the defaults
    old.setdefault("views", [OWN])  # written before cv had --views: own views only
    if "locator" in old:
        old["locator"] = asdict(LocatorSettings.from_saved(old["locator"]))
        for side in (old, now):  # cv gives each fold's locators its own fold, fold count and seed
            side["locator"] = {
                k: v for k, v in side["locator"].items() if k not in ("fold", "n_folds", "seed")
            }
    changed = sorted(k for k in now if k not in RESUMABLE and k in old and old[k] != now[k])
    if "locator" in changed:
        fields = sorted(k for k, v in now["locator"].items() if old["locator"].get(k) != v)
        changed[changed.index("locator")] = f"locator ({', '.join(fields)})"
    if changed:
        raise DataError(
            f"--resume with other settings than the run's {SETTINGS_FILE}: {', '.join(changed)}; give the "
            "run's settings (its cv.json) or another --out"
        )


def _progress(console: Console) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)


def study_plans(data: RsnaData, study_ids: Sequence[int]) -> list[StudyPlan]:
    """The reading plans of train-split studies, typed from train_series_descriptions.csv."""
    d = data.descriptions
    return [
        StudyPlan(
            int(s),
            tuple(
                (series_type(r.series_description), data.series_folder(s, r.series_id))
                for r in d[d["study_id"] == s].itertuples(index=False)
            ),
        )
        for s in study_ids
    ]


def fold_priors(long: pd.DataFrame, folds: pd.Series, fold: int) -> pd.DataFrame:
    """The weight-optimal per-level priors of the training folds' labels (never the held-out fold's)."""
    return level_priors(long[long["study_id"].map(folds) != fold], weighted=True)


def prior_rows(study_id: int, priors: pd.DataFrame) -> pd.DataFrame:
    """A study's 25 submission rows holding the priors (the same rows `predict` writes)."""
    grades = priors[["condition", "level", *SEVERITIES]].assign(source="prior")
    return StudyResult(int(study_id), pd.DataFrame(), grades).rows()


def _run_name(arch: str, points: str, variant: str | None = None, seed_index: int = 0) -> str:
    return (
        f"{arch}__{points}"
        + (f"__{variant}" if variant else "")
        + (f"__seed{seed_index}" if seed_index else "")
    )


@dataclass(frozen=True)
class _Member:
    """One graded classifier set: its oof_<kind><key>submission.csv key, report label and run folders."""

    key: str
    label: str
    points: str
    variant: str | None = None
    arch: str | None = None  # the variant's own architecture (then cv trains one)

    def jobs(self, out: Path, fold: int, settings: CvSettings) -> list[tuple[str, int, Path]]:
        """(architecture, seed index, run folder) of each classifier of the fold, averaged when graded."""
        folder = out / f"fold{fold}" / "classifiers"
        return [
            (arch, j, folder / _run_name(arch, self.points, self.variant, j))
            for arch in (self.arch or a for a in settings.archs)
            for j in range(settings.seeds)
        ]

    def runs(self, out: Path, fold: int, settings: CvSettings) -> list[Path]:
        return [run for *_, run in self.jobs(out, fold, settings)]


def _members(settings: CvSettings) -> list[_Member]:
    """Every training-points mode (the headline's files unnamed), then every variant."""
    modes = settings.train_points
    return [_Member(_file_key(m, modes), m, m) for m in modes] + [
        _Member(f"variant_{v}_", f"variant {v}", modes[0], v, overrides.get("arch"))
        for v, overrides in settings.variants.items()
    ]


def locate_fold(
    data: RsnaData, locator_dir: Path, study_ids: Sequence[int], workers: int, console: Console
) -> tuple[pd.DataFrame, pd.DataFrame, list[Problem]]:
    """(located points with study_id, POINT_COLUMNS errors, problems) of the studies with one locator."""
    from spinegrade.localization.locate import load_locator, locate_study
    from spinegrade.prediction.readahead import read_studies

    locator = load_locator(locator_dir)
    coordinates = data.coordinates
    assert coordinates is not None  # the train split's
    located, errors, problems = [], [], []
    with _progress(console) as bar:
        task = bar.add_task(f"locating {locator_dir.parent.name}", total=len(study_ids))
        for images in read_studies(study_plans(data, study_ids), workers):
            problems += images.problems
            try:
                found = locate_study(images.series_by_type, locator).assign(study_id=images.study_id)
                truth = coordinates[coordinates["study_id"] == images.study_id]
                errors.append(located_errors(found, truth, images.series_by_id()))
                located.append(found)
            except Exception as exc:  # one study's odd geometry must not stop the others
                problems.append(
                    Problem("locate_failed", f"{type(exc).__name__}: {exc}", study_id=images.study_id)
                )
            bar.advance(task)
    empty = pd.DataFrame(columns=list(POINT_COLUMNS))
    return (
        pd.concat(located, ignore_index=True) if located else pd.DataFrame(columns=["study_id"]),
        pd.concat(errors, ignore_index=True) if errors else empty,
        problems,
    )


def cross_validate(
    data_dir: str | Path,
    out: str | Path,
    settings: CvSettings = CvSettings(),
    *,
    folds_file: str | Path | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run every stage (module doc) into OUT and return report.json's content."""
    from spinegrade.crops.prepare import crop_plan, prepare
    from spinegrade.crossval.points import training_points
    from spinegrade.localization.train import train_locator
    from spinegrade.runtime import torch_threads
    from spinegrade.training.runs import TrainConfig, versions, write_json
    from spinegrade.training.train import train_run

    console = console or Console(soft_wrap=True)
    data_dir, out = Path(data_dir), Path(out)
    data = load_rsna(data_dir, "train")
    if not data.has_images:
        raise DataError(f"{data.image_dir} is missing: cv needs the DICOM images next to train.csv")
    if (out / SETTINGS_FILE).is_file() and not resume:
        raise DataError(
            f"{out} holds a cv run ({SETTINGS_FILE}); pass --resume to continue it or another --out"
        )
    if (out / SETTINGS_FILE).is_file():
        check_resumable(json.loads((out / SETTINGS_FILE).read_text()).get("settings", {}), settings)
    long = labels_long(data.labels)
    folds = fold_plan(long, n_folds=settings.n_folds, seed=settings.seed, folds_file=folds_file)
    n_folds = int(folds.max()) + 1
    graded = list(settings.folds) if settings.folds is not None else list(range(n_folds))
    bad = [f for f in graded if not 0 <= f < n_folds]
    if bad or not graded:
        raise DataError(f"--folds {bad or graded}: the plan has folds 0..{n_folds - 1}")
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / FOLDS_FILE
    write_folds(plan_file, folds)
    write_json(
        out / SETTINGS_FILE,
        {"data_dir": str(data_dir), "settings": asdict(settings), "folds": plan_summary(folds), **versions()},
    )
    needs_all = any(mode != "labelled" for mode in settings.train_points)
    located_folds = list(range(n_folds)) if needs_all else graded
    timings: dict[str, float] = {}
    problems: list[Problem] = []

    with torch_threads(settings.threads):
        with timed_stage(console, timings, "prepare (labelled points)", prefix="cv: "):
            cache = prepare(
                data_dir,
                out / "cache",
                k=settings.k,
                size=settings.size,
                crop_mm=settings.crop_mm,
                views=settings.views,
                folds_file=plan_file,
                seed=settings.seed,
                workers=max(settings.workers, 1),
                console=console,
            )
            assert cache is not None  # not sharded: prepare returns the merged cache
        with timed_stage(
            console, timings, f"locators (folds {','.join(map(str, located_folds))})", prefix="cv: "
        ):
            for fold in located_folds:
                console.print(f"fold {fold}: locators trained on the other folds")
                train_locator(
                    data_dir,
                    out / f"fold{fold}" / "locator",
                    replace(settings.locator, fold=fold, n_folds=n_folds, seed=settings.seed),
                    accelerator=settings.accelerator,
                    devices=int(settings.devices) if settings.devices.isdigit() else settings.devices,
                    threads=settings.threads,
                    folds_file=plan_file,
                    evaluate=False,
                    logger=settings.logger,
                    progress=console.is_terminal,
                )
        with timed_stage(console, timings, "locate held-out studies", prefix="cv: "):
            located, points = {}, []
            for fold in located_folds:
                fold_dir = out / f"fold{fold}"
                if resume and (fold_dir / LOCATED_FILE).is_file() and (fold_dir / POINTS_FILE).is_file():
                    located[fold] = pd.read_csv(fold_dir / LOCATED_FILE)
                    errors = pd.read_csv(fold_dir / POINTS_FILE)
                else:
                    ids = sorted(folds.index[folds == fold])
                    located[fold], errors, found = locate_fold(
                        data, fold_dir / "locator", ids, settings.workers, console
                    )
                    problems += found
                    write_csv_atomic(located[fold], fold_dir / LOCATED_FILE)
                    write_csv_atomic(errors, fold_dir / POINTS_FILE)
                points.append(errors.assign(fold=fold))
            all_points = pd.concat(points, ignore_index=True)
        train_caches = {}
        for mode in (m for m in settings.train_points if m != "labelled"):
            with timed_stage(console, timings, f"training crops at {mode} points", prefix="cv: "):
                rows, _ = crop_plan(data, folds_file=plan_file)
                moved = training_points(rows, all_points, mode, seed=settings.seed)
                train_caches[mode] = prepare(
                    data_dir,
                    out / f"train_points_{mode}",
                    k=settings.k,
                    size=settings.size,
                    crop_mm=settings.crop_mm,
                    views=settings.views,
                    folds_file=plan_file,
                    points=moved,
                    workers=max(settings.workers, 1),
                    console=console,
                )
        with timed_stage(console, timings, "classifiers", prefix="cv: "):
            base = TrainConfig(
                keep="last",  # the fold it is graded on never chooses an epoch (a variant may measure "best")
                imbalance=settings.imbalance,
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                seed=settings.seed,
                accelerator=settings.accelerator,
                devices=settings.devices,
                threads=settings.threads,
                logger=settings.logger,
            )
            members = _members(settings)
            for member in members:
                overrides = settings.variants.get(member.variant or "", {})
                for fold in graded:
                    jobs = member.jobs(out, fold, settings)
                    teachers = members[0].runs(out, fold, settings)  # a distilling variant's teacher
                    for (arch, j, run), teacher in zip(jobs, teachers, strict=True):
                        taught = {"teacher": str(teacher)} if overrides.get("distill") else {}
                        seed = int(overrides.get("seed", settings.seed)) + j
                        train_run(
                            cache,
                            run,
                            replace(
                                base, **{"arch": arch, "fold": fold, **taught, **overrides, "seed": seed}
                            ),
                            train_cache=train_caches.get(member.points),
                            resume=True,
                            console=console,
                        )
        with timed_stage(console, timings, "grade held-out studies", prefix="cv: "):
            submissions = grade_folds(data, out, folds, graded, located, settings, long, console)
    for name, frame in submissions.items():
        write_csv_atomic(frame, out / f"oof_{name}submission.csv")
    shown = all_points[all_points["fold"].isin(graded)]
    write_csv_atomic(shown, out / "oof_points.csv")
    members = _members(settings)
    named = _named(submissions, members)
    main = settings.train_points[0]
    gaps = {
        f"end to end - oracle points ({mode} training points)": (
            f"end to end ({mode})",
            f"oracle points ({mode})",
        )
        for mode in settings.train_points
    }
    headline = f"end to end ({main})"
    differences = {  # each variant against the headline, on the same resamples
        f"{entry} - {base}": (entry, base)
        for m in members[len(settings.train_points) :]
        for entry, base in (
            (f"end to end ({m.label})", headline),
            (f"end to end raw ({m.label})", headline),
            (f"oracle points ({m.label})", f"oracle points ({main})"),
        )
        if entry in named
    }
    differences[f"{headline} - {PRIOR_ENTRY}"] = (headline, PRIOR_ENTRY)  # "beats the prior", paired
    if TTA_KEY in submissions:
        tta = f"end to end ({main}), side-flip TTA"
        named[tta] = submissions[TTA_KEY]
        differences[f"{tta} - {headline}"] = (tta, headline)
    if len(graded) >= 2:  # calibration of the headline OOF: nested (honest) in the report, fitted on all
        raw = named[f"end to end ({main})"]
        calibrated = f"end to end ({main}), calibrated (nested)"
        named[calibrated] = nested_calibrated_oof(raw, data.labels, folds)
        write_csv_atomic(named[calibrated], out / "oof_calibrated_submission.csv")
        fit_calibration(raw, data.labels).save(out / CALIBRATION_FILE)
        gaps["calibrated (nested) - raw, end to end"] = (calibrated, f"end to end ({main})")
        stacked = f"end to end ({main}), stacked (nested)"
        named[stacked] = nested_oof(raw, folds, lambda rows: fit_stacking(rows, data.labels), "stacking")
        write_csv_atomic(named[stacked], out / "oof_stacked_submission.csv")
        fit_stacking(raw, data.labels).save(out / STACKING_FILE)
        differences[f"{stacked} - {headline}"] = (stacked, headline)
        differences[f"{stacked} - {PRIOR_ENTRY}"] = (stacked, PRIOR_ENTRY)
    floor = data_dir / FLOOR_FILE
    if floor.is_file():
        named["floor (phantom's true probabilities)"] = pd.read_csv(floor)
    report = build_report(
        data.labels,
        named,
        error_summary(shown),
        gaps=gaps,
        differences=differences,
        n_boot=settings.n_boot,
        seed=settings.seed,
        extra={
            "headline": headline,
            "folds_graded": graded,
            "folds": plan_summary(folds),
            "settings": asdict(settings),
            "timings_s": timings,
            "problems": [p.to_dict() for p in problems],
        },
    )
    write_atomic(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    write_atomic(out / "report.md", render_markdown(report))
    console.print(render_markdown(report), markup=False, highlight=False)
    return report


def _named(submissions: dict[str, pd.DataFrame], members: Sequence[_Member]) -> dict[str, pd.DataFrame]:
    """The report's entries: end to end (and raw, when graded), oracle per member, then the prior."""
    named = {}
    for m in members:
        named[f"end to end ({m.label})"] = submissions[m.key]
        if f"raw_{m.key}" in submissions:
            named[f"end to end raw ({m.label})"] = submissions[f"raw_{m.key}"]
        named[f"oracle points ({m.label})"] = submissions[f"oracle_{m.key}"]
    named[PRIOR_ENTRY] = submissions["prior_"]
    return named


def _file_key(mode: str, modes: Sequence[str]) -> str:
    """oof_<key>submission.csv: the headline mode's files unnamed, the others' named by their mode."""
    return "" if mode == modes[0] else f"{mode}_"


def _given(points: pd.DataFrame) -> Locate:
    """A Locate that returns points located beforehand (cv locates each fold's studies once)."""
    return lambda _series: points


def grade_folds(
    data: RsnaData,
    out: Path,
    folds: pd.Series,
    graded: Sequence[int],
    located: dict[int, pd.DataFrame],
    settings: CvSettings,
    long: pd.DataFrame,
    console: Console,
) -> dict[str, pd.DataFrame]:
    """Every graded fold's studies, end to end (located points; "raw_" also without the prior-shift
    correction where it is not the identity) and at the labelled points, per member (training-points
    mode or variant), plus the training folds' priors: file key -> submission rows."""
    from spinegrade.prediction.grade import Ensemble
    from spinegrade.prediction.grading import grade_study
    from spinegrade.prediction.readahead import read_studies

    parts: dict[str, list[pd.DataFrame]] = {}
    members = _members(settings)
    shifted: set[str] = set()  # members corrected in some fold: their raw files are kept
    for fold in graded:
        priors = fold_priors(long, folds, fold)
        ids = sorted(folds.index[folds == fold])
        runs = {m.key: m.runs(out, fold, settings) for m in members}
        ensembles = {key: Ensemble.load(paths) for key, paths in runs.items()}
        for key, ensemble in list(ensembles.items()):
            if ensemble.shifts:
                ensembles[f"raw_{key}"] = ensemble.without_prior_shift()
                shifted.add(key)
        if ensembles[members[0].key].mirrorable:  # the headline with side-flip TTA, paired with it
            ensembles[TTA_KEY] = ensembles[members[0].key].with_tta()
        by_study = dict(tuple(located[fold].groupby("study_id"))) if len(located[fold]) else {}
        with _progress(console) as bar:
            task = bar.add_task(f"grading fold {fold}", total=len(ids))
            for images in read_studies(study_plans(data, ids), settings.workers):
                points = by_study.get(images.study_id, pd.DataFrame())
                for key, ensemble in ensembles.items():
                    rows = grade_study(images, _given(points), ensemble, priors).rows()
                    parts.setdefault(key, []).append(rows)
                    if not ensemble.shifts and not key.startswith(("raw_", TTA_KEY)):  # raw = corrected
                        parts.setdefault(f"raw_{key}", []).append(rows)
                bar.advance(task)
        fallback = pd.concat([prior_rows(s, priors) for s in ids], ignore_index=True)
        parts.setdefault("prior_", []).append(fallback)
        for key, paths in runs.items():
            oracle = pd.concat([pd.read_csv(r / "val_predictions.csv") for r in paths])
            oracle = oracle.groupby("row_id", sort=False)[list(SEVERITIES)].mean()
            rows = fallback.set_index("row_id")
            rows.update(oracle)
            parts.setdefault(f"oracle_{key}", []).append(rows.reset_index())
    return {
        key: pd.concat(frames, ignore_index=True)
        for key, frames in parts.items()
        if not key.startswith("raw_") or key[4:] in shifted
    }
