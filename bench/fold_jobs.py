"""What `cv --fold-jobs` buys on this machine: the cv's locator and classifier stages, one fold after another
with every thread against N folds side by side (each process its share of the threads), on one phantom.

    python bench/fold_jobs.py --out /tmp/fold_jobs [--studies 30] [--jobs 2] [--repeats 1]

Both modes run the same settings (the demo's sizes, short schedules so a run takes minutes) with torch's
default threads; the order alternates per repeat. Prints one JSON object: per mode the median seconds of
each stage over the repeats, and the ratio sequential / side by side per stage and for the two together.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from spinegrade.crossval.run import cross_validate
from spinegrade.demo import DemoSettings
from spinegrade.phantom import write_phantom

STAGES = ("locators (folds 0,1,2)", "classifiers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Folder of the phantom and the cv runs.")
    parser.add_argument("--studies", type=int, default=30, help="Training studies of the phantom.")
    parser.add_argument("--jobs", type=int, default=2, help="Folds side by side in the second mode.")
    parser.add_argument("--repeats", type=int, default=1, help="Runs per mode (alternating order).")
    parser.add_argument("--epochs", type=int, default=2, help="Classifier and locator epochs.")
    args = parser.parse_args()
    console = Console(stderr=True, width=120)
    data = args.out / "data"
    write_phantom(data, args.studies, 0, size=128, test_studies=0)
    demo = replace(DemoSettings(), epochs=args.epochs, locator_epochs=args.epochs, threads=0, n_boot=200)
    modes = {"one fold after another": 1, f"{args.jobs} folds side by side": args.jobs}
    times: dict[str, dict[str, list[float]]] = {m: {s: [] for s in STAGES} for m in modes}
    for repeat in range(args.repeats):
        order = list(modes.items()) if repeat % 2 == 0 else list(reversed(modes.items()))
        for mode, jobs in order:
            out = args.out / f"jobs{jobs}_r{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            settings = replace(demo.cv_settings(), fold_jobs=jobs)
            report = cross_validate(data, out, settings, console=console)
            for stage in STAGES:
                times[mode][stage].append(report["timings_s"][stage])
    medians = {m: {s: statistics.median(v) for s, v in t.items()} for m, t in times.items()}
    (one, side) = (medians[m] for m in modes)
    print(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "studies": args.studies,
                "epochs": args.epochs,
                "repeats": args.repeats,
                "median_seconds": medians,
                "speedup": {
                    **{s: round(one[s] / side[s], 2) for s in STAGES},
                    "both": round(sum(one.values()) / sum(side.values()), 2),
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
