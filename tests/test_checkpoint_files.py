"""Checkpoint files: damaged ones are named with a way out, precisions never share a run
(issue 18, items 7 and 12)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from afo_encoding.encoders.afo import AllForOneEncoder
from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.training.checkpoints import DamagedFileError

SGD = {"head_solver": "sgd", "d_model": 4, "max_epochs": 1, "n_iter_no_change": 1,
       "top_k": 1, "soup": False, "batch_size": 32, "device": "cpu",
       "random_state": 0}  # fmt: skip


def _data(n=60, n_features=5, n_voxels=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    Y = (X @ rng.normal(size=(n_features, n_voxels)) + rng.normal(size=(n, n_voxels))).astype(
        np.float32
    )
    return X, Y, rng.normal(size=(n_voxels, 3))


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_a_cut_last_checkpoint_is_named_with_a_way_out(tmp_path):
    X, Y, coords = _data()
    TopyEncoder(**SGD, checkpoint_dir=tmp_path).fit(X, Y, coords=coords)
    (last,) = tmp_path.glob("run-*/last.pt")
    _cut(last)
    message = r"Cannot read the checkpoint .*last\.pt.*Delete it"
    with pytest.raises(DamagedFileError, match=message):
        TopyEncoder(**SGD, checkpoint_dir=tmp_path).fit(X, Y, coords=coords)
    last.unlink()  # the way out works
    TopyEncoder(**SGD, checkpoint_dir=tmp_path).fit(X, Y, coords=coords)


def test_a_cut_afo_stage_file_is_named_with_a_way_out(tmp_path):
    X, Y, coords = _data()
    params = {"rois": np.repeat([0, 1], [3, 3]), "dark_knowledge": "in_sample",
              "random_state": 0, "checkpoint_dir": tmp_path}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        AllForOneEncoder(TopyEncoder(**SGD), **params).fit(X, Y, coords=coords)
        stage = sorted(tmp_path.rglob("*.npz"))[0]
        _cut(stage)
        with pytest.raises(DamagedFileError, match=rf"Cannot read {stage}.*Delete it"):
            AllForOneEncoder(TopyEncoder(**SGD), **params).fit(X, Y, coords=coords)
        stage.unlink()
        AllForOneEncoder(TopyEncoder(**SGD), **params).fit(X, Y, coords=coords)


def test_a_refit_in_another_precision_never_resumes_the_first(tmp_path):
    X, Y, coords = _data()
    fp32 = TopyEncoder(**SGD, checkpoint_dir=tmp_path).fit(X, Y, coords=coords)
    bf16 = TopyEncoder(**SGD, checkpoint_dir=tmp_path, precision="bf16-mixed").fit(
        X, Y, coords=coords
    )
    assert len(list(tmp_path.glob("run-*"))) == 2
    assert not np.array_equal(fp32.coef_, bf16.coef_)
    # the full-precision run keeps its folder name: it resumes as before
    TopyEncoder(**SGD, checkpoint_dir=tmp_path).fit(X, Y, coords=coords)
    assert len(list(tmp_path.glob("run-*"))) == 2
