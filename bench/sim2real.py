"""Sim-to-real bench: a locator trained on the phantom alone, run on the real study, against its radiologists.

Writes a phantom with the demo's sizes, trains the three locators with the demo's settings (train-locator
on fold 0), then runs locate_study on the real study of ../shared/data/rsna2024-real-study and compares the
points with the labelled ones in patient space (localization.metrics): median error in mm and share of
points on the labelled slice, per series type. The more the phantom looks like real anatomy, the smaller
these get. It only uses write_phantom's long-stable signature, so running it with another tree's code on
PYTHONPATH (e.g. main's) measures that tree's phantom. Prints one JSON object. Run:
    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 .venv/bin/python bench/sim2real.py --out /tmp/sim2real
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from spinegrade.data.series import Series, read_series
from spinegrade.data.tables import load_rsna
from spinegrade.demo import DemoSettings
from spinegrade.localization.locate import load_locator, locate_study
from spinegrade.localization.metrics import error_report, point_errors
from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.train import train_locator
from spinegrade.phantom import write_phantom
from spinegrade.runtime import torch_threads

REAL_STUDY = Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024-real-study"


def real_errors(locator_dir: Path, real: Path) -> dict:
    """error_report of the locator on every labelled study of `real` (train split layout)."""
    data = load_rsna(real, "train")
    locator = load_locator(locator_dir)
    errors = []
    for study_id, rows in data.descriptions.groupby("study_id"):
        by_type: dict[str, list[Series]] = {}
        for r in rows.itertuples(index=False):
            by_type.setdefault(r.series_description, []).append(
                read_series(data.series_folder(study_id, r.series_id))
            )
        located = locate_study(by_type, locator).assign(study_id=study_id)
        by_id = {s.series_id: s for group in by_type.values() for s in group}
        truth = data.coordinates[data.coordinates["study_id"] == study_id]
        errors.append(point_errors(located, truth, by_id))
    return error_report(pd.concat(errors, ignore_index=True))


def main() -> None:
    demo = DemoSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (phantom, locator)")
    parser.add_argument("--real", type=Path, default=REAL_STUDY, help="the real study's folder")
    parser.add_argument("--studies", type=int, default=demo.studies)
    parser.add_argument("--size", type=int, default=demo.image_px, help="phantom image size (px)")
    parser.add_argument("--locator-px", type=int, default=demo.locator_px)
    parser.add_argument("--epochs", type=int, default=demo.locator_epochs)
    parser.add_argument("--samples", type=int, default=demo.locator_samples)
    parser.add_argument("--workers", type=int, default=2, help="phantom rendering processes")
    args = parser.parse_args()
    if not (args.real / "train.csv").is_file():
        raise SystemExit(f"no real study at {args.real}")
    timings = {}
    start = time.perf_counter()
    phantom = args.out / "phantom"
    write_phantom(
        phantom,
        args.studies,
        demo.seed,
        size=args.size,
        test_studies=demo.test_studies,
        workers=args.workers,
        progress=False,
    )
    timings["phantom_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    settings = LocatorSettings(
        size=args.locator_px, epochs=args.epochs, samples_per_epoch=args.samples, seed=demo.seed
    )
    phantom_metrics = train_locator(phantom, args.out / "locator", settings, progress=False)
    timings["locator_s"] = round(time.perf_counter() - start, 1)
    with torch_threads(1):
        real = real_errors(args.out / "locator", args.real)

    def brief(report: dict) -> dict:
        keep = ("median_mm", "p90_mm", "exact_slice_share", "n_points")
        return {
            "overall": {k: report["overall"][k] for k in keep},
            **{t: {k: m[k] for k in keep} for t, m in report["by_series_type"].items()},
        }

    print(
        json.dumps(
            {
                "phantom_code": str(Path(write_phantom.__code__.co_filename).parents[3]),
                "settings": vars(args) | {"out": str(args.out), "real": str(args.real)},
                "real_study": brief(real),
                "phantom_validation": brief(phantom_metrics),
                "seconds": timings,
            },
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
