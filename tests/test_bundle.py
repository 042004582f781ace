"""spinegrade export and predict --model: a bundle grades as its runs do, and a tampered, incomplete or
foreign bundle is refused in one line; ONNX Runtime matches torch within 1e-4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner
from untrained import write_models

from spinegrade.bundle.manifest import MANIFEST, BundleWarning, open_bundle
from spinegrade.cli import app
from spinegrade.errors import DataError
from spinegrade.onnxrt import TOLERANCE
from spinegrade.phantom import write_phantom
from spinegrade.runtime import torch_threads

REAL_STUDY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsna2024-real-study"
runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::spinegrade.prediction.results.PredictionWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundle")
    write_phantom(root / "data", 2, 0, size=64, test_studies=2, workers=1, progress=False)
    run, locator = write_models(root)
    bundle = root / "bundle"
    result = runner.invoke(
        app, ["export", "--runs", str(run), "--locator", str(locator), "--out", str(bundle), "--zip"]
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "data": root / "data", "run": run, "locator": locator, "bundle": bundle}


def _predict(data: Path, out: Path, *args: str) -> pd.DataFrame:
    result = runner.invoke(app, ["predict", str(data), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out)


def _refused(bundle: Path, data: Path, tmp: Path) -> str:
    result = runner.invoke(app, ["predict", str(data), "--model", str(bundle), "--out", str(tmp / "s.csv")])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    assert "\n" not in str(result.exception)
    return str(result.exception)


def test_bundle_holds_weights_settings_and_hashes(setup: dict[str, Path]) -> None:
    bundle = setup["bundle"]
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["versions"]["spinegrade"] and manifest["versions"]["torch"]
    (entry,) = manifest["classifiers"]
    assert entry["settings"]["k"] == 3 and entry["settings"]["size"] == 32
    assert entry["settings"]["crop_mm"] and entry["settings"]["arch"] == "resnet10t"
    assert set(manifest["locator"]["models"]) == {
        "sagittal_t2",
        "sagittal_t1",
        "axial_t2",
        "sagittal_t2_refine",
        "sagittal_t1_refine",
    }
    assert manifest["locator"]["models"]["sagittal_t2"]["settings"]["size"] == 64
    assert manifest["locator"]["models"]["sagittal_t1_refine"]["settings"]["size"] == 32  # its window
    assert "onnx/locator/sagittal_t1_refine.onnx" in manifest["files"]
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(manifest["files"]) == on_disk
    assert all(p.suffix not in (".pt", ".pth", ".ckpt") for p in bundle.rglob("*"))
    assert {Path(f).suffix for f in manifest["files"]} >= {".safetensors", ".json", ".onnx"}
    assert max(manifest["onnx"]["max_abs_difference_from_torch"].values()) <= TOLERANCE
    assert (bundle.parent / "bundle.zip").is_file()


def test_predict_with_bundle_equals_runs_and_onnx_close(setup: dict[str, Path], tmp_path: Path) -> None:
    data = setup["data"]
    models = ["--runs", str(setup["run"]), "--locator", str(setup["locator"])]
    direct = _predict(data, tmp_path / "a.csv", *models)
    bundled = _predict(data, tmp_path / "b.csv", "--model", str(setup["bundle"]))
    zipped = _predict(data, tmp_path / "c.csv", "--model", str(setup["bundle"].parent / "bundle.zip"))
    onnx = _predict(data, tmp_path / "d.csv", "--model", str(setup["bundle"]), "--runtime", "onnx")
    assert len(direct) == 2 * 25
    pd.testing.assert_frame_equal(direct, bundled)
    pd.testing.assert_frame_equal(direct, zipped)
    assert list(onnx["row_id"]) == list(direct["row_id"])
    values = ["normal_mild", "moderate", "severe"]
    assert np.abs(onnx[values].to_numpy() - direct[values].to_numpy()).max() <= TOLERANCE


def _copy(setup: dict[str, Path], tmp: Path) -> Path:
    return Path(shutil.copytree(setup["bundle"], tmp / "bundle"))


def test_tampered_weight_refused(setup: dict[str, Path], tmp_path: Path) -> None:
    bundle = _copy(setup, tmp_path)
    weights = next((bundle / "classifiers").rglob("best.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    message = _refused(bundle, setup["data"], tmp_path)
    assert "best.safetensors changed since export" in message


def test_wrong_version_refused(setup: dict[str, Path], tmp_path: Path) -> None:
    bundle = _copy(setup, tmp_path)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["versions"]["spinegrade"] = "9.0.0"
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    assert "exported by spinegrade 9.0.0" in _refused(bundle, setup["data"], tmp_path)


def test_library_version_difference_warns(setup: dict[str, Path], tmp_path: Path) -> None:
    bundle = _copy(setup, tmp_path)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["versions"]["torch"] = "1.0.0"
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(BundleWarning, match="torch 1.0.0"):
        open_bundle(bundle)


def test_missing_file_settings_mismatch_and_extra_weights_refused(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    bundle = _copy(setup, tmp_path)
    manifest_text = (bundle / MANIFEST).read_text()
    (bundle / "locator" / "axial_t2.json").unlink()
    assert "axial_t2.json is missing from the bundle" in _refused(bundle, setup["data"], tmp_path)

    shutil.rmtree(bundle)
    bundle = _copy(setup, tmp_path)
    manifest = json.loads(manifest_text)
    manifest["classifiers"][0]["settings"]["k"] = 5
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    message = _refused(bundle, setup["data"], tmp_path)
    assert message.startswith("settings mismatch") and "k=5" in message and "best.json has 3" in message

    (bundle / MANIFEST).write_text(manifest_text)
    shutil.copy(bundle / "locator" / "axial_t2.safetensors", bundle / "locator" / "extra.safetensors")
    assert "extra.safetensors is not in manifest.json" in _refused(bundle, setup["data"], tmp_path)


def test_export_refuses_existing_out_and_predict_needs_models(setup: dict[str, Path], tmp_path: Path) -> None:
    args = ["export", "--runs", str(setup["run"]), "--locator", str(setup["locator"]), "--no-onnx"]
    result = runner.invoke(app, [*args, "--out", str(setup["bundle"])])
    assert result.exit_code != 0 and "exists" in str(result.exception)
    result = runner.invoke(app, ["predict", str(setup["data"]), "--runs", str(setup["run"])])
    assert "--model BUNDLE or both --runs" in str(result.exception)
    result = runner.invoke(app, ["predict", str(setup["data"]), "--model", str(tmp_path)])
    assert "manifest.json is missing" in str(result.exception)
    model = ["--model", str(setup["bundle"]), "--out", str(tmp_path / "s.csv")]
    result = runner.invoke(
        app, ["predict", str(setup["data"]), *model, "--runtime", "onnx", "--device", "cuda"]
    )
    assert "--runtime onnx runs on the CPU" in str(result.exception)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_STUDY.is_dir(), reason="the real RSNA study is not in ../shared")
def test_bundle_predicts_the_real_study(setup: dict[str, Path], tmp_path: Path) -> None:
    """The real study (RLE DICOM, 384-540 px) graded through a bundle with both runtimes: 25 rows each."""
    data = tmp_path / "real"
    data.mkdir()
    descriptions = pd.read_csv(REAL_STUDY / "train_series_descriptions.csv")
    descriptions.to_csv(data / "test_series_descriptions.csv", index=False)
    (data / "test_images").symlink_to(REAL_STUDY / "train_images")
    torch_rows = _predict(data, tmp_path / "t.csv", "--model", str(setup["bundle"]))
    onnx_rows = _predict(data, tmp_path / "o.csv", "--model", str(setup["bundle"]), "--runtime", "onnx")
    assert len(torch_rows) == 25 and torch_rows["row_id"].str.startswith("4646740_").all()
    values = ["normal_mild", "moderate", "severe"]
    assert np.allclose(torch_rows[values].sum(axis=1), 1.0)
    assert np.abs(onnx_rows[values].to_numpy() - torch_rows[values].to_numpy()).max() <= TOLERANCE
    study = json.loads((tmp_path / "studies" / "4646740.json").read_text())
    assert len(study["points"]) > 0  # the locators ran on the real series
