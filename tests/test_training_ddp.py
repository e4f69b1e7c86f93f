"""Data-parallel training: Fabric's DDP over 2 CPU processes (gloo) reaches the quality of one.

Each process draws the same global batch from the same seed and keeps its half; gradients
are averaged by DDP and validation sums are all-reduced, so both processes hold the same
model and stop at the same epoch.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from lightning.fabric.strategies import DDPStrategy

from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.metrics import pearson_r

pytestmark = pytest.mark.slow


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 8))
    y = X @ rng.standard_normal((8, 12)) + 0.5 * rng.standard_normal((400, 12))
    coords = rng.standard_normal((12, 3))
    train, test = np.arange(300), np.arange(300, 400)
    params = {
        "head_solver": "sgd",  # the network trained end to end, as DDP scales it
        "d_model": 16,
        "max_epochs": 20,
        "batch_size": 32,
        "learning_rate": 1e-2,
        "top_k": 3,
        "device": "cpu",
        "random_state": 0,
    }

    single = TopyEncoder(**params).fit(X[train], y[train], coords=coords)
    # a stalled process group fails within 2 minutes instead of reaching pytest's timeout
    strategy = DDPStrategy(start_method="spawn", timeout=timedelta(seconds=120))
    ddp = TopyEncoder(**params, devices=2, strategy=strategy, checkpoint_dir=tmp_path)
    ddp.fit(X[train], y[train], coords=coords)

    r_single = pearson_r(y[test], single.predict(X[test])).mean()
    r_ddp = pearson_r(y[test], ddp.predict(X[test])).mean()
    assert r_single > 0.8
    # two processes of 32 images make steps of 64: half the steps per epoch, same data
    assert r_ddp > r_single - 0.05, (r_ddp, r_single)
    assert len(ddp.history_["val_score"]) == 20
    # the weights came back from the worker processes, with their checkpoints on disk
    (run,) = tmp_path.iterdir()
    assert (run / "last.pt").exists()
    assert len(list(run.glob("top-epoch*.pt"))) == 3


def _stall_rank_one(fabric):
    """Rank 1 never joins the all-reduce that rank 0 waits in."""
    import time

    import torch

    if fabric.global_rank == 1:
        time.sleep(15)
        return None
    return fabric.all_reduce(torch.ones(1))


def test_a_stalled_process_group_fails_with_a_message_instead_of_hanging():
    import time

    from afo_encoding.training import EngineConfig

    fabric = EngineConfig(accelerator="cpu", devices=2, strategy="ddp_spawn", timeout=3).fabric()
    assert fabric.strategy._timeout.total_seconds() == 3
    start = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)timed? ?out|timeout"):
        fabric.launch(_stall_rank_one)
    assert time.monotonic() - start < 120  # rank 1's 15 s nap and two process starts
