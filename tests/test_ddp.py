"""Two-process DDP training on CPU (gloo) through the CLI: one best checkpoint, one metrics file, and the
optimizer steps of one rank's half of the training fold. Lightning's ddp launcher re-runs the command in
a second process, so the command runs as a subprocess with a timeout (a hung rendezvous fails the test)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from spinegrade.crops.prepare import prepare
from spinegrade.training.datamodule import fold_rows

TIMEOUT_S = 240
BATCH = 4


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_one_epoch(tiny_phantom: Path, tmp_path: Path) -> None:
    cache = prepare(tiny_phantom, tmp_path / "cache", size=16, k=3, n_folds=2, workers=1)
    run = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(29500 + os.getpid() % 1000),
    }
    command = [sys.executable, "-m", "spinegrade", "train", str(cache.path), "--out", str(run)]
    command += ["--arch", "resnet10t", "--imbalance", "none", "--epochs", "1", "--batch-size", str(BATCH)]
    command += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--threads", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]

    assert [p.relative_to(run) for p in run.rglob("best.safetensors")] == [Path("best.safetensors")]
    written = sorted(p.relative_to(run) for p in run.rglob("metrics.csv"))
    assert written == [Path("logs/train/metrics.csv"), Path("metrics.csv")]  # rank 0's, once each
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0]
    n_train = len(fold_rows(cache, 0)[0])
    per_rank = math.ceil(n_train / 2)  # DistributedSampler pads to equal halves
    drop_last = n_train > BATCH
    steps = per_rank // BATCH if drop_last else math.ceil(per_rank / BATCH)
    checkpoint = torch.load(run / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == steps > 0
    assert (run / "val_score.json").is_file()
