"""The offline install: build the spinegrade wheel (tools/wheelhouse.py, as `make wheelhouse` does), install
it with `pip install --no-index --find-links` into a fresh venv, and grade a phantom with a bundle from
there. The venv sees the current site-packages through a .pth file (torch and the other dependencies are
not copied), and the wheel is installed with --no-deps --ignore-installed, so nothing is downloaded and
the spinegrade run is the wheel's, not the source tree's."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
from untrained import write_models

from spinegrade.bundle.export import export_bundle
from spinegrade.phantom import write_phantom

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_offline_and_predicts_with_a_bundle(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PIP_NO_INDEX="1")
    wheelhouse = tmp_path / "wheelhouse"
    _run(
        [sys.executable, str(ROOT / "tools" / "wheelhouse.py"), "--out", str(wheelhouse), "--wheel-only"], env
    )
    assert len(list(wheelhouse.glob("spinegrade-*.whl"))) == 1

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env)
    python = venv / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env).strip()
    )
    (site / "shared.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = ["-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse)]
    _run([str(python), *install, "--no-deps", "--ignore-installed", "--quiet", "spinegrade"], env)
    where = _run([str(python), "-c", "import spinegrade; print(spinegrade.__file__)"], env).strip()
    assert Path(where).is_relative_to(site), where
    assert (Path(where).parent / "py.typed").is_file(), "the wheel does not ship py.typed (PEP 561)"

    data = tmp_path / "data"
    write_phantom(data, 2, 0, size=64, test_studies=1, workers=1, progress=False)
    run, locator = write_models(tmp_path / "models")
    bundle = export_bundle([run], locator, tmp_path / "bundle", onnx=False)
    out = tmp_path / "submission.csv"
    command = [
        str(venv / "bin" / "spinegrade"),
        "predict",
        str(data),
        "--model",
        str(bundle),
        "--out",
        str(out),
    ]
    _run(command, env)
    rows = pd.read_csv(out)
    assert len(rows) == 25 and rows[["normal_mild", "moderate", "severe"]].sum(axis=1).round(6).eq(1).all()
