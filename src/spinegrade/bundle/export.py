"""`spinegrade export`: copy trained runs and locators into one checked, self-describing bundle folder.

BUNDLE/classifiers/<run>/ holds each run's best.safetensors and every JSON file beside it (best.json,
config.json, versions.json, and calibration or fold-plan files when the run has them), BUNDLE/locator/ the
locator weights and JSON, BUNDLE/onnx/ the same networks as ONNX graphs (unless onnx=False), and
BUNDLE/manifest.json what `open_bundle` checks. The folder is built under a temporary name and renamed
into place, so a bundle that exists is complete.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from spinegrade.bundle.manifest import (
    CLASSIFIERS,
    FORMAT,
    FORMAT_VERSION,
    LOCATOR,
    MANIFEST,
    ONNX,
    classifier_settings,
    library_versions,
    locator_settings,
    sha256,
)
from spinegrade.errors import DataError
from spinegrade.fileio import write_atomic

WEIGHTS: Final = "best.safetensors"
# Run-folder files that describe a fold plan (the cv branch's); their sha256 goes into the manifest.
FOLD_PLAN_GLOBS: Final = ("*fold_plan*", "*fold-plan*")


def _run_names(run_dirs: Sequence[Path], roots: Sequence[Path]) -> list[str]:
    """A unique folder name per run: its path below the argument that found it, '/' as '__'."""
    names: list[str] = []
    for run in run_dirs:
        root = next((r for r in roots if run == r or r in run.parents), run)
        name = "__".join(run.relative_to(root).parts) or run.name
        base, n = name, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _fold_plan(run: Path, info: dict[str, Any]) -> dict[str, str] | None:
    """The fold plan the run records: a fold-plan file's sha256, else a hash best.json/config.json carries."""
    files = sorted({p for pattern in FOLD_PLAN_GLOBS for p in run.glob(pattern) if p.is_file()})
    if files:
        return {"file": files[0].name, "sha256": sha256(files[0])}
    config = _read_json(run / "config.json")
    for source in (info, config):
        for key in ("fold_plan_sha256", "fold_plan_hash"):
            if source.get(key):
                return {"sha256": str(source[key])}
    return None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _copy_run(run: Path, dest: Path) -> list[str]:
    """best.safetensors and every *.json (and fold-plan file) of a run into dest; the names copied."""
    dest.mkdir(parents=True)
    names = [WEIGHTS, *sorted(p.name for p in run.glob("*.json"))]
    names += sorted({p.name for g in FOLD_PLAN_GLOBS for p in run.glob(g) if p.is_file()} - set(names))
    for name in names:
        shutil.copy2(run / name, dest / name)
    return names


def export_bundle(
    runs: Sequence[str | os.PathLike],
    locator: str | os.PathLike,
    out: str | os.PathLike,
    *,
    onnx: bool = True,
    zip_archive: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the bundle folder `out` (module doc) from classifier runs and a locator folder; with
    zip_archive also OUT.zip. Every model is loaded first, so a run that cannot grade is refused here."""
    from spinegrade.localization.locate import load_locator
    from spinegrade.onnxrt import OPSET, classifier_file, export_classifier, export_locator, locator_file
    from spinegrade.prediction.grade import Ensemble, find_runs

    out, locator_dir = Path(out), Path(locator)
    if onnx and importlib.util.find_spec("onnxruntime") is None:
        raise DataError(
            "exporting ONNX graphs needs onnxruntime: pip install 'spinegrade[onnx]', or pass --no-onnx"
        )
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; choose another --out or pass --overwrite to replace it")
    roots = [Path(r) for r in runs]
    ensemble = Ensemble.load(roots)
    loaded_locator = load_locator(locator_dir)
    run_dirs = find_runs(roots)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    classifiers, onnx_report = [], {}
    for name, run, graded in zip(_run_names(run_dirs, roots), run_dirs, ensemble.runs, strict=True):
        rel = f"{CLASSIFIERS}/{name}"
        copied = _copy_run(run, tmp / rel)
        config = _read_json(run / "config.json")
        classifiers.append(
            {
                "path": rel,
                "source": str(run.resolve()),
                "settings": classifier_settings(graded.info),
                "training": {key: config.get(key) for key in ("side_flip", "fold", "seed", "imbalance")},
                "fold_plan": _fold_plan(run, graded.info),
                "priors": graded.info.get("priors") is not None,
                "calibration": [n for n in copied if "calib" in n],
                "validation_score": graded.info.get("score"),
            }
        )
        if onnx:
            data, diff = export_classifier(graded.model, graded.spec.k, graded.spec.size, str(run))
            target = classifier_file(tmp / ONNX, tmp / rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            onnx_report[str(target.relative_to(tmp))] = diff
    (tmp / LOCATOR).mkdir(parents=True)
    for path in sorted(locator_dir.glob("*.json")):
        shutil.copy2(path, tmp / LOCATOR / path.name)
    models = {}
    for slug, model in loaded_locator.models.items():
        shutil.copy2(locator_dir / f"{slug}.safetensors", tmp / LOCATOR / f"{slug}.safetensors")
        models[slug] = locator_settings(_read_json(locator_dir / f"{slug}.json"))
        if onnx:
            data, diff = export_locator(model)
            target = locator_file(tmp / ONNX, slug)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            onnx_report[str(target.relative_to(tmp))] = diff
    files = {str(p.relative_to(tmp)): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": library_versions(),
        "classifiers": classifiers,
        "locator": {"path": LOCATOR, "source": str(locator_dir.resolve()), "models": models},
        "onnx": {"opset": OPSET, "max_abs_difference_from_torch": onnx_report} if onnx else None,
        "files": files,
    }
    write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    if zip_archive:
        partial = shutil.make_archive(str(out) + ".partial", "zip", root_dir=out)
        os.replace(partial, out.with_name(out.name + ".zip"))
    return out
