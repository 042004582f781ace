"""Build the spinegrade wheel and download wheels of all its dependencies into one folder, for installing
where there is no network (a Kaggle notebook): `pip install --no-index --find-links WHEELHOUSE spinegrade`.

The dependency set is what pip resolves for the wheel (`pip install --dry-run --report`), downloaded one
pinned wheel at a time without their own resolution; --no-torch leaves out torch, torchvision and their
CUDA/Triton wheels (Kaggle images bring their own torch; about 4 GB less). The wheel is built from a
copy of the sources, so the working tree stays clean. Needs PyPI (or a mirror pip is configured for).
Run: python tools/wheelhouse.py [--out wheelhouse] [--no-torch] [--wheel-only] [--python-version 3.11 ...]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Left out by --no-torch: torch itself and the wheels only torch needs.
TORCH = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def build_wheel(out: Path) -> Path:
    """The spinegrade wheel, built from a copy of pyproject.toml, README.md and src/ into `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (ROOT / name).is_file():
                shutil.copy2(ROOT / name, Path(tmp) / name)
        shutil.copytree(
            ROOT / "src", Path(tmp) / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), tmp)
    (wheel,) = sorted(out.glob("spinegrade-*.whl"))
    return wheel


def resolve(wheel: Path, target: list[str], extras: str) -> list[tuple[str, str]]:
    """(name, version) of every package pip would install with the wheel (itself excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        requirement = f"{wheel}[{extras}]" if extras else str(wheel)
        pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--target",
            str(Path(tmp) / "t"),
            *target,
            requirement,
        )
        items = json.loads(report.read_text())["install"]
    found = [(i["metadata"]["name"], i["metadata"]["version"]) for i in items]
    return [(n, v) for n, v in found if n.lower() != "spinegrade"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--no-torch", action="store_true", help="leave out torch, torchvision, CUDA wheels")
    parser.add_argument("--extras", default="onnx", help="extras to include (default: onnx; '' for none)")
    parser.add_argument("--python-version", help="target Python (e.g. 3.11); default: this one")
    parser.add_argument("--platform", help="target platform tag (e.g. manylinux2014_x86_64)")
    parser.add_argument(
        "--wheel-only", action="store_true", help="build the spinegrade wheel, download nothing"
    )
    args = parser.parse_args()
    target = ["--only-binary=:all:"]
    if args.python_version:
        target += ["--python-version", args.python_version]
    if args.platform:
        target += ["--platform", args.platform]
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("spinegrade-*.whl"):
        old.unlink()
    wheel = build_wheel(args.out)
    if args.wheel_only:
        print(wheel)
        return
    packages = [
        (n, v)
        for n, v in resolve(wheel, target, args.extras)
        if not (args.no_torch and TORCH.match(n.lower()))
    ]
    pip("download", "--no-deps", "--quiet", "-d", str(args.out), *target, *(f"{n}=={v}" for n, v in packages))
    left_out = " (torch and CUDA wheels left out)" if args.no_torch else ""
    print(f"{args.out}: {wheel.name} + {len(packages)} dependency wheels{left_out}")


if __name__ == "__main__":
    main()
