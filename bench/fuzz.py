"""Fuzz the reader and the pipeline with seeded mutations of the real study (issue 23); prints JSON.

Every mutation (kind and seed: tests/fuzzing.py) of one file of the real study goes through
read_usable_series and scan_series (a folder of the mutated file and two clean files of its series);
every PIPELINE_EVERY-th also through inspect, prepare and predict on two copies of the study (one
mutated, one untouched), with tiny untrained models; CSV mutations of the five CSVs go through inspect,
prepare and predict. The invariant (tests/fuzzing.py): nothing but DataError gets out (and none for one
file), a complete submission with valid probabilities, the untouched study graded exactly as without the
fault, the fault named by file unless the file was read. Prints the mutations run and held per kind and
stage, and the first failure of each kind with its seed (replay: tests/fuzzing.py `mutate`).
Run: nice -n 10 .venv/bin/python bench/fuzz.py [--mutations 2000] [--pipeline-every 50] [--csv 20]
(the real study is read from ../shared/data/rsna2024-real-study beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from fuzzing import MUTATIONS, Outcome, Workbench  # noqa: E402  (the tests' helpers)
from untrained import write_models  # noqa: E402

from spinegrade.runtime import torch_threads  # noqa: E402

REAL_STUDY = Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024-real-study"
CSVS = (
    "test_series_descriptions.csv",
    "sample_submission.csv",
    "train.csv",
    "train_label_coordinates.csv",
    "train_series_descriptions.csv",
)


def run(mutations: int, pipeline_every: int, csv_mutations: int, seed: int, real: Path) -> dict:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    outcomes: dict[str, list[Outcome]] = {"reader": [], "pipeline": [], "csv": []}
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what the reader and predict report goes into Problems
        root = Path(tmp)
        bench = Workbench(root / "work", real, write_models(root / "models", seed))
        files = bench.files()
        rng = np.random.default_rng(seed)
        kinds = list(MUTATIONS)
        for i in range(mutations):
            kind, file, case = kinds[i % len(kinds)], files[rng.integers(len(files))], seed * 1_000_000 + i
            outcomes["reader"].append(bench.reader_case(file, kind, case))
            if pipeline_every and i % pipeline_every == 0:
                outcomes["pipeline"].append(bench.pipeline_case(file, kind, case))
        for i in range(csv_mutations):
            outcomes["csv"].append(bench.csv_case(CSVS[i % len(CSVS)], seed * 1_000_000 + i))
    report: dict = {"seed": seed, "study": str(real)}
    for stage, found in outcomes.items():
        failures: dict[str, dict] = {}
        for o in found:
            if not o.held and o.kind not in failures:
                failures[o.kind] = {"seed": o.seed, "target": o.target, "why": o.why}
        report[stage] = {
            "run": len(found),
            "held": sum(o.held for o in found),
            "per_kind": {
                k: {"run": n, "held": sum(o.held for o in found if o.kind == k)}
                for k, n in Counter(o.kind for o in found).items()
            },
            "first_failure_per_kind": failures,
        }
    report["mutations_run"] = sum(report[s]["run"] for s in outcomes)
    report["mutations_held"] = sum(report[s]["held"] for s in outcomes)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["loadavg_1min_before_after"] = [load_before, os.getloadavg()[0]]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=2000, help="file mutations through the reader")
    parser.add_argument("--pipeline-every", type=int, default=50, help="every n-th also through the pipeline")
    parser.add_argument("--csv", type=int, default=20, help="CSV mutations through the pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--study", type=Path, default=REAL_STUDY, help="folder of the real study")
    args = parser.parse_args()
    if not (args.study / "train_images").is_dir():
        sys.exit(f"the real study is not at {args.study}; pass --study")
    print(json.dumps(run(args.mutations, args.pipeline_every, args.csv, args.seed, args.study), indent=2))


if __name__ == "__main__":
    main()
