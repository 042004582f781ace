"""manifest.json of a model bundle: versions, the settings inference depends on, and each file's sha256.

Loading a bundle (`open_bundle`) checks, in this order, that the manifest is there and of a known format,
that this spinegrade can read it (same major.minor version), that every listed file is present and
unchanged, that no weight file was added, and that the settings recorded in the manifest are those of the
files; the first thing wrong is raised as one DataError line. Other library versions that differ from
the exporting machine's only warn (BundleWarning): a Kaggle image brings its own torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from spinegrade import __version__
from spinegrade.errors import DataError

MANIFEST: Final = "manifest.json"
FORMAT: Final = "spinegrade-bundle"
FORMAT_VERSION: Final = 1
CLASSIFIERS: Final = "classifiers"
LOCATOR: Final = "locator"
ONNX: Final = "onnx"
# Libraries whose versions are recorded (and compared on loading: a difference warns).
LIBRARIES: Final = ("torch", "timm", "numpy", "safetensors", "pydicom", "onnxruntime")
# The classifier settings that shape inference, as best.json records them (side_flip: the calib branch's).
CLASSIFIER_SETTINGS: Final = ("arch", "in_chans", "k", "size", "crop_mm", "views", "model", "side_flip")
# Files whose presence decides what is loaded: an extra one is refused, not silently used.
MODEL_SUFFIXES: Final = (".safetensors", ".onnx")


class BundleWarning(UserWarning):
    """The bundle loads, but a library differs from the version it was exported with."""


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str | None]:
    """Python, spinegrade and each of LIBRARIES (None when not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version(), "spinegrade": __version__}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def classifier_settings(info: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of CLASSIFIER_SETTINGS a best.json holds (missing ones as None)."""
    return {key: info.get(key) for key in CLASSIFIER_SETTINGS}


def locator_settings(info: Mapping[str, Any]) -> dict[str, Any]:
    """What a locator's <slug>.json says about its input and outputs."""
    return {"points": info.get("points"), "settings": info.get("settings")}


def _same_release(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its folder, manifest, classifier run folders, locator folder and ONNX files."""

    root: Path
    manifest: dict[str, Any]

    @property
    def runs(self) -> list[Path]:
        return [self.root / c["path"] for c in self.manifest["classifiers"]]

    @property
    def locator(self) -> Path:
        return self.root / self.manifest["locator"]["path"]

    @property
    def onnx_dir(self) -> Path | None:
        return self.root / ONNX if self.manifest.get("onnx") else None


@contextmanager
def unpacked(path: str | Path) -> Iterator[Path]:
    """A bundle folder as it is, or a bundle .zip (`export --zip`) extracted into a temporary folder."""
    path = Path(path)
    if path.suffix != ".zip":
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a zip archive; pass the bundle folder or the .zip export wrote")
    with tempfile.TemporaryDirectory(prefix="spinegrade-bundle-") as tmp, zipfile.ZipFile(path) as archive:
        archive.extractall(tmp)
        yield Path(tmp)


def open_bundle(root: str | Path) -> Bundle:
    """Check a bundle folder (module doc) and return it; DataError naming the first problem found."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} is missing: {root} is not a bundle written by `spinegrade export`")
    try:
        manifest = json.loads(path.read_text())
        kind, version, files = manifest["format"], manifest["format_version"], manifest["files"]
        written_by = manifest["versions"]["spinegrade"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a bundle manifest ({type(exc).__name__}: {exc})") from None
    if kind != FORMAT or version != FORMAT_VERSION:
        raise DataError(
            f"{path}: format {kind!r} v{version}, this spinegrade reads {FORMAT!r} v{FORMAT_VERSION}"
        )
    if not _same_release(written_by, __version__):
        raise DataError(
            f"{root} was exported by spinegrade {written_by}, this is {__version__}: install spinegrade "
            f"{written_by} or re-export the bundle with this version"
        )
    for name, digest in files.items():
        file = root / name
        if not file.is_file():
            raise DataError(f"{file} is missing from the bundle (listed in {MANIFEST})")
        if sha256(file) != digest:
            raise DataError(
                f"{file} changed since export (its sha256 is not the one in {MANIFEST}); re-export the bundle"
            )
    extra = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.suffix in MODEL_SUFFIXES and str(p.relative_to(root)) not in files
    )
    if extra:
        raise DataError(f"{root / extra[0]} is not in {MANIFEST}: a weight file was added after export")
    _check_settings(root, manifest)
    _warn_versions(root, manifest["versions"])
    return Bundle(root, manifest)


def _check_settings(root: Path, manifest: Mapping[str, Any]) -> None:
    """The manifest's settings must be those of the model files (an edited manifest is refused)."""
    for entry in manifest["classifiers"]:
        info = json.loads((root / entry["path"] / "best.json").read_text())
        _compare(root / entry["path"] / "best.json", entry["settings"], classifier_settings(info))
    for slug, recorded in manifest["locator"]["models"].items():
        file = root / manifest["locator"]["path"] / f"{slug}.json"
        _compare(file, recorded, locator_settings(json.loads(file.read_text())))


def _compare(file: Path, recorded: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    for key, value in recorded.items():
        if actual.get(key) != value:
            raise DataError(
                f"settings mismatch: {MANIFEST} records {key}={json.dumps(value)} but {file} has "
                f"{json.dumps(actual.get(key))}"
            )


def _warn_versions(root: Path, recorded: Mapping[str, str | None]) -> None:
    here = library_versions()
    for name in LIBRARIES:
        then, now = recorded.get(name), here.get(name)
        if then and now and not _same_release(then, now):
            warnings.warn(
                f"{root} was exported with {name} {recorded[name]}, this is {here[name]}",
                BundleWarning,
                stacklevel=3,
            )
