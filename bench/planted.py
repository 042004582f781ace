"""Plant issue 23's 18 faults, one at a time, in one of two copies of the real study and run `spinegrade
predict` on each as a user would (a subprocess, stdout and stderr captured from a pipe); prints JSON.

Each fault holds when predict exits 0, writes 50 rows, grades the clean copy exactly as without the
fault, cuts nothing with an ellipsis, and names the fault by study and series id ("study S series X",
or "study S" for a study-level fault) in what it printed. The <script> in DICOM tags must reach the
study pages escaped (predict --report).
Run: nice -n 10 .venv/bin/python bench/planted.py [--only NAME ...]
(the real study is read from ../shared/data/rsna2024-real-study beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from fuzzing import planted_pixel_run, set_value  # noqa: E402  (the tests' helpers)
from untrained import write_models  # noqa: E402

from spinegrade.vocab import SEVERITIES, TARGETS, make_row_id  # noqa: E402

REAL_STUDY = Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024-real-study"
CLEAN, FAULTY = 4646740, 1000002
SAGITTAL_T2, SAGITTAL_T1, AXIAL_T2 = "3666319702", "3486248476", "3201256954"
SCRIPT = "<script>alert('spinegrade')</script>"


def _rewrite(path: Path, edit: Callable[[pydicom.Dataset], None], to: Path | None = None) -> None:
    """Edit a file's dataset and write it to `to` (default: over itself, unlinking the shared original)."""
    ds = pydicom.dcmread(path)
    edit(ds)
    target = to or path
    target.unlink(missing_ok=True)
    ds.save_as(target)


def _write(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)  # the copies are hard links: never write through them
    path.write_bytes(data)


def localiser(study: Path, data: Path) -> str:
    def orthogonal(ds: pydicom.Dataset) -> None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = 99

    _rewrite(study / SAGITTAL_T1 / "9.dcm", orthogonal, study / SAGITTAL_T1 / "99.dcm")
    return SAGITTAL_T1


def foreign_series_uid(study: Path, data: Path) -> str:
    _rewrite(study / SAGITTAL_T2 / "5.dcm", lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.826.0.1.9999"))
    return SAGITTAL_T2


def malformed_pixel_spacing(study: Path, data: Path) -> str:
    file = study / AXIAL_T2 / "20.dcm"
    _write(file, set_value(file.read_bytes(), 0x00280030, b"0.4167\\abc"))
    return AXIAL_T2


def missing_image_position(study: Path, data: Path) -> str:
    _rewrite(study / SAGITTAL_T1 / "4.dcm", lambda ds: delattr(ds, "ImagePositionPatient"))
    return SAGITTAL_T1


def duplicate_position(study: Path, data: Path) -> str:
    _rewrite(
        study / SAGITTAL_T2 / "7.dcm",
        lambda ds: setattr(ds, "InstanceNumber", 100),
        study / SAGITTAL_T2 / "100.dcm",
    )
    return SAGITTAL_T2


def truncated_file(study: Path, data: Path) -> str:
    file = study / AXIAL_T2 / "30.dcm"
    _write(file, file.read_bytes()[:1000])
    return AXIAL_T2


def zero_byte_file(study: Path, data: Path) -> str:
    _write(study / SAGITTAL_T1 / "10.dcm", b"")
    return SAGITTAL_T1


def non_dicom_file(study: Path, data: Path) -> str:
    _write(study / SAGITTAL_T2 / "notes.dcm", b"exported by a viewer, not an image\n")
    return SAGITTAL_T2


def missing_series_folder(study: Path, data: Path) -> str:
    shutil.rmtree(study / SAGITTAL_T1)
    return SAGITTAL_T1


def empty_series_folder(study: Path, data: Path) -> str:
    for file in (study / SAGITTAL_T2).iterdir():
        file.unlink()
    return SAGITTAL_T2


def missing_study_folder(study: Path, data: Path) -> None:
    shutil.rmtree(study)


def empty_study_folder(study: Path, data: Path) -> None:
    shutil.rmtree(study)
    study.mkdir()


def unknown_series_description(study: Path, data: Path) -> str:
    path = data / "test_series_descriptions.csv"
    table = pd.read_csv(path)
    table.loc[(table.study_id == FAULTY) & (table.series_id == int(SAGITTAL_T1)), "series_description"] = (
        "Sag T9"
    )
    path.unlink()
    table.to_csv(path, index=False)
    return SAGITTAL_T1


def monochrome1(study: Path, data: Path) -> str:
    for file in (study / AXIAL_T2).iterdir():
        _rewrite(file, lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME1"))
    return AXIAL_T2


def junk_files(study: Path, data: Path) -> str:
    _write(study / SAGITTAL_T1 / "Thumbs.db", bytes(range(256)) * 4)
    _write(study / SAGITTAL_T1 / ".DS_Store", b"\0\0\0\1Bud1" + b"\0" * 100)
    return SAGITTAL_T1


def odd_file_names(study: Path, data: Path) -> None:
    for i, file in enumerate(sorted((study / SAGITTAL_T2).iterdir())):
        file.rename(file.with_name(f"IM {i:04d} (copy)" + (".dcm" if i % 2 else "")))


def script_in_tags(study: Path, data: Path) -> None:
    for file in (study / SAGITTAL_T1).iterdir():
        _rewrite(file, lambda ds: setattr(ds, "SeriesDescription", SCRIPT))


def corrupt_rle(study: Path, data: Path) -> str:
    file = study / SAGITTAL_T2 / "9.dcm"
    _write(file, planted_pixel_run(file.read_bytes(), np.random.default_rng(0)))
    return SAGITTAL_T2


# fault -> how it must show: named ("series": study and series ids; "study": the study id) or read as
# written (odd names, <script>: nothing to name, the series read whole; <script> escaped on the pages).
FAULTS: dict[str, tuple[Callable[[Path, Path], str | None], str]] = {
    f.__name__: (f, shown)
    for f, shown in (
        (localiser, "series"),
        (foreign_series_uid, "series"),
        (malformed_pixel_spacing, "series"),
        (missing_image_position, "series"),
        (duplicate_position, "series"),
        (truncated_file, "series"),
        (zero_byte_file, "series"),
        (non_dicom_file, "series"),
        (missing_series_folder, "series"),
        (empty_series_folder, "series"),
        (missing_study_folder, "study"),
        (empty_study_folder, "study"),
        (unknown_series_description, "series"),
        (monochrome1, "series"),
        (junk_files, "series"),
        (odd_file_names, "read"),
        (script_in_tags, "read"),
        (corrupt_rle, "series"),
    )
}


def _layout(root: Path, real: Path) -> Path:
    """Two copies of the real study in the test layout, with a sample submission (as Kaggle gives it)."""
    data = root / "template"
    for study in (CLEAN, FAULTY):
        shutil.copytree(real / "train_images" / "4646740", data / "test_images" / str(study))
    descriptions = pd.read_csv(real / "train_series_descriptions.csv")
    pd.concat([descriptions.assign(study_id=s) for s in (CLEAN, FAULTY)]).to_csv(
        data / "test_series_descriptions.csv", index=False
    )
    rows = [make_row_id(s, c, lv) for s in (CLEAN, FAULTY) for c, lv in TARGETS]
    pd.DataFrame({"row_id": rows, **{s: 1 / 3 for s in SEVERITIES}}).to_csv(
        data / "sample_submission.csv", index=False
    )
    return data


def _predict(data: Path, models: tuple[Path, Path], out: Path, report: bool) -> subprocess.CompletedProcess:
    run, locator = models
    spinegrade = Path(sys.executable).with_name("spinegrade")
    command = [str(spinegrade), "predict", str(data), "--runs", str(run), "--locator", str(locator)]
    command += ["--out", str(out)] + (["--report"] if report else [])
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    env.pop("COLUMNS", None)  # as a pipe sees it: rich's 80 columns
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)


def _words(text: str) -> str:
    """What a reader reads: table borders gone, line breaks and runs of spaces as one space."""
    return " ".join("".join(" " if c in "│┃┏┓┗┛┡┩└┘━─╇┳┻╋┼" else c for c in text).split())


def plant(name: str, template: Path, models: tuple[Path, Path], baseline: pd.DataFrame, root: Path) -> dict:
    make, shown = FAULTS[name]
    data = root / name
    shutil.copytree(template, data, copy_function=os.link)  # hard links: each fault unlinks what it edits
    series = make(data / "test_images" / str(FAULTY), data)
    started = time.perf_counter()
    done = _predict(data, models, root / f"{name}-out" / "submission.csv", report=name == "script_in_tags")
    result = {"exit": done.returncode, "seconds": round(time.perf_counter() - started, 1)}
    why = []
    if done.returncode != 0:
        why.append(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    else:
        submission = pd.read_csv(root / f"{name}-out" / "submission.csv")
        clean = submission["row_id"].str.startswith(f"{CLEAN}_")
        result["rows"] = len(submission)
        if len(submission) != 50:
            why.append(f"{len(submission)} rows")
        elif not submission[clean].reset_index(drop=True).equals(baseline[clean].reset_index(drop=True)):
            why.append("the clean copy was graded differently")
    output = done.stdout + done.stderr
    words = _words(output)
    if "…" in output:
        why.append("something was cut with an ellipsis")
    expected = f"study {FAULTY} series {series}" if shown == "series" else f"study {FAULTY}"
    if shown in ("series", "study"):
        result["named"] = expected in words
        if not result["named"]:
            why.append(f"{expected!r} not in the output")
    if name == "script_in_tags":
        pages = list((root / f"{name}-out" / "studies" / "view").glob("*.html"))
        raw = [p.name for p in pages if SCRIPT in p.read_text()]
        result["pages"] = len(pages)
        if not pages or raw:
            why.append(f"<script> unescaped in {raw}" if raw else "no study pages written")
    result["held"] = not why
    result["why"] = why
    result["lines_naming_it"] = [line.strip() for line in output.splitlines() if str(FAULTY) in line][:6]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(FAULTS), help="plant only these faults")
    parser.add_argument("--study", type=Path, default=REAL_STUDY, help="folder of the real study")
    args = parser.parse_args()
    if not (args.study / "train_images").is_dir():
        sys.exit(f"the real study is not at {args.study}; pass --study")
    load_before, start = os.getloadavg()[0], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        template = _layout(root, args.study)
        models = write_models(root / "models")
        clean = _predict(template, models, root / "baseline" / "submission.csv", report=False)
        if clean.returncode != 0:
            sys.exit(f"predict fails on the clean copies: {clean.stderr}")
        baseline = pd.read_csv(root / "baseline" / "submission.csv")
        faults = {name: plant(name, template, models, baseline, root) for name in args.only or FAULTS}
    report = {
        "faults": len(faults),
        "held": sum(f["held"] for f in faults.values()),
        "seconds": round(time.perf_counter() - start, 1),
        "loadavg_1min_before_after": [load_before, os.getloadavg()[0]],
        "per_fault": faults,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
